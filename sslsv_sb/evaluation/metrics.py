"""Speaker-verification metrics from one sort of the scores.

SpeechBrain's ``EER``/``minDCF`` loop over thresholds in Python and ``minDCF``
materialises a ``(2N, N)`` matrix (about 20 GB for VoxCeleb1-O). Everything here is
O(n log n) time and O(n) memory: scores are sorted once and the miss / false-alarm rates
at every threshold come from cumulative sums.

Conventions: higher score = more likely target. A threshold ``t`` accepts scores
``>= t``. Rates are evaluated at every distinct score (ties move together), plus
"accept all" and "reject all".

Calibration-sensitive metrics (``act_dcf``, ``cllr``) expect log-likelihood ratios
(natural log); ``min_cllr`` and ``pav_llr`` measure / produce the best monotonic
calibration of arbitrary scores (pool-adjacent-violators). ``avg_rprec`` is the mean
R-precision per enrolment utterance; ``det_curve`` returns the DET points (the probit
warping is done in :mod:`sslsv_sb.evaluation.plots`).
"""

import math

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
    return _eer_from_rates(*error_rates(scores, labels))


def _eer_from_rates(p_miss, p_fa, thr):
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
    return _min_dcf_from_rates(
        *error_rates(scores, labels), p_target=p_target, c_miss=c_miss, c_fa=c_fa
    )


def _min_dcf_from_rates(p_miss, p_fa, thr, p_target, c_miss, c_fa):
    _check_costs(p_target, c_miss, c_fa)
    dcf = c_miss * p_miss * p_target + c_fa * p_fa * (1.0 - p_target)
    norm = min(c_miss * p_target, c_fa * (1.0 - p_target))
    i = int(np.argmin(dcf))
    return float(dcf[i] / norm), float(thr[i])


def _check_costs(p_target, c_miss, c_fa):
    if not 0.0 < p_target < 1.0:
        raise ValueError(f"p_target must be in (0, 1), got {p_target}")
    if c_miss <= 0 or c_fa <= 0:
        raise ValueError(f"costs must be positive, got c_miss={c_miss}, c_fa={c_fa}")


def bayes_threshold(p_target=0.01, c_miss=1.0, c_fa=1.0):
    """Bayes decision threshold on calibrated LLRs.

    ``-log(p_target * c_miss / ((1 - p_target) * c_fa))``: accepting trials whose
    log-likelihood ratio is at or above it minimises the expected cost.
    """
    _check_costs(p_target, c_miss, c_fa)
    return -math.log(p_target * c_miss / ((1.0 - p_target) * c_fa))


def act_dcf(llr_scores, labels, p_target=0.01, c_miss=1.0, c_fa=1.0):
    """Normalised actual detection cost of calibrated LLR scores.

    Decisions are taken at the Bayes threshold :func:`bayes_threshold` (trials with
    ``llr >= threshold`` are accepted), the cost is normalised like :func:`min_dcf`
    by ``min(c_miss * p_target, c_fa * (1 - p_target))``. Unlike sslsv (threshold
    overwritten with 0.5, costs ignored in the normaliser) this is the NIST SRE
    definition, so ``act_dcf >= min_dcf`` always and equality means the scores are
    perfectly calibrated at this operating point. O(n), no sort needed.

    Arguments
    ---------
    llr_scores : array-like, (n,)
        Log-likelihood ratios (natural log), e.g. :class:`Calibrator` output.
    labels : array-like, (n,)
        1 (or True) for target trials, 0 for non-target trials.
    p_target, c_miss, c_fa : float
        Operating point.

    Returns
    -------
    (act_dcf, threshold) : (float, float)
    """
    scores, labels = _as_arrays(llr_scores, labels)
    thr = bayes_threshold(p_target, c_miss, c_fa)
    accept = scores >= thr
    p_miss = np.count_nonzero(~accept & labels) / np.count_nonzero(labels)
    p_fa = np.count_nonzero(accept & ~labels) / np.count_nonzero(~labels)
    dcf = c_miss * p_miss * p_target + c_fa * p_fa * (1.0 - p_target)
    norm = min(c_miss * p_target, c_fa * (1.0 - p_target))
    return float(dcf / norm), float(thr)


def _as_llr_arrays(llr, labels):
    """Like ``_as_arrays`` but +-inf LLRs are legal (PAV output can be infinite)."""
    llr = np.asarray(llr, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel().astype(bool)
    if llr.shape != labels.shape:
        raise ValueError(
            f"scores and labels differ in length: {llr.size} vs {labels.size}"
        )
    if not labels.any() or labels.all():
        raise ValueError("need at least one target and one non-target trial")
    if np.isnan(llr).any():
        raise ValueError("scores contain NaN")
    return llr, labels


def cllr(llr, labels):
    """Log-likelihood-ratio cost in bits (Brümmer & du Preez, 2006).

    ``0.5 / ln 2 * (mean_tar log(1 + e^-llr) + mean_non log(1 + e^llr))``.
    1 bit = the uninformative system (all LLRs 0); lower is better; it penalises
    both bad discrimination and bad calibration. Computed with ``logaddexp`` (no
    overflow); ``+-inf`` LLRs are accepted.

    Arguments
    ---------
    llr : array-like, (n,)
        Log-likelihood ratios (natural log).
    labels : array-like, (n,)
        1 (or True) for target trials, 0 for non-target trials.

    Returns
    -------
    float
    """
    llr, labels = _as_llr_arrays(llr, labels)
    c_tar = np.logaddexp(0.0, -llr[labels]).mean()
    c_non = np.logaddexp(0.0, llr[~labels]).mean()
    return float(0.5 * (c_tar + c_non) / math.log(2.0))


def pav_llr(scores, labels):
    """Optimal monotonic score-to-LLR map of the scores themselves (PAV).

    Isotonic regression of the labels on the scores gives the posterior
    ``P(target | score)`` under the empirical prior ``n_tar / n``; subtracting the
    prior log-odds turns it into an LLR. Tied scores are pooled first (they must get
    the same LLR). We use :class:`sklearn.isotonic.IsotonicRegression`, whose
    pool-adjacent-violators pass is compiled (Cython) and O(n) after the sort, and
    which merges duplicate x values exactly as needed; a hand-written O(n) PAV is
    a Python loop over blocks (~1 s per 10^6 trials), slower for no gain.

    Arguments
    ---------
    scores : array-like, (n,)
    labels : array-like, (n,)

    Returns
    -------
    llr : np.ndarray, (n,)
        In the input order; can be ``-inf`` / ``+inf`` where a block of scores holds
        only non-targets / only targets.
    """
    from sklearn.isotonic import IsotonicRegression

    scores, labels = _as_arrays(scores, labels)
    iso = IsotonicRegression(
        y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip"
    )
    post = iso.fit_transform(scores, labels.astype(np.float64))
    n_tar = np.count_nonzero(labels)
    prior_logodds = math.log(n_tar / (labels.size - n_tar))
    with np.errstate(divide="ignore"):
        return np.log(post) - np.log1p(-post) - prior_logodds


def min_cllr(scores, labels):
    """Minimum Cllr in bits: :func:`cllr` after the optimal monotonic calibration.

    ``min_cllr <= cllr`` for any LLR scores; the difference is the calibration loss.

    Returns
    -------
    float
    """
    return cllr(pav_llr(scores, labels), labels)


def avg_rprec(scores, labels, enrol_ids):
    """Average R-precision over enrolment utterances (sslsv's ``avgrprec``).

    For each enrolment utterance with ``R >= 1`` target trials, its trials are ranked
    by decreasing score and the fraction of targets among the top ``R`` is taken;
    the result is the mean over those enrolments (enrolments without target trials
    are skipped). Ties at the ``R``-th score are resolved by their expectation under
    random tie-breaking (targets strictly above + share of the tied group), so the
    value does not depend on the trial order. Vectorised: one ``lexsort`` plus
    ``bincount`` reductions, no per-enrolment Python loop.

    Arguments
    ---------
    scores : array-like, (n,)
    labels : array-like, (n,)
    enrol_ids : array-like, (n,)
        Enrolment utterance (or model) id of each trial, any hashable dtype.

    Returns
    -------
    float
        In [0, 1].
    """
    import pandas as pd

    scores, labels = _as_arrays(scores, labels)
    enrol_ids = np.asarray(enrol_ids).ravel()
    if enrol_ids.shape != scores.shape:
        raise ValueError(
            f"enrol_ids and scores differ in length: {enrol_ids.size} vs {scores.size}"
        )
    codes, uniques = pd.factorize(enrol_ids, sort=False)
    n_groups = len(uniques)
    order = np.lexsort((-scores, codes))  # by group, then decreasing score
    s = scores[order]
    c = codes[order]
    y = labels[order]
    size = np.bincount(c, minlength=n_groups)
    r = np.bincount(c, weights=y, minlength=n_groups).astype(np.int64)
    start = np.r_[0, np.cumsum(size)[:-1]]
    valid = r > 0
    # Score of the R-th best trial of each group (only meaningful where R >= 1).
    t_r = np.full(n_groups, np.inf)
    t_r[valid] = s[start[valid] + r[valid] - 1]
    tr_row = t_r[c]
    above_tar = np.bincount(c, weights=y & (s > tr_row), minlength=n_groups)
    above_all = np.bincount(c, weights=s > tr_row, minlength=n_groups)
    tied = s == tr_row
    tied_all = np.bincount(c, weights=tied, minlength=n_groups)
    tied_tar = np.bincount(c, weights=y & tied, minlength=n_groups)
    v = np.flatnonzero(valid)
    hits = above_tar[v] + (r[v] - above_all[v]) * tied_tar[v] / tied_all[v]
    return float(np.mean(hits / r[v]))


def det_curve(scores, labels, corners_only=True):
    """Points of the detection-error-tradeoff curve.

    Arguments
    ---------
    scores, labels : array-like, (n,)
    corners_only : bool
        Drop points in the middle of straight horizontal / vertical runs of the
        staircase (lossless for plotting; a 10^6-trial curve shrinks a lot).

    Returns
    -------
    p_fa, p_miss, thresholds : np.ndarray, (k,)
        Ordered by increasing threshold (``p_fa`` decreasing, ``p_miss``
        increasing); probit warping is left to the plotting code.
    """
    p_miss, p_fa, thr = error_rates(scores, labels)
    if corners_only and len(thr) > 2:
        dm = np.diff(p_miss) != 0
        df = np.diff(p_fa) != 0
        # Keep point i if the step into it and the step out of it differ in kind.
        keep = np.r_[True, (dm[:-1] != dm[1:]) | (df[:-1] != df[1:]), True]
        p_miss, p_fa, thr = p_miss[keep], p_fa[keep], thr[keep]
    return p_fa, p_miss, thr


def verification_metrics(
    scores,
    labels,
    p_targets=(0.01, 0.05),
    c_miss=1.0,
    c_fa=1.0,
    *,
    llr=False,
    with_min_cllr=False,
    enrol_ids=None,
):
    """EER (%) and minDCF at each ``p_target`` as a flat dict of plain floats.

    Keys always present: ``eer`` (%), ``mindcf_<p>`` for each ``p`` in
    ``p_targets``, ``n_target``, ``n_nontarget``. Optional keys:

    - ``llr=True`` (the scores are calibrated LLRs): ``actdcf_<p>`` for each ``p``
      and ``cllr`` (bits);
    - ``with_min_cllr=True``: ``min_cllr`` (bits; any scores);
    - ``enrol_ids`` given (array, (n,)): ``avg_rprec`` (fraction).

    The scores are sorted once for EER and all minDCFs.
    """
    rates = error_rates(scores, labels)
    out = {"eer": 100.0 * _eer_from_rates(*rates)[0]}
    for p in p_targets:
        out[f"mindcf_{p:g}"] = _min_dcf_from_rates(*rates, p, c_miss, c_fa)[0]
    if llr:
        for p in p_targets:
            out[f"actdcf_{p:g}"] = act_dcf(scores, labels, p, c_miss, c_fa)[0]
        out["cllr"] = cllr(scores, labels)
    if with_min_cllr:
        out["min_cllr"] = min_cllr(scores, labels)
    if enrol_ids is not None:
        out["avg_rprec"] = avg_rprec(scores, labels, enrol_ids)
    out["n_target"] = int(np.asarray(labels).astype(bool).sum())
    out["n_nontarget"] = int(np.asarray(labels).size - out["n_target"])
    return out
