"""Tests of sslsv_sb.losses.simsiam."""

import numpy as np
import pytest
import torch

from sslsv_sb.losses.simsiam import SimSiamLoss


def _np_cos(a, b):
    return np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_matches_closed_form():
    torch.manual_seed(1)
    p1, p2, z1, z2 = torch.randn(4, 6, 5).unbind(0)
    a, b, c, d = (t.double().numpy() for t in (p1, p2, z1, z2))
    ref = (-_np_cos(a, d).mean() - _np_cos(b, c).mean()) / 2
    assert SimSiamLoss()(p1, p2, z1, z2).item() == pytest.approx(ref, abs=1e-6)


def test_range_symmetry_and_stop_gradient():
    loss = SimSiamLoss()
    z = torch.randn(5, 4)
    assert loss(z, z, z, z).item() == pytest.approx(-1.0, abs=1e-6)
    p1, p2, z1, z2 = (torch.randn(5, 4, requires_grad=True) for _ in range(4))
    out = loss(p1, p2, z1, z2)
    assert out.item() == pytest.approx(loss(p2, p1, z2, z1).item())
    out.backward()
    assert p2.grad.abs().sum() > 0 and z1.grad is None
    assert "z_std" in loss.last_metrics


def test_bad_shapes():
    with pytest.raises(ValueError):
        SimSiamLoss()(*torch.randn(3, 4, 2).unbind(0), torch.randn(4, 3))
    with pytest.raises(ValueError):
        SimSiamLoss()(*torch.randn(4, 1, 2).unbind(0))
