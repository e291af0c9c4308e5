"""Tests of sslsv_sb.losses.barlow_twins, plus the 2-process DDP equivalence test of
every loss whose statistics span the batch (Barlow Twins, DINO centre, VICReg, W-MSE,
Sinkhorn, DeepCluster memory bank): 2 ranks x N rows must equal 1 process on the 2N
rows."""

import os
import tempfile

import numpy as np
import pytest
import torch
from torch import nn

from sslsv_sb.losses.barlow_twins import BarlowTwinsLoss
from tests.gloo import free_port, gloo_group


def _np_barlow(a, b, lambd, scale, eps=1e-5):
    def bn(x):
        return (x - x.mean(0)) / np.sqrt(x.var(0) + eps)

    a, b = bn(a), bn(b)
    n, d = a.shape
    c = np.zeros((d, d))
    for i in range(d):
        for j in range(d):
            c[i, j] = sum(a[s, i] * b[s, j] for s in range(n)) / n
    on = sum((1 - c[i, i]) ** 2 for i in range(d))
    off = sum(c[i, j] ** 2 for i in range(d) for j in range(d) if i != j)
    return scale * (on + lambd * off)


def _decorrelated(n, d, seed=0):
    """(n, d) zero-mean columns, orthogonal, each with biased variance 1."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(x - x.mean(0))
    return (q * np.sqrt(n)).float()


def test_matches_numpy():
    torch.manual_seed(0)
    a, b = torch.randn(6, 4), torch.randn(6, 4)
    loss = BarlowTwinsLoss(lambd=0.3, scale=0.5)
    ref = _np_barlow(a.double().numpy(), b.double().numpy(), 0.3, 0.5)
    assert loss(a, b).item() == pytest.approx(ref, rel=1e-5)


def test_standardisation_is_batchnorm():
    a, b = torch.randn(10, 3), torch.randn(10, 3)
    bn = nn.BatchNorm1d(3, affine=False).train()
    ref = bn(a).T @ bn(b) / 10
    assert torch.allclose(BarlowTwinsLoss().cross_correlation(a, b), ref, atol=1e-6)


def test_zero_for_identical_decorrelated_views_and_symmetry():
    z = _decorrelated(32, 6) * 3 + 1  # BN removes scale and shift
    loss = BarlowTwinsLoss()
    assert loss(z, z).item() == pytest.approx(0.0, abs=1e-6)
    a, b = torch.randn(8, 5), torch.randn(8, 5)
    assert loss(a, b).item() == pytest.approx(loss(b, a).item(), rel=1e-6)
    assert loss(a, b).item() > 0.01


def test_gradients_and_errors():
    a = torch.randn(8, 4, requires_grad=True)
    b = torch.randn(8, 4, requires_grad=True)
    BarlowTwinsLoss()(a, b).backward()
    assert a.grad.abs().sum() > 0 and b.grad.abs().sum() > 0
    with pytest.raises(ValueError):
        BarlowTwinsLoss()(torch.randn(8, 4), torch.randn(8, 5))
    with pytest.raises(ValueError):
        BarlowTwinsLoss()(torch.randn(1, 4), torch.randn(1, 4))


# ------------------------------------------------------------------ DDP (2 x gloo)


def _global_inputs():
    g = torch.Generator().manual_seed(123)
    return {
        "za": torch.randn(8, 5, generator=g),
        "zb": torch.randn(8, 5, generator=g),
        "student": torch.randn(3, 8, 6, generator=g),  # (V, N, K)
        "teacher": torch.randn(2, 8, 6, generator=g),  # (G, N, K)
        "scores": torch.randn(8, 4, generator=g),
    }


def _compute(inputs, sl):
    """Every loss on the rows ``sl`` of the global inputs (grad w.r.t. za)."""
    from sslsv_sb.losses.deepcluster import DeepClusterMemory
    from sslsv_sb.losses.dino import DINOLoss
    from sslsv_sb.losses.swav import sinkhorn_knopp
    from sslsv_sb.losses.vicreg import VICRegLoss
    from sslsv_sb.losses.wmse import WMSELoss

    za = inputs["za"][sl].clone().requires_grad_(True)
    zb = inputs["zb"][sl]
    out = {}
    bt = BarlowTwinsLoss()(za, zb)
    bt.backward()
    out["barlow"], out["barlow_grad"] = bt.detach(), za.grad.clone()
    out["vicreg"] = VICRegLoss()(za, zb).detach()
    wmse = WMSELoss(whitening_size=7, eps=0.0)
    out["wmse"] = wmse(za, zb, generator=torch.Generator().manual_seed(5)).detach()
    dino = DINOLoss(6, n_global=2)
    student = inputs["student"][:, sl].reshape(-1, 6)
    teacher = inputs["teacher"][:, sl].reshape(-1, 6)
    out["dino"] = dino(student, teacher).detach()
    out["center"] = dino.center.clone()
    out["sinkhorn"] = sinkhorn_knopp(inputs["scores"][sl], 0.5, 3)
    mem = DeepClusterMemory(8, 5, n_views=2, n_heads=1)
    mem.update(torch.arange(8)[sl], torch.stack([za.detach(), zb]))
    out["bank"], out["filled"] = mem.bank.clone(), mem.filled.clone()
    return out


def _worker(rank, world, port, path):

    torch.set_num_threads(1)
    with gloo_group(rank, world, port):
        n = 8 // world
        out = _compute(_global_inputs(), slice(rank * n, (rank + 1) * n))
        torch.save(out, os.path.join(path, f"rank{rank}.pt"))


@pytest.mark.slow
def test_two_processes_equal_one_process():
    import torch.multiprocessing as mp

    ref = _compute(_global_inputs(), slice(0, 8))
    with tempfile.TemporaryDirectory() as tmp:
        # fork (Linux) avoids re-importing torch in the children (~10 s on a busy
        # host); the workers set 1 intra-op thread, as DataLoader workers do.
        method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
        mp.start_processes(
            _worker,
            args=(2, free_port(), tmp),
            nprocs=2,
            join=True,
            start_method=method,
        )
        outs = [
            torch.load(os.path.join(tmp, f"rank{r}.pt"), weights_only=True)
            for r in range(2)
        ]
    for r, out in enumerate(outs):
        # Global-batch losses: identical value on every rank.
        for key in ("barlow", "vicreg", "wmse"):
            assert out[key].item() == pytest.approx(ref[key].item(), rel=1e-5), key
        # gather's backward sums over ranks; DDP then divides by the world size.
        assert torch.allclose(
            out["barlow_grad"] / 2, ref["barlow_grad"][r * 4 : (r + 1) * 4], atol=1e-6
        )
        assert torch.allclose(out["center"], ref["center"], atol=1e-6)
        # DeepCluster bank: every rank stores the whole global batch.
        assert torch.equal(out["bank"], ref["bank"]) and bool(out["filled"].all())
        assert torch.allclose(
            out["sinkhorn"], ref["sinkhorn"][r * 4 : (r + 1) * 4], atol=1e-6
        )
    # DINO's loss is a local batch mean: the mean over ranks is the global mean.
    assert (outs[0]["dino"] + outs[1]["dino"]).item() / 2 == pytest.approx(
        ref["dino"].item(), rel=1e-5
    )
