"""Tests of sslsv_sb.losses.vicreg."""

import numpy as np
import pytest
import torch

from sslsv_sb.losses.vicreg import VICRegLoss, covariance_term, variance_term


def _decorrelated(n, d, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(x - x.mean(0))
    return (q * np.sqrt(n - 1)).float()  # unbiased std 1, orthogonal columns


def _np_vicreg(a, b, wi, wv, wc):
    inv = np.mean((a - b) ** 2)
    var = cov = 0.0
    for z in (a, b):
        n, d = z.shape
        var += np.mean(np.maximum(0, 1 - np.sqrt(z.var(0, ddof=1) + 1e-4)))
        c = np.cov(z, rowvar=False)
        cov += (np.sum(c**2) - np.sum(np.diag(c) ** 2)) / d
    return wi * inv + wv * var + wc * cov


def test_matches_numpy():
    torch.manual_seed(0)
    a, b = torch.randn(7, 4) * 0.5, torch.randn(7, 4)
    loss = VICRegLoss(25.0, 25.0, 1.0)
    ref = _np_vicreg(a.double().numpy(), b.double().numpy(), 25.0, 25.0, 1.0)
    assert loss(a, b).item() == pytest.approx(ref, rel=1e-5)
    m = loss.last_metrics
    assert set(m) == {"inv", "var", "cov"}


def test_variance_term_zero_for_unit_std_and_positive_on_collapse():
    z = _decorrelated(16, 5) * torch.tensor([1.0, 1.5, 2.0, 3.0, 1.01])
    assert variance_term(z).item() == 0.0
    collapsed = torch.ones(16, 5)
    assert variance_term(collapsed).item() == pytest.approx(1 - 1e-2, rel=1e-5)


def test_covariance_term_zero_for_decorrelated_inputs():
    z = _decorrelated(20, 6) * 3.0
    assert covariance_term(z).item() == pytest.approx(0.0, abs=1e-8)
    corr = z.clone()
    corr[:, 1] = corr[:, 0]
    assert covariance_term(corr).item() > 1.0


def test_identical_decorrelated_views_give_zero_and_symmetry():
    z = _decorrelated(16, 4)
    assert VICRegLoss()(z, z).item() == pytest.approx(0.0, abs=1e-6)
    a, b = torch.randn(8, 3), torch.randn(8, 3)
    assert VICRegLoss()(a, b).item() == pytest.approx(VICRegLoss()(b, a).item())


def test_gradients_and_errors():
    a = torch.randn(6, 3, requires_grad=True)
    b = torch.randn(6, 3, requires_grad=True)
    VICRegLoss()(a, b).backward()
    assert a.grad.abs().sum() > 0 and b.grad.abs().sum() > 0
    with pytest.raises(ValueError):
        VICRegLoss()(torch.randn(6, 3), torch.randn(5, 3))
    with pytest.raises(ValueError):
        VICRegLoss()(torch.randn(1, 3), torch.randn(1, 3))
