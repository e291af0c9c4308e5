"""Clean speech of one synthetic speaker: espeak-ng voice or numpy source-filter."""

import numpy as np
from scipy import signal

from sslsv_sb.errors import SSLSVError

# (F1, F2, F3) in Hz of a neutral adult male vocal tract
VOWEL_FORMANTS = np.array(
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
    """Two-pole resonator ``(b, a)`` at ``freq`` Hz with bandwidth ``bw`` Hz."""
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
                v = rng.choice(len(VOWEL_FORMANTS), p=prior)
                formants = VOWEL_FORMANTS[v] * shift[v] * rng.normal(1, 0.03)
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


class SpeakerVoice:
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
        """Remove the speaker's espeak variant and release the library."""
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
