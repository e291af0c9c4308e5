"""Seeded plan of the corpus: speakers, voices, sessions, channels, utterances."""

import numpy as np

from sslsv_sb.data.corpus.config import N_CHANNEL_RIRS
from sslsv_sb.data.corpus.speech import VOWEL_FORMANTS
from sslsv_sb.data.corpus.text import make_text


def _session_id(rng, used):
    """Draw a new YouTube-like 11-character session id (not in ``used``)."""
    alphabet = np.array(
        list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    )
    while True:
        sid = "".join(alphabet[rng.integers(len(alphabet), size=11)])
        if sid not in used and sid[0] not in "-_":
            used.add(sid)
            return sid


def voice_params(rng, gender, language):
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
        "vowel_prior": rng.dirichlet(np.full(len(VOWEL_FORMANTS), 0.7)).tolist(),
        "vowel_shift": rng.normal(1.0, 0.06, (len(VOWEL_FORMANTS), 3)).tolist(),
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


def plan_speakers(cfg):
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
        voice = voice_params(srng, str(genders[i]), str(langs[i]))
        used = set()
        rirs = srng.permutation(N_CHANNEL_RIRS)
        sessions = []
        for s in range(n_sess):
            channel = _channel_params(srng, N_CHANNEL_RIRS)
            channel["rir"] = int(rirs[s % N_CHANNEL_RIRS])
            utts = [utterance_params(srng, cfg, voice) for _ in range(n_utt)]
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


def utterance_params(rng, cfg, voice):
    """Draw one utterance (text, duration, rate, prosody jitter, lead, seed)."""
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
