"""Tests for sslsv_sb.losses.moco (MoCo v2+, arXiv 2003.04297)."""

import math

import pytest
import torch
import torch.nn.functional as F

from sslsv_sb import distributed as dist_utils
from sslsv_sb.losses.moco import MoCoLoss


def _unit(v):
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v]


def _dot(u, v):
    return sum(a * b for a, b in zip(u, v))


def loop_infonce(q, k, queue, tau, labels=None, qlabels=None, pos_fn=None):
    """Per-query InfoNCE with python floats; same-label queue entries dropped."""
    total = 0.0
    for i in range(q.shape[0]):
        qi_raw = q[i].tolist()
        qi = _unit(qi_raw)
        p = _dot(qi, _unit(k[i].tolist()))
        if pos_fn is not None:
            p = pos_fn(p, math.sqrt(_dot(qi_raw, qi_raw)))
        logits = [p / tau]
        for j in range(queue.shape[0]):
            if labels is not None and int(qlabels[j]) == int(labels[i]):
                continue
            logits.append(_dot(qi, queue[j].tolist()) / tau)
        mx = max(logits)
        lse = mx + math.log(sum(math.exp(x - mx) for x in logits))
        total += lse - logits[0]
    return total / q.shape[0]


def _batch(n=3, d=4, seed=0):
    torch.manual_seed(seed)
    return [torch.randn(n, d) * 2 for _ in range(4)]


def test_equals_loop():
    q1, q2, k1, k2 = _batch()
    fn = MoCoLoss(dim=4, queue_size=5, temperature=0.2)
    queue = fn.queue.clone()
    loss = fn(q1, q2, k1, k2)
    ref = (
        loop_infonce(q1, k2, queue[1], 0.2) + loop_infonce(q2, k1, queue[0], 0.2)
    ) / 2
    assert loss.item() == pytest.approx(ref, rel=1e-5)
    assert 0.0 <= fn.last_metrics["accuracy"] <= 1.0


def test_symmetric_in_views_with_swapped_queues():
    q1, q2, k1, k2 = _batch(seed=1)
    a = MoCoLoss(dim=4, queue_size=6)
    b = MoCoLoss(dim=4, queue_size=6)
    b.queue.copy_(a.queue[[1, 0]])
    assert a(q1, q2, k1, k2).item() == pytest.approx(b(q2, q1, k2, k1).item(), rel=1e-6)


def test_gradient_to_queries_only():
    q1, q2, k1, k2 = _batch(seed=2)
    q1.requires_grad_(True)
    q2.requires_grad_(True)
    k1.requires_grad_(True)
    MoCoLoss(dim=4, queue_size=5)(q1, q2, k1, k2).backward()
    for g in (q1.grad, q2.grad):
        assert torch.isfinite(g).all() and g.abs().sum() > 0
    assert k1.grad is None  # keys are treated as constants


def test_errors():
    fn = MoCoLoss(dim=4, queue_size=5)
    q1, q2, k1, k2 = _batch()
    with pytest.raises(ValueError, match="must all be"):
        fn(q1, q2[:2], k1, k2)
    with pytest.raises(ValueError, match="dim"):
        fn(*[torch.randn(3, 5) for _ in range(4)])
    with pytest.raises(ValueError, match="N=1"):
        fn(*[torch.randn(1, 4) for _ in range(4)])
    with pytest.raises(ValueError, match="labels"):
        MoCoLoss(dim=4, queue_size=5, prevent_class_collisions=True)(q1, q2, k1, k2)
    with pytest.raises(ValueError, match="n_views"):
        MoCoLoss(dim=4, n_views=3)


def test_queue_ring_wraps_around():
    fn = MoCoLoss(dim=4, queue_size=5)
    b1, b2 = _batch(seed=3), _batch(seed=4)
    fn(*b1)
    assert int(fn.queue_ptr) == 3
    assert torch.allclose(fn.queue[0, :3], F.normalize(b1[2], dim=-1))  # k1
    assert torch.allclose(fn.queue[1, :3], F.normalize(b1[3], dim=-1))  # k2
    fn(*b2)  # global batch 3 does not divide Q=5: rows go to slots 3, 4, 0
    assert int(fn.queue_ptr) == 1
    k1n = F.normalize(b2[2], dim=-1)
    assert torch.allclose(fn.queue[0, [3, 4, 0]], k1n)
    assert torch.allclose(fn.queue[0, 1:3], F.normalize(b1[2][1:], dim=-1))


def test_batch_larger_than_queue():
    fn = MoCoLoss(dim=4, queue_size=3)
    torch.manual_seed(5)
    k1, k2 = torch.randn(5, 4), torch.randn(5, 4)
    fn.enqueue(k1, k2)  # slots 0,1,2,0,1: the last 3 keys win, FIFO order kept
    assert int(fn.queue_ptr) == 2
    k1n = F.normalize(k1, dim=-1)
    assert torch.allclose(fn.queue[0, [2, 0, 1]], k1n[2:])


def test_class_collisions_masked():
    q1, q2, k1, k2 = _batch(seed=6)
    fn = MoCoLoss(dim=4, queue_size=4, prevent_class_collisions=True)
    fn.queue_labels.copy_(torch.tensor([0, 1, 7, -1]))
    queue, qlab = fn.queue.clone(), fn.queue_labels.clone()
    labels = torch.tensor([0, 1, 2])
    loss = fn(q1, q2, k1, k2, labels=labels)
    ref = (
        loop_infonce(q1, k2, queue[1], 0.2, labels, qlab)
        + loop_infonce(q2, k1, queue[0], 0.2, labels, qlab)
    ) / 2
    assert loss.item() == pytest.approx(ref, rel=1e-5)
    unmasked = (
        loop_infonce(q1, k2, queue[1], 0.2) + loop_infonce(q2, k1, queue[0], 0.2)
    ) / 2
    assert ref != pytest.approx(unmasked, rel=1e-4)
    assert fn.queue_labels.tolist() == [0, 1, 2, -1]  # labels enqueued FIFO


def test_cosface_margin_on_positive():
    q1, q2, k1, k2 = _batch(seed=7)
    fn = MoCoLoss(dim=4, queue_size=5, margin={"margin_type": "cosface", "margin": 0.2})
    queue = fn.queue.clone()
    loss = fn(q1, q2, k1, k2)
    pf = lambda c, a: c - 0.2  # noqa: E731
    ref = (
        loop_infonce(q1, k2, queue[1], 0.2, pos_fn=pf)
        + loop_infonce(q2, k1, queue[0], 0.2, pos_fn=pf)
    ) / 2
    assert loss.item() == pytest.approx(ref, rel=1e-5)


def test_magface_gets_raw_query_norms():
    q1, q2, k1, k2 = _batch(seed=8)
    q1 = q1 * 30.0  # norms ~ 60 -> margin ~ 0.03 (1 would clip to 0.01)
    fn = MoCoLoss(dim=4, queue_size=5, margin="magface")
    queue = fn.queue.clone()
    loss = fn(q1, q2, k1, k2)

    def pf(c, a):
        aa = min(max(a, 10.0), 110.0)
        return math.cos(math.acos(c) + 0.04 / 100 * (aa - 10) + 0.01)

    ref = (
        loop_infonce(q1, k2, queue[1], 0.2, pos_fn=pf)
        + loop_infonce(q2, k1, queue[0], 0.2, pos_fn=pf)
    ) / 2
    assert loss.item() == pytest.approx(ref, rel=1e-5)
    assert fn.last_metrics["magface_margin"] > 0.011


def test_simulated_ddp_enqueue(monkeypatch):
    other = torch.randn(2, 4)
    monkeypatch.setattr(
        dist_utils, "gather", lambda x, grad=True: torch.cat([other, x])
    )
    fn = MoCoLoss(dim=4, queue_size=8)
    k1, k2 = torch.randn(2, 4), torch.randn(2, 4)
    fn.enqueue(k1, k2)
    assert int(fn.queue_ptr) == 4  # global batch = 2 ranks x 2
    assert torch.allclose(fn.queue[0, 2:4], F.normalize(k1, dim=-1))


def test_bf16_autocast_fp32_loss():
    q1, q2, k1, k2 = _batch(seed=9)
    fn = MoCoLoss(dim=4, queue_size=5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fn(q1.bfloat16(), q2.bfloat16(), k1.bfloat16(), k2.bfloat16())
    assert out.dtype == torch.float32 and fn.queue.dtype == torch.float32
