"""CombinerLoss: weighted sum of Y / Z terms with InfoNCELoss and stand-ins."""

import pytest
import torch
from torch import nn

from sslsv_sb.losses.combiner import CombinerLoss
from sslsv_sb.losses.infonce import InfoNCELoss


class MSE(nn.Module):
    def forward(self, a, b):
        return ((a - b) ** 2).mean()


class Const(nn.Module):
    def __init__(self, v):
        super().__init__()
        self.v = v

    def forward(self, a, b):
        return {"loss": torch.tensor(self.v), "extra": torch.tensor(7.0)}


def test_weighted_sum_and_metrics():
    torch.manual_seed(0)
    y1, y2, z1, z2 = (
        torch.randn(6, 8),
        torch.randn(6, 8),
        torch.randn(6, 4),
        torch.randn(6, 4),
    )
    nce = InfoNCELoss()
    loss = CombinerLoss(
        [
            (0.7, nce, "encoder"),
            (2.0, MSE(), "projector"),
            (0.5, Const(3.0), "projector"),
        ]
    )
    out = loss(y1, y2, z1, z2)
    y_term = nce(y1, y2)["loss"]
    z_mse = MSE()(z1, z2)
    expected = 0.7 * y_term + 2.0 * z_mse + 0.5 * 3.0
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert out["Y_loss"].item() == pytest.approx(0.7 * y_term.item(), rel=1e-6)
    assert out["Z_loss"].item() == pytest.approx(2.0 * z_mse.item() + 1.5, rel=1e-6)
    assert out["Y_loss"] + out["Z_loss"] == pytest.approx(out["loss"].item(), rel=1e-6)
    assert "Y/infonce/accuracy" in out and out["Z/const/extra"].item() == 7.0
    assert out["Z/mse/loss"].item() == pytest.approx(z_mse.item())


def test_dict_terms_duplicate_names_and_grad():
    y1 = torch.randn(5, 3, requires_grad=True)
    loss = CombinerLoss(
        [
            {"weight": 1.0, "loss": InfoNCELoss(), "on": "encoder"},
            {"weight": 1.0, "loss": InfoNCELoss(temperature=0.5), "on": "encoder"},
        ]
    )
    out = loss(y1, torch.randn(5, 3))
    assert "Y/infonce/loss" in out and "Y/infonce_1/loss" in out
    out["loss"].backward()
    assert y1.grad is not None


def test_errors():
    with pytest.raises(ValueError):
        CombinerLoss([])
    with pytest.raises(ValueError):
        CombinerLoss([(1.0, MSE(), "middle")])
    with pytest.raises(ValueError):
        CombinerLoss([(1.0, MSE(), "projector")])(torch.randn(3, 2), torch.randn(3, 2))
