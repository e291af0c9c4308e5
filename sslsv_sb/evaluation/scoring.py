"""Verification back-ends: cosine scoring, score normalisation, whitening and PLDA.

Everything works on numpy arrays; :mod:`sslsv_sb.evaluation.verification` turns trial
lists and ``{utterance id: embedding}`` dicts into index arrays with
:func:`index_trials` and calls the functions below.

Embeddings are ``(N, D)`` (one vector per utterance) or ``(N, K, D)`` (``K`` crops per
utterance, sslsv's ``num_frames``). :func:`scoring_vectors` maps both to ``(N, D)``
vectors whose dot product is the sslsv cosine score: every crop is L2-normalised and
the crops are averaged, because ``mean_ij cos(e_i, t_j) = mean_i(ê_i) . mean_j(t̂_j)``.
The same vectors feed the cohort statistics, so raw scores and normalisation
statistics are consistent (sslsv mixes crop-pair means with averaged embeddings).

Whitening shrinks its covariance estimate (Ledoit-Wolf), so a small fitting set cannot
make it much worse than cosine (:class:`WhiteningBackend`).

Nothing is cached on disk: PLDA statistics live in the :class:`PLDABackend` object, so
a new model / list cannot silently reuse stale files.
"""

import logging
import warnings

import numpy as np
import torch

from sslsv_sb.errors import SSLSVError

SCORE_NORMS = ("z-norm", "t-norm", "s-norm", "as-norm")

logger = logging.getLogger(__name__)


def scoring_vectors(embeddings):
    """L2-normalise embeddings (per crop) and average crops.

    Arguments
    ---------
    embeddings : array-like, (N, D) or (N, K, D)

    Returns
    -------
    np.ndarray, (N, D), float32
        Unit-norm rows for ``(N, D)`` inputs; the mean of unit-norm crops otherwise.
    """
    x = np.asarray(embeddings, dtype=np.float32)
    if x.ndim not in (2, 3) or x.shape[-1] == 0:
        raise ValueError(f"embeddings must be (N, D) or (N, K, D), got {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("embeddings contain NaN or Inf")
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    x = x / np.maximum(norm, 1e-12)
    return x.mean(axis=1) if x.ndim == 3 else x


def index_trials(enrol_ids, test_ids, emb_dict, list_name="trials"):
    """Turn trial id lists into index arrays into one embedding matrix.

    Arguments
    ---------
    enrol_ids, test_ids : sequence of str, (T,)
        Utterance ids of each trial (as in the trial list).
    emb_dict : dict
        ``{utterance id: embedding (D,) or (K, D)}`` (numpy or torch).
    list_name : str
        Used in the error message.

    Returns
    -------
    embeddings : np.ndarray, (U, D) or (U, K, D)
        The ``U`` distinct utterances used by the trials.
    enrol_idx, test_idx : np.ndarray of int64, (T,)
    ids : list of str, (U,)
        Row ids of ``embeddings``.

    Raises
    ------
    SSLSVError
        If a trial utterance has no embedding (names the first few).
    """
    enrol_ids = list(enrol_ids)
    test_ids = list(test_ids)
    if len(enrol_ids) != len(test_ids):
        raise ValueError(f"{len(enrol_ids)} enrolment ids but {len(test_ids)} test ids")
    ids = list(dict.fromkeys(enrol_ids + test_ids))
    missing = [u for u in ids if u not in emb_dict]
    if missing:
        raise SSLSVError(
            f"{list_name}: {len(missing)} utterance(s) have no embedding, e.g. "
            + ", ".join(map(str, missing[:3]))
        )
    row = {u: i for i, u in enumerate(ids)}
    mat = np.stack([_to_numpy(emb_dict[u]) for u in ids])
    enrol_idx = np.fromiter((row[u] for u in enrol_ids), np.int64, len(enrol_ids))
    test_idx = np.fromiter((row[u] for u in test_ids), np.int64, len(test_ids))
    return mat, enrol_idx, test_idx, ids


def _to_numpy(x):
    if isinstance(x, torch.Tensor):
        return x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def cosine_scores(enrol, test, enrol_idx=None, test_idx=None, chunk_size=65536):
    """Cosine scores of trial pairs (vectorised, chunked).

    Two calling conventions:

    - ``cosine_scores(enrol (T, D), test (T, D))``: row ``i`` of each is trial ``i``;
    - ``cosine_scores(emb (N, D), emb, enrol_idx (T,), test_idx (T,))``: trials index
      rows of embedding matrices (``enrol`` and ``test`` may be the same matrix).

    ``(.., K, D)`` multi-crop embeddings give the mean of the ``K x K`` crop cosine
    matrix (see :func:`scoring_vectors`). Memory is bounded by
    ``chunk_size x D`` gathered rows at a time.

    Arguments
    ---------
    enrol, test : array-like, (T, D) / (T, K, D), or (N, D) / (N, K, D) with indices
    enrol_idx, test_idx : array-like of int, (T,), optional
    chunk_size : int
        Trials per chunk.

    Returns
    -------
    np.ndarray, (T,), float64
    """
    e = scoring_vectors(enrol)
    t = e if test is enrol else scoring_vectors(test)
    if (enrol_idx is None) != (test_idx is None):
        raise ValueError("give both enrol_idx and test_idx, or neither")
    if enrol_idx is None:
        if e.shape != t.shape:
            raise ValueError(
                f"paired enrol/test embeddings differ in shape: {e.shape} vs {t.shape}"
            )
        enrol_idx = test_idx = np.arange(len(e))
    enrol_idx = np.asarray(enrol_idx, dtype=np.int64).ravel()
    test_idx = np.asarray(test_idx, dtype=np.int64).ravel()
    if enrol_idx.shape != test_idx.shape:
        raise ValueError("enrol_idx and test_idx differ in length")
    if e.shape[1] != t.shape[1]:
        raise ValueError(f"embedding dims differ: {e.shape[1]} vs {t.shape[1]}")
    out = np.empty(len(enrol_idx), dtype=np.float64)
    for a in range(0, len(enrol_idx), chunk_size):
        sl = slice(a, a + chunk_size)
        out[sl] = np.einsum("ij,ij->i", e[enrol_idx[sl]], t[test_idx[sl]])
    return out


def cohort_stats(embeddings, cohort, top_k=None, chunk_size=4096):
    """Mean and std of each embedding's ``top_k`` highest cosine scores to a cohort.

    Arguments
    ---------
    embeddings : array-like, (N, D) or (N, K, D)
    cohort : array-like, (C, D) or (C, K, D)
    top_k : int or None
        ``None`` (or ``>= C``) uses the whole cohort.
    chunk_size : int
        Rows of ``embeddings`` per ``(chunk, C)`` score matrix.

    Returns
    -------
    mean, std : np.ndarray, (N,), float64
        ``std`` uses ``ddof=0`` and is floored at 1e-8.
    """
    x = torch.from_numpy(scoring_vectors(embeddings))
    c = torch.from_numpy(scoring_vectors(cohort))
    if len(c) < 2:
        raise ValueError(f"cohort needs at least 2 embeddings, got {len(c)}")
    if x.shape[1] != c.shape[1]:
        raise ValueError(f"embedding dims differ: {x.shape[1]} vs cohort {c.shape[1]}")
    k = len(c) if top_k is None else int(min(top_k, len(c)))
    if k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    mean = np.empty(len(x))
    std = np.empty(len(x))
    for a in range(0, len(x), chunk_size):
        s = (x[a : a + chunk_size] @ c.T).double()
        if k < len(c):
            s = torch.topk(s, k, dim=1, sorted=False).values
        mean[a : a + chunk_size] = s.mean(1).numpy()
        std[a : a + chunk_size] = s.std(1, correction=0).clamp_min(1e-8).numpy()
    return mean, std


def score_normalization(
    raw,
    enrol_emb,
    test_emb,
    cohort,
    method="as-norm",
    top_k=300,
    enrol_idx=None,
    test_idx=None,
    chunk_size=4096,
):
    """Z-, T-, S- or adaptive S-normalisation of cosine scores.

    With ``μ_e, σ_e`` the mean / std of the enrolment utterance's scores against the
    cohort and ``μ_t, σ_t`` those of the test utterance:
    z-norm ``(s - μ_e) / σ_e``; t-norm ``(s - μ_t) / σ_t``; s-norm the average of both
    with the whole cohort; as-norm the same average with statistics over the
    ``top_k`` closest cohort embeddings of each side (Matejka et al., Interspeech
    2017; Cumani et al. 2011). ``z/t/s-norm`` ignore ``top_k`` (sslsv convention).

    Statistics are computed once per distinct row: pass embedding matrices plus
    ``enrol_idx``/``test_idx`` (as for :func:`cosine_scores`) to avoid recomputing
    them for utterances used in many trials.

    Arguments
    ---------
    raw : array-like, (T,)
        Raw cosine scores.
    enrol_emb, test_emb : array-like, (T, D) or (N, D) with indices; ``(.., K, D)`` ok
    cohort : array-like, (C, D) or (C, K, D)
        E.g. embeddings of (a subset of) the training utterances.
    method : str
        One of ``"z-norm"``, ``"t-norm"``, ``"s-norm"``, ``"as-norm"``.
    top_k : int
        Cohort size for AS-norm (clamped to ``C``).
    enrol_idx, test_idx : array-like of int, (T,), optional
    chunk_size : int
        Rows per ``(chunk, C)`` score matrix.

    Returns
    -------
    np.ndarray, (T,), float64
    """
    if method not in SCORE_NORMS:
        raise ValueError(f"unknown score normalisation {method!r}; use {SCORE_NORMS}")
    raw = np.asarray(raw, dtype=np.float64).ravel()
    if (enrol_idx is None) != (test_idx is None):
        raise ValueError("give both enrol_idx and test_idx, or neither")
    if enrol_idx is None:
        enrol_idx = test_idx = np.arange(len(raw))
    enrol_idx = np.asarray(enrol_idx, dtype=np.int64).ravel()
    test_idx = np.asarray(test_idx, dtype=np.int64).ravel()
    if not len(raw) == len(enrol_idx) == len(test_idx):
        raise ValueError(
            f"raw scores ({len(raw)}) and trial indices ({len(enrol_idx)}, "
            f"{len(test_idx)}) differ in length"
        )
    k = top_k if method == "as-norm" else None
    out = np.zeros_like(raw)
    n_terms = 0
    if method in ("z-norm", "s-norm", "as-norm"):
        mu, sd = _stats_for(enrol_emb, enrol_idx, cohort, k, chunk_size)
        out += (raw - mu) / sd
        n_terms += 1
    if method in ("t-norm", "s-norm", "as-norm"):
        mu, sd = _stats_for(test_emb, test_idx, cohort, k, chunk_size)
        out += (raw - mu) / sd
        n_terms += 1
    return out / n_terms


def _stats_for(emb, idx, cohort, top_k, chunk_size):
    """Cohort stats of the rows used by ``idx`` only, gathered to trials."""
    used, inverse = np.unique(idx, return_inverse=True)
    emb = np.asarray(emb) if not isinstance(emb, torch.Tensor) else _to_numpy(emb)
    if len(used) and used[-1] >= len(emb):
        raise ValueError(f"trial index {used[-1]} out of range for {len(emb)} rows")
    mu, sd = cohort_stats(emb[used], cohort, top_k, chunk_size)
    return mu[inverse], sd[inverse]


class WhiteningBackend:
    """Unsupervised back-end: centre and whiten the embeddings, then cosine.

    Fitted on **unlabelled** training embeddings, so it is fair to a self-supervised
    model. It matters when the encoder output is anisotropic: non-contrastive methods
    with a BatchNorm projector (BYOL, SimSiam) can put almost all the variance of the
    encoder output in one or two directions (dimensional collapse, Jing et al.,
    arXiv 2110.09348) because the projector's BatchNorm rescales them away, and plain
    cosine scores then compare little more than those directions.

    The whitening is ``x -> (x - mean) V diag(λ)^(-1/2)`` with ``λ, V`` the
    eigenvalues and eigenvectors of a covariance estimate. With at least
    ``min_files_per_dim`` fitting files per dimension that estimate is the sample
    covariance ``S`` (PCA whitening). With fewer, the smallest eigenvalues of ``S``
    are far too small (``N = 200`` files of ``D = 192`` dimensions put them near
    zero), and dividing by them blows up directions that only hold estimation
    noise: plain PCA whitening then scored far worse than cosine (29 % instead of
    10 % EER in issue 18; 40-42 % instead of 15-29 % on our LibriSpeech runs). So
    by default (``shrinkage="auto"``) a small set of ``N`` files of ``D`` dimensions
    uses the shrunk covariance ``(1 - δ) S + δ μ I`` (``μ`` the mean eigenvalue)
    with ``δ = max(δ_LW, 1 - N / (min_files_per_dim D))``: at least scikit-learn's
    Ledoit-Wolf intensity (``LedoitWolf``), and more the fewer files there are per
    dimension, so a tiny set gives little more than centred cosine. A warning is
    logged. Ledoit-Wolf alone was not enough: on 200 LibriSpeech files of 192
    dimensions it chose ``δ`` = 0.025 and scored 20.2 % EER against 14.7 % for
    cosine; the rule (``δ`` = 0.90) scored 12.0 %. On large sets the sample
    covariance is used as is: Ledoit-Wolf's target ``μ I`` is dominated by the
    largest eigenvalues, so with one huge nuisance direction it under-whitens the
    others. Components whose variance is below ``rel_floor`` times the largest
    are dropped.

    Arguments
    ---------
    n_components : int or None
        Keep the top components (None: all those above the floor).
    rel_floor : float
        Relative variance floor for kept components.
    shrinkage : str, float or None
        ``"auto"`` (default: the rule above below ``min_files_per_dim`` files per
        dimension, the sample covariance above), ``"ledoit-wolf"`` (Ledoit-Wolf's
        ``δ`` always), a fixed ``δ`` in [0, 1], or None (sample covariance: plain
        PCA whitening, safe only with many files per dimension).
    min_files_per_dim : float
        Fewer fitting files per dimension than this logs a warning (and makes
        ``"auto"`` shrink).

    Example
    -------
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(200, 8)) * np.array([100.0] + [1.0] * 7)
    >>> w = WhiteningBackend().fit(x)  # 25 files per dimension: PCA whitening
    >>> np.allclose(np.cov(w.transform(x).T), np.eye(8), atol=1e-5)
    True
    >>> small = WhiteningBackend().fit(x[:40])  # 5 per dimension: shrunk
    >>> round(small.shrinkage_, 2)  # max(Ledoit-Wolf, 1 - 40 / (10 * 8))
    0.5
    """

    SHRINKAGE = ("auto", "ledoit-wolf")

    def __init__(
        self,
        n_components=None,
        rel_floor=1e-6,
        shrinkage="auto",
        min_files_per_dim=10.0,
    ):
        if n_components is not None and int(n_components) < 1:
            raise ValueError(f"n_components must be >= 1, got {n_components}")
        if isinstance(shrinkage, str):
            if shrinkage not in self.SHRINKAGE:
                raise ValueError(
                    f"shrinkage must be one of {self.SHRINKAGE}, a number in [0, 1] "
                    f"or None, got {shrinkage!r}"
                )
        elif shrinkage is not None and not 0.0 <= float(shrinkage) <= 1.0:
            raise ValueError(f"shrinkage must be in [0, 1], got {shrinkage}")
        self.n_components = None if n_components is None else int(n_components)
        self.rel_floor = float(rel_floor)
        self.shrinkage = shrinkage
        self.min_files_per_dim = float(min_files_per_dim)
        self.mean_ = None
        self.projection_ = None  # (D, K): eigenvectors scaled by λ^(-1/2)
        self.shrinkage_ = None  # δ actually used
        self.n_fit_ = None

    @staticmethod
    def _flat(x):
        x = _to_numpy(x) if isinstance(x, torch.Tensor) else np.asarray(x, np.float64)
        if x.ndim not in (2, 3):
            raise ValueError(f"embeddings must be (N, D) or (N, K, D), got {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError("embeddings contain NaN or Inf")
        return x.reshape(-1, x.shape[-1]).astype(np.float64), x.shape

    def _covariance(self, x):
        """Covariance estimate of ``x (N, D)`` and the shrinkage ``δ`` used."""
        from sklearn.covariance import (
            LedoitWolf,
            shrunk_covariance,
        )

        n, dim = x.shape
        small = n < self.min_files_per_dim * dim
        if self.shrinkage == "ledoit-wolf" or (self.shrinkage == "auto" and small):
            delta = float(LedoitWolf().fit(x).shrinkage_)
            if self.shrinkage == "auto":
                delta = max(delta, 1.0 - n / (self.min_files_per_dim * dim))
        elif self.shrinkage in (None, "auto"):
            delta = 0.0
        else:
            delta = float(self.shrinkage)
        emp = np.atleast_2d(np.cov(x, rowvar=False))  # ddof 1, as sklearn's PCA
        return (shrunk_covariance(emp, delta) if delta > 0 else emp), delta

    def fit(self, embeddings):
        """Fit the mean and the whitening on ``(N, D)`` / ``(N, K, D)`` embeddings.

        Returns
        -------
        self
            With ``mean_`` (D,), ``projection_`` (D, K), ``shrinkage_`` and ``n_fit_``.
        """
        x, _ = self._flat(embeddings)
        if len(x) < 2:
            raise SSLSVError("whitening needs at least 2 training embeddings")
        n, dim = x.shape
        cov, self.shrinkage_ = self._covariance(x)
        val, vec = np.linalg.eigh(cov)
        val, vec = val[::-1], vec[:, ::-1]
        keep = int((val > self.rel_floor * max(val[0], 0.0)).sum())
        if self.n_components is not None:
            keep = min(keep, self.n_components)
        if keep < 1:
            raise SSLSVError("whitening: the training embeddings have no variance")
        self.mean_ = x.mean(axis=0)
        self.projection_ = vec[:, :keep] / np.sqrt(val[:keep])
        self.n_fit_ = n
        if n < self.min_files_per_dim * dim:
            logger.warning(
                "whitening fitted on %d embeddings of dimension %d (fewer than %g "
                "per dimension): covariance shrinkage %.3f (%s; 0 = none), so the "
                "whitening is %s; fit it on more files (eval_whiten_max_files, "
                "train_list) for a full whitening",
                n,
                dim,
                self.min_files_per_dim,
                self.shrinkage_,
                "fixed" if isinstance(self.shrinkage, float) else self.shrinkage,
                "partial" if self.shrinkage_ > 0 else "unreliable",
            )
        return self

    def transform(self, embeddings):
        """Whitened embeddings, same layout as the input (last dim = components)."""
        if self.projection_ is None:
            raise RuntimeError("WhiteningBackend.transform called before fit")
        x, shape = self._flat(embeddings)
        if x.shape[1] != self.mean_.shape[0]:
            raise ValueError(
                f"embedding dim {x.shape[1]} != fitted dim {self.mean_.shape[0]}"
            )
        out = ((x - self.mean_) @ self.projection_).astype(np.float32)
        return out.reshape(*shape[:-1], out.shape[-1])

    def score_indices(self, embeddings, enrol_idx, test_idx):
        """Cosine scores of whitened embeddings for index-based trials, ``(T,)``."""
        w = self.transform(embeddings)
        return cosine_scores(w, w, enrol_idx, test_idx)


class PLDABackend:
    """PLDA scoring with SpeechBrain's ``speechbrain.processing.PLDA_LDA``.

    Trains ``PLDA`` (simplified PLDA, full residual covariance; Prince & Elder 2007,
    Kenny 2010) on labelled embeddings, then scores trials with
    ``fast_PLDA_scoring``. Unlike sslsv, one fitted back-end scores any number of
    trial lists (no shared mutable ``scores`` attribute) and nothing is cached on
    disk. Scores are computed per chunk of distinct enrolment utterances, each chunk
    against the distinct test utterances of its trials, so memory is bounded even for
    VoxCeleb1-E/H.

    Arguments
    ---------
    rank_f : int
        Speaker-subspace rank; clamped (with a warning) to the embedding dimension.
    nb_iter : int
        EM iterations.
    scaling_factor : float
        SpeechBrain's statistics scaling (1.0 in sslsv, 0.05 in SpeechBrain's recipe).
    length_norm : bool
        L2-normalise embeddings (crop-averaged, see :func:`scoring_vectors`) before
        training and scoring; if False, ``(N, K, D)`` inputs are crop-averaged only.
    chunk_size : int
        Distinct enrolment utterances per scoring call.

    Example
    -------
    >>> rng = np.random.default_rng(0)
    >>> spk = np.repeat(np.arange(20), 10)
    >>> x = rng.normal(size=(20, 8))[spk] + 0.3 * rng.normal(size=(200, 8))
    >>> plda = PLDABackend(rank_f=4).fit(x, spk)
    >>> emb = {f"u{i}": x[i] for i in range(6)}
    >>> plda.score(["u0", "u0"], ["u1", "u5"], emb).shape
    (2,)
    """

    def __init__(
        self,
        rank_f=100,
        nb_iter=10,
        scaling_factor=1.0,
        length_norm=True,
        chunk_size=2048,
    ):
        if rank_f < 1 or nb_iter < 1:
            raise ValueError(f"need rank_f >= 1 and nb_iter >= 1 ({rank_f}, {nb_iter})")
        self.rank_f = int(rank_f)
        self.nb_iter = int(nb_iter)
        self.scaling_factor = float(scaling_factor)
        self.length_norm = bool(length_norm)
        self.chunk_size = int(chunk_size)
        self.plda = None

    def _prep(self, x):
        x = _to_numpy(x) if isinstance(x, torch.Tensor) else np.asarray(x, np.float32)
        if self.length_norm:
            x = scoring_vectors(x)
        elif x.ndim == 3:
            x = x.mean(axis=1)
        if x.ndim != 2:
            raise ValueError(f"embeddings must be (N, D) or (N, K, D), got {x.shape}")
        return x.astype(np.float64)

    def fit(self, embeddings, speaker_labels):
        """Train the PLDA model.

        Arguments
        ---------
        embeddings : array-like, (N, D) or (N, K, D)
        speaker_labels : sequence, (N,)
            Speaker of each embedding (any hashable).

        Returns
        -------
        self
        """
        from speechbrain.processing.PLDA_LDA import PLDA

        x = self._prep(embeddings)
        labels = np.asarray(speaker_labels).ravel()
        if len(labels) != len(x):
            raise ValueError(f"{len(x)} embeddings but {len(labels)} speaker labels")
        n_spk = len(np.unique(labels))
        if n_spk < 2:
            raise ValueError(f"PLDA needs at least 2 speakers, got {n_spk}")
        dim = x.shape[1]
        rank = self.rank_f
        if rank > dim:
            warnings.warn(
                f"PLDA rank_f={rank} > embedding dim {dim}; using rank_f={dim}",
                stacklevel=2,
            )
            rank = dim
        stat = _stat_object(labels.astype(str), np.arange(len(x)).astype(str), x)
        plda = PLDA(
            rank_f=rank, nb_iter=self.nb_iter, scaling_factor=self.scaling_factor
        )
        plda.plda(stat)
        if not (np.isfinite(plda.F).all() and np.isfinite(plda.Sigma).all()):
            raise SSLSVError(
                "PLDA training diverged (non-finite parameters): use more training "
                "data / speakers or a smaller rank_f"
            )
        self.plda = plda
        self.rank_used = rank
        return self

    def score(self, enrol_ids, test_ids, emb_dict):
        """PLDA log-likelihood-ratio scores of one trial list.

        Can be called for any number of lists with the same fitted back-end.

        Arguments
        ---------
        enrol_ids, test_ids : sequence of str, (T,)
        emb_dict : dict
            ``{utterance id: embedding (D,) or (K, D)}``.

        Returns
        -------
        np.ndarray, (T,), float64
        """
        mat, e_idx, t_idx, _ = index_trials(enrol_ids, test_ids, emb_dict)
        return self.score_indices(mat, e_idx, t_idx)

    def score_indices(self, embeddings, enrol_idx, test_idx):
        """Like :meth:`score` with an embedding matrix and trial index arrays.

        Arguments
        ---------
        embeddings : array-like, (N, D) or (N, K, D)
        enrol_idx, test_idx : array-like of int, (T,)

        Returns
        -------
        np.ndarray, (T,), float64
        """
        from speechbrain.processing.PLDA_LDA import Ndx, fast_PLDA_scoring

        if self.plda is None:
            raise RuntimeError("PLDABackend.score called before fit")
        x = self._prep(embeddings)
        if x.shape[1] != self.plda.mean.shape[0]:
            raise ValueError(
                f"embedding dim {x.shape[1]} != PLDA dim {self.plda.mean.shape[0]}"
            )
        e_idx = np.asarray(enrol_idx, dtype=np.int64).ravel()
        t_idx = np.asarray(test_idx, dtype=np.int64).ravel()
        out = np.empty(len(e_idx), dtype=np.float64)
        enrol_rows = np.unique(e_idx)
        for a in range(0, len(enrol_rows), self.chunk_size):
            rows = enrol_rows[a : a + self.chunk_size]
            sel = np.flatnonzero(np.isin(e_idx, rows))
            e_u, e_inv = np.unique(e_idx[sel], return_inverse=True)
            t_u, t_inv = np.unique(t_idx[sel], return_inverse=True)
            e_names = np.array([f"e{i}" for i in e_u], dtype="|O")
            t_names = np.array([f"t{i}" for i in t_u], dtype="|O")
            enrol = _stat_object(e_names, e_names, x[e_u])
            test = _stat_object(t_names, t_names, x[t_u])
            # Ndx built directly (its constructor loops over models in Python);
            # check_missing=False keeps the row/column order of the stat objects.
            ndx = Ndx()
            ndx.modelset, ndx.segset = e_names, t_names
            ndx.trialmask = np.ones((len(e_u), len(t_u)), dtype=bool)
            res = fast_PLDA_scoring(
                enrol,
                test,
                ndx,
                self.plda.mean,
                self.plda.F,
                self.plda.Sigma,
                scaling_factor=self.scaling_factor,
                check_missing=False,
            )
            out[sel] = res.scoremat[e_inv, t_inv]
        return out


def _stat_object(modelset, segset, x):
    from speechbrain.processing.PLDA_LDA import StatObject_SB

    n = len(x)
    none = np.array([None] * n)
    return StatObject_SB(
        modelset=np.asarray(modelset, dtype="|O"),
        segset=np.asarray(segset, dtype="|O"),
        start=none,
        stop=none,
        stat0=np.ones((n, 1)),
        stat1=np.asarray(x, dtype=np.float64),
    )
