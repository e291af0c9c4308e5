"""Session channels (room, microphone, noise, gain) and simulated room responses."""

import numpy as np
from scipy import fft as sp_fft
from scipy import signal

from sslsv_sb.data.corpus.config import N_CHANNEL_RIRS


def colored_noise(rng, n, alpha):
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
    """Mains hum (50 or 60 Hz and harmonics) over pink noise, unit variance."""
    t = np.arange(n) / sr
    f = 50.0 if rng.random() < 0.5 else 60.0
    out = sum(
        rng.uniform(0.1, 1.0) / k * np.sin(2 * np.pi * f * k * t + rng.uniform(0, 6.3))
        for k in range(1, 8)
    )
    out = out + 0.3 * colored_noise(rng, n, 1.0)
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
    """Microphone band-pass and EQ of a channel as second-order sections."""
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
        noise = colored_noise(rng, n, channel["alpha"])
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


def room_rir(rng, sr, dims_range, rt60_range, max_order=12):
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
BANK_ROOMS = (((6.5, 12.0), (5.0, 9.0), (3.2, 5.0)), (0.55, 1.2))


def channel_rir_bank(cfg):
    """Simulate the bank of room responses the session channels draw from."""
    rng = np.random.default_rng([cfg.seed, 2])
    return [
        room_rir(rng, cfg.sample_rate, *_CHANNEL_ROOMS) for _ in range(N_CHANNEL_RIRS)
    ]
