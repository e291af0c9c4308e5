"""Tests for sslsv_sb.losses.aam (AAM-softmax / ArcFace, arXiv 1801.07698)."""

import math

import pytest
import torch

from sslsv_sb.losses.aam import AAMSoftmaxLoss


def _unit(v):
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v]


def hand_aam(emb, weight, labels, s, m):
    """Mean CE of s * [cos(theta_y + m) | cos(theta_j)] with the theta+m>pi fallback."""
    total = 0.0
    for e, y in zip(emb.tolist(), labels.tolist()):
        e = _unit(e)
        cos = [sum(a * b for a, b in zip(e, _unit(w))) for w in weight.tolist()]
        t = math.acos(cos[y])
        cos[y] = (
            math.cos(t + m) if t + m < math.pi else cos[y] - m * math.sin(math.pi - m)
        )
        logits = [s * c for c in cos]
        mx = max(logits)
        total += mx + math.log(sum(math.exp(x - mx) for x in logits)) - logits[y]
    return total / len(labels)


def test_equals_hand_computation():
    torch.manual_seed(0)
    fn = AAMSoftmaxLoss(in_dim=5, n_classes=4, margin=0.2, scale=30.0)
    emb, labels = torch.randn(6, 5) * 3, torch.tensor([0, 1, 2, 3, 1, 0])
    loss = fn(emb, labels)
    ref = hand_aam(emb, fn.classifier.weight.detach(), labels, 30.0, 0.2)
    assert loss.item() == pytest.approx(ref, rel=1e-5)


def test_margin_beyond_pi_uses_fallback():
    fn = AAMSoftmaxLoss(in_dim=2, n_classes=2, margin=0.5, scale=4.0)
    with torch.no_grad():
        fn.classifier.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    theta = 3.0  # theta + m > pi for the target class 0
    emb = torch.tensor([[math.cos(theta), math.sin(theta)], [0.0, 1.0]])
    labels = torch.tensor([0, 1])
    ref = hand_aam(emb, fn.classifier.weight.detach(), labels, 4.0, 0.5)
    assert fn(emb, labels).item() == pytest.approx(ref, rel=1e-5)


def test_gradient_and_logits():
    torch.manual_seed(1)
    fn = AAMSoftmaxLoss(in_dim=4, n_classes=3)
    emb = torch.randn(4, 4, requires_grad=True)
    labels = torch.tensor([0, 1, 2, 0])
    fn(emb, labels).backward()
    assert torch.isfinite(emb.grad).all() and emb.grad.abs().sum() > 0
    assert fn.classifier.weight.grad.abs().sum() > 0
    logits = fn.logits(emb.detach())
    cos = (
        torch.nn.functional.normalize(emb.detach(), dim=1)
        @ torch.nn.functional.normalize(fn.classifier.weight.detach(), dim=1).t()
    )
    assert torch.allclose(logits, 30.0 * cos, atol=1e-5)
    acc = (cos.argmax(1) == labels).float().mean().item()
    assert fn.last_metrics["accuracy"] == pytest.approx(acc)


def test_errors():
    fn = AAMSoftmaxLoss(in_dim=4, n_classes=3)
    with pytest.raises(ValueError, match="embeddings"):
        fn(torch.randn(3, 5), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=">= 2"):
        fn(torch.randn(1, 4), torch.tensor([0]))
    with pytest.raises(ValueError, match="labels must be"):
        fn(torch.randn(3, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="labels must be"):
        fn(torch.randn(3, 4), torch.tensor([0, 1, 3]))
