"""sslsv_sb.training: effective_rank (dimensional-collapse monitor), closed forms."""

import numpy as np
import pytest
import torch

from sslsv_sb.training import effective_rank


def test_effective_rank_closed_forms():
    # 4 orthogonal centred directions of equal variance: rank 4 - 1 = 3 after centring
    assert effective_rank(torch.eye(4) - 0.25) == pytest.approx(3.0, abs=1e-5)
    # all variance along one direction: 1
    x = torch.randn(50, 1) * torch.tensor([[1.0, 2.0, -1.0]])
    assert effective_rank(x) == pytest.approx(1.0, abs=1e-4)
    # eigenvalue shares (1/2, 1/4, 1/4): exp(H) = 2 ** 1.5
    g = torch.linalg.qr(torch.randn(200, 3, dtype=torch.float64))[0]  # orthonormal
    g = g - g.mean(0)
    g = torch.linalg.qr(g)[0] * torch.tensor([2.0, 2**0.5, 2**0.5], dtype=torch.float64)
    g = g - g.mean(0)
    share = np.linalg.eigvalsh((g.T @ g).numpy())
    share = share / share.sum()
    expected = float(np.exp(-(share * np.log(share)).sum()))
    assert effective_rank(g) == pytest.approx(expected, rel=1e-4)
    assert expected == pytest.approx(2**1.5, rel=1e-2)


def test_effective_rank_errors_and_constant_input():
    with pytest.raises(ValueError, match="N >= 2"):
        effective_rank(torch.randn(1, 4))
    assert effective_rank(torch.ones(5, 3)) == 1.0
