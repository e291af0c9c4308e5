"""Embedded VoxCeleb-shaped synthetic corpus (the project's default data).

Speakers -> sessions ("videos") -> utterances, rendered as 16 kHz mono PCM16 wav:

* speech comes from espeak-ng (``backend="espeak"``, driven through ctypes, see
  :mod:`sslsv_sb.data.espeak`) with one custom voice variant per speaker (formant
  scaling, pitch base and range, breath, roughness, flutter, accent) and a random
  sentence per utterance with small prosody jitter; ``backend="numpy"`` is a
  source-filter fallback (glottal pulses at the speaker's pitch through
  speaker-specific formant filters);
* every session draws one channel (simulated room response, microphone band-limit and
  EQ, background noise at 5-25 dB SNR, gain, -60 dB noise floor) shared by its
  utterances, so that a speaker's sessions differ and channel cues do not solve the
  task;
* augmentation banks (``noise/{noise,music,speech}`` and ``rirs``) come from
  distributions and rooms disjoint from those of the corpus channels.

Layout of the corpus folder (list paths are relative to it)::

    wav/<spk_id>/<session_id>/<NNNNN>.wav
    train.csv      File,Speaker,Session,Language,Gender   (sslsv train list)
    train_sb.csv   ID,duration,wav,start,stop,spk_id      (SpeechBrain CSV)
    test.csv       File,Speaker,Session,Language,Gender   (held-out speakers)
    trials.txt     "<1|0> <enrol> <test>"                 (cross-session targets)
    noise/{noise,music,speech}/*.wav, rirs/*.wav          (augmentation banks)
    corpus.json    manifest, written last (marks a complete corpus)

Generation is deterministic by seed (independent of ``workers``) and cached: a second
call with the same configuration returns the stored manifest immediately.

Example
-------
>>> from sslsv_sb.data.corpus import ensure_corpus
>>> folder = ensure_corpus("/tmp/tiny_corpus", preset="tiny")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import itertools
import json
import multiprocessing
import os
import pathlib
import shutil
import time
import warnings
from dataclasses import dataclass

import numpy as np
import soundfile as sf
from scipy import fft as sp_fft
from scipy import signal

from sslsv_sb.errors import SSLSVError

GENERATOR_VERSION = "1.0"

ENGLISH_ACCENTS = ("en-us", "en-gb-x-rp", "en-029", "en-gb-scotland")
MULTILINGUAL = ("en-us", "fr", "de", "es", "it", "pt")

_ESPEAK_SR = 22050
_N_CHANNEL_RIRS = 64
_OUTPUT_NAMES = (
    "wav",
    "noise",
    "rirs",
    ".cache",
    "train.csv",
    "train_sb.csv",
    "test.csv",
    "trials.txt",
    "corpus.json",
    ".incomplete",
)
_LIST_HEADER = ["File", "Speaker", "Session", "Language", "Gender"]


@dataclass
class CorpusConfig:
    """Size and content knobs of the synthetic corpus (defaults = the demo size).

    Arguments
    ---------
    n_train_speakers, n_test_speakers : int
        Disjoint train and test (trial) speakers.
    train_sessions, train_utts_per_session : int
        Sessions per train speaker and utterances per session.
    test_sessions, test_utts_per_session : int
        Same for test speakers (``test_sessions >= 2`` for cross-session targets).
    min_duration, max_duration : float
        Utterance duration range in seconds.
    languages : tuple of str
        espeak-ng voices (accents or languages), assigned round-robin to speakers;
        the ``Language`` column carries them.
    nontarget_ratio : float
        Non-target trials per target trial.
    n_noise_files : int
        Files per augmentation noise category (noise, music, speech).
    n_rirs : int
        Room responses in the augmentation bank.
    seed : int
        Master seed.
    backend : str
        ``"espeak"``, ``"numpy"`` or ``"auto"`` (espeak if it loads, else numpy).
    sample_rate : int
        Output sampling rate in Hz.
    """

    n_train_speakers: int = 60
    n_test_speakers: int = 30
    train_sessions: int = 4
    train_utts_per_session: int = 6
    test_sessions: int = 3
    test_utts_per_session: int = 4
    min_duration: float = 2.5
    max_duration: float = 4.5
    languages: tuple = ENGLISH_ACCENTS
    nontarget_ratio: float = 4.0
    n_noise_files: int = 30
    n_rirs: int = 40
    seed: int = 1234
    backend: str = "auto"
    sample_rate: int = 16000

    def __post_init__(self):
        if isinstance(self.languages, str):
            self.languages = tuple(x for x in self.languages.split(",") if x)
        self.languages = tuple(self.languages)
        self.validate()

    def validate(self):
        """Raise :class:`SSLSVError` naming the offending key if a knob is invalid."""
        positive = (
            "n_train_speakers",
            "n_test_speakers",
            "train_sessions",
            "train_utts_per_session",
            "test_sessions",
            "test_utts_per_session",
        )
        for key in positive:
            if int(getattr(self, key)) < 1:
                raise SSLSVError(f"corpus config: {key} must be >= 1")
        if self.test_sessions < 2:
            raise SSLSVError(
                "corpus config: test_sessions must be >= 2 (targets are cross-session)"
            )
        if self.n_test_speakers < 2:
            raise SSLSVError("corpus config: n_test_speakers must be >= 2")
        if not 0.5 <= self.min_duration <= self.max_duration:
            raise SSLSVError(
                "corpus config: need 0.5 <= min_duration <= max_duration "
                f"(got {self.min_duration}, {self.max_duration})"
            )
        if not self.languages:
            raise SSLSVError("corpus config: languages must not be empty")
        if self.backend not in ("auto", "espeak", "numpy"):
            raise SSLSVError(
                f"corpus config: backend must be auto, espeak or numpy "
                f"(got {self.backend!r})"
            )
        if self.sample_rate < 8000:
            raise SSLSVError("corpus config: sample_rate must be >= 8000")
        if self.nontarget_ratio < 0 or self.n_noise_files < 0 or self.n_rirs < 0:
            raise SSLSVError(
                "corpus config: nontarget_ratio, n_noise_files, n_rirs must be >= 0"
            )

    def to_dict(self):
        """Return the configuration as a JSON-compatible dict."""
        return json.loads(json.dumps(dataclasses.asdict(self)))


PRESETS = {
    "demo": CorpusConfig(),
    "tiny": CorpusConfig(
        n_train_speakers=8,
        n_test_speakers=6,
        train_sessions=2,
        train_utts_per_session=3,
        test_sessions=2,
        test_utts_per_session=2,
        min_duration=1.5,
        max_duration=2.5,
        n_noise_files=3,
        n_rirs=4,
    ),
}


# --------------------------------------------------------------------------- text

_EN_DET = "the a this that every one some my your our their".split()
_EN_ADJ = (
    "small large quiet bright early late warm cold green yellow simple careful "
    "happy heavy light narrow open silver wooden gentle rapid distant busy calm "
    "fresh empty golden hidden local modern plain round sharp soft steady"
).split()
_EN_NOUN = (
    "river garden window market teacher doctor engine station kitchen letter "
    "mountain village morning evening pencil basket bottle bridge camera candle "
    "carpet castle cottage dinner farmer forest harbor island ladder meadow "
    "orchard painter picture pocket rabbit sailor signal summer ticket tower "
    "valley wagon winter button planet music paper coffee number corner"
).split()
_EN_VERB = (
    "carries finds follows opens watches paints builds moves cleans brings "
    "covers reaches passes counts fixes holds keeps leaves marks needs"
).split()
_EN_PREP = "near behind under over beside across along inside past toward".split()
_EN_ADV = "slowly quickly often never always today again soon early later".split()

_WORDS = {
    "fr": (
        "le la un une petit grand maison jardin rivière matin soir chat chien "
        "livre table porte fenêtre voiture ville village marché pain fromage "
        "rouge vert bleu belle beau vieux nouveau parle mange regarde ouvre "
        "ferme prend donne trouve toujours souvent demain hier ici là avec "
        "sans sous sur dans pour"
    ).split(),
    "de": (
        "der die das ein eine klein groß Haus Garten Fluss Morgen Abend Katze "
        "Hund Buch Tisch Tür Fenster Wagen Stadt Dorf Markt Brot Käse rot grün "
        "blau schön alt neu spricht isst sieht öffnet schließt nimmt gibt "
        "findet immer oft morgen gestern hier dort mit ohne unter auf in für"
    ).split(),
    "es": (
        "el la un una pequeño grande casa jardín río mañana tarde gato perro "
        "libro mesa puerta ventana coche ciudad pueblo mercado pan queso rojo "
        "verde azul bonito viejo nuevo habla come mira abre cierra toma da "
        "encuentra siempre a menudo ayer aquí allí con sin bajo sobre en para"
    ).split(),
    "it": (
        "il la un una piccolo grande casa giardino fiume mattina sera gatto "
        "cane libro tavolo porta finestra macchina città paese mercato pane "
        "formaggio rosso verde blu bello vecchio nuovo parla mangia guarda "
        "apre chiude prende dà trova sempre spesso domani ieri qui là con "
        "senza sotto sopra in per"
    ).split(),
    "pt": (
        "o a um uma pequeno grande casa jardim rio manhã tarde gato cão livro "
        "mesa porta janela carro cidade aldeia mercado pão queijo vermelho "
        "verde azul bonito velho novo fala come olha abre fecha toma dá "
        "encontra sempre muitas vezes amanhã ontem aqui ali com sem sob sobre "
        "em para"
    ).split(),
    "nl": (
        "de het een klein groot huis tuin rivier morgen avond kat hond boek "
        "tafel deur raam auto stad dorp markt brood kaas rood groen blauw "
        "mooi oud nieuw spreekt eet kijkt opent sluit neemt geeft vindt "
        "altijd vaak gisteren hier daar met zonder onder op in voor"
    ).split(),
}

_SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]


def _english_sentence(rng, n_words):
    words = []
    while len(words) < n_words:
        pattern = rng.integers(4)
        det = _EN_DET[rng.integers(len(_EN_DET))]
        adj = _EN_ADJ[rng.integers(len(_EN_ADJ))]
        noun = _EN_NOUN[rng.integers(len(_EN_NOUN))]
        verb = _EN_VERB[rng.integers(len(_EN_VERB))]
        noun2 = _EN_NOUN[rng.integers(len(_EN_NOUN))]
        prep = _EN_PREP[rng.integers(len(_EN_PREP))]
        adv = _EN_ADV[rng.integers(len(_EN_ADV))]
        if pattern == 0:
            words += [det, adj, noun, verb, "the", noun2]
        elif pattern == 1:
            words += [det, noun, verb, adv, prep, "the", noun2]
        elif pattern == 2:
            words += [adv, det, noun, verb, "a", adj, noun2]
        else:
            words += [det, noun, prep, "the", noun2, verb]
    words = words[:n_words]
    return " ".join(words).capitalize() + "."


def make_text(rng, language, n_words):
    """Return a random sentence of about ``n_words`` words for an espeak voice.

    English voices get template sentences from a small built-in word list; a few
    other languages (fr, de, es, it, pt, nl) draw from their own list; any other
    language gets pseudo-words made of consonant-vowel syllables.

    Arguments
    ---------
    rng : numpy.random.Generator
    language : str
        espeak voice name (e.g. ``"en-gb-x-rp"``, ``"fr"``).
    n_words : int

    Returns
    -------
    str
    """
    n_words = max(2, int(n_words))
    base = language.split("-")[0].lower()
    if base == "en":
        return _english_sentence(rng, n_words)
    vocab = _WORDS.get(base)
    if vocab is None:
        vocab = [
            "".join(_SYLLABLES[i] for i in rng.integers(len(_SYLLABLES), size=k))
            for k in rng.integers(1, 4, size=64)
        ]
    words = [vocab[i] for i in rng.integers(len(vocab), size=n_words)]
    return " ".join(words).capitalize() + "."


# ------------------------------------------------------------------ plan (speakers)


def _session_id(rng, used):
    alphabet = np.array(
        list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    )
    while True:
        sid = "".join(alphabet[rng.integers(len(alphabet), size=11)])
        if sid not in used and sid[0] not in "-_":
            used.add(sid)
            return sid


def _voice_params(rng, gender, language):
    """Draw the voice of one speaker (espeak variant + numpy-backend values)."""
    female = gender == "f"
    low = rng.uniform(150, 225) if female else rng.uniform(75, 135)
    high = low * rng.uniform(1.25, 1.8)
    base_scale = rng.normal(1.12, 0.035) if female else rng.normal(0.97, 0.035)
    formants = [
        float(np.clip(base_scale * rng.normal(1.0, 0.035), 0.82, 1.3)) for _ in range(6)
    ]
    return {
        "language": language,
        "gender": gender,
        "pitch": [float(low), float(high)],
        "formants": formants,
        "heights": [float(rng.uniform(80, 125)) for _ in range(6)],
        "breath": int(rng.integers(0, 6)),
        "roughness": int(rng.integers(0, 5)),
        "flutter": int(rng.integers(0, 25)),
        "rate": float(rng.uniform(135, 195)),
        "tilt": float(rng.uniform(0.9, 0.97)),
        # numpy backend only: personal vowel inventory (usage and formant offsets)
        "vowel_prior": rng.dirichlet(np.full(len(_VOWELS), 0.7)).tolist(),
        "vowel_shift": rng.normal(1.0, 0.06, (len(_VOWELS), 3)).tolist(),
    }


def _channel_params(rng, n_rirs):
    """Draw one session channel (room, microphone, noise, gain)."""
    n_eq = int(rng.integers(2, 5))
    return {
        "rir": int(rng.integers(n_rirs)),
        "direct_gain": float(rng.uniform(0.3, 1.5)),
        "low_hz": float(np.exp(rng.uniform(np.log(60), np.log(400)))),
        "high_hz": float(rng.uniform(3000, 7600)),
        "eq": [
            [
                float(np.exp(rng.uniform(np.log(150), np.log(6000)))),
                float(rng.uniform(-8, 8)),
                float(rng.uniform(0.6, 2.5)),
            ]
            for _ in range(n_eq)
        ],
        "noise": ["colored", "hum", "babble"][int(rng.integers(3))],
        "alpha": float(rng.uniform(0.0, 2.0)),
        "snr": float(rng.uniform(5, 25)),
        "gain_db": float(rng.uniform(-10, 4)),
        "seed": int(rng.integers(2**31)),
    }


def _plan(cfg):
    """Return the deterministic list of speakers with sessions and utterances."""
    root = np.random.SeedSequence([cfg.seed, 1])
    n_spk = cfg.n_train_speakers + cfg.n_test_speakers
    rng = np.random.default_rng(root.spawn(1)[0])
    langs = np.array(list(cfg.languages) * (n_spk // len(cfg.languages) + 1))[:n_spk]
    langs = rng.permutation(langs)
    genders = rng.permutation(np.array(["m", "f"] * (n_spk // 2 + 1))[:n_spk])
    speakers = []
    for i, child in enumerate(root.spawn(n_spk + 1)[1:]):
        srng = np.random.default_rng(child)
        train = i < cfg.n_train_speakers
        n_sess = cfg.train_sessions if train else cfg.test_sessions
        n_utt = cfg.train_utts_per_session if train else cfg.test_utts_per_session
        voice = _voice_params(srng, str(genders[i]), str(langs[i]))
        used = set()
        rirs = srng.permutation(_N_CHANNEL_RIRS)
        sessions = []
        for s in range(n_sess):
            channel = _channel_params(srng, _N_CHANNEL_RIRS)
            channel["rir"] = int(rirs[s % _N_CHANNEL_RIRS])
            utts = [_utt_params(srng, cfg, voice) for _ in range(n_utt)]
            sessions.append(
                {"id": _session_id(srng, used), "channel": channel, "utts": utts}
            )
        speakers.append(
            {
                "id": f"id{10001 + i}",
                "set": "train" if train else "test",
                "voice": voice,
                "sessions": sessions,
            }
        )
    return speakers


def _utt_params(rng, cfg, voice):
    duration = rng.uniform(cfg.min_duration, cfg.max_duration)
    rate = voice["rate"] * rng.uniform(0.92, 1.08)
    n_words = max(2, int(round(duration * rate / 60.0 * 0.95)))
    return {
        "text": make_text(rng, voice["language"], n_words),
        "duration": float(duration),
        "rate": float(rate),
        "pitch": int(np.clip(round(rng.normal(50, 6)), 30, 70)),
        "range": int(np.clip(round(rng.normal(50, 10)), 25, 80)),
        "lead": float(rng.uniform(0.05, 0.25)),
        "seed": int(rng.integers(2**31)),
    }


# ------------------------------------------------------------------ speech synthesis

# (F1, F2, F3) in Hz of a neutral adult male vocal tract
_VOWELS = np.array(
    [
        [730, 1090, 2440],
        [530, 1840, 2480],
        [270, 2290, 3010],
        [570, 840, 2410],
        [300, 870, 2240],
        [660, 1720, 2410],
        [490, 1350, 1690],
        [520, 1190, 2390],
        [390, 1990, 2550],
    ],
    dtype=float,
)


def _resonator(freq, bw, sr):
    r = np.exp(-np.pi * bw / sr)
    theta = 2 * np.pi * freq / sr
    a = [1.0, -2 * r * np.cos(theta), r * r]
    b = [1.0 - r]
    return b, a


def numpy_speech(voice, utt, sr):
    """Source-filter speech: glottal pulses through speaker-specific formants.

    Arguments
    ---------
    voice : dict
        Speaker voice parameters (pitch range, formant scales, rate, breath, tilt).
    utt : dict
        Utterance parameters (text length, rate, pitch jitter, seed).
    sr : int
        Sampling rate in Hz.

    Returns
    -------
    numpy.ndarray
        ``(L,)`` float32 waveform.
    """
    rng = np.random.default_rng(utt["seed"])
    n_syll = max(3, int(len(utt["text"].split()) * 1.5))
    syll_rate = utt["rate"] / 60.0 * 1.5  # syllables per second
    segments = []
    for k in range(n_syll):
        kind = rng.choice(4, p=[0.2, 0.15, 0.1, 0.55])
        dur = rng.uniform(0.6, 1.4) / syll_rate
        if kind == 0:
            segments.append(("fric", dur * 0.35))
        elif kind == 1:
            segments.append(("nasal", dur * 0.3))
        elif kind == 2 and k > 0:
            segments.append(("pause", dur * 0.5))
        segments.append(("vowel", dur * 0.6))
    total = int(sum(d for _, d in segments) * sr) + sr // 10
    # pitch contour: declination, slow wander and per-utterance jitter
    low, high = voice["pitch"]
    f0_mean = (low + (high - low) * 0.35) * (1 + (utt["pitch"] - 50) / 250)
    t = np.arange(total) / sr
    wander = np.interp(
        t,
        np.linspace(0, t[-1], 8),
        rng.normal(0, 0.08 * utt["range"] / 50, 8),
    )
    f0 = f0_mean * (1.1 - 0.2 * t / max(t[-1], 1e-3)) * np.exp(wander)
    phase = np.cumsum(f0 / sr)
    pulses = np.diff(np.floor(phase), prepend=0.0)
    a = voice["tilt"]
    source = signal.lfilter([1.0], [1.0, -2 * a, a * a], pulses) * (1 - a) ** 2
    source = source / (np.abs(source).max() + 1e-9)
    source += rng.normal(0, 0.02 + 0.02 * voice["breath"], total)
    out = np.zeros(total)
    pos = 0
    scales = np.asarray(voice["formants"][:4])
    prior = np.asarray(voice["vowel_prior"]) / np.sum(voice["vowel_prior"])
    shift = np.asarray(voice["vowel_shift"])
    for kind, dur in segments:
        n = max(int(dur * sr), 32)
        fade = min(n // 4, int(0.015 * sr))
        end = min(pos + n + fade, total)
        if kind == "pause":
            pos += n
            continue
        if kind == "fric":
            excite = rng.normal(0, 0.3, end - pos)
            lo = min(rng.uniform(2000, 4000) * scales[2], 0.4 * sr)
            sos = signal.butter(2, [lo, 0.45 * sr], "bandpass", fs=sr, output="sos")
            seg = signal.sosfilt(sos, excite)
        else:
            if kind == "nasal":
                formants = np.array([250.0, 1100.0, 2300.0])
                gain = 0.3
            else:
                v = rng.choice(len(_VOWELS), p=prior)
                formants = _VOWELS[v] * shift[v] * rng.normal(1, 0.03)
                gain = 1.0
            formants = np.append(formants, 3500.0) * scales
            seg = source[pos:end]
            for freq, bw in zip(formants, (80, 100, 140, 200)):
                b, a_ = _resonator(min(freq, 0.45 * sr), bw, sr)
                seg = signal.lfilter(b, a_, seg)
            seg = gain * seg
        env = np.ones(end - pos)
        ramp = np.hanning(2 * fade + 2)[1 : fade + 1] if fade > 0 else []
        if fade > 0:
            env[:fade] = ramp
            env[-fade:] = ramp[::-1]
        out[pos:end] += seg * env
        pos += n
    return (out / (np.abs(out).max() + 1e-9) * 0.7).astype(np.float32)


class _Speaker:
    """Renders the clean speech of one speaker (espeak or numpy backend)."""

    def __init__(self, voice, name, backend, sr, data_dir):
        self.voice, self.name, self.backend, self.sr = voice, name, backend, sr
        self.synth = None
        if backend == "espeak":
            from sslsv_sb.data import espeak

            self.synth = espeak.EspeakSynth(data_dir, private=True)
            self.synth.write_variant(
                name,
                espeak.variant_text(
                    name,
                    gender="female" if voice["gender"] == "f" else "male",
                    pitch=voice["pitch"],
                    formants=[100 * f for f in voice["formants"]],
                    heights=voice["heights"],
                    breath=voice["breath"],
                    roughness=voice["roughness"],
                    flutter=voice["flutter"],
                ),
            )

    def close(self):
        if self.synth is not None:
            self.synth.remove_variant(self.name)
            self.synth.close()

    def speak(self, utt):
        """Return clean speech ``(L,)`` at ``self.sr`` with silences trimmed."""
        if self.backend == "numpy":
            wav = numpy_speech(self.voice, utt, self.sr)
        else:
            wav = self.synth.synth(
                utt["text"],
                voice=f"{self.voice['language']}+{self.name}",
                rate=int(utt["rate"]),
                pitch=utt["pitch"],
                pitch_range=utt["range"],
                seed=utt["seed"],
            )
            if self.synth.sample_rate != self.sr:
                g = np.gcd(self.sr, self.synth.sample_rate)
                wav = signal.resample_poly(
                    wav, self.sr // g, self.synth.sample_rate // g
                )
        active = np.flatnonzero(np.abs(wav) > 1e-3)
        if active.size == 0:
            raise SSLSVError(f"speech synthesis produced silence for {utt['text']!r}")
        return np.asarray(wav[active[0] : active[-1] + 1], dtype=np.float64)


# ------------------------------------------------------------------------ channels


def _colored_noise(rng, n, alpha):
    """Unit-variance ``(n,)`` noise with a ``1/f**alpha`` power spectrum."""
    m = sp_fft.next_fast_len(n, real=True)
    spec = sp_fft.rfft(rng.normal(size=m))
    freqs = np.arange(spec.size, dtype=float)
    freqs[0] = 1.0
    noise = sp_fft.irfft(spec / freqs ** (alpha / 2), m)[:n]
    return noise / (noise.std() + 1e-12)


def _babble(rng, n, sr, n_talkers=None):
    """Speech-shaped noise with syllabic amplitude modulation (babble-like)."""
    n_talkers = n_talkers or int(rng.integers(3, 7))
    m = sp_fft.next_fast_len(n, real=True)
    freqs = sp_fft.rfftfreq(m, 1.0 / sr)
    freqs[0] = 1.0
    shape = 1 / (1 + (250 / freqs) ** 4) / (1 + (freqs / 3000) ** 2)
    # one shaped noise; talkers are random circular shifts of it (cheaper than one
    # FFT per talker, and shifts of white-ish noise are nearly uncorrelated)
    x = sp_fft.irfft(sp_fft.rfft(rng.normal(size=m)) * shape, m)
    out = np.zeros(n)
    for _ in range(n_talkers):
        rate = rng.uniform(3, 6)
        knots = max(int(n / sr * rate) + 2, 2)
        env = np.interp(
            np.arange(n), np.linspace(0, n, knots), rng.uniform(0, 1, knots) ** 2
        )
        out += np.roll(x, int(rng.integers(m)))[:n] * env
    return out / (out.std() + 1e-12)


def _hum(rng, n, sr):
    t = np.arange(n) / sr
    f = 50.0 if rng.random() < 0.5 else 60.0
    out = sum(
        rng.uniform(0.1, 1.0) / k * np.sin(2 * np.pi * f * k * t + rng.uniform(0, 6.3))
        for k in range(1, 8)
    )
    out = out + 0.3 * _colored_noise(rng, n, 1.0)
    return out / (out.std() + 1e-12)


def _peaking(freq, gain_db, q, sr):
    """RBJ peaking EQ biquad as a second-order section."""
    amp = 10 ** (gain_db / 40)
    w0 = 2 * np.pi * min(freq, 0.45 * sr) / sr
    alpha = np.sin(w0) / (2 * q)
    b = [1 + alpha * amp, -2 * np.cos(w0), 1 - alpha * amp]
    a = [1 + alpha / amp, -2 * np.cos(w0), 1 - alpha / amp]
    return np.concatenate([np.array(b) / a[0], np.array(a) / a[0]])


def _mic_filter(channel, sr):
    high = min(channel["high_hz"], 0.475 * sr)
    sos = [signal.butter(3, [channel["low_hz"], high], "bandpass", fs=sr, output="sos")]
    sos += [_peaking(f, g, q, sr)[None] for f, g, q in channel["eq"]]
    return np.concatenate(sos)


def apply_channel(speech, channel, rir, sr, rng):
    """Pass clean speech through a session channel.

    Arguments
    ---------
    speech : numpy.ndarray
        ``(L,)`` clean speech (any level).
    channel : dict
        Session channel parameters (see ``_channel_params``).
    rir : numpy.ndarray
        ``(R,)`` room impulse response, direct path peak at 1.
    sr : int
        Sampling rate in Hz.
    rng : numpy.random.Generator
        Per-utterance generator (noise samples).

    Returns
    -------
    numpy.ndarray
        ``(L,)`` float waveform in [-1, 1].
    """
    n = speech.size
    speech = speech / (np.sqrt(np.mean(speech**2)) + 1e-12) * 0.07
    direct = np.argmax(np.abs(rir))
    wet = rir.copy()
    wet[direct] *= channel["direct_gain"]
    rev = signal.fftconvolve(speech, wet)[direct : direct + n]
    kind = channel["noise"]
    if kind == "colored":
        noise = _colored_noise(rng, n, channel["alpha"])
    elif kind == "hum":
        noise = _hum(rng, n, sr)
    else:
        noise = _babble(rng, n, sr)
    snr = channel["snr"] + rng.normal(0, 1.0)
    p_speech = np.mean(rev**2)
    noisy = rev + noise * np.sqrt(p_speech / 10 ** (snr / 10))
    out = signal.sosfilt(_mic_filter(channel, sr), noisy)
    out = out / (np.sqrt(np.mean(out**2)) + 1e-12) * 0.07
    out = out * 10 ** (channel["gain_db"] / 20)
    out = out + rng.normal(0, 1e-3, n)  # -60 dBFS floor
    return np.clip(out, -0.99, 0.99)


def _room_rir(rng, sr, dims_range, rt60_range, max_order=12):
    """Simulate one shoebox room response (pyroomacoustics, capped order + tail).

    Returns ``(R,)`` float32 with the direct path peak at 1.
    """
    dims = np.array([rng.uniform(lo, hi) for lo, hi in dims_range])
    rt60 = rng.uniform(*rt60_range)
    src = np.array([rng.uniform(0.5, d - 0.5) for d in dims])
    src[2] = rng.uniform(1.0, min(2.0, dims[2] - 0.3))
    mic = np.array([rng.uniform(0.5, d - 0.5) for d in dims])
    mic[2] = rng.uniform(0.7, min(1.8, dims[2] - 0.3))
    try:
        import pyroomacoustics as pra

        absorption, order = pra.inverse_sabine(rt60, dims)
        room = pra.ShoeBox(
            dims,
            fs=sr,
            materials=pra.Material(float(np.clip(absorption, 0.01, 0.99))),
            max_order=int(min(order, max_order)),
        )
        room.add_source(src)
        room.add_microphone(mic)
        room.compute_rir()
        early = np.asarray(room.rir[0][0], dtype=float)
    except Exception:  # fallback: direct path + a few random reflections
        dist = np.linalg.norm(src - mic)
        early = np.zeros(int(0.06 * sr) + int(dist / 343 * sr) + 1)
        early[int(dist / 343 * sr)] = 1.0 / max(dist, 0.3)
        idx = rng.integers(int(dist / 343 * sr) + 1, early.size, 12)
        early[idx] += rng.normal(0, 0.5 / max(dist, 0.3), 12)
    direct = int(np.argmax(np.abs(early)))
    early = early / np.abs(early[direct])
    # diffuse late tail (the capped image-source model truncates it)
    length = direct + int(rt60 * sr)
    rir = np.zeros(max(length, early.size))
    rir[: early.size] = early
    t = np.arange(rir.size - direct) / sr
    start = int(0.02 * sr)
    ref = np.sqrt(np.mean(early[direct + start : direct + 2 * start] ** 2) + 1e-8)
    tail = rng.normal(0, ref, t.size) * np.exp(-6.9 * (t - 0.02) / rt60)
    tail[:start] = 0
    tail[start : 2 * start] *= np.linspace(0, 1, start)
    rir[direct:] += tail
    return rir.astype(np.float32)


_CHANNEL_ROOMS = (((3.0, 6.5), (2.5, 5.0), (2.4, 3.2)), (0.15, 0.55))
_BANK_ROOMS = (((6.5, 12.0), (5.0, 9.0), (3.2, 5.0)), (0.55, 1.2))


def _channel_rir_bank(cfg):
    """Simulate the bank of room responses the session channels draw from."""
    rng = np.random.default_rng([cfg.seed, 2])
    return [
        _room_rir(rng, cfg.sample_rate, *_CHANNEL_ROOMS) for _ in range(_N_CHANNEL_RIRS)
    ]


# ------------------------------------------------------------------------- workers


def _write_wav(path, wav, sr):
    """Write PCM16 wav atomically (temporary file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    sf.write(tmp, np.asarray(wav, dtype=np.float32), sr, subtype="PCM_16", format="WAV")
    os.replace(tmp, path)


def _fit_duration(speech, utt, sr, min_dur, max_dur):
    lead = int(utt["lead"] * sr)
    n_max, n_min = int(max_dur * sr), int(min_dur * sr)
    speech = speech[: max(n_max - lead, 1)]
    if speech.size + lead >= n_max:
        fade = min(int(0.05 * sr), speech.size)
        speech = speech.copy()
        speech[-fade:] *= np.linspace(1, 0, fade)
    total = min(max(lead + speech.size + int(0.1 * sr), n_min), n_max)
    out = np.zeros(total)
    out[lead : lead + speech.size] = speech[: total - lead]
    return out


def _render_speaker(task):
    """Render all utterances of one speaker; returns ``[(rel_path, n_samples)]``."""
    spk, cfg, backend, out, rirs, espeak_dir = task
    sr = cfg["sample_rate"]
    speaker = _Speaker(spk["voice"], spk["id"], backend, sr, espeak_dir)
    rows = []
    try:
        for sess in spk["sessions"]:
            channel = sess["channel"]
            for k, utt in enumerate(sess["utts"], start=1):
                rng = np.random.default_rng([utt["seed"], 7])
                speech = speaker.speak(utt)
                speech = _fit_duration(
                    speech, utt, sr, cfg["min_duration"], cfg["max_duration"]
                )
                wav = apply_channel(speech, channel, rirs[channel["rir"]], sr, rng)
                rel = f"wav/{spk['id']}/{sess['id']}/{k:05d}.wav"
                _write_wav(out / rel, wav, sr)
                rows.append((rel, wav.size))
    finally:
        speaker.close()
    return rows


def _render_bank_speech(task):
    """Render one clean multi-sentence speech file of an extra speaker."""
    idx, voice, utts, cfg, backend, out, length, espeak_dir = task
    sr = cfg["sample_rate"]
    speaker = _Speaker(voice, f"x{idx:05d}", backend, sr, espeak_dir)
    try:
        parts, total = [], 0
        for utt in utts:
            speech = speaker.speak(utt)
            pause = np.zeros(int(utt["lead"] * sr))
            parts += [speech / (np.abs(speech).max() + 1e-9) * 0.5, pause]
            total += speech.size + pause.size
            if total >= length:
                break
    finally:
        speaker.close()
    wav = np.concatenate(parts)[:length]
    wav = np.pad(wav, (0, length - wav.size))
    wav = wav + np.random.default_rng(utts[0]["seed"]).normal(0, 3e-4, wav.size)
    rel = f"noise/speech/speech-{idx + 1:04d}.wav"
    _write_wav(out / rel, wav, sr)
    return [(rel, wav.size)]


def _bank_noise(rng, n, sr):
    """Environmental-like noise (different generators from the corpus channels)."""
    kind = int(rng.integers(4))
    t = np.arange(n) / sr
    if kind == 0:  # fan / engine: band-passed noise + tonal components
        lo = rng.uniform(80, 600)
        sos = signal.butter(
            2, [lo, lo * rng.uniform(3, 12)], "bandpass", fs=sr, output="sos"
        )
        x = signal.sosfilt(sos, rng.normal(size=n))
        x /= x.std() + 1e-12
        f = rng.uniform(90, 400)
        x += rng.uniform(0.2, 1.0) * np.sin(2 * np.pi * f * t)
    elif kind == 1:  # rain / crackle: sparse filtered impulses over hiss
        x = rng.normal(size=n) * (rng.random(n) < rng.uniform(0.002, 0.02))
        x = signal.lfilter([1, -0.9], [1], x) + 0.05 * rng.normal(size=n)
    elif kind == 2:  # street: pink noise with slow amplitude changes and honks
        x = _colored_noise(rng, n, 1.0) * (
            1 + 0.8 * np.sin(2 * np.pi * rng.uniform(0.05, 0.4) * t)
        )
        for _ in range(int(rng.integers(1, 4))):
            s, d = int(rng.integers(n)), int(rng.uniform(0.2, 0.8) * sr)
            seg = slice(s, min(s + d, n))
            f = rng.uniform(300, 900)
            x[seg] += 2 * np.sign(np.sin(2 * np.pi * f * t[seg]))
    else:  # keyboard / knocks: short decaying clicks
        x = 0.02 * rng.normal(size=n)
        for s in rng.integers(0, n, int(rng.integers(10, 60))):
            d = int(rng.uniform(0.005, 0.05) * sr)
            seg = slice(s, min(s + d, n))
            x[seg] += rng.normal(0, 1, seg.stop - s) * np.exp(
                -np.arange(seg.stop - s) / (d / 5)
            )
    return x / (np.abs(x).max() + 1e-9) * rng.uniform(0.2, 0.8)


def _bank_music(rng, n, sr):
    """Synthetic music: chords and melody on a random scale plus a drum pattern."""
    t = np.arange(n) / sr
    root = rng.uniform(110, 260)
    scale = np.array([0, 2, 4, 5, 7, 9, 11, 12])
    if rng.random() < 0.5:
        scale = np.array([0, 2, 3, 5, 7, 8, 10, 12])
    beat = 60.0 / rng.uniform(70, 150)
    x = np.zeros(n)
    n_harm = int(rng.integers(2, 7))
    pos = 0.0
    while pos < t[-1]:
        dur = beat * rng.choice([0.5, 1, 2])
        s, e = int(pos * sr), min(int((pos + dur) * sr), n)
        tt = t[: e - s]
        env = np.exp(-tt / (dur * rng.uniform(0.3, 1.0))) * np.minimum(1, tt / 0.01)
        notes = root * 2 ** (scale[rng.integers(len(scale), size=3)] / 12)
        for j, f in enumerate(notes):
            for h in range(1, n_harm + 1):
                if f * h < 0.45 * sr:
                    x[s:e] += env * np.sin(2 * np.pi * f * h * tt) / h / (1 + j)
        pos += dur
    if rng.random() < 0.7:  # drums
        for k in range(int(t[-1] / beat)):
            s = int(k * beat * sr)
            d = min(int(0.15 * sr), n - s)
            tt = t[:d]
            kick = np.sin(2 * np.pi * (60 + 80 * np.exp(-tt * 30)) * tt)
            x[s : s + d] += 1.5 * kick * np.exp(-tt * 25)
            h = int((k + 0.5) * beat * sr)
            if h + d < n:
                x[h : h + d] += 0.4 * rng.normal(size=d) * np.exp(-tt * 60)
    return x / (np.abs(x).max() + 1e-9) * rng.uniform(0.3, 0.8)


def _render_bank_files(task):
    """Render ``noise/noise``, ``noise/music`` or ``rirs`` bank files."""
    category, cfg, out = task
    sr, n_files = cfg["sample_rate"], cfg["n_noise_files"]
    rows = []
    if category == "rirs":
        rng = np.random.default_rng([cfg["seed"], 3])
        for i in range(cfg["n_rirs"]):
            rir = _room_rir(rng, sr, *_BANK_ROOMS, max_order=10)
            rel = f"rirs/rir-{i + 1:04d}.wav"
            _write_wav(out / rel, rir / np.abs(rir).max() * 0.9, sr)
            rows.append((rel, rir.size))
        return rows
    gen = _bank_noise if category == "noise" else _bank_music
    rng = np.random.default_rng([cfg["seed"], 4 if category == "noise" else 5])
    for i in range(n_files):
        n = int(rng.uniform(5.0, 8.0) * sr)
        wav = gen(rng, n, sr) + rng.normal(0, 3e-4, n)
        rel = f"noise/{category}/{category}-{i + 1:04d}.wav"
        _write_wav(out / rel, np.clip(wav, -0.99, 0.99), sr)
        rows.append((rel, n))
    return rows


def _run_task(task):
    kind, payload = task
    fn = {
        "speaker": _render_speaker,
        "bank_speech": _render_bank_speech,
        "bank_files": _render_bank_files,
    }[kind]
    return fn(payload)


def _probe_espeak(_=None):
    from sslsv_sb.data.espeak import espeak_available

    return espeak_available()


# --------------------------------------------------------------------------- lists


def make_trials(test_rows, nontarget_ratio, seed):
    """Build cross-session target and sampled non-target trials.

    Arguments
    ---------
    test_rows : list of tuple
        ``(file, speaker, session)`` of every test utterance.
    nontarget_ratio : float
        Non-target trials per target trial (capped by the available pairs).
    seed : int

    Returns
    -------
    list of tuple
        ``(label, enrol, test)`` with label 1 (target) or 0; no duplicate pairs.
    """
    rng = np.random.default_rng([seed, 6])
    files = [r[0] for r in test_rows]
    spk = np.array([r[1] for r in test_rows])
    sess = np.array([f"{r[1]}/{r[2]}" for r in test_rows])
    targets = [
        (1, files[i], files[j])
        for i, j in itertools.combinations(range(len(files)), 2)
        if spk[i] == spk[j] and sess[i] != sess[j]
    ]
    n = len(files)
    same_spk = sum(
        int(c) * (int(c) - 1) // 2 for c in np.unique(spk, return_counts=True)[1]
    )
    available = n * (n - 1) // 2 - same_spk
    want = min(int(round(len(targets) * nontarget_ratio)), available)
    chosen = set()
    if want > available // 2:
        pairs = [
            (i, j) for i, j in itertools.combinations(range(n), 2) if spk[i] != spk[j]
        ]
        idx = rng.choice(len(pairs), size=want, replace=False)
        chosen = [pairs[k] for k in sorted(idx)]
    else:
        order = []
        while len(order) < want:
            i, j = rng.integers(n, size=2)
            if spk[i] == spk[j]:
                continue
            key = (min(i, j), max(i, j))
            if key not in chosen:
                chosen.add(key)
                order.append(key if rng.random() < 0.5 else (key[1], key[0]))
        chosen = order
    nontargets = [(0, files[i], files[j]) for i, j in chosen]
    trials = targets + nontargets
    perm = rng.permutation(len(trials))
    return [trials[k] for k in perm]


def _write_text_atomic(path, text):
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _csv_text(header, rows):
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


# ----------------------------------------------------------------------- public API


def default_data_folder():
    """Return the default corpus folder.

    ``$SSLSV_SB_DATA`` if set, else ``<repo root>/data/embedded`` (for a non-editable
    install without a repository: ``~/.cache/sslsv_sb/embedded``).

    Returns
    -------
    pathlib.Path
    """
    env = os.environ.get("SSLSV_SB_DATA")
    if env:
        return pathlib.Path(env).expanduser()
    root = pathlib.Path(__file__).resolve().parents[2]
    if (root / "pyproject.toml").is_file():
        return root / "data" / "embedded"
    return pathlib.Path.home() / ".cache" / "sslsv_sb" / "embedded"


def _config_diff(old, new):
    keys = sorted(set(old) | set(new))
    return ", ".join(
        f"{k}: {old.get(k)!r} -> {new.get(k)!r}"
        for k in keys
        if old.get(k) != new.get(k)
    )


def _clean(out):
    for name in _OUTPUT_NAMES:
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


@contextlib.contextmanager
def _folder_lock(out):
    import fcntl

    with open(out / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _log(verbose, msg):
    if verbose:
        print(f"[sslsv_sb.corpus] {msg}", flush=True)


def generate_corpus(out_dir, config=None, workers=2, overwrite=False, verbose=True):
    """Render the synthetic corpus into ``out_dir`` (or return the cached one).

    Arguments
    ---------
    out_dir : str or pathlib.Path
        Corpus folder (created if missing).
    config : CorpusConfig, optional
        Knobs (the demo size if None).
    workers : int
        Worker processes (the output does not depend on it).
    overwrite : bool
        Replace a corpus with a different configuration (or unknown content
        left by another tool in the generated sub-folders) instead of raising.
    verbose : bool
        Print progress.

    Returns
    -------
    dict
        The manifest (also stored as ``corpus.json``).

    Raises
    ------
    SSLSVError
        If ``out_dir`` holds a corpus with another configuration (or is a non-empty
        folder that is not a corpus) and ``overwrite`` is False, or if
        ``backend="espeak"`` and espeak-ng cannot be loaded.
    """
    cfg = config if config is not None else CorpusConfig()
    if not isinstance(cfg, CorpusConfig):
        raise SSLSVError(f"config must be a CorpusConfig, got {type(cfg).__name__}")
    cfg.validate()
    out = pathlib.Path(out_dir).expanduser().resolve()
    manifest_path = out / "corpus.json"
    want = cfg.to_dict()
    cached = _read_manifest(manifest_path)
    if cached is not None and _matches(cached, want):
        return cached
    if out.exists() and not out.is_dir():
        raise SSLSVError(f"corpus folder {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    with _folder_lock(out):
        cached = _read_manifest(manifest_path)  # another process may have finished
        if cached is not None and _matches(cached, want):
            return cached
        _prepare_folder(out, manifest_path, cached, want, overwrite)
        return _generate(out, cfg, workers, verbose)


def _read_manifest(path):
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _matches(manifest, want):
    """True if a stored manifest satisfies the wanted configuration.

    ``backend="auto"`` accepts whatever backend the stored corpus used, and an
    explicit backend accepts an ``"auto"`` corpus that resolved to it.
    """
    have = dict(manifest.get("config") or {})
    if manifest.get("generator_version") != GENERATOR_VERSION:
        return False
    used = manifest.get("backend_used")
    if want.get("backend") in ("auto", used) and have.get("backend") in ("auto", used):
        have["backend"] = want.get("backend")
    return have == want


def _prepare_folder(out, manifest_path, cached, want, overwrite):
    if cached is not None:
        if not overwrite:
            old = cached.get("config") or {}
            diff = _config_diff(old, want) or (
                f"generator version {cached.get('generator_version')!r} -> "
                f"{GENERATOR_VERSION!r}"
            )
            raise SSLSVError(
                f"corpus folder {out} already holds a different corpus "
                f"({manifest_path.name}: {diff}); use another folder or "
                "overwrite=True (--overwrite)"
            )
        _clean(out)
        return
    content = [p for p in out.iterdir() if p.name != ".lock"]
    if not content:
        return
    if (out / ".incomplete").exists() or overwrite:
        _clean(out)  # interrupted run: regenerate from scratch
        return
    raise SSLSVError(
        f"corpus folder {out} is not empty and has no corpus.json "
        f"(found {content[0].name!r}); use an empty folder or overwrite=True "
        "(--overwrite)"
    )


def _generate(out, cfg, workers, verbose):
    start = time.time()
    (out / ".incomplete").write_text("generation in progress\n")
    cache = out / ".cache"
    cache.mkdir(exist_ok=True)
    cfg_dict = cfg.to_dict()
    speakers = _plan(cfg)
    rirs = _channel_rir_bank(cfg)
    # forkserver/spawn, not fork: forking a process that already runs torch/OpenMP
    # threads (a test session, a recipe) can leave a child blocked on an inherited
    # lock (seen as a hang in futex_do_wait).
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context(
        "forkserver" if "forkserver" in methods else "spawn"
    )
    # every task loads a private espeak-ng instance (clean internal state), so the
    # output does not depend on which worker ran what before
    with ctx.Pool(max(1, int(workers))) as pool:
        backend = cfg.backend
        if backend != "numpy":
            ok = pool.apply(_probe_espeak)
            if not ok and backend == "espeak":
                raise SSLSVError(
                    "backend='espeak' but espeak-ng (espeakng-loader wheel) could not "
                    "be loaded; use backend='numpy' or 'auto'"
                )
            if not ok:
                warnings.warn(
                    "espeak-ng could not be loaded: the corpus uses the numpy "
                    "source-filter speech fallback",
                    stacklevel=2,
                )
            backend = "espeak" if ok else "numpy"
        _log(verbose, f"rendering {len(speakers)} speakers into {out} ({backend})")
        espeak_dir = None
        if backend == "espeak":
            from sslsv_sb.data.espeak import make_data_folder

            # one private data folder; each task writes (then removes) the variant
            # file of its speaker, so the folder never holds more than `workers`
            espeak_dir = make_data_folder(cache)
        tasks = [
            ("speaker", (s, cfg_dict, backend, out, rirs, espeak_dir)) for s in speakers
        ]
        tasks += _bank_speech_tasks(cfg, backend, out, espeak_dir)
        if cfg.n_noise_files > 0:
            tasks += [("bank_files", (c, cfg_dict, out)) for c in ("noise", "music")]
        if cfg.n_rirs > 0:
            tasks += [("bank_files", ("rirs", cfg_dict, out))]
        lengths = {}
        for k, rows in enumerate(pool.imap_unordered(_run_task, tasks), start=1):
            lengths.update(rows)
            if verbose and (k % 20 == 0 or k == len(tasks)):
                _log(verbose, f"{k}/{len(tasks)} tasks done")
    manifest = _write_lists(out, cfg, speakers, lengths)
    manifest.update(
        {
            "backend_used": backend,
            "seconds_taken": round(time.time() - start, 2),
            "workers": int(workers),
        }
    )
    shutil.rmtree(cache, ignore_errors=True)
    _write_text_atomic(out / "corpus.json", json.dumps(manifest, indent=2) + "\n")
    (out / ".incomplete").unlink()
    _log(
        verbose,
        f"done in {manifest['seconds_taken']:.1f} s: {manifest['counts']['utterances']}"
        f" utterances, {manifest['total_duration_hours'] * 60:.1f} min of audio",
    )
    return manifest


def _bank_speech_tasks(cfg, backend, out, espeak_dir):
    if cfg.n_noise_files <= 0:
        return []
    root = np.random.SeedSequence([cfg.seed, 8])
    cfg_dict = cfg.to_dict()
    tasks = []
    langs = list(cfg.languages)
    for i, child in enumerate(root.spawn(cfg.n_noise_files)):
        rng = np.random.default_rng(child)
        voice = _voice_params(
            rng, "m" if rng.random() < 0.5 else "f", langs[i % len(langs)]
        )
        length = int(rng.uniform(5.0, 8.0) * cfg.sample_rate)
        bank_cfg = dataclasses.replace(cfg, min_duration=2.0, max_duration=4.0)
        utts = [_utt_params(rng, bank_cfg, voice) for _ in range(4)]
        tasks.append(
            (
                "bank_speech",
                (i, voice, utts, cfg_dict, backend, out, length, espeak_dir),
            )
        )
    return tasks


def _write_lists(out, cfg, speakers, lengths):
    sr = cfg.sample_rate
    train_rows, test_rows, sb_rows = [], [], []
    for spk in speakers:
        for sess in spk["sessions"]:
            for k in range(1, len(sess["utts"]) + 1):
                rel = f"wav/{spk['id']}/{sess['id']}/{k:05d}.wav"
                row = [rel, spk["id"], sess["id"], spk["voice"]["language"]]
                row.append(spk["voice"]["gender"])
                if spk["set"] == "train":
                    train_rows.append(row)
                    n = lengths[rel]
                    uid = f"{spk['id']}_{sess['id']}_{k:05d}"
                    sb_rows.append([uid, f"{n / sr:.4f}", rel, 0, n, spk["id"]])
                else:
                    test_rows.append(row)
    trials = make_trials(
        [(r[0], r[1], r[2]) for r in test_rows], cfg.nontarget_ratio, cfg.seed
    )
    _write_text_atomic(out / "train.csv", _csv_text(_LIST_HEADER, train_rows))
    _write_text_atomic(out / "test.csv", _csv_text(_LIST_HEADER, test_rows))
    _write_text_atomic(
        out / "train_sb.csv",
        _csv_text(["ID", "duration", "wav", "start", "stop", "spk_id"], sb_rows),
    )
    _write_text_atomic(
        out / "trials.txt", "".join(f"{lab} {a} {b}\n" for lab, a, b in trials)
    )
    utt_samples = [lengths[r[0]] for r in train_rows + test_rows]
    n_target = sum(t[0] for t in trials)
    digest = hashlib.sha256()
    for rel in sorted(lengths):
        digest.update(f"{rel}:{lengths[rel]}\n".encode())
    return {
        "generator_version": GENERATOR_VERSION,
        "config": cfg.to_dict(),
        "counts": {
            "train_speakers": cfg.n_train_speakers,
            "test_speakers": cfg.n_test_speakers,
            "train_utterances": len(train_rows),
            "test_utterances": len(test_rows),
            "utterances": len(utt_samples),
            "sessions": sum(len(s["sessions"]) for s in speakers),
            "target_trials": n_target,
            "nontarget_trials": len(trials) - n_target,
            "noise_files": sum(1 for r in lengths if r.startswith("noise/")),
            "rirs": sum(1 for r in lengths if r.startswith("rirs/")),
        },
        "total_duration_hours": round(sum(utt_samples) / sr / 3600, 4),
        "files": {
            "train": "train.csv",
            "train_sb": "train_sb.csv",
            "test": "test.csv",
            "trials": "trials.txt",
            "noise": "noise",
            "rirs": "rirs",
        },
        "layout_digest": digest.hexdigest()[:16],
    }


def ensure_corpus(out_dir=None, preset="demo", workers=2, verbose=True, **overrides):
    """Generate the corpus if missing and return its folder.

    Arguments
    ---------
    out_dir : str or pathlib.Path, optional
        Corpus folder (:func:`default_data_folder` if None).
    preset : str
        Name in :data:`PRESETS` (``"demo"`` or ``"tiny"``).
    workers : int
        Worker processes.
    verbose : bool
        Print progress when generating.
    **overrides
        :class:`CorpusConfig` fields replacing the preset's values
        (``overwrite=True`` is passed to :func:`generate_corpus`).

    Returns
    -------
    pathlib.Path
        The corpus folder.
    """
    if preset not in PRESETS:
        raise SSLSVError(
            f"unknown corpus preset {preset!r} (choose from {', '.join(PRESETS)})"
        )
    overwrite = bool(overrides.pop("overwrite", False))
    fields = {f.name for f in dataclasses.fields(CorpusConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise SSLSVError(f"unknown corpus config key(s): {', '.join(unknown)}")
    cfg = dataclasses.replace(PRESETS[preset], **overrides)
    out = pathlib.Path(out_dir) if out_dir is not None else default_data_folder()
    generate_corpus(out, cfg, workers=workers, overwrite=overwrite, verbose=verbose)
    return out
