"""CPC head/loss: loop reference, target alignment, causality, two-crop mode."""

import math

import pytest
import torch

from sslsv_sb.losses.cpc import CPCHead, CPCLoss


def _loop(pred, tgt, tau=1.0):
    b, s, k, _ = pred.shape
    total, count = 0.0, 0
    for si in range(s):
        for j in range(k):
            for i in range(b):
                logits = [float(pred[i, si, j] @ tgt[n, si, j]) / tau for n in range(b)]
                lse = math.log(sum(math.exp(x) for x in logits))
                total += lse - logits[i]
                count += 1
    return total / count


def test_loss_matches_loop():
    torch.manual_seed(0)
    pred = torch.randn(5, 3, 2, 4, dtype=torch.float64) * 0.5
    tgt = torch.randn(5, 3, 2, 4, dtype=torch.float64) * 0.5
    out = CPCLoss()(pred, tgt)
    assert out["loss"].item() == pytest.approx(_loop(pred, tgt), rel=1e-5)
    out = CPCLoss(temperature=0.3)(pred, tgt)
    assert out["loss"].item() == pytest.approx(_loop(pred, tgt, 0.3), rel=1e-5)


@pytest.mark.parametrize("aggregator", ["gru", "lstm"])
def test_same_mode_alignment_and_causality(aggregator):
    torch.manual_seed(0)
    head = CPCHead(6, aggregator=aggregator, hidden=5, n_predict=3)
    x = torch.randn(2, 6, 9)
    pred, tgt = head(x)
    assert pred.shape == tgt.shape == (2, 6, 3, 6)  # T - k = 6 contexts
    for t in range(6):
        for j in range(1, 4):
            assert torch.equal(tgt[:, t, j - 1], x[:, :, t + j])
    # prediction from context t must not depend on frames after t
    x2 = x.clone()
    x2[:, :, 4:] += 10.0
    pred2, _ = head(x2)
    assert torch.allclose(pred[:, :4], pred2[:, :4])
    assert not torch.allclose(pred[:, 4:], pred2[:, 4:])
    # context="last" keeps only the last context position
    head.context = "last"
    pl, tl = head(x)
    assert torch.allclose(pl[:, 0], pred[:, -1]) and torch.equal(tl[:, 0], tgt[:, -1])


def test_two_crop_mode_and_bidirectional():
    torch.manual_seed(0)
    head = CPCHead(4, hidden=3, n_predict=2, mode="two_crop", bidirectional=True)
    x1, x2 = torch.randn(3, 4, 7), torch.randn(3, 4, 8)
    pred, tgt = head(x1, x2)
    assert pred.shape == (3, 2, 2, 4)  # directions stacked on dim 1
    assert torch.equal(tgt[:, 0], x2[:, :, -2:].transpose(1, 2))
    assert torch.equal(tgt[:, 1], x2.flip(2)[:, :, -2:].transpose(1, 2))
    # forward context ignores the last k frames of crop 1
    x1b = x1.clone()
    x1b[:, :, -2:] = 0
    assert torch.allclose(head(x1b, x2)[0][:, 0], pred[:, 0])
    with pytest.raises(ValueError):
        head(x1)
    assert head.out_dim == 6 and head.embed(x1).shape == (3, 6)
    out = CPCLoss()(pred, tgt)
    out["loss"].backward()
    assert head.predictors[1][0].weight.grad is not None


def test_embed_respects_lengths():
    torch.manual_seed(0)
    head = CPCHead(4, hidden=3, n_predict=2, bidirectional=True)
    x = torch.randn(2, 4, 10)
    e = head.embed(x, torch.tensor([1.0, 0.6]))
    assert torch.allclose(e[0], head.embed(x[:1])[0], atol=1e-6)
    assert torch.allclose(e[1], head.embed(x[1:2, :, :6])[0], atol=1e-6)


def test_errors():
    with pytest.raises(ValueError):
        CPCHead(4, aggregator="rnn")
    with pytest.raises(ValueError):
        CPCHead(4, n_predict=4)(torch.randn(2, 4, 4))
    with pytest.raises(ValueError):
        CPCLoss()(torch.randn(1, 1, 1, 3), torch.randn(1, 1, 1, 3))
