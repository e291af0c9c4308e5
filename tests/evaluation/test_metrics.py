"""Metrics vs brute-force definitions and SpeechBrain."""

import math

import numpy as np
import pytest

from sslsv_sb.evaluation import metrics as M


def brute_rates(scores, labels):
    """Explicit sweep: accept ``score >= t`` for every score and +inf."""
    scores = np.asarray(scores, float)
    labels = np.asarray(labels, bool)
    out = []
    for t in sorted(set(scores.tolist())) + [math.inf]:
        acc = scores >= t
        p_miss = np.sum(~acc & labels) / labels.sum()
        p_fa = np.sum(acc & ~labels) / (~labels).sum()
        out.append((t, p_miss, p_fa))
    return out


def brute_eer(scores, labels):
    rates = brute_rates(scores, labels)
    best = min(abs(r[1] - r[2]) for r in rates)
    # Set of EER values over all minimisers of |p_miss - p_fa|.
    return {(r[1] + r[2]) / 2 for r in rates if abs(abs(r[1] - r[2]) - best) < 1e-12}


def brute_min_dcf(scores, labels, p, cm=1.0, cf=1.0):
    norm = min(cm * p, cf * (1 - p))
    return min(
        (cm * pm * p + cf * pf * (1 - p)) / norm
        for _, pm, pf in brute_rates(scores, labels)
    )


def brute_act_dcf(llr, labels, p, cm=1.0, cf=1.0):
    llr = np.asarray(llr, float)
    labels = np.asarray(labels, bool)
    thr = math.log((1 - p) * cf / (p * cm))
    pm = np.mean(llr[labels] < thr)
    pf = np.mean(llr[~labels] >= thr)
    return (cm * pm * p + cf * pf * (1 - p)) / min(cm * p, cf * (1 - p))


def brute_cllr(llr, labels):
    llr = np.asarray(llr, float)
    labels = np.asarray(labels, bool)
    tar = [math.log2(1 + math.exp(-s)) for s in llr[labels]]
    non = [math.log2(1 + math.exp(s)) for s in llr[~labels]]
    return 0.5 * (sum(tar) / len(tar) + sum(non) / len(non))


def brute_rprec(scores, labels, enrol):
    """Per-enrolment loop; ties at the R-th score shared in expectation."""
    scores = np.asarray(scores, float)
    labels = np.asarray(labels, bool)
    enrol = np.asarray(enrol)
    vals = []
    for e in dict.fromkeys(enrol.tolist()):
        m = enrol == e
        s, y = scores[m], labels[m]
        r = int(y.sum())
        if r == 0:
            continue
        t_r = np.sort(s)[::-1][r - 1]
        above = s > t_r
        tied = s == t_r
        hits = y[above].sum() + (r - above.sum()) * y[tied].sum() / tied.sum()
        vals.append(hits / r)
    return float(np.mean(vals))


def random_set(n, seed, ties=False, sep=1.5):
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.3
    y[:2] = [True, False]
    s = rng.normal(size=n) + sep * y
    if ties:
        s = np.round(s, 1)
    return s, y


@pytest.mark.parametrize("seed,ties", [(0, False), (1, True), (2, True)])
def test_eer_min_dcf_act_dcf_vs_brute_force(seed, ties):
    s, y = random_set(300, seed, ties)
    e, thr = M.eer(s, y)
    assert any(abs(e - b) < 1e-12 for b in brute_eer(s, y))
    for p, cm, cf in [(0.01, 1, 1), (0.05, 1, 1), (0.3, 2, 0.5)]:
        assert M.min_dcf(s, y, p, cm, cf)[0] == pytest.approx(
            brute_min_dcf(s, y, p, cm, cf)
        )
        assert M.act_dcf(s, y, p, cm, cf)[0] == pytest.approx(
            brute_act_dcf(s, y, p, cm, cf)
        )
        # actDCF (any fixed threshold) can never beat minDCF.
        assert M.act_dcf(s, y, p, cm, cf)[0] >= M.min_dcf(s, y, p, cm, cf)[0] - 1e-12


def test_hand_made_sets():
    # Perfectly separated.
    assert M.eer([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1])[0] == 0.0
    assert M.min_dcf([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1])[0] == 0.0
    # Perfectly inverted: the crossing point rejects all targets, accepts all
    # non-targets.
    assert M.eer([0.9, 0.8, 0.1, 0.2], [0, 0, 1, 1])[0] == 1.0
    # All scores equal: only accept-all / reject-all exist.
    e, _ = M.eer([0.5] * 6, [1, 0, 1, 0, 0, 0])
    assert e == 0.5
    assert M.min_dcf([0.5] * 6, [1, 0, 1, 0, 0, 0], 0.01)[0] == pytest.approx(1.0)
    # Ties across classes at the decision point.
    s, y = [0.0, 1.0, 1.0, 2.0], [0, 0, 1, 1]
    assert any(abs(M.eer(s, y)[0] - b) < 1e-12 for b in brute_eer(s, y))
    # act_dcf threshold is the Bayes threshold, not 0.5.
    assert M.act_dcf([3.0, -3.0], [1, 0], 0.01)[1] == pytest.approx(math.log(99))
    assert M.bayes_threshold(0.5) == 0.0


def test_error_rates_monotonic_and_endpoints():
    s, y = random_set(500, 3, ties=True)
    pm, pf, thr = M.error_rates(s, y)
    assert pm[0] == 0.0 and pf[0] == 1.0 and pm[-1] == 1.0 and pf[-1] == 0.0
    assert np.all(np.diff(pm) >= 0) and np.all(np.diff(pf) <= 0)
    assert np.isinf(thr[-1])


def test_against_speechbrain():
    import torch
    from speechbrain.utils.metric_stats import EER, minDCF

    s, y = random_set(1500, 4, sep=1.0)
    pos, neg = torch.tensor(s[y]), torch.tensor(s[~y])
    sb_eer, _ = EER(pos, neg)
    assert M.eer(s, y)[0] == pytest.approx(float(sb_eer), abs=2e-3)
    for p in (0.01, 0.05):
        sb_dcf, _ = minDCF(pos, neg, p_target=p)
        # SpeechBrain's value is unnormalised.
        assert M.min_dcf(s, y, p)[0] == pytest.approx(
            float(sb_dcf) / min(p, 1 - p), abs=1e-6
        )


def test_cllr_vs_formula_and_min_cllr():
    s, y = random_set(400, 5, sep=2.0)
    llr = 1.7 * s - 0.9
    assert M.cllr(llr, y) == pytest.approx(brute_cllr(llr, y))
    assert M.cllr(np.zeros(10), [1] * 3 + [0] * 7) == pytest.approx(1.0)
    mc = M.min_cllr(llr, y)
    assert 0 <= mc <= M.cllr(llr, y)
    # min_cllr is invariant to monotonic transforms.
    assert M.min_cllr(np.exp(s), y) == pytest.approx(mc)
    # Badly calibrated LLRs: large gap.
    assert M.cllr(10 * llr, y) > mc + 0.5


def test_min_cllr_equals_cllr_for_pav_output():
    s, y = random_set(300, 6)
    # Lowest score a target, highest a non-target -> finite PAV LLRs.
    s[np.argmin(s)], s[np.argmax(s)] = s[np.argmax(s)], s[np.argmin(s)]
    y[np.argmin(s)], y[np.argmax(s)] = True, False
    pav = M.pav_llr(s, y)
    assert np.isfinite(pav).all()
    assert M.cllr(pav, y) == pytest.approx(M.min_cllr(s, y), abs=1e-9)
    assert M.min_cllr(pav, y) == pytest.approx(M.cllr(pav, y), abs=1e-9)
    # PAV of separable scores gives infinite LLRs and zero cost.
    assert M.min_cllr([0, 1, 2, 3], [0, 0, 1, 1]) == 0.0


@pytest.mark.parametrize("ties", [False, True])
def test_avg_rprec_vs_loop(ties):
    rng = np.random.default_rng(7)
    n = 600
    enrol = rng.choice(["a", "b", "c", "d", "e", "f", "g"], size=n)
    y = rng.random(n) < 0.3
    s = rng.normal(size=n) + y
    if ties:
        s = np.round(s, 0)
    assert M.avg_rprec(s, y, enrol) == pytest.approx(brute_rprec(s, y, enrol))


def test_avg_rprec_hand_made():
    # e1: targets ranked 1st and 3rd, R=2 -> 1/2; e2: perfect -> 1; e3: no target.
    s = [0.9, 0.8, 0.7, 0.1, 0.5, 0.4, 0.3]
    y = [1, 0, 1, 0, 1, 0, 0]
    e = ["e1", "e1", "e1", "e1", "e2", "e2", "e3"]
    assert M.avg_rprec(s, y, e) == pytest.approx(0.75)


def test_det_curve_corners_lossless():
    s, y = random_set(400, 8, ties=True)
    pf, pm, thr = M.det_curve(s, y)
    pm_all, pf_all, _ = M.error_rates(s, y)
    assert len(pf) < len(pf_all)
    assert pf[0] == 1.0 and pm[-1] == 1.0
    # Every full-curve point lies on the polyline of the corners (staircase).
    for a, b in zip(pf_all, pm_all):
        i = np.searchsorted(-pf, -a, side="left")
        j = np.searchsorted(-pf, -a, side="right") - 1
        seg = pm[max(i - 1, 0) : j + 2]
        assert seg.min() - 1e-12 <= b <= seg.max() + 1e-12


def test_verification_metrics_keys():
    s, y = random_set(200, 9)
    base = M.verification_metrics(s, y)
    assert set(base) == {"eer", "mindcf_0.01", "mindcf_0.05", "n_target", "n_nontarget"}
    assert base["eer"] == pytest.approx(100 * M.eer(s, y)[0])
    full = M.verification_metrics(
        s, y, llr=True, with_min_cllr=True, enrol_ids=np.arange(200) % 7
    )
    assert set(full) - set(base) == {
        "actdcf_0.01",
        "actdcf_0.05",
        "cllr",
        "min_cllr",
        "avg_rprec",
    }
    assert full["mindcf_0.01"] == base["mindcf_0.01"]


def test_errors():
    with pytest.raises(ValueError, match="non-target"):
        M.eer([1, 2], [1, 1])
    with pytest.raises(ValueError, match="length"):
        M.cllr([1, 2, 3], [1, 0])
    with pytest.raises(ValueError, match="p_target"):
        M.act_dcf([1, 2], [1, 0], p_target=0)
    with pytest.raises(ValueError, match="NaN"):
        M.cllr([np.nan, 1], [1, 0])
