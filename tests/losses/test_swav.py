"""Tests of sslsv_sb.losses.swav (the 2-process Sinkhorn check is in
test_barlow_twins.py)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sslsv_sb.losses.swav import SwAVLoss, sinkhorn_knopp


def _np_sinkhorn(scores, eps, iters):
    q = np.exp(scores / eps).T  # (K, B)
    k, b = q.shape
    q /= q.sum()
    for _ in range(iters):
        for r in range(k):
            q[r] /= q[r].sum() * k
        for c in range(b):
            q[:, c] /= q[:, c].sum() * b
    return (q * b).T


def test_sinkhorn_matches_numpy_and_marginals():
    torch.manual_seed(0)
    scores = torch.randn(6, 4)
    q = sinkhorn_knopp(scores, 0.5, 3)
    ref = _np_sinkhorn(scores.double().numpy(), 0.5, 3)
    assert np.allclose(q.numpy(), ref, rtol=1e-4, atol=1e-6)
    # Every sample row sums to exactly 1 after any number of iterations ...
    assert torch.allclose(q.sum(1), torch.ones(6), atol=1e-6)
    # ... and every prototype gets B/K of the mass at convergence.
    q = sinkhorn_knopp(scores, 0.5, 500)
    assert torch.allclose(q.sum(0), torch.full((4,), 6 / 4), atol=1e-4)


def test_sinkhorn_stable_for_cosine_scores():
    # Cosines / 0.02 span 100 nats: no overflow thanks to the max shift.
    z = F.normalize(torch.randn(8, 3), dim=1)
    q = sinkhorn_knopp(z @ z.T, 0.02, 3)
    assert torch.isfinite(q).all() and torch.allclose(q.sum(1), torch.ones(8))


def _explicit_swav(scores, protos_codes_scores, tau, eps, iters):
    v, n, _ = scores.shape
    total, terms = 0.0, 0
    for s in range(2):
        q = _np_sinkhorn(protos_codes_scores[s], eps, iters)[:n]
        for t in range(v):
            if t == s:
                continue
            logits = scores[t] / tau
            logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
            total += np.mean([-(q[i] * logp[i]).sum() for i in range(n)])
            terms += 1
    return total / terms


def test_swapped_prediction_matches_explicit_loop():
    torch.manual_seed(0)
    z = F.normalize(torch.randn(3, 5, 4), dim=-1)  # V=3 views, N=5
    protos = F.normalize(torch.randn(6, 4), dim=-1)
    scores = z @ protos.T  # (V, N, K)
    loss = SwAVLoss(6, queue_size=0, embed_dim=4)
    out = loss(z, scores, protos, epoch=0)
    sc = scores.double().numpy()
    assert out.item() == pytest.approx(_explicit_swav(sc, sc, 0.1, 0.05, 3), rel=1e-4)
    assert loss(list(z), list(scores), protos).item() == pytest.approx(out.item())


def test_queue_starts_at_epoch_and_is_used():
    torch.manual_seed(0)
    protos = F.normalize(torch.randn(6, 4), dim=-1)
    z1 = F.normalize(torch.randn(2, 5, 4), dim=-1)
    z2 = F.normalize(torch.randn(2, 5, 4), dim=-1)
    loss = SwAVLoss(6, queue_size=8, queue_start_epoch=2, embed_dim=4)
    loss(z1, z1 @ protos.T, protos, epoch=1)
    assert int(loss.queue_filled) == 0
    loss(z1, z1 @ protos.T, protos, epoch=2)  # fills 5 rows, queue unused (empty)
    assert int(loss.queue_filled) == 5
    assert torch.allclose(loss.queue[:, :5], z1)
    out = loss(z2, z2 @ protos.T, protos, epoch=2)
    sc = (z2 @ protos.T).double().numpy()
    with_queue = [
        np.concatenate([sc[s], (z1[s] @ protos.T).double().numpy()]) for s in range(2)
    ]
    ref = _explicit_swav(sc, with_queue, 0.1, 0.05, 3)
    assert out.item() == pytest.approx(ref, rel=1e-4)
    assert int(loss.queue_filled) == 8  # FIFO, capped at the queue length
    assert torch.allclose(loss.queue[:, :5], z2) and torch.allclose(
        loss.queue[:, 5:], z1[:, :3]
    )
    assert {"queue", "queue_filled"} <= set(loss.state_dict())


def test_gradients_and_errors():
    z = F.normalize(torch.randn(2, 4, 3), dim=-1)
    protos = F.normalize(torch.randn(5, 3), dim=-1)
    scores = (z @ protos.T).requires_grad_(True)
    SwAVLoss(5, queue_size=0, embed_dim=3)(z, scores, protos).backward()
    assert scores.grad.abs().sum() > 0
    with pytest.raises(ValueError):
        SwAVLoss(4, queue_size=0, embed_dim=3)(z, scores, protos)  # K mismatch
    with pytest.raises(ValueError):
        SwAVLoss(5, queue_size=0, embed_dim=3)(z[:, :1], scores[:, :1], protos)
