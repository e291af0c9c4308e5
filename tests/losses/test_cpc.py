"""CPC loss: loop reference, two-crop mode through the head, errors.

The head alone (alignment, causality, lengths) is tested in tests/models/test_heads.py.
"""

import math

import pytest
import torch

from sslsv_sb.losses import cpc as cpc_losses
from sslsv_sb.losses.cpc import CPCLoss
from sslsv_sb.models.heads import CPCHead


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


def test_errors():
    with pytest.raises(ValueError):
        CPCLoss()(torch.randn(1, 1, 1, 3), torch.randn(1, 1, 1, 3))
    with pytest.raises(ValueError):
        CPCLoss(temperature=0.0)


def test_head_still_importable_from_the_loss_module():
    # recipes name it ``!new:sslsv_sb.losses.cpc.CPCHead``
    assert cpc_losses.CPCHead is CPCHead
