"""Augmentation banks: noise, music, extra-speaker speech and room responses.

Their generators and rooms are disjoint from those of the corpus channels.
"""

import dataclasses

import numpy as np
from scipy import signal

from sslsv_sb.data.corpus.channel import BANK_ROOMS, colored_noise, room_rir
from sslsv_sb.data.corpus.files import write_wav
from sslsv_sb.data.corpus.speakers import utterance_params, voice_params
from sslsv_sb.data.corpus.speech import SpeakerVoice


def render_bank_speech(task):
    """Render one clean multi-sentence speech file of an extra speaker."""
    idx, voice, utts, cfg, backend, out, length, espeak_dir = task
    sr = cfg["sample_rate"]
    speaker = SpeakerVoice(voice, f"x{idx:05d}", backend, sr, espeak_dir)
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
    write_wav(out / rel, wav, sr)
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
        x = colored_noise(rng, n, 1.0) * (
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


def render_bank_files(task):
    """Render ``noise/noise``, ``noise/music`` or ``rirs`` bank files."""
    category, cfg, out = task
    sr, n_files = cfg["sample_rate"], cfg["n_noise_files"]
    rows = []
    if category == "rirs":
        rng = np.random.default_rng([cfg["seed"], 3])
        for i in range(cfg["n_rirs"]):
            rir = room_rir(rng, sr, *BANK_ROOMS, max_order=10)
            rel = f"rirs/rir-{i + 1:04d}.wav"
            write_wav(out / rel, rir / np.abs(rir).max() * 0.9, sr)
            rows.append((rel, rir.size))
        return rows
    gen = _bank_noise if category == "noise" else _bank_music
    rng = np.random.default_rng([cfg["seed"], 4 if category == "noise" else 5])
    for i in range(n_files):
        n = int(rng.uniform(5.0, 8.0) * sr)
        wav = gen(rng, n, sr) + rng.normal(0, 3e-4, n)
        rel = f"noise/{category}/{category}-{i + 1:04d}.wav"
        write_wav(out / rel, np.clip(wav, -0.99, 0.99), sr)
        rows.append((rel, n))
    return rows


def bank_speech_tasks(cfg, backend, out, espeak_dir):
    """Worker tasks of the speech bank (extra speakers, disjoint from the corpus)."""
    if cfg.n_noise_files <= 0:
        return []
    root = np.random.SeedSequence([cfg.seed, 8])
    cfg_dict = cfg.to_dict()
    tasks = []
    langs = list(cfg.languages)
    for i, child in enumerate(root.spawn(cfg.n_noise_files)):
        rng = np.random.default_rng(child)
        voice = voice_params(
            rng, "m" if rng.random() < 0.5 else "f", langs[i % len(langs)]
        )
        length = int(rng.uniform(5.0, 8.0) * cfg.sample_rate)
        bank_cfg = dataclasses.replace(cfg, min_duration=2.0, max_duration=4.0)
        utts = [utterance_params(rng, bank_cfg, voice) for _ in range(4)]
        tasks.append(
            (
                "bank_speech",
                (i, voice, utts, cfg_dict, backend, out, length, espeak_dir),
            )
        )
    return tasks
