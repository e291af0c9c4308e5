"""Evaluation plots (matplotlib, Agg backend; files only, no display needed).

- :func:`plot_det`: DET curves of several systems on probit axes, EER points marked;
- :func:`plot_score_histograms`: target / non-target score distributions;
- :func:`plot_tsne`: t-SNE of embeddings coloured by speaker.

Every function writes the figure to ``path`` (parent folders created) and returns
``path`` as a :class:`pathlib.Path`.
"""

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy.stats import norm  # noqa: E402

from sslsv_sb.evaluation.metrics import det_curve, eer  # noqa: E402

# Probit range: 0.01 % .. 50 % (the usual DET window), clipped where rates hit 0/1.
_DET_TICKS = [0.0001, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.5]


def _probit(p, lo=1e-5):
    return norm.ppf(np.clip(p, lo, 1.0 - lo))


def _check_pair(name, scores, labels):
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel().astype(bool)
    if scores.size == 0:
        raise ValueError(f"{name}: no scores to plot")
    if scores.shape != labels.shape:
        raise ValueError(
            f"{name}: scores and labels differ in length: {scores.size} vs "
            f"{labels.size}"
        )
    if not labels.any() or labels.all():
        raise ValueError(f"{name}: need both target and non-target trials")
    return scores, labels


def _save(fig, path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")  # same format, atomic
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)
    return path


def plot_det(systems, path, title="DET"):
    """DET curves of several systems on one figure.

    Arguments
    ---------
    systems : dict
        ``{name: (scores (n,), labels (n,))}``; each system may use its own trials.
    path : str or Path
        Output image (format from the suffix, e.g. ``.png``).
    title : str

    Returns
    -------
    Path
    """
    if not systems:
        raise ValueError("plot_det: no systems given")
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    for name, (scores, labels) in systems.items():
        scores, labels = _check_pair(name, scores, labels)
        p_fa, p_miss, _ = det_curve(scores, labels)
        e, _ = eer(scores, labels)
        (line,) = ax.plot(_probit(p_fa), _probit(p_miss), label=f"{name} (EER {e:.2%})")
        ax.plot(_probit(e), _probit(e), "o", color=line.get_color(), markersize=6)
    ticks = _probit(np.array(_DET_TICKS))
    labels_txt = [f"{100 * t:g}" for t in _DET_TICKS]
    lim = (_probit(0.0001), _probit(0.5))
    ax.set_xticks(ticks, labels_txt)
    ax.set_yticks(ticks, labels_txt)
    ax.set_xlim(lim)
    ax.set_ylim(lim)
    ax.plot(lim, lim, ":", color="grey", linewidth=0.8)
    ax.set_xlabel("False alarm rate (%)")
    ax.set_ylabel("Miss rate (%)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    return _save(fig, path)


def plot_score_histograms(scores, labels, path, bins=100, title="Scores"):
    """Target vs non-target score histograms (densities).

    Arguments
    ---------
    scores : array-like, (n,)
    labels : array-like, (n,)
    path : str or Path
    bins : int

    Returns
    -------
    Path
    """
    scores, labels = _check_pair("plot_score_histograms", scores, labels)
    if not np.isfinite(scores).all():
        raise ValueError("plot_score_histograms: scores contain NaN or Inf")
    edges = np.histogram_bin_edges(scores, bins=bins)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist(scores[~labels], bins=edges, density=True, alpha=0.6, label="non-target")
    ax.hist(scores[labels], bins=edges, density=True, alpha=0.6, label="target")
    ax.set_xlabel("score")
    ax.set_ylabel("density")
    ax.set_title(title)
    ax.legend()
    return _save(fig, path)


def plot_tsne(
    embeddings,
    speaker_labels,
    path,
    max_speakers=20,
    seed=0,
    perplexity=30.0,
    title="t-SNE",
):
    """2-D t-SNE of embeddings, one colour per speaker.

    Arguments
    ---------
    embeddings : array-like, (N, D)
    speaker_labels : sequence, (N,)
    path : str or Path
    max_speakers : int
        Speakers kept (the first ``max_speakers`` in sorted order).
    seed : int
        t-SNE random state.
    perplexity : float
        Clamped to ``(n - 1) / 3`` for small sets (sklearn needs ``< n``).

    Returns
    -------
    Path
    """
    from sklearn.manifold import TSNE

    x = np.asarray(embeddings, dtype=np.float32)
    y = np.asarray(speaker_labels).ravel()
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(
            f"plot_tsne: embeddings must be non-empty (N, D), got {x.shape}"
        )
    if len(y) != len(x):
        raise ValueError(f"plot_tsne: {len(x)} embeddings but {len(y)} labels")
    keep_spk = np.unique(y)[:max_speakers]
    keep = np.isin(y, keep_spk)
    x, y = x[keep], y[keep]
    if len(x) < 4:
        raise ValueError(f"plot_tsne: need at least 4 embeddings, got {len(x)}")
    perp = float(min(perplexity, max(1.0, (len(x) - 1) / 3.0)))
    xy = TSNE(
        n_components=2, perplexity=perp, random_state=seed, init="pca"
    ).fit_transform(x)
    fig, ax = plt.subplots(figsize=(6, 6))
    cmap = plt.get_cmap("tab20")
    for i, s in enumerate(keep_spk):
        m = y == s
        ax.scatter(xy[m, 0], xy[m, 1], s=8, color=cmap(i % 20), label=str(s))
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title)
    if len(keep_spk) <= 20:
        ax.legend(fontsize=6, markerscale=1.5, loc="best", ncol=2)
    return _save(fig, path)
