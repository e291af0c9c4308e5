"""Score trial lists with every back-end and write the verification report.

:func:`run_verification` is the one entry point used by ``train.py`` (after training)
and ``evaluate.py``; it runs named stages:

1. :func:`embed_stage`: every file of every trial list (plus the cohort, PLDA
   training and calibration files when needed) is embedded **once**
   (``embeddings.extract_embeddings``: full utterances or ``n_crops`` averaged crops,
   batched by length), through an :class:`~sslsv_sb.evaluation.cache.EmbeddingCache`
   keyed by the model weights, the file list and the extraction settings (a changed
   checkpoint is a miss);
2. :func:`score_stage` (after :func:`fit_backends`), back-ends: ``cosine``;
   ``whiten`` (cosine after centring and PCA whitening fitted on
   ``whiten_max_files`` random *unlabelled* train files, for anisotropic
   embeddings); ``plda`` (SpeechBrain PLDA trained on the labelled train list);
   ``mfcc_stats`` (no model: z-normalised mean and std of 19 MFCCs, cosine; the
   non-learned reference, :mod:`sslsv_sb.evaluation.mfcc_stats`);
3. :func:`normalise_stage`: ``cosine_<norm>`` for the score normalisation
   ``z-norm | t-norm | s-norm | as-norm`` (cohort: ``n_cohort`` random train files,
   top-``cohort_top_k`` for AS-norm);
4. :func:`calibrate_stage` (optional): an affine LLR map per back-end is trained on
   a held-out trial list (``calibration_list``) and applied to every list by
   :func:`metrics_stage`, adding ``actdcf_<p>`` and ``cllr``;
5. :func:`write_stage`, outputs in ``out_dir``: ``verification.json``,
   ``verification.md``, ``scores_<tag>.npz`` and PNG plots under ``plots/`` (DET
   trained vs untrained per list, score histograms, t-SNE of the test embeddings
   coloured by speaker).

Schema of ``verification.json``::

    {
      "lists": {"<trial list name>": {"<backend>": {
          "eer": %, "mindcf_0.01": .., "mindcf_0.05": .., "min_cllr": bits,
          "avg_rprec": fraction, "n_target": int, "n_nontarget": int,
          # with a calibration list only:
          "actdcf_0.01": .., "actdcf_0.05": .., "cllr": bits}}},
      "untrained": {"lists": {...}},   # cosine metrics of the untrained encoder
      "meta": {"method": .., "encoder": .., "backends": [..], "score_norm": ..,
               "cache": {"hits": [..], "misses": [..]}, "calibration": {..}, ...}
    }

Back-end names: ``cosine``, ``cosine_as-norm`` (or ``_z-norm``, ...), ``whiten``,
``plda``, ``mfcc_stats``.
"""

import json
import logging
import os
from dataclasses import asdict, dataclass, field, fields
from typing import NamedTuple

import numpy as np

from sslsv_sb.data.lists import read_train_list, read_trials, resolve
from sslsv_sb.errors import SSLSVError
from sslsv_sb.evaluation.cache import EmbeddingCache
from sslsv_sb.evaluation.embeddings import (
    BUCKET_RATIO,
    MAX_BATCH,
    MAX_BATCH_SECONDS,
    extract_embeddings,
)
from sslsv_sb.evaluation.metrics import act_dcf, cllr, verification_metrics
from sslsv_sb.evaluation.scoring import (
    SCORE_NORMS,
    PLDABackend,
    WhiteningBackend,
    cosine_scores,
    score_normalization,
)

logger = logging.getLogger(__name__)

BACKENDS = ("cosine", "whiten", "plda", "mfcc_stats")


@dataclass
class EvalConfig:
    """Evaluation settings (yaml keys in brackets; ``evaluate.py`` flags in quotes).

    Attributes
    ----------
    trial_lists : list of str
        [``trial_lists``] Trial lists, relative to the data folder or absolute.
    backends : list of str
        [``eval_backends``, "--backends"] Subset of ``cosine``, ``whiten``, ``plda``,
        ``mfcc_stats`` (the non-learned MFCC-statistics baseline).
    score_norm : str or None
        [``eval_score_norm``, "--score_norm"] ``z-norm|t-norm|s-norm|as-norm``
        applied to cosine scores (reported as ``cosine_<norm>``).
    n_cohort : int
        [``eval_n_cohort``, "--n_cohort"] Random train files forming the cohort.
    cohort_top_k : int
        [``eval_cohort_top_k``, "--cohort_top_k"] Top-k cohort scores (AS-norm).
    train_list : str or None
        [``train_list``] Cohort and PLDA training files.
    label_key : str
        [``eval_label_key``] Speaker column of the train list (PLDA).
    plda_rank_f, plda_nb_iter, plda_scaling_factor : int, int, float
        [``eval_plda_rank_f`` ...] SpeechBrain PLDA settings (sslsv: 100, 10, 1.0).
    plda_max_files : int or None
        [``eval_plda_max_files``] Random subset of the train list for PLDA.
    whiten_max_files : int or None
        [``eval_whiten_max_files``] Random unlabelled train files fitting the
        whitening (None: all).
    whiten_n_components : int or None
        [``eval_whiten_n_components``] Whitened dimensions kept (None: all).
    calibration_list : str or None
        [``eval_calibration_list``, "--calibration_list"] Held-out trial list.
    calibration_p_target : float
        Effective prior of the calibration.
    p_targets : list of float
        [``eval_p_targets``] Operating points of minDCF / actDCF.
    crop_seconds, n_crops, num_workers : float or None, int, int
        [``eval_crop_seconds``, ``eval_n_crops``, ``eval_num_workers``].
    batch_size, max_batch_seconds, bucket_ratio : int, float, float or None
        [``eval_batch_size``, ``eval_max_batch_seconds``, ``eval_bucket_ratio``]
        Extraction batches: utterances at most, padded seconds at most, longest /
        shortest at most ``1 + bucket_ratio``
        (:func:`~sslsv_sb.evaluation.embeddings.make_batches`).
    jobs : int
        [``eval_jobs``] Processes embedding in parallel, one torch thread each (0:
        one per CPU core; 1: this process with its torch threads; CPU encoders only,
        see :func:`~sslsv_sb.evaluation.embeddings.extract_embeddings`).
    plots : bool
        [``eval_plots``] Write PNG plots.
    tsne_labels : str or None
        [``eval_tsne_labels``] ``File,Speaker`` CSV for the t-SNE colours (default:
        first path component after the common prefix of the test files).
    tsne_max_points : int
        Random subset of test files in the t-SNE.
    cache : bool
        [``eval_cache``] Use the embedding cache in ``<out_dir>/embeddings_cache``.
    seed : int
        [``seed``] Cohort / subset / t-SNE sampling.
    sample_rate : int
        [``sample_rate``].
    """

    trial_lists: list = field(default_factory=list)
    backends: list = field(default_factory=lambda: ["cosine"])
    score_norm: str = None
    n_cohort: int = 2000
    cohort_top_k: int = 300
    train_list: str = None
    label_key: str = "Speaker"
    plda_rank_f: int = 100
    plda_nb_iter: int = 10
    plda_scaling_factor: float = 1.0
    plda_max_files: int = None
    whiten_max_files: int = 2000
    whiten_n_components: int = None
    calibration_list: str = None
    calibration_p_target: float = 0.01
    p_targets: list = field(default_factory=lambda: [0.01, 0.05])
    crop_seconds: float = None
    n_crops: int = 1
    num_workers: int = 0
    batch_size: int = MAX_BATCH
    max_batch_seconds: float = MAX_BATCH_SECONDS
    bucket_ratio: float = BUCKET_RATIO
    jobs: int = 0
    plots: bool = True
    tsne_labels: str = None
    tsne_max_points: int = 2000
    cache: bool = True
    seed: int = 0
    sample_rate: int = 16000

    # yaml key -> field (fields not listed use "eval_<field>")
    _PLAIN = ("trial_lists", "train_list", "seed", "sample_rate")

    @classmethod
    def from_hparams(cls, hparams, **overrides):
        """Settings from a loaded yaml (``eval_*`` keys), then ``overrides``.

        Arguments
        ---------
        hparams : dict
            Loaded yaml (missing keys keep the defaults).
        **overrides
            Field values that win over the yaml (None values are ignored).

        Returns
        -------
        EvalConfig
        """
        kw = {}
        for f in fields(cls):
            key = f.name if f.name in cls._PLAIN else f"eval_{f.name}"
            if key in hparams and hparams[key] is not None:
                kw[f.name] = hparams[key]
        for k, v in overrides.items():
            if k not in {f.name for f in fields(cls)}:
                raise SSLSVError(f"unknown evaluation setting {k!r}")
            if v is not None:
                kw[k] = v
        cfg = cls(**kw)
        cfg.validate()
        return cfg

    def validate(self):
        """Raise :class:`SSLSVError` naming the key of a bad setting."""
        if isinstance(self.backends, str):
            self.backends = [self.backends]
        self.backends = list(self.backends)
        self.trial_lists = list(self.trial_lists or [])
        bad = [b for b in self.backends if b not in BACKENDS]
        if bad or not self.backends:
            raise SSLSVError(
                f"eval_backends / --backends: unknown back-end(s) {bad or '[]'}; "
                f"choose from {list(BACKENDS)}"
            )
        if self.score_norm in ("", "none", "None", False):
            self.score_norm = None
        if self.score_norm is not None and self.score_norm not in SCORE_NORMS:
            raise SSLSVError(
                f"eval_score_norm / --score_norm: unknown {self.score_norm!r}; "
                f"choose from {list(SCORE_NORMS)} or null"
            )
        needs_train = (
            "plda" in self.backends
            or "whiten" in self.backends
            or self.score_norm is not None
        )
        if needs_train and not self.train_list:
            raise SSLSVError(
                "train_list: needed for PLDA / whitening / score normalisation "
                "(cohort) but not set"
            )
        for key, kind, least, nullable in _NUMBERS:
            _check_number(f"eval_{key}", getattr(self, key), kind, least, nullable)
        self.p_targets = [float(p) for p in self.p_targets]


# ------------------------------------------------------------------------- helpers
#: Numeric settings of :class:`EvalConfig`: ``(field, type, bound, nullable)``.
_NUMBERS = (
    ("n_cohort", int, ">= 1", False),
    ("cohort_top_k", int, ">= 1", False),
    ("plda_rank_f", int, ">= 1", False),
    ("n_crops", int, ">= 1", False),
    ("batch_size", int, ">= 1", False),
    ("jobs", int, ">= 0", False),
    ("whiten_max_files", int, ">= 2", True),
    ("whiten_n_components", int, ">= 1", True),
    ("max_batch_seconds", float, "> 0", False),
    ("bucket_ratio", float, ">= 0", True),
)


def _check_number(key, value, kind, bound, nullable):
    """Raise :class:`SSLSVError` naming ``key`` unless ``value`` is a valid number.

    Example
    -------
    >>> _check_number("eval_jobs", 2, int, ">= 0", False)
    >>> _check_number("eval_jobs", "two", int, ">= 0", False)
    Traceback (most recent call last):
    ...
    sslsv_sb.errors.SSLSVError: eval_jobs: must be an integer >= 0, got 'two'
    """
    if value is None and nullable:
        return
    op, least = bound.split()
    try:
        number = kind(value)
        ok = not isinstance(value, bool) and (kind is float or number == value)
    except (TypeError, ValueError):
        ok = False
    if ok:
        ok = number >= float(least) if op == ">=" else number > float(least)
    if not ok:
        name = "an integer" if kind is int else "a number"
        null = " or null" if nullable else ""
        raise SSLSVError(f"{key}: must be {name} {bound}{null}, got {value!r}")


def speaker_of(files):
    """Speaker of each file: first path component after the common prefix.

    ``wav/id10001/sess/00001.wav`` -> ``id10001`` when all files start with ``wav/``.

    Arguments
    ---------
    files : list of str

    Returns
    -------
    list of str
    """
    parts = [os.path.normpath(f).split(os.sep) for f in files]
    n = 0
    while all(len(p) > n + 1 for p in parts) and len({p[n] for p in parts}) == 1:
        n += 1
    return [p[n] for p in parts]


def _resolve_list(name, key, data_folder):
    path = resolve(name, data_folder)
    if not os.path.isfile(path):
        raise SSLSVError(f"{key}: trial list {name!r} not found (looked for {path})")
    return path


def extraction_batches(cfg):
    """Batching keyword arguments of :func:`extract_embeddings` from ``cfg``."""
    ratio = cfg.bucket_ratio
    return {
        "max_batch": int(cfg.batch_size),
        "max_batch_seconds": float(cfg.max_batch_seconds),
        "bucket_ratio": None if ratio is None else float(ratio),
    }


def embed_sets(encode, sets, cfg, cache, progress):
    """Embed several named file sets, extracting each distinct file once.

    Arguments
    ---------
    sets : dict
        ``{set name: list of absolute paths}``.

    Returns
    -------
    dict
        ``{set name: (len(paths), D) float32 array}``.
    """
    out, todo = {}, {}
    for name, paths in sets.items():
        emb = cache.load(name, paths)
        if emb is None:
            todo[name] = paths
        else:
            out[name] = emb
    if todo:
        files = sorted({p for paths in todo.values() for p in paths})
        emb = extract_embeddings(
            encode,
            files,
            crop_seconds=cfg.crop_seconds,
            n_crops=int(cfg.n_crops),
            num_workers=int(cfg.num_workers),
            sample_rate=int(cfg.sample_rate),
            progress=progress,
            jobs=int(cfg.jobs),
            **extraction_batches(cfg),
        )
        row = {f: i for i, f in enumerate(files)}
        for name, paths in todo.items():
            out[name] = emb[[row[p] for p in paths]]
            cache.save(name, paths, out[name])
    return out


def _trial_index(trials, files):
    row = {f: i for i, f in enumerate(files)}
    e = np.fromiter((row[p] for p in trials.enrol), np.int64, len(trials.enrol))
    t = np.fromiter((row[p] for p in trials.test), np.int64, len(trials.test))
    return e, t


def cosine_trial_scores(emb, index, trials):
    """Cosine scores of a trial list (kept for callers of the old API).

    Arguments
    ---------
    emb : np.ndarray
        ``(n_files, D)`` embeddings.
    index : dict
        Listed path -> row of ``emb``.
    trials : Trials

    Returns
    -------
    np.ndarray, (n_trials,)
    """
    e = np.fromiter((index[p] for p in trials.enrol), dtype=np.int64)
    t = np.fromiter((index[p] for p in trials.test), dtype=np.int64)
    return cosine_scores(emb, emb, e, t)


def _load_json(path):
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _load_scores(path):
    if not os.path.isfile(path):
        return {}
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


# --------------------------------------------------------------------------- stages
class Embedded(NamedTuple):
    """Output of :func:`embed_stage`.

    Attributes
    ----------
    emb : dict
        ``{set name: (n_files, D) float32 array}``: ``list_<name>``,
        ``calibration_<name>``, ``cohort_*``, ``plda_*``, ``whiten_*``.
    cache : EmbeddingCache
        The cache used (its ``hits`` / ``misses`` are reported).
    settings : dict
        Extraction settings (part of the cache key).
    plda_labels : pandas.Series or None
        Speaker of each row of the ``plda_*`` set.
    """

    emb: dict
    cache: EmbeddingCache
    settings: dict
    plda_labels: object


def _resolve_config(config, tag, overrides):
    """:class:`EvalConfig` of a run: ``config`` + ``overrides``, cut for ``tag``."""
    if isinstance(config, EvalConfig):
        cfg = EvalConfig(
            **{
                **asdict(config),
                **{k: v for k, v in overrides.items() if v is not None},
            }
        )
        cfg.validate()
    else:
        cfg = EvalConfig.from_hparams(config, **overrides)
    if tag not in ("trained", "untrained"):
        raise ValueError(f"tag must be 'trained' or 'untrained', got {tag!r}")
    if tag == "untrained":
        cfg.backends, cfg.score_norm, cfg.calibration_list = ["cosine"], None, None
    if not cfg.trial_lists:
        raise SSLSVError("trial_lists: no trial list to score")
    return cfg


def read_trial_lists(cfg, data_folder):
    """Read the trial lists and the optional calibration list.

    Arguments
    ---------
    cfg : EvalConfig
    data_folder : str

    Returns
    -------
    tuple
        ``(trials, calib)``: list of :class:`~sslsv_sb.data.lists.Trials` (distinct
        names) and the calibration ``Trials`` or None.
    """
    trials = []
    for name in cfg.trial_lists:
        path = _resolve_list(name, "trial_lists", data_folder)
        trials.append(read_trials(path, data_folder))
    names = [t.name for t in trials]
    if len(set(names)) != len(names):
        raise SSLSVError(f"trial_lists: two lists share a name: {names}")
    calib = None
    if cfg.calibration_list:
        path = _resolve_list(cfg.calibration_list, "eval_calibration_list", data_folder)
        calib = read_trials(path, data_folder)
    return trials, calib


def _train_sets(cfg, data_folder, rng):
    """Random train-list subsets of the back-ends: cohort, PLDA, whitening.

    One ``rng`` draw per set, in that order.

    Returns
    -------
    tuple
        ``({set name: paths}, PLDA speaker labels or None)``.
    """
    sets, plda_labels = {}, None
    if not ("plda" in cfg.backends or "whiten" in cfg.backends or cfg.score_norm):
        return sets, plda_labels
    train_path = resolve(cfg.train_list, data_folder)
    label = cfg.label_key if "plda" in cfg.backends else None
    train_df = read_train_list(train_path, data_folder, label_key=label)
    stem = os.path.splitext(os.path.basename(train_path))[0]

    def subset(max_files):
        """Sorted random rows of the train list (all of them for None)."""
        n = len(train_df) if max_files is None else min(int(max_files), len(train_df))
        return train_df.iloc[np.sort(rng.choice(len(train_df), n, replace=False))]

    for prefix, max_files, wanted in (
        ("cohort", cfg.n_cohort, bool(cfg.score_norm)),
        ("plda", cfg.plda_max_files, "plda" in cfg.backends),
        ("whiten", cfg.whiten_max_files, "whiten" in cfg.backends),
    ):
        if wanted:
            part = subset(max_files)
            sets[f"{prefix}_{stem}_{len(part)}_seed{cfg.seed}"] = list(part["path"])
            if prefix == "plda":
                plda_labels = part["label"]
    return sets, plda_labels


def embed_stage(encode, cfg, trials, calib, data_folder, out_dir, model_id, rng, **kw):
    """Stage 1: embed every file the run needs once (through the embedding cache).

    Arguments
    ---------
    encode : callable
        ``encode(wavs (N, L), lengths (N,)) -> (N, D)``.
    cfg : EvalConfig
    trials, calib : list of Trials, Trials or None
        From :func:`read_trial_lists`.
    data_folder, out_dir : str
    model_id : str or None
        Cache key of the model (None: no cache).
    rng : numpy.random.Generator
        Draws the train-list subsets.
    **kw
        ``progress`` (bool) for :func:`embed_sets`.

    Returns
    -------
    Embedded
    """
    sets = {
        f"list_{t.name}": [resolve(f, data_folder) for f in t.files()] for t in trials
    }
    if calib is not None:
        sets[f"calibration_{calib.name}"] = [
            resolve(f, data_folder) for f in calib.files()
        ]
    train_sets, plda_labels = _train_sets(cfg, data_folder, rng)
    sets.update(train_sets)
    settings = {
        "crop_seconds": cfg.crop_seconds,
        "n_crops": int(cfg.n_crops) if cfg.crop_seconds else 1,
        "sample_rate": int(cfg.sample_rate),
        "normalize": True,
        # padded batches change embeddings slightly (embeddings.py): part of the key
        "padding": "symmetric",
        **extraction_batches(cfg),
    }
    cache = EmbeddingCache(
        os.path.join(out_dir, "embeddings_cache"),
        model_id if cfg.cache else None,
        settings,
    )
    emb = embed_sets(encode, sets, cfg, cache, kw.get("progress", False))
    if "mfcc_stats" in cfg.backends:
        emb.update(_mfcc_sets(sets, cfg, kw.get("progress", False)))
    return Embedded(emb, cache, settings, plda_labels)


def _mfcc_sets(sets, cfg, progress):
    """``mfcc_<set>``: MFCC statistics of the trial (and calibration) lists' files."""
    from sslsv_sb.evaluation.mfcc_stats import mfcc_stats_features

    wanted = {k: v for k, v in sets.items() if k.startswith(("list_", "calibration_"))}
    files = sorted({p for paths in wanted.values() for p in paths})
    feats = mfcc_stats_features(
        files, int(cfg.sample_rate), int(cfg.num_workers), progress
    )
    row = {f: i for i, f in enumerate(files)}
    return {f"mfcc_{k}": feats[[row[p] for p in v]] for k, v in wanted.items()}


def fit_backends(cfg, embedded):
    """Fit the trained back-ends (PLDA, then whitening) on their train subsets.

    Arguments
    ---------
    cfg : EvalConfig
    embedded : Embedded

    Returns
    -------
    dict
        ``{"whiten": WhiteningBackend, "plda": PLDABackend}`` (those requested).
    """
    emb, fitted = embedded.emb, {}
    if "plda" in cfg.backends:
        x = emb[next(k for k in emb if k.startswith("plda_"))]
        n_spk = embedded.plda_labels.nunique()
        if n_spk < 2:
            raise SSLSVError(
                f"{cfg.train_list}: PLDA needs >= 2 speakers, found {n_spk}"
            )
        fitted["plda"] = PLDABackend(
            rank_f=min(int(cfg.plda_rank_f), x.shape[1]),
            nb_iter=int(cfg.plda_nb_iter),
            scaling_factor=float(cfg.plda_scaling_factor),
        ).fit(x, list(embedded.plda_labels))
    if "whiten" in cfg.backends:
        x = emb[next(k for k in emb if k.startswith("whiten_"))]
        whitening = WhiteningBackend(n_components=cfg.whiten_n_components).fit(x)
        fitted = {"whiten": whitening, **fitted}
    return fitted


def score_stage(cfg, x, enrol_idx, test_idx, fitted, mfcc=None):
    """Stage 2: raw scores of one trial list with every back-end.

    Arguments
    ---------
    cfg : EvalConfig
    x : np.ndarray
        ``(n_files, D)`` embeddings of the list's files.
    enrol_idx, test_idx : np.ndarray
        ``(n_trials,)`` rows of ``x``.
    fitted : dict
        From :func:`fit_backends`.
    mfcc : np.ndarray or None
        ``(n_files, 38)`` MFCC statistics of the list's files (``mfcc_stats``).

    Returns
    -------
    dict
        ``{backend: (n_trials,) scores}`` in the order cosine, whiten, plda,
        mfcc_stats.
    """
    out = {}
    if "cosine" in cfg.backends:
        out["cosine"] = cosine_scores(x, x, enrol_idx, test_idx)
    for name, backend in fitted.items():
        out[name] = backend.score_indices(x, enrol_idx, test_idx)
    if "mfcc_stats" in cfg.backends:
        from sslsv_sb.evaluation.mfcc_stats import mfcc_stats_scores

        out["mfcc_stats"] = mfcc_stats_scores(mfcc, enrol_idx, test_idx)
    return out


def normalise_stage(cfg, raw, x, cohort, enrol_idx, test_idx):
    """Stage 3: add ``cosine_<norm>`` (cohort score normalisation) after ``cosine``.

    Arguments
    ---------
    cfg : EvalConfig
    raw : dict
        From :func:`score_stage`.
    x : np.ndarray
        ``(n_files, D)`` embeddings of the list's files.
    cohort : np.ndarray or None
        ``(n_cohort, D)`` cohort embeddings.
    enrol_idx, test_idx : np.ndarray
        ``(n_trials,)`` rows of ``x``.

    Returns
    -------
    dict
        ``raw`` with the normalised cosine scores inserted after ``cosine``.
    """
    if not cfg.score_norm:
        return raw
    if "cosine" not in raw:
        raise SSLSVError("eval_score_norm needs the 'cosine' back-end")
    out = {}
    for backend, s in raw.items():
        out[backend] = s
        if backend == "cosine":
            out[f"cosine_{cfg.score_norm}"] = score_normalization(
                s,
                x,
                x,
                cohort,
                method=cfg.score_norm,
                top_k=int(cfg.cohort_top_k),
                enrol_idx=enrol_idx,
                test_idx=test_idx,
            )
    return out


def score_lists(cfg, lists, embedded, fitted):
    """Stages 2 and 3 on several trial lists.

    Arguments
    ---------
    cfg : EvalConfig
    lists : dict
        ``{set name of the list's embeddings: Trials}``.
    embedded : Embedded
    fitted : dict
        From :func:`fit_backends`.

    Returns
    -------
    dict
        ``{list name: {backend: (n_trials,) scores}}``.
    """
    emb = embedded.emb
    cohort = next((v for k, v in emb.items() if k.startswith("cohort_")), None)
    scores = {}
    for key, t in lists.items():
        x = emb[key]
        e_idx, t_idx = _trial_index(t, t.files())
        raw = score_stage(cfg, x, e_idx, t_idx, fitted, emb.get(f"mfcc_{key}"))
        scores[t.name] = normalise_stage(cfg, raw, x, cohort, e_idx, t_idx)
    return scores


def calibrate_stage(cfg, calib, embedded, fitted):
    """Stage 4: one affine LLR calibration per back-end, fitted on ``calib``.

    Arguments
    ---------
    cfg : EvalConfig
    calib : Trials or None
        Held-out calibration list (None: no calibration).
    embedded : Embedded
    fitted : dict
        From :func:`fit_backends`.

    Returns
    -------
    dict
        ``{backend: Calibrator}`` (empty without a calibration list).
    """
    if calib is None:
        return {}
    from sslsv_sb.evaluation.calibration import Calibrator

    lists = {f"calibration_{calib.name}": calib}
    cal_scores = score_lists(cfg, lists, embedded, fitted)[calib.name]
    return {
        backend: Calibrator().fit(
            s, calib.labels, p_target=float(cfg.calibration_p_target)
        )
        for backend, s in cal_scores.items()
    }


def metrics_stage(cfg, trials, scores, calibrators):
    """Metrics of every list and back-end (+ ``actdcf_<p>`` / ``cllr`` if calibrated).

    Arguments
    ---------
    cfg : EvalConfig
    trials : list of Trials
    scores : dict
        From :func:`score_lists`.
    calibrators : dict
        From :func:`calibrate_stage`.

    Returns
    -------
    dict
        ``{list name: {backend: metrics}}``.
    """
    results = {}
    for t in trials:
        results[t.name] = {}
        for backend, s in scores[t.name].items():
            m = verification_metrics(
                s,
                t.labels,
                p_targets=tuple(cfg.p_targets),
                with_min_cllr=True,
                enrol_ids=np.asarray(t.enrol),
            )
            if backend in calibrators:
                llr = calibrators[backend].transform(s)
                for p in cfg.p_targets:
                    m[f"actdcf_{p:g}"] = act_dcf(llr, t.labels, p)[0]
                m["cllr"] = cllr(llr, t.labels)
            results[t.name][backend] = m
    return results


def _write_scores(out_dir, tag, trials, scores):
    """``scores_<tag>.npz`` (``<list>__<backend>``, ``<list>__labels``), atomically.

    The untrained file is merged with the lists it already holds.
    """
    score_file = os.path.join(out_dir, f"scores_{tag}.npz")
    stored = _load_scores(score_file) if tag == "untrained" else {}
    for t in trials:
        stored[f"{t.name}__labels"] = t.labels
        for backend, s in scores[t.name].items():
            stored[f"{t.name}__{backend}"] = np.asarray(s, np.float64)
    np.savez(score_file[: -len(".npz")] + ".tmp.npz", **stored)
    os.replace(score_file[: -len(".npz")] + ".tmp.npz", score_file)


def _run_meta(cfg, meta, results, embedded, calibrators, model_id):
    """The ``"meta"`` entry of ``verification.json``."""
    cohort = next((v for k, v in embedded.emb.items() if k.startswith("cohort_")), None)
    run_meta = dict(meta or {})
    run_meta.update(
        {
            "backends": sorted({b for r in results.values() for b in r}),
            "score_norm": cfg.score_norm,
            "n_cohort": None if cohort is None else int(len(cohort)),
            "cohort_top_k": int(cfg.cohort_top_k) if cfg.score_norm else None,
            "extraction": embedded.settings,
            "cache": {"hits": embedded.cache.hits, "misses": embedded.cache.misses},
            "model_id": model_id,
            "trial_lists": list(cfg.trial_lists),
        }
    )
    if calibrators:
        run_meta["calibration"] = {
            "list": cfg.calibration_list,
            **{b: c.to_dict() for b, c in calibrators.items()},
        }
    return run_meta


def write_stage(out_dir, tag, cfg, trials, scores, results, **run):
    """Stage 5: write the scores, the json / markdown report and the plots.

    Arguments
    ---------
    out_dir, tag : str
        Run folder and ``"trained"`` / ``"untrained"``.
    cfg : EvalConfig
    trials : list of Trials
    scores, results : dict
        From :func:`score_lists` and :func:`metrics_stage`.
    **run
        ``embedded``, ``calibrators``, ``model_id``, ``meta``, ``data_folder`` and
        ``rng`` (t-SNE subset) of the trained report.

    Returns
    -------
    dict
        ``verification.json`` payload (untrained: ``{"lists": results}``, merged into
        ``verification_untrained.json``).
    """
    _write_scores(out_dir, tag, trials, scores)
    if tag == "untrained":
        path = os.path.join(out_dir, "verification_untrained.json")
        merged = _load_json(path)
        merged.update(results)
        write_json(path, merged)
        return {"lists": results}
    calibrators = run["calibrators"]
    run_meta = _run_meta(
        cfg, run["meta"], results, run["embedded"], calibrators, run["model_id"]
    )
    for b, c in calibrators.items():
        c.save(os.path.join(out_dir, f"calibration_{b}.json"))
    payload = {"lists": results, "meta": run_meta}
    untrained = _load_json(os.path.join(out_dir, "verification_untrained.json"))
    if untrained:
        payload["untrained"] = {"lists": untrained}
    if cfg.plots:
        emb, data_folder = run["embedded"].emb, run["data_folder"]
        payload["meta"]["plots"] = _write_plots(
            out_dir, trials, scores, emb, data_folder, cfg, run["rng"]
        )
    write_json(os.path.join(out_dir, "verification.json"), payload)
    md = os.path.join(out_dir, "verification.md")
    with open(md + ".tmp", "w", encoding="utf-8") as f:
        f.write(format_markdown(payload))
    os.replace(md + ".tmp", md)  # atomic, as write_json
    return payload


# ---------------------------------------------------------------------------- main
def run_verification(
    encode,
    config,
    data_folder,
    out_dir,
    *,
    model_id=None,
    tag="trained",
    meta=None,
    progress=False,
    **overrides,
):
    """Embed, score every trial list with every back-end, write the report.

    Stages: :func:`embed_stage` -> :func:`score_stage` -> :func:`normalise_stage`
    -> :func:`calibrate_stage` (then :func:`metrics_stage`) -> :func:`write_stage`.

    Arguments
    ---------
    encode : callable
        ``encode(wavs (N, L), lengths (N,)) -> (N, D)`` (e.g. ``brain.encode``).
    config : EvalConfig or dict
        Settings, or a loaded yaml read by :meth:`EvalConfig.from_hparams`.
    data_folder : str
        Folder the lists are relative to.
    out_dir : str
        Run folder receiving the outputs.
    model_id : str or None
        :func:`~sslsv_sb.evaluation.cache.model_fingerprint` of the model behind
        ``encode``; None disables the embedding cache.
    tag : str
        ``"trained"``: full report (json, md, plots). ``"untrained"``: cosine only,
        merged into ``verification_untrained.json`` / ``scores_untrained.npz`` and
        used as the baseline of later trained reports.
    meta : dict or None
        Run description stored under ``"meta"``.
    progress : bool
        Progress bar while embedding.
    **overrides
        :class:`EvalConfig` fields overriding ``config``.

    Returns
    -------
    dict
        The ``verification.json`` payload (for ``tag="untrained"``:
        ``{"lists": ...}``).
    """
    cfg = _resolve_config(config, tag, overrides)
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(int(cfg.seed))
    trials, calib = read_trial_lists(cfg, data_folder)
    embedded = embed_stage(
        encode,
        cfg,
        trials,
        calib,
        data_folder,
        out_dir,
        model_id,
        rng,
        progress=progress,
    )
    fitted = fit_backends(cfg, embedded)
    lists = {f"list_{t.name}": t for t in trials}
    scores = score_lists(cfg, lists, embedded, fitted)
    calibrators = calibrate_stage(cfg, calib, embedded, fitted)
    results = metrics_stage(cfg, trials, scores, calibrators)
    return write_stage(
        out_dir,
        tag,
        cfg,
        trials,
        scores,
        results,
        embedded=embedded,
        calibrators=calibrators,
        model_id=model_id,
        meta=meta,
        data_folder=data_folder,
        rng=rng,
    )


def _write_plots(out_dir, trials, scores, emb, data_folder, cfg, rng):
    """DET (trained vs untrained), histograms, t-SNE; returns relative paths."""
    from sslsv_sb.evaluation.plots import plot_det, plot_score_histograms

    plot_dir = os.path.join(out_dir, "plots")
    baseline = _load_scores(os.path.join(out_dir, "scores_untrained.npz"))
    written = []
    for t in trials:
        systems = {b: (s, t.labels) for b, s in scores[t.name].items()}
        if f"{t.name}__cosine" in baseline:
            systems["untrained cosine"] = (
                baseline[f"{t.name}__cosine"],
                baseline[f"{t.name}__labels"],
            )
        written.append(
            plot_det(
                systems,
                os.path.join(plot_dir, f"det_{t.name}.png"),
                title=f"DET {t.name}",
            )
        )
        for b, s in scores[t.name].items():
            written.append(
                plot_score_histograms(
                    s,
                    t.labels,
                    os.path.join(plot_dir, f"scores_{t.name}_{b}.png"),
                    bins=min(100, max(10, len(s) // 20)),
                    title=f"{t.name} {b}",
                )
            )
    tsne = _write_tsne(plot_dir, trials, emb, data_folder, cfg, rng)
    if tsne is not None:
        written.append(tsne)
    return [os.path.relpath(str(p), out_dir) for p in written]


def _write_tsne(plot_dir, trials, emb, data_folder, cfg, rng):
    """t-SNE of the test embeddings coloured by speaker; its path, None if skipped.

    Speakers come from ``cfg.tsne_labels`` (``File,Speaker`` CSV) or the file paths
    (:func:`speaker_of`); at most ``cfg.tsne_max_points`` random files.
    """
    from sslsv_sb.evaluation.plots import plot_tsne

    files = sorted({f for t in trials for f in t.files()})
    x = {}
    for t in trials:
        for f, e in zip(t.files(), emb[f"list_{t.name}"]):
            x[f] = e
    if cfg.tsne_labels:
        from sslsv_sb.evaluation.classification import read_label_csv

        rows = read_label_csv(
            resolve(cfg.tsne_labels, data_folder),
            "Speaker",
            data_folder,
            check_files=False,
        )
        lab = {os.path.normpath(r.file): r.label for r in rows}
        files = [f for f in files if os.path.normpath(resolve(f, data_folder)) in lab]
        spk = [lab[os.path.normpath(resolve(f, data_folder))] for f in files]
    else:
        spk = speaker_of(files)
    if len(files) > int(cfg.tsne_max_points):
        keep = np.sort(rng.choice(len(files), int(cfg.tsne_max_points), replace=False))
        files, spk = [files[i] for i in keep], [spk[i] for i in keep]
    try:
        return plot_tsne(
            np.stack([x[f] for f in files]) if files else np.zeros((0, 1)),
            spk,
            os.path.join(plot_dir, "tsne.png"),
            seed=int(cfg.seed),
            title="t-SNE of test embeddings (colour = speaker)",
        )
    except ValueError as err:
        logger.warning("t-SNE skipped: %s", err)
        return None


# -------------------------------------------------------------------- compatibility
def score_trial_lists(
    encode,
    trial_files,
    data_folder,
    crop_seconds=None,
    n_crops=1,
    num_workers=0,
    progress=False,
    **batches,
):
    """Embed every file of the trial lists once and score each list (cosine).

    No files are written (see :func:`run_verification` for the full report).

    Arguments
    ---------
    encode : callable
        ``encode(wavs (N, L), lengths (N,)) -> (N, D)``.
    trial_files : list of str
        Trial lists (``label enrol test`` lines).
    data_folder : str
        Folder the listed files are relative to.
    crop_seconds, n_crops, num_workers, progress
        As :func:`~sslsv_sb.evaluation.embeddings.extract_embeddings`.
    **batches
        ``max_batch``, ``max_batch_seconds``, ``bucket_ratio`` of
        :func:`~sslsv_sb.evaluation.embeddings.extract_embeddings`.

    Returns
    -------
    dict
        ``{list name: {"cosine": metrics}}``.
    """
    lists = [read_trials(path, data_folder) for path in trial_files]
    files = sorted({f for t in lists for f in t.files()})
    emb = extract_embeddings(
        encode,
        [resolve(f, data_folder) for f in files],
        crop_seconds=crop_seconds,
        n_crops=n_crops,
        num_workers=num_workers,
        progress=progress,
        **batches,
    )
    index = {f: i for i, f in enumerate(files)}
    results = {}
    for t in lists:
        scores = cosine_trial_scores(emb, index, t)
        results[t.name] = {
            "cosine": verification_metrics(
                scores, t.labels, with_min_cllr=True, enrol_ids=np.asarray(t.enrol)
            )
        }
    return results


def time_verification(encode, trial_file, data_folder, **batches):
    """Time the embedding and cosine scoring of one trial list (nothing written).

    The evaluation speed measure of ``tools/eval_speed.py`` and
    ``tools/benchmark.py``: every distinct file of the list is embedded once (full
    utterances, batched as ``batches`` say), then every trial is scored and the
    metrics are computed, as sslsv's ``CosineSVEvaluation`` does.

    Arguments
    ---------
    encode : callable
        ``encode(wavs (N, L), lengths (N,)) -> (N, D)`` (e.g. ``brain.encode``).
    trial_file : str
        Trial list.
    data_folder : str
        Folder the listed files are relative to.
    **batches
        ``max_batch``, ``max_batch_seconds``, ``bucket_ratio`` of
        :func:`~sslsv_sb.evaluation.embeddings.extract_embeddings`.

    Returns
    -------
    dict
        ``seconds`` (wall), ``cpu_seconds`` (user + system CPU time of this process
        and of its finished children, e.g. the ``jobs`` workers), ``n_files``,
        ``utt_per_s``, ``cpu_utt_per_s`` (files per CPU second: the work, which a
        busy machine changes less than the wall time), ``eer`` (%), ``mindcf_0.01``.
    """
    import time

    n_files = len(read_trials(trial_file, data_folder).files())
    start, cpu = time.perf_counter(), _cpu_seconds()
    res = score_trial_lists(encode, [trial_file], data_folder, **batches)
    seconds = time.perf_counter() - start
    cpu = _cpu_seconds() - cpu
    metrics = next(iter(res.values()))["cosine"]
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "n_files": n_files,
        "utt_per_s": n_files / seconds,
        "cpu_utt_per_s": n_files / cpu,
        "eer": float(metrics["eer"]),
        "mindcf_0.01": float(metrics["mindcf_0.01"]),
    }


def _cpu_seconds():
    """User + system CPU seconds of this process and its waited-for children."""
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def write_json(path, payload):
    """Write JSON atomically (never a half-written file)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=2, sort_keys=True)
    os.replace(tmp, path)


def format_table(results, untrained=None):
    """Plain-text table of EER / minDCF per list and back-end (+ untrained)."""
    rows = [
        f"{'list':<20} {'backend':<16} {'system':<10} EER(%)  minDCF(0.01)"
        "  minDCF(0.05)"
    ]
    for name, backends in results.items():
        for backend, m in backends.items():
            systems = [("trained", m)]
            if untrained and name in untrained and backend in untrained[name]:
                systems.insert(0, ("untrained", untrained[name][backend]))
            for label, mm in systems:
                rows.append(
                    f"{name:<20} {backend:<16} {label:<10} {mm['eer']:7.2f}"
                    f"  {mm.get('mindcf_0.01', float('nan')):12.4f}"
                    f"  {mm.get('mindcf_0.05', float('nan')):12.4f}"
                )
    return "\n".join(rows)


def format_markdown(payload):
    """Markdown summary of a ``verification.json`` payload."""
    lists = payload["lists"]
    untrained = payload.get("untrained", {}).get("lists", {})
    meta = payload.get("meta", {})
    cols = [
        "eer",
        "mindcf_0.01",
        "mindcf_0.05",
        "actdcf_0.01",
        "cllr",
        "min_cllr",
        "avg_rprec",
    ]
    heads = [
        "EER (%)",
        "minDCF 0.01",
        "minDCF 0.05",
        "actDCF 0.01",
        "Cllr",
        "minCllr",
        "AvgRPrec",
    ]
    out = ["# Verification results", ""]
    desc = ", ".join(
        f"{k}: {meta[k]}"
        for k in ("method", "encoder", "epochs", "score_norm")
        if k in meta
    )
    if desc:
        out += [desc, ""]
    for name, backends in lists.items():
        n = next(iter(backends.values()))
        out += [
            f"## {name} ({n['n_target']} target / {n['n_nontarget']} non-target)",
            "",
            "| system | back-end | " + " | ".join(heads) + " |",
            "|---|---|" + "---|" * len(heads),
        ]
        rows = [("untrained", b, m) for b, m in untrained.get(name, {}).items()]
        rows += [("trained", b, m) for b, m in backends.items()]
        for system, b, m in rows:
            vals = [
                f"{m[c]:.2f}" if c == "eer" else (f"{m[c]:.4f}" if c in m else "-")
                for c in cols
            ]
            out.append(f"| {system} | {b} | " + " | ".join(vals) + " |")
        out.append("")
    if "calibration" in meta:
        out += [f"Calibrated on `{meta['calibration']['list']}` (actDCF, Cllr).", ""]
    for p in meta.get("plots", []):
        out.append(f"![{os.path.basename(p)}]({p})")
    return "\n".join(out) + "\n"
