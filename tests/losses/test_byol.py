"""Tests of sslsv_sb.losses.byol and the EMA schedule."""

import math

import numpy as np
import pytest
import torch

from sslsv_sb.losses.byol import BYOLLoss, cosine_tau


def _np_byol(p1, p2, z1, z2):
    total = 0.0
    for p, z in ((p1, z2), (p2, z1)):
        terms = []
        for a, b in zip(p, z):
            cos = a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
            terms.append(2 - 2 * cos)
        total += np.mean(terms)
    return total


def test_matches_explicit_loop():
    torch.manual_seed(0)
    p1, p2, z1, z2 = torch.randn(4, 5, 3, dtype=torch.float64).unbind(0)
    out = BYOLLoss()(p1, p2, z1, z2)
    assert out.dtype == torch.float32
    ref = _np_byol(*(t.numpy() for t in (p1, p2, z1, z2)))
    assert out.item() == pytest.approx(ref, abs=1e-5)


def test_extremes_and_symmetry():
    loss = BYOLLoss()
    z = torch.randn(6, 4)
    assert loss(z, z, z, z).item() == pytest.approx(0.0, abs=1e-5)
    assert loss(-z, -z, z, z).item() == pytest.approx(8.0, abs=1e-5)
    p1, p2, z1, z2 = torch.randn(4, 6, 4).unbind(0)
    assert loss(p1, p2, z1, z2).item() == pytest.approx(loss(p2, p1, z2, z1).item())


def test_stop_gradient_on_targets():
    p1, p2, z1, z2 = (torch.randn(4, 3, requires_grad=True) for _ in range(4))
    BYOLLoss()(p1, p2, z1, z2).backward()
    assert p1.grad is not None and p1.grad.abs().sum() > 0
    assert z1.grad is None and z2.grad is None


def test_bad_shapes():
    loss = BYOLLoss()
    with pytest.raises(ValueError):
        loss(torch.randn(4, 3), torch.randn(4, 3), torch.randn(4, 3), torch.randn(4, 2))
    with pytest.raises(ValueError, match="at least 2"):
        loss(*torch.randn(4, 1, 3).unbind(0))


def test_bf16_autocast_computes_in_fp32():
    p1, p2, z1, z2 = torch.randn(4, 8, 16).unbind(0)
    ref = BYOLLoss()(p1, p2, z1, z2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = BYOLLoss()(p1.bfloat16(), p2.bfloat16(), z1.bfloat16(), z2.bfloat16())
    assert out.dtype == torch.float32
    assert out.item() == pytest.approx(ref.item(), rel=2e-2)


def test_cosine_tau():
    assert cosine_tau(0, 10) == pytest.approx(0.996)
    assert cosine_tau(10, 10) == pytest.approx(1.0)
    assert cosine_tau(5, 10, 0.9, 1.0) == pytest.approx(0.95)
    ref = 1 - (1 - 0.99) * (math.cos(math.pi * 3 / 7) + 1) / 2  # BYOL sec. 3.2
    assert cosine_tau(3, 7, 0.99, 1.0) == pytest.approx(ref)
    with pytest.raises(ValueError):
        cosine_tau(0, 0)
