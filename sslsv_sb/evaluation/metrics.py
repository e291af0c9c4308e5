"""Speaker-verification metrics from one sort of the scores.

SpeechBrain's ``EER``/``minDCF`` loop over thresholds in Python and ``minDCF``
materialises a ``(2N, N)`` matrix (about 20 GB for VoxCeleb1-O). Everything here is
O(n log n) time and O(n) memory: scores are sorted once and the miss / false-alarm rates
at every threshold come from cumulative sums.

Conventions: higher score = more likely target. A threshold ``t`` accepts scores ``>= t``.
Rates are evaluated at every distinct score (ties move together), plus "accept all"
and "reject all".
"""

import numpy as np


def _as_arrays(scores, labels):
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel().astype(bool)
    if scores.shape != labels.shape:
        raise ValueError(
            f"scores and labels differ in length: {scores.size} vs {labels.size}"
        )
    if not labels.any() or labels.all():
        raise ValueError("need at least one target and one non-target trial")
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or Inf")
    return scores, labels


def error_rates(scores, labels):
    """Miss and false-alarm rates at every distinct threshold.

    Arguments
    ---------
    scores : array-like, (n,)
        Trial scores.
    labels : array-like, (n,)
        1 (or True) for target trials, 0 for non-target trials.

    Returns
    -------
    p_miss, p_fa, thresholds : np.ndarray, (k + 1,)
        ``p_miss[i]``/``p_fa[i]`` are the rates when accepting scores
        ``>= thresholds[i]``; the last entry rejects everything (threshold +inf).
        ``p_miss`` is non-decreasing and ``p_fa`` non-increasing.
    """
    scores, labels = _as_arrays(scores, labels)
    order = np.argsort(scores, kind="mergesort")
    s = scores[order]
    y = labels[order]
    n_tar = y.sum()
    n_non = y.size - n_tar
    # Index of the first element of each group of equal scores.
    first = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    # Targets / non-targets strictly below each distinct score = rejected ones.
    cum_tar = np.r_[0, np.cumsum(y)]
    cum_non = np.r_[0, np.cumsum(~y)]
    rej_tar = np.r_[cum_tar[first], n_tar]
    rej_non = np.r_[cum_non[first], n_non]
    p_miss = rej_tar / n_tar
    p_fa = 1.0 - rej_non / n_non
    thresholds = np.r_[s[first], np.inf]
    return p_miss, p_fa, thresholds


def eer(scores, labels):
    """Equal error rate (fraction, not %), with its threshold.

    The operating point minimising ``|p_miss - p_fa|`` over all thresholds; the EER is
    the mean of the two rates there (SpeechBrain's and Kaldi's convention). Because
    ``p_miss - p_fa`` is monotonic in the threshold, the minimiser is found by binary
    search instead of a sweep.

    Returns
    -------
    (eer, threshold) : (float, float)
    """
    p_miss, p_fa, thr = error_rates(scores, labels)
    diff = p_miss - p_fa  # non-decreasing
    i = int(np.searchsorted(diff, 0.0, side="left"))
    cands = [j for j in (i - 1, i) if 0 <= j < len(thr)]
    j = min(cands, key=lambda k: abs(diff[k]))
    return float((p_miss[j] + p_fa[j]) / 2.0), float(thr[j])


def min_dcf(scores, labels, p_target=0.01, c_miss=1.0, c_fa=1.0):
    """Normalised minimum detection cost (NIST SRE definition).

    ``DCF(t) = c_miss * p_miss(t) * p_target + c_fa * p_fa(t) * (1 - p_target)``,
    divided by the cost of the best trivial system
    ``min(c_miss * p_target, c_fa * (1 - p_target))``.

    Returns
    -------
    (min_dcf, threshold) : (float, float)
    """
    p_miss, p_fa, thr = error_rates(scores, labels)
    dcf = c_miss * p_miss * p_target + c_fa * p_fa * (1.0 - p_target)
    norm = min(c_miss * p_target, c_fa * (1.0 - p_target))
    i = int(np.argmin(dcf))
    return float(dcf[i] / norm), float(thr[i])


def verification_metrics(scores, labels, p_targets=(0.01, 0.05), c_miss=1.0, c_fa=1.0):
    """EER (%) and minDCF at each ``p_target`` as a flat dict of plain floats."""
    out = {"eer": 100.0 * eer(scores, labels)[0]}
    for p in p_targets:
        out[f"mindcf_{p:g}"] = min_dcf(scores, labels, p, c_miss, c_fa)[0]
    out["n_target"] = int(np.asarray(labels).astype(bool).sum())
    out["n_nontarget"] = int(np.asarray(labels).size - out["n_target"])
    return out
