"""Tests of sslsv_sb.losses.wmse."""

import numpy as np
import pytest
import torch

from sslsv_sb.losses.wmse import WMSELoss, whiten


def _np_whiten(x):
    xc = x - x.mean(0)
    cov = np.cov(x, rowvar=False)
    chol = np.linalg.cholesky(cov)
    return (np.linalg.inv(chol) @ xc.T).T


def test_whitened_chunk_has_identity_covariance():
    torch.manual_seed(0)
    mix = torch.randn(4, 4)
    x = torch.randn(50, 4) @ mix + 3.0  # correlated, shifted
    w = whiten(x).double()
    assert torch.allclose(w.mean(0), torch.zeros(4, dtype=torch.float64), atol=1e-4)
    cov = torch.cov(w.T)
    assert torch.allclose(cov, torch.eye(4, dtype=torch.float64), atol=1e-3)
    # Shrinkage: whitening of (1 - eps) Sigma + eps I.
    assert not torch.allclose(torch.cov(whiten(x, eps=0.5).T), torch.eye(4), atol=1e-2)


def test_matches_numpy_with_remainder():
    torch.manual_seed(0)
    a, b = torch.randn(22, 3), torch.randn(22, 3)
    loss = WMSELoss(whitening_size=8)
    out = loss(a, b, generator=torch.Generator().manual_seed(3))
    perm = torch.randperm(22, generator=torch.Generator().manual_seed(3)).numpy()
    chunks = np.array_split(perm, 22 // 8)  # 2 chunks of 11 (remainder spread)
    assert [len(c) for c in chunks] == [11, 11]
    an, bn = a.double().numpy(), b.double().numpy()
    wa, wb = np.zeros_like(an), np.zeros_like(bn)
    for idx in chunks:
        wa[idx], wb[idx] = _np_whiten(an[idx]), _np_whiten(bn[idx])
    cos = np.sum(wa * wb, 1) / (np.linalg.norm(wa, axis=1) * np.linalg.norm(wb, axis=1))
    assert out.item() == pytest.approx(2 - 2 * cos.mean(), rel=1e-4)


def test_chunks_cover_the_batch():
    loss = WMSELoss(whitening_size=16)
    for b in (16, 40, 47, 10):
        chunks = loss.chunks(b, "cpu")
        allidx = torch.cat(chunks).sort().values
        assert torch.equal(allidx, torch.arange(b))
        assert min(len(c) for c in chunks) >= min(16, b)


def test_identical_views_zero_and_iterations():
    z = torch.randn(40, 3)
    assert WMSELoss(whitening_size=10, iters=3)(z, z).item() == pytest.approx(
        0.0, abs=1e-5
    )
    a = torch.randn(40, 3, requires_grad=True)
    out = WMSELoss(whitening_size=10, iters=2)(a, torch.randn(40, 3))
    out.backward()
    assert 0 < out.item() < 4 and a.grad.abs().sum() > 0


def test_errors():
    with pytest.raises(ValueError, match="dimensions"):
        WMSELoss(whitening_size=4)(torch.randn(8, 4), torch.randn(8, 4))
    WMSELoss(whitening_size=4, eps=0.1)(torch.randn(8, 4), torch.randn(8, 4))  # ok
    with pytest.raises(ValueError):
        WMSELoss()(torch.randn(8, 4), torch.randn(8, 3))
    with pytest.raises(ValueError):
        WMSELoss(whitening_size=1)
