"""Cosine scoring, score normalisation and the SpeechBrain PLDA back-end."""

import warnings

import numpy as np
import pytest
import torch

from sslsv_sb.errors import SSLSVError
from sslsv_sb.evaluation.metrics import eer
from sslsv_sb.evaluation.scoring import (
    SCORE_NORMS,
    PLDABackend,
    cohort_stats,
    cosine_scores,
    index_trials,
    score_normalization,
)


def test_cosine_paired_indexed_and_chunked():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 8))
    e, t = rng.integers(0, 30, 101), rng.integers(0, 30, 101)
    ref = np.array(
        [
            x[i] @ x[j] / np.linalg.norm(x[i]) / np.linalg.norm(x[j])
            for i, j in zip(e, t)
        ]
    )
    assert np.allclose(cosine_scores(x[e], x[t]), ref, atol=1e-6)
    assert np.allclose(cosine_scores(x, x, e, t, chunk_size=7), ref, atol=1e-6)
    assert np.allclose(cosine_scores(torch.tensor(x), x, e, t), ref, atol=1e-6)


def test_cosine_multicrop_is_mean_of_crop_matrix():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(5, 3, 8)), rng.normal(size=(5, 3, 8))
    an = a / np.linalg.norm(a, axis=-1, keepdims=True)
    bn = b / np.linalg.norm(b, axis=-1, keepdims=True)
    ref = np.einsum("nkd,nld->nkl", an, bn).mean(axis=(1, 2))
    assert np.allclose(cosine_scores(a, b), ref, atol=1e-6)


def test_index_trials_missing_id():
    emb = {"a": np.ones(4), "b": np.zeros(4) + 2}
    mat, e, t, ids = index_trials(["a", "b"], ["b", "b"], emb)
    assert mat.shape == (2, 4) and ids == ["a", "b"]
    assert e.tolist() == [0, 1] and t.tolist() == [1, 1]
    with pytest.raises(SSLSVError, match="no embedding.*zz"):
        index_trials(["a"], ["zz"], emb, list_name="vox1_O")


def test_znorm_and_topk_vs_loop():
    rng = np.random.default_rng(2)
    x, coh = rng.normal(size=(20, 6)), rng.normal(size=(50, 6))
    e, t = rng.integers(0, 20, 40), rng.integers(0, 20, 40)
    raw = cosine_scores(x, x, e, t)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    cn = coh / np.linalg.norm(coh, axis=1, keepdims=True)
    cs = xn @ cn.T

    def stats(i, k):
        top = np.sort(cs[i])[::-1][:k]
        return top.mean(), top.std()

    z = [(s - stats(i, 50)[0]) / stats(i, 50)[1] for s, i in zip(raw, e)]
    tn = [(s - stats(j, 50)[0]) / stats(j, 50)[1] for s, j in zip(raw, t)]
    asn = [
        0.5
        * (
            (s - stats(i, 10)[0]) / stats(i, 10)[1]
            + (s - stats(j, 10)[0]) / stats(j, 10)[1]
        )
        for s, i, j in zip(raw, e, t)
    ]
    kw = {"enrol_idx": e, "test_idx": t, "chunk_size": 7}
    assert np.allclose(
        score_normalization(raw, x, x, coh, "z-norm", **kw), z, atol=1e-5
    )
    assert np.allclose(
        score_normalization(raw, x, x, coh, "t-norm", **kw), tn, atol=1e-5
    )
    s_norm = score_normalization(raw, x, x, coh, "s-norm", **kw)
    assert np.allclose(s_norm, 0.5 * (np.array(z) + tn), atol=1e-5)
    assert np.allclose(
        score_normalization(raw, x, x, coh, "as-norm", top_k=10, **kw), asn, atol=1e-5
    )
    # Top-k >= cohort size: AS-norm is S-norm.
    assert np.allclose(
        score_normalization(raw, x, x, coh, "as-norm", top_k=999, **kw), s_norm
    )
    mu, sd = cohort_stats(x, coh, top_k=10)
    assert mu.shape == sd.shape == (20,)
    with pytest.raises(ValueError, match="unknown score normalisation"):
        score_normalization(raw, x, x, coh, "x-norm", **kw)


def _offset_speakers(seed):
    """Speakers with speaker-dependent offsets along a shared nuisance direction."""
    rng = np.random.default_rng(seed)
    dim, n_spk, per = 32, 30, 6
    u = np.zeros(dim)
    u[0] = 1.0
    v = rng.normal(size=(n_spk, dim))
    v[:, 0] = 0
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    b = rng.uniform(0, 2, n_spk)
    spk = np.repeat(np.arange(n_spk), per)
    x = (
        v[spk]
        + b[spk, None] * u
        + 0.6 * rng.normal(size=(len(spk), dim)) / np.sqrt(dim)
    )
    cv = rng.normal(size=(200, dim))
    cv[:, 0] = 0
    cv /= np.linalg.norm(cv, axis=1, keepdims=True)
    cohort = cv + rng.uniform(0, 2, 200)[:, None] * u
    return x, spk, cohort


def test_as_norm_removes_speaker_offsets():
    x, spk, cohort = _offset_speakers(0)
    i, j = np.triu_indices(len(x), 1)
    lab = spk[i] == spk[j]
    raw = cosine_scores(x, x, i, j)
    raw_eer = eer(raw, lab)[0]
    as_eer = eer(
        score_normalization(
            raw, x, x, cohort, "as-norm", top_k=50, enrol_idx=i, test_idx=j
        ),
        lab,
    )[0]
    assert raw_eer > 0.01
    assert as_eer < raw_eer / 3
    for method in SCORE_NORMS:
        n = score_normalization(
            raw, x, x, cohort, method, top_k=50, enrol_idx=i, test_idx=j
        )
        assert np.isfinite(n).all()


def _gaussian_speakers(rng, n_spk, per, dim, prefix):
    mu = rng.normal(size=(n_spk, dim))
    spk = np.repeat(np.arange(n_spk), per)
    x = mu[spk] + 0.5 * rng.normal(size=(len(spk), dim))
    ids = [f"{prefix}{k}" for k in range(len(x))]
    return x, spk, ids


def test_plda_two_trial_lists_one_run():
    rng = np.random.default_rng(3)
    xtr, str_, _ = _gaussian_speakers(rng, 30, 10, 12, "tr")
    xte, ste, ids = _gaussian_speakers(rng, 10, 6, 12, "te")
    emb = dict(zip(ids, xte))
    with pytest.warns(UserWarning, match="rank_f=100 > embedding dim 12"):
        plda = PLDABackend(rank_f=100, nb_iter=5, chunk_size=4).fit(xtr, str_)
    for seed in (0, 1):  # two trial lists scored by the same fitted back-end
        r = np.random.default_rng(seed)
        e, t = r.integers(0, 60, 300), r.integers(0, 60, 300)
        lab = ste[e] == ste[t]
        s = plda.score([ids[k] for k in e], [ids[k] for k in t], emb)
        assert s.shape == (300,) and np.isfinite(s).all()
        assert lab.any() and (~lab).any()
        assert eer(s, lab)[0] < 0.05
        assert s[lab].mean() > s[~lab].mean()
    # Chunking does not change scores.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        big = PLDABackend(rank_f=100, nb_iter=5, chunk_size=10_000).fit(xtr, str_)
    assert np.allclose(big.score_indices(xte, e, t), plda.score_indices(xte, e, t))


def test_plda_errors():
    with pytest.raises(RuntimeError, match="before fit"):
        PLDABackend().score_indices(np.ones((2, 3)), [0], [1])
    with pytest.raises(ValueError, match="2 speakers"):
        PLDABackend(rank_f=2).fit(np.random.default_rng(0).normal(size=(5, 3)), [0] * 5)


# ------------------------------------------------------------------ whitening back-end
def test_whitening_identity_covariance_and_floor():
    from sslsv_sb.evaluation.scoring import WhiteningBackend

    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 6)) * np.array([50.0, 5.0, 1.0, 1.0, 0.2, 0.0])
    w = WhiteningBackend().fit(x)
    y = w.transform(x)
    assert y.shape == (500, 5)  # the zero-variance direction is dropped
    np.testing.assert_allclose(np.cov(y.T), np.eye(5), atol=1e-3)
    np.testing.assert_allclose(y.mean(0), 0, atol=1e-4)
    assert WhiteningBackend(n_components=2).fit(x).transform(x).shape == (500, 2)
    # (N, K, D) crops keep their layout
    assert w.transform(x[:10].reshape(5, 2, 6)).shape == (5, 2, 5)


def test_whitening_undoes_a_dominant_nuisance_direction():
    """Speaker identity in 4 small dims + one huge speaker-independent dim: cosine is
    near chance, whitened cosine separates the speakers."""
    from sslsv_sb.evaluation.metrics import eer
    from sslsv_sb.evaluation.scoring import WhiteningBackend, cosine_scores

    rng = np.random.default_rng(1)
    spk = np.repeat(np.arange(40), 6)
    centres = rng.normal(size=(40, 4))
    x = np.concatenate(
        [
            centres[spk] + 0.3 * rng.normal(size=(240, 4)),
            30 * rng.normal(size=(240, 1)),
        ],
        axis=1,
    )
    e_idx, t_idx = np.triu_indices(240, k=1)
    labels = (spk[e_idx] == spk[t_idx]).astype(int)
    raw = eer(cosine_scores(x, x, e_idx, t_idx), labels)[0]
    white = eer(WhiteningBackend().fit(x).score_indices(x, e_idx, t_idx), labels)[0]
    # whitening gives the nuisance dim the weight of one informative dim: between
    # chance and cosine on the 4 informative (centred) dims alone
    inf = x[:, :4] - x[:, :4].mean(0)
    oracle = eer(cosine_scores(inf, inf, e_idx, t_idx), labels)[0]
    assert raw > 0.4 and oracle < white < 0.2


def _speakers(rng, n_fit, spk_decay, noise, dim=96, n_spk=30, per_spk=4):
    """Synthetic embeddings: a speaker part with a decaying spectrum (exponent
    ``spk_decay``) plus isotropic residual noise, in a random basis. A fitting set of
    ``n_fit`` single-utterance speakers; trials of ``n_spk`` x ``per_spk``."""
    q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    scale = np.arange(1, dim + 1) ** (-spk_decay / 2)

    def emb(latent):
        return 0.5 + (latent * scale + noise * rng.normal(size=latent.shape)) @ q.T

    spk = np.repeat(np.arange(n_spk), per_spk)
    x = emb(rng.normal(size=(n_spk, dim))[spk])
    e_idx, t_idx = np.triu_indices(len(x), k=1)
    labels = (spk[e_idx] == spk[t_idx]).astype(int)
    return emb(rng.normal(size=(n_fit, dim))), x, e_idx, t_idx, labels


def _whiten_eer(backend, fit, x, e_idx, t_idx, labels):
    return eer(backend.fit(fit).score_indices(x, e_idx, t_idx), labels)[0]


def test_whitening_small_fitting_set_is_safe(caplog):
    """Issue 18: fitted on about one file per dimension, plain PCA whitening (the old
    default) divides by near-zero eigenvalues of the sample covariance and scores far
    worse than cosine. The default shrinks the covariance by
    ``max(Ledoit-Wolf, 1 - N / (10 D))`` and stays within a point of cosine, with a
    warning, both where whitening helps (speaker variance spread over all
    directions) and where Ledoit-Wolf's own shrinkage is too weak and loses > 3
    points (speaker variance in the top directions, as in trained LibriSpeech
    embeddings). With a large fitting set it is plain PCA whitening."""
    import logging

    from sslsv_sb.evaluation.scoring import WhiteningBackend

    for seed in (0, 1):
        for spk_decay, noise, lw_hurts in ((1.0, 0.8, False), (2.0, 0.3, True)):
            case = _speakers(np.random.default_rng(seed), 100, spk_decay, noise)
            fit, x, e_idx, t_idx, labels = case
            cos = eer(cosine_scores(x, x, e_idx, t_idx), labels)[0]
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger="sslsv_sb.evaluation.scoring"):
                safe = WhiteningBackend()
                white = _whiten_eer(safe, *case)
            assert "fitted on 100 embeddings of dimension 96" in caplog.text
            lw = WhiteningBackend(shrinkage="ledoit-wolf")
            lw_eer = _whiten_eer(lw, *case)
            assert safe.shrinkage_ == pytest.approx(max(lw.shrinkage_, 1 - 100 / 960))
            assert white <= cos + 0.01, (seed, spk_decay, white, cos)
            if lw_hurts:
                assert lw_eer > cos + 0.03, (seed, lw_eer, cos)
            plain = _whiten_eer(WhiteningBackend(shrinkage=None), *case)
            assert plain > cos + 0.05, (seed, plain, cos)  # the old default fails

    big, x, *_ = _speakers(np.random.default_rng(2), 2000, 1.0, 0.8)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sslsv_sb.evaluation.scoring"):
        auto = WhiteningBackend().fit(big)
    assert caplog.text == "" and auto.shrinkage_ == 0.0
    full = WhiteningBackend(shrinkage=None).fit(big)
    np.testing.assert_allclose(auto.transform(x), full.transform(x), atol=1e-4)
    assert WhiteningBackend(shrinkage=0.5).fit(big).shrinkage_ == 0.5


def test_whitening_errors():
    from sslsv_sb.evaluation.scoring import WhiteningBackend

    with pytest.raises(RuntimeError, match="before fit"):
        WhiteningBackend().transform(np.ones((3, 2)))
    w = WhiteningBackend().fit(np.random.default_rng(0).normal(size=(10, 3)))
    with pytest.raises(ValueError, match="dim"):
        w.transform(np.ones((3, 4)))
    with pytest.raises(ValueError, match="NaN"):
        w.transform(np.full((3, 3), np.nan))
    with pytest.raises(ValueError, match="n_components"):
        WhiteningBackend(n_components=0)
    with pytest.raises(ValueError, match="shrinkage"):
        WhiteningBackend(shrinkage="oas")
    with pytest.raises(ValueError, match="shrinkage"):
        WhiteningBackend(shrinkage=1.5)
