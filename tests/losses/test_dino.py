"""Tests of sslsv_sb.losses.dino and the teacher-temperature schedule.

The 2-process DDP check of the centre update lives in test_barlow_twins.py (one spawn
for every DDP-sensitive loss keeps the suite fast).
"""

import numpy as np
import pytest
import torch

from sslsv_sb.losses.dino import DINOLoss
from sslsv_sb.schedules import dino_teacher_temp


def _np_softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _np_dino(student, teacher, center, g, tau_s, tau_t):
    """Explicit loops: teacher view j vs student view i, i != j, sample by sample."""
    k = student.shape[1]
    n = teacher.shape[0] // g
    v = student.shape[0] // n
    total, pairs = 0.0, 0
    for j in range(g):
        for i in range(v):
            if i == j:
                continue
            ce = 0.0
            for s in range(n):
                pt = _np_softmax((teacher[j * n + s] - center) / tau_t)
                ls = np.log(_np_softmax(student[i * n + s] / tau_s))
                ce += -sum(pt[c] * ls[c] for c in range(k))
            total += ce / n
            pairs += 1
    return total / pairs


def test_matches_explicit_loop_with_center_and_warmup():
    torch.manual_seed(0)
    n, k, v, g = 3, 7, 4, 2
    student, teacher = torch.randn(v * n, k), torch.randn(g * n, k)
    loss = DINOLoss(
        k, n_global=g, teacher_temp=0.07, warmup_teacher_temp=0.04, warmup_epochs=4
    )
    loss.center.copy_(torch.randn(1, k))
    center = loss.center.numpy().copy()[0]
    out = loss(student, teacher, epoch=2)
    tau_t = 0.04 + 2 / 3 * 0.03
    ref = _np_dino(
        student.double().numpy(), teacher.double().numpy(), center, g, 0.1, tau_t
    )
    assert out.item() == pytest.approx(ref, rel=1e-5)
    assert loss.last_metrics["teacher_temp"].item() == pytest.approx(tau_t)
    # List inputs give the same value.
    loss.eval()
    loss.center.copy_(torch.from_numpy(center)[None].float())
    out_list = loss(list(student.split(n)), list(teacher.split(n)), epoch=2)
    assert out_list.item() == pytest.approx(out.item(), rel=1e-6)


def test_identical_distributions_give_the_entropy():
    torch.manual_seed(0)
    logits = torch.randn(5, 11)
    loss = DINOLoss(11, n_global=2, student_temp=0.1, teacher_temp=0.1).eval()
    out = loss(logits.repeat(3, 1), logits.repeat(2, 1), epoch=0)  # center is 0
    p = torch.softmax(logits / 0.1, dim=-1).double()
    entropy = -(p * p.log()).sum(-1).mean()
    assert out.item() == pytest.approx(entropy.item(), rel=1e-5)
    assert loss.last_metrics["teacher_entropy"].item() == pytest.approx(
        entropy.item(), rel=1e-5
    )
    assert abs(loss.last_metrics["kl_div"].item()) < 1e-5


def test_center_update_train_only_and_stop_gradient():
    torch.manual_seed(0)
    student = torch.randn(6, 5, requires_grad=True)
    teacher = torch.randn(4, 5, requires_grad=True)
    loss = DINOLoss(5, n_global=2, center_momentum=0.9)
    loss(student, teacher).backward()
    expected = 0.1 * teacher.detach().mean(0, keepdim=True)
    assert torch.allclose(loss.center, expected, atol=1e-7)
    assert student.grad.abs().sum() > 0 and teacher.grad is None
    loss.eval()
    loss(student, teacher)
    assert torch.allclose(loss.center, expected, atol=1e-7)
    assert "center" in loss.state_dict()


def test_collapse_metrics():
    loss = DINOLoss(6, n_global=2).eval()
    const = torch.zeros(4, 6)
    loss(torch.zeros(6, 6), const)
    assert loss.last_metrics["teacher_std"].item() == pytest.approx(0.0, abs=1e-7)
    assert loss.last_metrics["teacher_entropy"].item() == pytest.approx(
        np.log(6), rel=1e-6
    )


def test_bad_inputs():
    loss = DINOLoss(5, n_global=2)
    with pytest.raises(ValueError):
        loss(torch.randn(6, 5), torch.randn(5, 5))  # teacher rows not 2 * N
    with pytest.raises(ValueError):
        loss(torch.randn(6, 4), torch.randn(4, 4))  # K != out_dim
    with pytest.raises(ValueError):
        loss(torch.randn(2, 5), torch.randn(2, 5))  # batch of 1
    with pytest.raises(ValueError):
        loss(torch.randn(3, 5), torch.randn(4, 5))  # student rows not V * N


def test_teacher_temp_schedule():
    ref = np.linspace(0.04, 0.07, 30)
    for e in (0, 7, 29):
        assert dino_teacher_temp(e, 0.07, 0.04, 30) == pytest.approx(ref[e])
    assert dino_teacher_temp(30, 0.07, 0.04, 30) == 0.07
    assert dino_teacher_temp(0, 0.04, 0.04, 0) == 0.04
