"""Tests for sslsv_sb.losses.margins (NT-Xent-AM, arXiv 2404.14913)."""

import math

import pytest
import torch

from sslsv_sb import distributed as dist_utils
from sslsv_sb.losses.margin_logits import (
    MARGIN_TYPES,
    arcface_logit,
    cosine_margin_schedule,
    magface_margin,
    simo_margin,
    sphereface_logit,
)
from sslsv_sb.losses.margins import MarginNTXentLoss, PositiveMargin

S = 1.0 / 0.03


def _unit(v):
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v]


def _dot(u, v):
    return sum(a * b for a, b in zip(u, v))


def loop_loss(anchors, cands, scale, shared, pos_fn=None, offset=0, extra=None):
    """Independent per-row NT-Xent with python floats.

    ``anchors`` (N, Va, D), ``cands`` (M, Vc, D) global candidates (rows ``offset..``
    are the local samples), ``pos_fn(cos, anchor_norm)`` transforms positive cosines.
    """
    N, Va, _ = anchors.shape
    M, Vc, _ = cands.shape
    total, rows = 0.0, 0
    for n in range(N):
        for v in range(Va):
            a_raw = anchors[n, v].tolist()
            a_norm = math.sqrt(_dot(a_raw, a_raw))
            a = _unit(a_raw)
            pos, neg = [], []
            for m in range(M):
                for w in range(Vc):
                    if shared and m == n + offset and w == v:
                        continue  # self-similarity
                    c = _dot(a, _unit(cands[m, w].tolist()))
                    if m == n + offset:
                        pos.append(pos_fn(c, a_norm) if pos_fn else c)
                    else:
                        neg.append(c)
            logits = [scale * x for x in pos + neg]
            mx = max(logits)
            lse = mx + math.log(sum(math.exp(x - mx) for x in logits))
            total += sum(lse - scale * p for p in pos) / len(pos)
            rows += 1
    return total / rows


@pytest.fixture
def z():
    torch.manual_seed(0)
    return torch.randn(4, 2, 6) * 3.0


def test_no_margin_equals_loop_ntxent(z):
    loss = MarginNTXentLoss("none", scale=S)(z, z)
    # plain NT-Xent, tau = 1 / scale: 2N rows, positive = other view, self excluded
    assert loss.item() == pytest.approx(loop_loss(z, z, S, shared=True), rel=1e-5)
    loss_none_cands = MarginNTXentLoss("none", scale=S)(z)
    assert loss_none_cands.item() == pytest.approx(loss.item(), rel=1e-6)


def test_symmetric_in_views(z):
    fn = MarginNTXentLoss("none", scale=5.0)
    swapped = z[:, [1, 0]].contiguous()
    assert fn(z, z).item() == pytest.approx(fn(swapped, swapped).item(), rel=1e-6)


def test_asymmetric_mode_is_view0_vs_view1(z):
    loss = MarginNTXentLoss("none", scale=5.0, symmetric=False)(z, z)
    ref = loop_loss(z[:, :1], z[:, 1:2], 5.0, shared=False)
    assert loss.item() == pytest.approx(ref, rel=1e-5)


def test_multi_positive_local_vs_global_views():
    torch.manual_seed(1)
    local = torch.randn(3, 3, 5)  # 3 local crops as anchors
    glob = torch.randn(3, 2, 5)  # 2 global views as candidates -> 2 positives
    fn = MarginNTXentLoss("cosface", scale=4.0, margin=0.2)
    loss = fn(local, glob)
    ref = loop_loss(local, glob, 4.0, shared=False, pos_fn=lambda c, a: c - 0.2)
    assert loss.item() == pytest.approx(ref, rel=1e-5)
    assert 0.0 <= fn.last_metrics["accuracy"] <= 1.0


def _closed_forms():
    m = 0.1

    def arc(c, a):
        t = math.acos(c)
        return math.cos(t + m) if t + m < math.pi else c - m * math.sin(math.pi - m)

    def sphere(c, a, mm=1.5):
        t = math.acos(c)
        k = math.floor(mm * t / math.pi)
        return (-1) ** k * math.cos(mm * t) - 2 * k

    def mag(c, a):
        aa = min(max(a, 10.0), 110.0)
        ma = 0.04 / 100 * (aa - 10) + 0.01
        t = math.acos(c)
        return math.cos(t + ma)

    return {
        "cosface": ({"margin": m}, lambda c, a: c - m),
        "arcface": ({"margin": m}, arc),
        "sphereface": ({"margin": 1.5}, sphere),
        "magface": ({}, mag),
    }


@pytest.mark.parametrize("mtype", ["cosface", "arcface", "sphereface", "magface"])
def test_margin_loss_equals_loop(mtype):
    torch.manual_seed(2)
    z = torch.randn(3, 2, 4) * torch.tensor([5.0, 30.0, 80.0]).view(3, 1, 1)
    kwargs, pos_fn = _closed_forms()[mtype]
    loss = MarginNTXentLoss(mtype, scale=6.0, **kwargs)(z, z)
    ref = loop_loss(z, z, 6.0, shared=True, pos_fn=pos_fn)
    assert loss.item() == pytest.approx(ref, rel=1e-4)


@pytest.mark.parametrize("mtype", MARGIN_TYPES)
def test_gradient_flows(mtype, z):
    z = z.clone().requires_grad_(True)
    fn = MarginNTXentLoss(mtype, margin=1.5 if mtype == "sphereface" else 0.1)
    fn(z, z).backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    # metrics are floats or detached 0-d tensors (read once per epoch, no host sync)
    assert all(
        isinstance(v, float)
        or (torch.is_tensor(v) and v.dim() == 0 and not v.requires_grad)
        for v in fn.last_metrics.values()
    )


def test_errors():
    fn = MarginNTXentLoss()
    with pytest.raises(ValueError, match="N="):
        fn(torch.randn(1, 2, 4), torch.randn(1, 2, 4))
    with pytest.raises(ValueError, match="share N and D"):
        fn(torch.randn(3, 2, 4), torch.randn(3, 2, 5))
    with pytest.raises(ValueError, match="share N and D"):
        fn(torch.randn(3, 2, 4), torch.randn(2, 2, 4))
    with pytest.raises(ValueError, match="anchors must be"):
        fn(torch.randn(3, 4), torch.randn(3, 1, 4))
    x = torch.randn(3, 1, 4)
    with pytest.raises(ValueError, match=">= 2 views"):
        fn(x, x)
    with pytest.raises(ValueError, match="margin_type"):
        MarginNTXentLoss("bogus")
    with pytest.raises(ValueError, match="multiplicative"):
        MarginNTXentLoss("sphereface", margin=0.0)
    with pytest.raises(ValueError, match="norms"):
        PositiveMargin("magface")(torch.rand(2, 1), torch.rand(2, 3))


def test_cosface_lowers_positive_logit_by_s_m():
    pos, neg = torch.tensor([[0.7]]), torch.tensor([[0.2, -0.1]])
    p, n, _ = PositiveMargin("cosface", margin=0.25)(pos, neg)
    assert S * (pos - p).item() == pytest.approx(S * 0.25, rel=1e-6)
    assert torch.equal(n, neg)


def test_arcface_known_angles():
    theta, m = 1.0, 0.3
    out = arcface_logit(torch.tensor([math.cos(theta)]), m)
    assert out.item() == pytest.approx(math.cos(theta + m), abs=1e-6)
    # theta + m > pi: CosFace-like fallback c - m sin(pi - m), monotonic
    c = math.cos(3.0)
    out = arcface_logit(torch.tensor([c]), m)
    assert out.item() == pytest.approx(c - m * math.sin(math.pi - m), abs=1e-6)
    assert out.item() < arcface_logit(torch.tensor([math.cos(2.8)]), m).item()


def test_sphereface_psi():
    t = torch.tensor([math.cos(math.pi / 3), math.cos(2 * math.pi / 3)])
    psi = sphereface_logit(t, 2.0)
    # k=0: cos(2pi/3) = -0.5 ; k=1: -cos(4pi/3) - 2 = -1.5
    assert psi.tolist() == pytest.approx([-0.5, -1.5], abs=1e-5)
    assert sphereface_logit(t, 1.0).tolist() == pytest.approx(t.tolist(), abs=1e-5)


def test_curricular_reweights_hard_negatives():
    pm = PositiveMargin("curricularface", margin=0.1, ema_momentum=0.01)
    pm.train()
    pos = torch.tensor([[0.5], [0.5]])
    neg = torch.tensor([[0.6, 0.1], [0.2, 0.55]])
    p, n, _ = pm(pos, neg)
    t = 0.01 * 0.5  # EMA from 0, updated before reweighting
    assert pm.t.item() == pytest.approx(t)
    thr = math.cos(math.acos(0.5) + 0.1)
    assert thr < 0.55 < 0.6  # both "hard"
    exp = [0.6 * (t + 0.6), 0.1, 0.2, 0.55 * (t + 0.55)]
    assert n.flatten().tolist() == pytest.approx(exp, abs=1e-6)
    assert p[0, 0].item() == pytest.approx(math.cos(math.acos(0.5) + 0.1), abs=1e-6)
    pm.eval()
    pm(pos, neg)
    assert pm.t.item() == pytest.approx(t)  # no EMA update in eval mode


def test_magface_margin_linear_in_raw_norm():
    m, a = magface_margin(torch.tensor([5.0, 35.0, 60.0, 500.0]))
    assert m.tolist() == pytest.approx([0.01, 0.02, 0.03, 0.05], abs=1e-7)
    assert a.tolist() == pytest.approx([10.0, 35.0, 60.0, 110.0])
    pm = PositiveMargin("magface", magface_lambda_g=0.5)
    pos = torch.full((2, 1), math.cos(1.0))
    p, _, reg = pm(pos, torch.zeros(2, 3), torch.tensor([35.0, 60.0]))
    assert p[:, 0].tolist() == pytest.approx([math.cos(1.02), math.cos(1.03)], abs=1e-6)
    g = [x / 110**2 + 1 / x for x in (35.0, 60.0)]
    assert reg.item() == pytest.approx(0.5 * sum(g) / 2, rel=1e-6)


def test_magface_uses_unnormalised_norms():
    torch.manual_seed(3)
    z = torch.randn(3, 2, 4)
    none, mag = MarginNTXentLoss("none", scale=8.0), MarginNTXentLoss("magface", 8.0)
    scaled = z * 40.0
    assert none(z, z).item() == pytest.approx(none(scaled, scaled).item(), rel=1e-5)
    assert mag(z, z).item() != pytest.approx(mag(scaled, scaled).item(), rel=1e-4)


def test_adaface_norm_adaptive():
    h, m, eps = 0.333, 0.1, 1e-3
    pm = PositiveMargin("adaface", margin=m, adaface_h=h).eval()
    c = math.cos(1.0)
    norms = torch.tensor([5.0, 60.0])
    p, _, _ = pm(torch.full((2, 1), c), torch.zeros(2, 2), norms)
    exp = []
    for a in norms.tolist():
        s = max(-1.0, min(1.0, (a - 20.0) / (100.0 + eps) * h))
        exp.append(math.cos(1.0 - m * s) - (m + m * s))
    assert p[:, 0].tolist() == pytest.approx(exp, abs=1e-6)
    assert exp[0] != pytest.approx(exp[1], abs=1e-3)
    pm.train()
    pm(torch.full((2, 1), c), torch.zeros(2, 2), norms)
    assert pm.batch_mean.item() == pytest.approx(0.99 * 20 + 0.01 * 32.5, rel=1e-6)
    std = norms.std().item()
    assert pm.batch_std.item() == pytest.approx(0.99 * 100 + 0.01 * std, rel=1e-6)


def test_schedule_values():
    assert cosine_margin_schedule(0, 10, 0.2) == 0.0
    assert cosine_margin_schedule(2, 10, 0.2) == pytest.approx(
        0.2 * (1 - math.cos(math.pi * 2 / 5)) / 2
    )
    assert cosine_margin_schedule(5, 10, 0.2) == 0.2
    assert cosine_margin_schedule(9, 10, 0.2) == 0.2
    assert cosine_margin_schedule(0, 1, 0.2) == 0.2
    with pytest.raises(ValueError):
        cosine_margin_schedule(-1, 10, 0.2)


@pytest.mark.parametrize(
    "mtype", ["cosface", "arcface", "sphereface", "magface", "adaface"]
)
def test_schedule_honoured_by_every_type(mtype, z):
    base = MarginNTXentLoss("none", scale=5.0)(z, z).item()
    fn = MarginNTXentLoss(
        mtype, scale=5.0, margin=1.5 if mtype == "sphereface" else 0.1
    )
    assert fn.update_margin(0, 10) == 0.0  # start of the ramp: no margin
    assert fn(z, z).item() == pytest.approx(base, rel=1e-4)
    fn.update_margin(5, 10)
    assert fn(z, z).item() != pytest.approx(base, rel=1e-4)


def test_schedule_honoured_by_curricular(z):
    fn = MarginNTXentLoss("curricularface", scale=5.0, margin=0.1)
    fn.update_margin(0, 10)
    fn(z, z)
    assert fn.last_metrics["margin"] == 0.0
    fn.update_margin(5, 10)
    fn(z, z)
    assert fn.last_metrics["margin"] == pytest.approx(0.1)


def test_learnable_margin_gets_gradient(z):
    fn = MarginNTXentLoss("cosface", margin=0.1, margin_learnable=True)
    assert isinstance(fn.margin_fn.margin, torch.nn.Parameter)
    fn(z, z).backward()
    assert fn.margin_fn.margin.grad is not None and fn.margin_fn.margin.grad != 0


def test_simo_margin(z):
    assert simo_margin(S, 65536, 510) == pytest.approx(0.03 * math.log(65536 / 510))
    fn = MarginNTXentLoss("cosface", scale=S, margin_simo=True)
    fn(z, z)
    k = 2 * (4 - 1)  # negatives per anchor, symmetric SimCLR, N=4
    assert fn.last_metrics["margin"] == pytest.approx(math.log(65536 / k) / S)
    fixed = MarginNTXentLoss("arcface", scale=S, margin_simo=True, simo_K=510)
    assert fixed.margin_fn.margin.item() == pytest.approx(0.1456, abs=1e-4)


def test_simulated_ddp_rank1(monkeypatch):
    """Rank 1 of 2: candidates gathered, positives/self offset by rank * N."""
    torch.manual_seed(4)
    other = torch.randn(3, 2, 5)  # rank 0's samples
    local = torch.randn(3, 2, 5)
    other_n = torch.nn.functional.normalize(other, dim=-1).reshape(6, 5)

    monkeypatch.setattr(dist_utils, "rank", lambda: 1)
    monkeypatch.setattr(dist_utils, "world_size", lambda: 2)
    monkeypatch.setattr(
        dist_utils, "gather", lambda x, grad=True: torch.cat([other_n, x])
    )
    monkeypatch.setattr(dist_utils, "all_reduce_mean", lambda x: x)
    loss = MarginNTXentLoss("cosface", scale=4.0, margin=0.2)(local, local)
    ref = loop_loss(
        local,
        torch.cat([other, local]),
        4.0,
        shared=True,
        pos_fn=lambda c, a: c - 0.2,
        offset=3,
    )
    assert loss.item() == pytest.approx(ref, rel=1e-5)


def test_bf16_autocast_runs_in_fp32_and_keeps_shared_mode(z):
    zb = z.bfloat16()
    zf = zb.float()
    fn = MarginNTXentLoss("arcface", scale=5.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fn(zb, zb)  # cast to fp32 must not turn shared into separate mode
    assert out.dtype == torch.float32
    assert out.item() == pytest.approx(fn(zf, zf).item(), rel=1e-5)


@pytest.mark.parametrize("m", [0.1, 0.01, 0.5])
def test_sphereface_sslsv_small_m_closed_form(m):
    # sslsv's sphereface_m-0.1 / _m-0.01 configs: m theta < pi, so k = 0 and
    # psi(theta) = cos(m theta), above cos(theta) (the positive is raised)
    thetas = [0.05, 0.5, 1.0, math.pi / 2, 2.5, 3.1]
    c = torch.tensor([math.cos(t) for t in thetas], dtype=torch.float64)
    psi = sphereface_logit(c, m)
    assert psi.tolist() == pytest.approx([math.cos(m * t) for t in thetas], abs=1e-9)
    assert (psi >= c).all()
    # true gradient: d cos(m theta) / d cos(theta) = m sin(m theta) / sin(theta)
    c.requires_grad_(True)
    sphereface_logit(c, m).sum().backward()
    ref = [m * math.sin(m * t) / math.sin(t) for t in thetas]
    assert c.grad.tolist() == pytest.approx(ref, rel=1e-6)
    # sslsv's straight-through form: same value, gradient of the plain cosine
    c.grad = None
    st = sphereface_logit(c, m, straight_through=True)
    st.sum().backward()
    assert st.tolist() == pytest.approx([math.cos(m * t) for t in thetas], abs=1e-9)
    assert c.grad.tolist() == pytest.approx([1.0] * len(thetas))


@pytest.mark.parametrize("m", [0.1, 0.01])
def test_sphereface_small_m_loss_equals_loop(m):
    torch.manual_seed(3)
    z = torch.randn(3, 2, 4) * 4.0
    loss = MarginNTXentLoss("sphereface", scale=6.0, margin=m)(z, z)
    ref = loop_loss(
        z, z, 6.0, shared=True, pos_fn=lambda c, a: math.cos(m * math.acos(c))
    )
    assert loss.item() == pytest.approx(ref, rel=1e-4)
    # the ramp goes from no margin (m_eff = 1) to m: 1 + f (m - 1)
    fn = MarginNTXentLoss("sphereface", scale=6.0, margin=m)
    fn.set_margin_factor(0.5)
    assert fn.margin_fn.effective_margin().item() == pytest.approx(1 + 0.5 * (m - 1))


def test_sphereface_straight_through_option_reaches_the_loss():
    torch.manual_seed(4)
    z = torch.randn(3, 2, 4)
    grads = []
    for st in (False, True):
        zz = z.clone().requires_grad_(True)
        fn = MarginNTXentLoss(
            "sphereface", scale=6.0, margin=0.1, sphereface_straight_through=st
        )
        grads.append((fn(zz, zz), torch.autograd.grad(fn(zz, zz), zz)[0]))
    (l_true, g_true), (l_st, g_st) = grads
    assert l_true.item() == pytest.approx(l_st.item(), rel=1e-6)  # same forward
    assert not torch.allclose(g_true, g_st, atol=1e-4)


@pytest.mark.parametrize("bad", [0.0, -0.1, math.inf])
def test_sphereface_margin_domain(bad):
    with pytest.raises(ValueError, match="m > 0"):
        PositiveMargin("sphereface", margin=bad)
