"""The ``mfcc_stats`` back-end: MFCC statistics, z-norm over the list, cosine."""

import os

import numpy as np
import pytest
import soundfile as sf
import torch

from sslsv_sb.errors import SSLSVError
from sslsv_sb.evaluation.metrics import verification_metrics
from sslsv_sb.evaluation.mfcc_stats import (
    MFCCStatistics,
    mfcc_stats_features,
    mfcc_stats_scores,
    znorm_features,
)
from sslsv_sb.evaluation.verification import EvalConfig, run_verification


def _reference_stats(path):
    """One file alone, SpeechBrain MFCC c1..c19 (40 mels), mean and std (ddof 0)."""
    from speechbrain.lobes.features import MFCC

    wav, _ = sf.read(path, dtype="float32")
    mfcc = MFCC(deltas=False, context=False, n_mels=40, n_mfcc=20)
    c = mfcc(torch.from_numpy(wav)[None])[0, :, 1:].double()
    return torch.cat([c.mean(0), c.std(0, correction=0)]).numpy()


def test_batched_features_ignore_padding(tmp_path):
    """Files of different lengths batched together give the one-file statistics."""
    rng = np.random.default_rng(0)
    paths = []
    for i, sec in enumerate((0.7, 1.3, 2.0)):
        p = str(tmp_path / f"u{i}.wav")
        sf.write(p, 0.1 * rng.standard_normal(int(sec * 16000)), 16000, "PCM_16")
        paths.append(p)
    feats = mfcc_stats_features(paths)
    assert feats.shape == (3, 38) and feats.dtype == np.float32
    for p, f in zip(paths, feats, strict=True):
        np.testing.assert_allclose(f, _reference_stats(p), rtol=1e-4, atol=1e-3)


def test_separates_synthetic_voices():
    """Harmonic "voices" with their own pitch and formants: the baseline ranks every
    target above every non-target; z-norm makes scores invariant to feature scale."""
    sr, rng = 16000, np.random.default_rng(1)
    t = np.arange(int(1.5 * sr)) / sr
    wavs, spk = [], []
    for s, (f0, formant) in enumerate(((110, 500), (180, 900), (240, 1500))):
        for _ in range(3):
            f = f0 * (1 + 0.02 * rng.standard_normal())
            x = sum(
                np.exp(-(((k * f) - formant) ** 2) / (2 * 300.0**2))
                * np.sin(2 * np.pi * k * f * t + rng.uniform(0, 6))
                for k in range(1, 30)
            )
            wavs.append(x + 0.01 * rng.standard_normal(len(t)))
            spk.append(s)
    feats = MFCCStatistics()(torch.tensor(np.stack(wavs), dtype=torch.float32)).numpy()
    e, te = np.triu_indices(len(spk), 1)
    labels = (np.array(spk)[e] == np.array(spk)[te]).astype(int)
    scores = mfcc_stats_scores(feats, e, te)
    assert scores[labels == 1].min() > scores[labels == 0].max()
    assert verification_metrics(scores, labels)["eer"] == 0.0
    scaled = feats * np.linspace(0.1, 10.0, feats.shape[1])
    np.testing.assert_allclose(mfcc_stats_scores(scaled, e, te), scores, atol=1e-5)
    with pytest.raises(ValueError, match="N >= 2"):
        znorm_features(feats[:1])


class _Encoder(torch.nn.Module):
    def forward(self, wavs, lengths=None):
        return torch.stack([wavs.abs().mean(1), wavs.std(1), wavs.max(1).values], 1)


def test_backend_in_the_report(tiny_corpus, tmp_path):
    """``backends=[cosine, mfcc_stats]``: a row of its own, equal to the baseline
    computed file by file, z-normalised over the list's files."""
    cfg = EvalConfig(
        trial_lists=["trials.txt"], backends=["cosine", "mfcc_stats"], plots=False
    )
    out = tmp_path / "run"
    ver = run_verification(_Encoder(), cfg, str(tiny_corpus), str(out))
    assert list(ver["lists"]["trials"]) == ["cosine", "mfcc_stats"]
    assert "mfcc_stats" in ver["meta"]["backends"]
    assert "| trained | mfcc_stats |" in (out / "verification.md").read_text()
    rows = [line.split() for line in open(tiny_corpus / "trials.txt")]
    files = sorted({f for r in rows for f in r[1:]})
    ref = np.stack([_reference_stats(os.path.join(tiny_corpus, f)) for f in files])
    z = (ref - ref.mean(0)) / ref.std(0)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    row = {f: i for i, f in enumerate(files)}
    expected = [z[row[r[1]]] @ z[row[r[2]]] for r in rows]
    with np.load(out / "scores_trained.npz") as scores:
        np.testing.assert_allclose(scores["trials__mfcc_stats"], expected, atol=2e-4)
    assert ver["lists"]["trials"]["mfcc_stats"]["eer"] < 50.0
    with pytest.raises(SSLSVError, match="mfcc_stats"):
        EvalConfig.from_hparams({"trial_lists": ["t"], "eval_backends": ["mfcc"]})
