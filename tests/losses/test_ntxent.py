"""NT-Xent against an explicit per-row loop, symmetry, gradients, errors, DDP."""

import math
import os

import pytest
import torch
import torch.nn.functional as F

from sslsv_sb.losses.ntxent import NTXentLoss
from tests.gloo import free_port, gloo_group


def ntxent_loop(z1, z2, tau):
    """Textbook NT-Xent: loop over the 2N anchors, softmax over the 2N-1 others."""
    z = F.normalize(torch.cat([z1, z2]), dim=1).double()
    n2 = z.shape[0]
    n = n2 // 2
    total = 0.0
    for i in range(n2):
        pos = (i + n) % n2
        denom = sum(math.exp(float(z[i] @ z[k]) / tau) for k in range(n2) if k != i)
        total += -(float(z[i] @ z[pos]) / tau - math.log(denom))
    return total / n2


@pytest.mark.parametrize("tau", [0.03, 0.5])
def test_matches_loop(tau):
    torch.manual_seed(0)
    z1, z2 = torch.randn(6, 5), torch.randn(6, 5)
    got = NTXentLoss(temperature=tau, gather_distributed=False)(z1, z2)
    assert got.item() == pytest.approx(ntxent_loop(z1, z2, tau), rel=1e-5)


def test_symmetric_and_scale_invariant():
    torch.manual_seed(1)
    z1, z2 = torch.randn(4, 8), torch.randn(4, 8)
    loss = NTXentLoss(0.1, gather_distributed=False)
    assert loss(z1, z2).item() == pytest.approx(loss(z2, z1).item(), rel=1e-6)
    assert loss(3 * z1, z2).item() == pytest.approx(loss(z1, z2).item(), rel=1e-5)


def test_perfect_views_give_low_loss_and_accuracy():
    z = torch.eye(4)
    loss = NTXentLoss(0.05, gather_distributed=False)
    assert loss(z, z).item() < 1e-3
    assert loss.last_metrics["accuracy"] == 1.0


def test_accuracy_on_a_hand_case():
    # 2-D unit vectors at angles (degrees): view 1 = [0, 20], view 2 = [8, 90].
    # Row 0 (0) -> 8 (its positive), row 1 (20) -> 8 (miss, positive is 90),
    # row 2 (8) -> 0 (hit), row 3 (90) -> 20 (hit): 3 / 4.
    def unit(*degrees):
        r = torch.tensor(degrees, dtype=torch.float64) * math.pi / 180
        return torch.stack([r.cos(), r.sin()], dim=1)

    z1, z2 = unit(0.0, 20.0), unit(8.0, 90.0)
    loss = NTXentLoss(0.1, gather_distributed=False)
    loss(z1, z2)
    assert loss.last_metrics["accuracy"] == 0.75
    # the single-process matrix is symmetric: the column-wise arg-max agrees
    z = torch.cat([z1, z2])
    sims = (z @ z.T).fill_diagonal_(-2)
    assert (sims.argmax(dim=0) == torch.tensor([2, 3, 0, 1])).float().mean() == 0.75


def test_gradient_flows_and_decreases():
    torch.manual_seed(2)
    z1 = torch.randn(8, 4, requires_grad=True)
    z2 = torch.randn(8, 4, requires_grad=True)
    loss_fn = NTXentLoss(0.2, gather_distributed=False)
    opt = torch.optim.SGD([z1, z2], lr=0.5)
    first = None
    for _ in range(20):
        opt.zero_grad()
        loss = loss_fn(z1, z2)
        loss.backward()
        assert torch.isfinite(z1.grad).all() and z1.grad.abs().sum() > 0
        first = first if first is not None else loss.item()
        opt.step()
    assert loss.item() < first


def test_errors():
    loss = NTXentLoss(0.1, gather_distributed=False)
    with pytest.raises(ValueError, match="equal shape"):
        loss(torch.randn(4, 3), torch.randn(4, 2))
    with pytest.raises(ValueError, match="at least 2"):
        loss(torch.randn(1, 3), torch.randn(1, 3))
    with pytest.raises(ValueError, match="temperature"):
        NTXentLoss(0.0)


def _ddp_worker(rank, world, port, z1, z2, out):
    import torch.distributed as dist

    with gloo_group(rank, world, port):
        n = z1.shape[0] // world
        a = z1[rank * n : (rank + 1) * n].clone().requires_grad_(True)
        b = z2[rank * n : (rank + 1) * n].clone().requires_grad_(True)
        loss = NTXentLoss(0.1, gather_distributed=True)(a, b)
        loss.backward()
        # DDP averages gradients over ranks: emulate that to compare with 1 process.
        loss_all = loss.detach().clone()
        dist.all_reduce(loss_all)
        torch.save(
            {"loss": loss_all / world, "ga": a.grad / world, "gb": b.grad / world},
            os.path.join(out, f"r{rank}.pt"),
        )


@pytest.mark.slow
def test_gathered_loss_equals_single_process(tmp_path):
    torch.manual_seed(3)
    z1, z2 = torch.randn(8, 6), torch.randn(8, 6)
    torch.multiprocessing.spawn(
        _ddp_worker, args=(2, free_port(), z1, z2, str(tmp_path)), nprocs=2
    )
    a = z1.clone().requires_grad_(True)
    b = z2.clone().requires_grad_(True)
    ref = NTXentLoss(0.1, gather_distributed=False)(a, b)
    ref.backward()
    r0, r1 = (torch.load(tmp_path / f"r{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["loss"].item() == pytest.approx(ref.item(), rel=1e-5)
    assert torch.allclose(torch.cat([r0["ga"], r1["ga"]]), a.grad, atol=1e-6)
    assert torch.allclose(torch.cat([r0["gb"], r1["gb"]]), b.grad, atol=1e-6)


def test_runs_in_fp32_under_bf16_autocast():
    torch.manual_seed(4)
    z1, z2 = torch.randn(6, 5), torch.randn(6, 5)
    loss = NTXentLoss(0.03, gather_distributed=False)
    ref = loss(z1, z2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = loss(z1.bfloat16(), z2.bfloat16())
    assert got.dtype == torch.float32
    # Same value up to the bf16 rounding of the inputs only.
    assert got.item() == pytest.approx(
        loss(z1.bfloat16().float(), z2.bfloat16().float()).item(), rel=1e-5
    )
    assert got.item() == pytest.approx(ref.item(), rel=5e-2)
