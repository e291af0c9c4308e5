"""Tests of sslsv_sb.losses.vibcreg."""

import numpy as np
import pytest
import torch

from sslsv_sb.losses.vibcreg import VIbCRegLoss, normalized_covariance_term
from sslsv_sb.losses.vicreg import variance_term


def test_normalized_covariance_matches_numpy_corrcoef():
    torch.manual_seed(0)
    z = torch.randn(9, 5)
    corr = np.corrcoef(z.double().numpy(), rowvar=False)
    np.fill_diagonal(corr, 0.0)
    ref = np.mean(corr**2)
    assert normalized_covariance_term(z).item() == pytest.approx(ref, rel=1e-5)


def test_covariance_term_is_scale_invariant_and_bounded():
    torch.manual_seed(0)
    z = torch.randn(12, 4)
    scaled = z * torch.tensor([1.0, 10.0, 0.1, 3.0]) + 5.0
    assert normalized_covariance_term(scaled).item() == pytest.approx(
        normalized_covariance_term(z).item(), rel=1e-4
    )
    dup = torch.randn(12, 1).repeat(1, 4)  # fully correlated: every entry is 1
    assert normalized_covariance_term(dup).item() == pytest.approx(12 / 16, rel=1e-5)


def test_total_and_defaults():
    torch.manual_seed(0)
    a, b = torch.randn(8, 4), torch.randn(8, 4)
    loss = VIbCRegLoss()
    assert (loss.inv_weight, loss.var_weight, loss.cov_weight) == (1.0, 1.0, 8.0)
    ref = (
        torch.mean((a - b) ** 2)
        + variance_term(a)
        + variance_term(b)
        + 8.0 * (normalized_covariance_term(a) + normalized_covariance_term(b))
    )
    assert loss(a, b).item() == pytest.approx(ref.item(), rel=1e-6)


def test_gradients_and_errors():
    a = torch.randn(6, 3, requires_grad=True)
    VIbCRegLoss()(a, torch.randn(6, 3)).backward()
    assert a.grad.abs().sum() > 0
    with pytest.raises(ValueError):
        VIbCRegLoss()(torch.randn(6, 3), torch.randn(6, 2))
