"""InfoNCELoss vs an explicit per-anchor loop."""

import math

import pytest
import torch
import torch.nn.functional as F

from sslsv_sb.losses.infonce import InfoNCELoss, info_nce


def _loop(a, p, tau, normalize):
    if normalize:
        a, p = F.normalize(a, dim=1), F.normalize(p, dim=1)
    losses, hits = [], 0
    for i in range(a.shape[0]):
        logits = [float(a[i] @ p[j]) / tau for j in range(p.shape[0])]
        lse = math.log(sum(math.exp(x) for x in logits))
        losses.append(lse - logits[i])
        hits += int(max(range(len(logits)), key=logits.__getitem__) == i)
    return sum(losses) / len(losses), hits / a.shape[0]


@pytest.mark.parametrize("tau,normalize", [(0.2, True), (1.0, False), (0.5, True)])
def test_matches_loop(tau, normalize):
    torch.manual_seed(0)
    a, p = (
        torch.randn(7, 5, dtype=torch.float64),
        torch.randn(7, 5, dtype=torch.float64),
    )
    out = InfoNCELoss(tau, normalize)(a, p)
    ref_loss, ref_acc = _loop(a, p, tau, normalize)
    assert out["loss"].item() == pytest.approx(ref_loss, rel=1e-5)
    assert out["accuracy"].item() == pytest.approx(ref_acc)
    assert out["loss"].dtype == torch.float32


def test_gradient_and_perfect_alignment():
    a = torch.eye(6, requires_grad=True)
    out = InfoNCELoss(temperature=0.05)(a, torch.eye(6))
    out["loss"].backward()
    assert out["accuracy"].item() == 1.0 and out["loss"].item() < 1e-3
    assert a.grad is not None


def test_bad_inputs():
    with pytest.raises(ValueError):
        InfoNCELoss()(torch.randn(4, 3), torch.randn(4, 2))
    with pytest.raises(ValueError):
        InfoNCELoss()(torch.randn(1, 3), torch.randn(1, 3))
    with pytest.raises(ValueError):
        InfoNCELoss(temperature=0)


def test_accuracy_is_per_anchor_row_not_per_candidate_column():
    # logits[i, j] = cos(anchor i, candidate j):
    #   [[1.000, 0.000],
    #    [0.995, 0.0995]]
    # rows (the loss's softmax axis): anchor 0 -> candidate 0 (hit), anchor 1 ->
    # candidate 0 (miss) = 0.5; columns: candidate 0 -> anchor 0, candidate 1 ->
    # anchor 1 = 1.0. The metric must be the row one.
    anchors = torch.tensor([[1.0, 0.0], [1.0, 0.1]])
    positives = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    logits = F.normalize(anchors, dim=1) @ positives.T
    assert (logits.argmax(dim=0) == torch.arange(2)).float().mean() == 1.0
    assert InfoNCELoss()(anchors, positives)["accuracy"].item() == 0.5
    # same with leading dims (CPC layout) and raw dot products: per (l, anchor) row
    _, acc = info_nce(
        anchors.expand(3, 2, 2), positives.expand(3, 2, 2), torch.arange(2)
    )
    assert acc.item() == 0.5
    # swapping the roles asks the column question: a different number
    assert InfoNCELoss()(positives, anchors)["accuracy"].item() == 1.0
