"""run_verification on the tiny corpus with a toy encoder (fast, in-process)."""

import json
import os

import numpy as np
import pytest
import torch

from sslsv_sb.errors import SSLSVError
from sslsv_sb.evaluation.cache import model_fingerprint
from sslsv_sb.evaluation.verification import (
    EvalConfig,
    run_verification,
    score_trial_lists,
    speaker_of,
)


class ToyEncoder(torch.nn.Module):
    """Fbank -> time mean -> linear: (N, L) -> (N, 8)."""

    def __init__(self, seed=0):
        super().__init__()
        from speechbrain.lobes.features import Fbank

        torch.manual_seed(seed)
        self.fbank = Fbank(n_mels=20)
        self.lin = torch.nn.Linear(20, 8)

    @torch.no_grad()
    def forward(self, wavs, lengths=None):
        return self.lin(self.fbank(wavs.float()).mean(dim=1))


@pytest.fixture(scope="module")
def lists(tiny_corpus, tmp_path_factory):
    """The corpus trial list plus a second list (a slice of it) in tmp."""
    folder = tmp_path_factory.mktemp("lists")
    lines = open(os.path.join(tiny_corpus, "trials.txt")).read().splitlines()
    second = folder / "second.txt"
    second.write_text("\n".join(lines[::2]) + "\n")
    return ["trials.txt", str(second)]


def _png_ok(path):
    with open(path, "rb") as f:
        return f.read(8) == b"\x89PNG\r\n\x1a\n" and os.path.getsize(path) > 1000


def test_cosine_report_cache_and_plots(tiny_corpus, lists, tmp_path):
    enc = ToyEncoder()
    cfg = {"trial_lists": lists[:1], "train_list": "train.csv", "seed": 3}
    out = tmp_path / "run"
    untrained = ToyEncoder(seed=1)
    run_verification(
        untrained,
        cfg,
        str(tiny_corpus),
        str(out),
        model_id=model_fingerprint([untrained]),
        tag="untrained",
    )
    payload = run_verification(
        enc, cfg, str(tiny_corpus), str(out), model_id=model_fingerprint([enc])
    )
    ver = json.loads((out / "verification.json").read_text())
    assert ver == json.loads(json.dumps(payload))
    m = ver["lists"]["trials"]["cosine"]
    for key in ("eer", "mindcf_0.01", "mindcf_0.05", "min_cllr", "avg_rprec"):
        assert np.isfinite(m[key])
    assert "cosine" in ver["untrained"]["lists"]["trials"]
    assert ver["meta"]["cache"] == {"hits": [], "misses": ["list_trials"]}
    assert (out / "verification.md").read_text().startswith("# Verification")
    for name in ("det_trials.png", "scores_trials_cosine.png", "tsne.png"):
        assert _png_ok(out / "plots" / name), name
    # Old API agrees with the new one.
    old = score_trial_lists(enc, [os.path.join(tiny_corpus, "trials.txt")], tiny_corpus)
    assert old["trials"]["cosine"]["eer"] == pytest.approx(m["eer"])

    # Same model: cache hit, identical metrics.
    again = run_verification(
        enc,
        cfg,
        str(tiny_corpus),
        str(out),
        model_id=model_fingerprint([enc]),
        plots=False,
    )
    assert again["meta"]["cache"]["hits"] == ["list_trials"]
    assert again["lists"]["trials"]["cosine"]["eer"] == m["eer"]

    # Changed weights: miss (never the stale embeddings).
    with torch.no_grad():
        enc.lin.weight.mul_(-1.0).add_(0.5)
    changed = run_verification(
        enc,
        cfg,
        str(tiny_corpus),
        str(out),
        model_id=model_fingerprint([enc]),
        plots=False,
    )
    assert changed["meta"]["cache"]["misses"] == ["list_trials"]


def test_plda_asnorm_calibration_two_lists(tiny_corpus, lists, tmp_path):
    enc = ToyEncoder()
    cfg = EvalConfig(
        trial_lists=lists,
        backends=["cosine", "plda"],
        score_norm="as-norm",
        n_cohort=20,
        cohort_top_k=5,
        train_list="train.csv",
        calibration_list=lists[1],
        plots=False,
    )
    out = tmp_path / "run"
    ver = run_verification(enc, cfg, str(tiny_corpus), str(out), model_id="x" * 64)
    assert set(ver["lists"]) == {"trials", "second"}
    for res in ver["lists"].values():
        assert set(res) == {"cosine", "cosine_as-norm", "plda"}
        for m in res.values():
            assert 0 <= m["eer"] <= 100 and np.isfinite(m["cllr"])
            assert 0 <= m["actdcf_0.01"]
    assert ver["meta"]["calibration"]["list"] == lists[1]
    assert ver["meta"]["n_cohort"] == 20
    assert os.path.isfile(out / "calibration_plda.json")
    with np.load(out / "scores_trained.npz") as z:
        assert len(z["trials__plda"]) == len(z["trials__labels"])


def test_errors_name_the_key(tiny_corpus, tmp_path):
    enc = ToyEncoder()
    with pytest.raises(SSLSVError, match="trial_lists.*nope.txt"):
        run_verification(
            enc, {"trial_lists": ["nope.txt"]}, str(tiny_corpus), str(tmp_path)
        )
    with pytest.raises(SSLSVError, match="backends"):
        EvalConfig.from_hparams(
            {"trial_lists": ["trials.txt"], "eval_backends": ["lda"]}
        )
    with pytest.raises(SSLSVError, match="score_norm"):
        EvalConfig.from_hparams({"eval_score_norm": "q-norm", "train_list": "a.csv"})
    with pytest.raises(SSLSVError, match="train_list"):
        EvalConfig.from_hparams({"eval_backends": ["plda"]})


def test_speaker_of():
    files = ["wav/id1/a/1.wav", "wav/id2/b/1.wav", "wav/id1/c/2.wav"]
    assert speaker_of(files) == ["id1", "id2", "id1"]
    assert speaker_of(["id1/a.wav", "id2/b.wav"]) == ["id1", "id2"]


def test_whiten_backend_scores_with_unlabelled_train_files(tiny_corpus, tmp_path):
    """``whiten``: fitted on ``whiten_max_files`` train files, equals cosine of the
    whitened embeddings computed independently (numpy eigendecomposition of the
    shrunk covariance: 30 files of 8 dims are fewer than 10 per dimension, so the
    shrinkage is max(Ledoit-Wolf, 1 - 30 / 80))."""
    from sklearn.covariance import LedoitWolf, shrunk_covariance

    from sslsv_sb.evaluation.scoring import cosine_scores, index_trials

    enc = ToyEncoder()
    cfg = EvalConfig(
        trial_lists=["trials.txt"],
        backends=["cosine", "whiten"],
        train_list="train.csv",
        whiten_max_files=30,
        plots=False,
    )
    out = tmp_path / "run"
    ver = run_verification(enc, cfg, str(tiny_corpus), str(out), model_id="w" * 64)
    assert set(ver["lists"]["trials"]) == {"cosine", "whiten"}
    cache = out / "embeddings_cache" / ("w" * 16)
    (fit_file,) = [f for f in os.listdir(cache) if f.startswith("whiten_train_30_")]
    (list_file,) = [f for f in os.listdir(cache) if f.startswith("list_trials")]
    with np.load(cache / fit_file) as z:
        x_fit = z["emb"].astype(np.float64)
    with np.load(cache / list_file) as z:
        x_list, files = z["emb"].astype(np.float64), list(z["files"])
    mu = x_fit.mean(0)
    delta = max(LedoitWolf().fit(x_fit).shrinkage_, 1 - 30 / 80)
    val, vec = np.linalg.eigh(shrunk_covariance(np.cov(x_fit.T), delta))
    w = (x_list - mu) @ vec / np.sqrt(val)
    rows = [line.split() for line in open(tiny_corpus / "trials.txt")]
    base = os.path.abspath(str(tiny_corpus))
    emb = {os.path.relpath(f, base): w[i] for i, f in enumerate(files)}
    mat, e_idx, t_idx, _ = index_trials([r[1] for r in rows], [r[2] for r in rows], emb)
    expected = cosine_scores(mat, mat, e_idx, t_idx)
    with np.load(out / "scores_trained.npz") as z:
        np.testing.assert_allclose(z["trials__whiten"], expected, atol=1e-4)
    with pytest.raises(SSLSVError, match="eval_whiten_max_files"):
        EvalConfig.from_hparams(
            {"eval_backends": ["whiten"], "train_list": "a", "eval_whiten_max_files": 1}
        )
    with pytest.raises(SSLSVError, match="train_list"):
        EvalConfig.from_hparams({"eval_backends": ["whiten"]})
