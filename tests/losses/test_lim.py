"""LIM / GIM: loop references, negatives never equal the positive."""

import math

import pytest
import torch
import torch.nn.functional as F

from sslsv_sb.losses.lim import GIMLoss, LIMLoss, lim_objective


def _objective_loop(pos, negs, objective):
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    if objective == "bce":
        lp = sum(math.log(sig(p)) for p in pos) / len(pos)
        flat = [n for row in negs for n in row]
        return -(lp + sum(math.log(1 - sig(n)) for n in flat) / len(flat))
    if objective == "mine":
        flat = [n for row in negs for n in row]
        return -(
            sum(pos) / len(pos) - math.log(sum(math.exp(n) for n in flat) / len(flat))
        )
    vals = [
        p - math.log(math.exp(p) + sum(math.exp(n) for n in row))
        for p, row in zip(pos, negs)
    ]
    return -sum(vals) / len(vals)


@pytest.mark.parametrize("objective", ["bce", "nce", "mine"])
def test_lim_all_negatives_matches_loop(objective):
    torch.manual_seed(0)
    z1, z2 = (
        torch.randn(6, 5, dtype=torch.float64),
        torch.randn(6, 5, dtype=torch.float64),
    )
    out = LIMLoss(objective, negatives="all")(z1, z2)
    c = F.cosine_similarity
    pos = [float(c(z1[i], z2[i], dim=0)) for i in range(6)]
    negs = [
        [float(c(z1[i], z2[j], dim=0)) for j in range(6) if j != i] for i in range(6)
    ]
    assert out["loss"].item() == pytest.approx(
        _objective_loop(pos, negs, objective), rel=1e-5
    )


@pytest.mark.parametrize("objective", ["bce", "nce", "mine"])
def test_gim_matches_loop(objective):
    torch.manual_seed(1)
    x1 = torch.randn(4, 5, 12, dtype=torch.float64)
    x2 = torch.randn(4, 5, 9, dtype=torch.float64)
    out = GIMLoss(objective, negatives="all", window=3)(
        x1, x2, generator=torch.Generator().manual_seed(7)
    )
    g = torch.Generator().manual_seed(7)
    s1 = torch.randint(0, 10, (4,), generator=g)
    s2 = torch.randint(0, 7, (4,), generator=g)
    z1 = [x1[i, :, s1[i] : s1[i] + 3].mean(dim=1) for i in range(4)]
    z2 = [x2[i, :, s2[i] : s2[i] + 3].mean(dim=1) for i in range(4)]
    c = F.cosine_similarity
    pos = [float(c(z1[i], z2[i], dim=0)) for i in range(4)]
    negs = [
        [float(c(z1[i], z2[j], dim=0)) for j in range(4) if j != i] for i in range(4)
    ]
    assert out["loss"].item() == pytest.approx(
        _objective_loop(pos, negs, objective), rel=1e-4
    )


def test_gim_single_crop_and_window_clipping():
    x = torch.randn(3, 4, 5, requires_grad=True)
    out = GIMLoss(window=200)(x)  # window clipped to T: whole-sequence means
    out["loss"].backward()
    assert x.grad is not None and out["pos_sim"].item() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("n_neg", [1, 3])
def test_random_negatives_never_the_positive(n_neg):
    loss = LIMLoss(negatives="random", n_negatives=n_neg)
    for seed in range(300):
        g = torch.Generator().manual_seed(seed)
        m = 2 + seed % 9
        own = torch.arange(m)
        cols = loss.negative_columns(own, m, generator=g)
        assert cols.shape == (m, min(n_neg, m - 1))
        assert not (cols == own[:, None]).any()
        assert all(len(set(r.tolist())) == len(r) for r in cols)  # distinct per row
    # end to end: orthonormal embeddings, z2 == z1 -> every negative cosine is 0
    z = torch.eye(8)
    for seed in range(50):
        torch.manual_seed(seed)
        out = loss(z, z)
        assert out["neg_sim"].item() == 0.0 and out["pos_sim"].item() == pytest.approx(
            1.0
        )


def test_random_negatives_cover_all_others():
    torch.manual_seed(0)
    cols = LIMLoss().negative_columns(torch.zeros(4000, dtype=torch.long), 5)
    assert sorted(set(cols.flatten().tolist())) == [1, 2, 3, 4]


def test_errors():
    with pytest.raises(ValueError):
        LIMLoss("bad")
    with pytest.raises(ValueError):
        LIMLoss()(torch.randn(1, 3), torch.randn(1, 3))
    with pytest.raises(ValueError):
        GIMLoss()(torch.randn(3, 2, 4), torch.randn(2, 2, 4))
    with pytest.raises(ValueError):
        GIMLoss()(torch.randn(3, 4))


def _sslsv_nce_loop(pos, negs):
    """sslsv's LIM NCE: every anchor's denominator sums the negatives of the batch."""
    total = sum(math.exp(n) for row in negs for n in row)
    vals = [p - math.log(math.exp(p) + total) for p in pos]
    return -sum(vals) / len(vals)


@pytest.mark.parametrize("negatives", ["all", "random"])
def test_nce_batch_denominator_matches_loop(negatives):
    torch.manual_seed(2)
    z1, z2 = (
        torch.randn(6, 5, dtype=torch.float64),
        torch.randn(6, 5, dtype=torch.float64),
    )
    loss = LIMLoss("nce", negatives=negatives, nce_denominator="batch")
    torch.manual_seed(3)
    out = loss(z1, z2)
    torch.manual_seed(3)  # same negative draw as inside forward
    cols = loss.negative_columns(torch.arange(6), 6)
    c = F.cosine_similarity
    pos = [float(c(z1[i], z2[i], dim=0)) for i in range(6)]
    negs = [[float(c(z1[i], z2[j], dim=0)) for j in cols[i].tolist()] for i in range(6)]
    expected = _sslsv_nce_loop(pos, negs)
    assert out["loss"].item() == pytest.approx(expected, rel=1e-6)
    # the default per-anchor form is a different number on the same scores
    own = LIMLoss("nce", negatives=negatives)
    torch.manual_seed(3)
    assert own(z1, z2)["loss"].item() == pytest.approx(
        _objective_loop(pos, negs, "nce"), rel=1e-6
    )
    assert abs(expected - _objective_loop(pos, negs, "nce")) > 0.1


def test_nce_batch_denominator_lower_bound():
    # perfect critic (pos = 1, every negative = -1): the sslsv form is bounded below by
    # log(1 + N e^-2), the per-anchor form by log(1 + e^-2) (one negative each)
    n = 4
    pos, neg = torch.ones(n), -torch.ones(n, 1)
    assert lim_objective(pos, neg, "nce", "batch").item() == pytest.approx(
        math.log(1 + n * math.exp(-2)), rel=1e-6
    )
    assert lim_objective(pos, neg, "nce", "own").item() == pytest.approx(
        math.log(1 + math.exp(-2)), rel=1e-6
    )
    # bce / mine do not depend on the option
    for objective in ("bce", "mine"):
        assert lim_objective(pos, neg, objective, "batch") == lim_objective(
            pos, neg, objective, "own"
        )


def test_gim_passes_nce_denominator():
    x = torch.randn(5, 4, 12)
    outs = [
        GIMLoss("nce", "all", window=3, nce_denominator=den)(
            x, generator=torch.Generator().manual_seed(0)
        )["loss"].item()
        for den in ("own", "batch")
    ]
    assert outs[1] > outs[0] + 0.5  # 4 negatives per anchor vs 20 in the batch


def test_nce_denominator_errors():
    with pytest.raises(ValueError, match="nce_denominator"):
        LIMLoss("nce", nce_denominator="global")
    with pytest.raises(ValueError, match="nce_denominator"):
        GIMLoss("nce", nce_denominator="all")
