"""VICReg loss (Bardes et al., "VICReg: Variance-Invariance-Covariance Regularization
for Self-Supervised Learning", arXiv 2105.04906).

Eq. (6): ``L = lambda s(Z, Z') + mu [v(Z) + v(Z')] + nu [c(Z) + c(Z')]`` with
invariance ``s`` = mean squared error, variance
``v(Z) = mean_j relu(gamma - sqrt(Var(z_j) + eps))`` (gamma = 1, eps = 1e-4, unbiased
variance) and covariance ``c(Z) = sum_{i != j} C(Z)_ij^2 / D`` with
``C(Z) = (Z - mean)^T (Z - mean) / (N - 1)``.

Weights: paper lambda = mu = 25, nu = 1; sslsv ``inv 1.0, var 1.0, cov 0.04`` (class
default; its headline speaker config uses cov 0.1). Defaults here follow sslsv.

DDP: the three terms are computed on the all-gathered (with gradient) global batch,
so the value and (after DDP's averaging) the gradients equal one process on the global
batch. (sslsv computes the invariance on the local batch, which gives the same
gradient but a rank-dependent logged value.)
"""

import torch
import torch.nn.functional as F
from speechbrain.utils.autocast import fwd_default_precision
from torch import nn

from sslsv_sb.distributed import gather
from sslsv_sb.losses.byol import check_pair


def variance_term(z, gamma=1.0, eps=1e-4):
    """``mean_j relu(gamma - sqrt(Var(z_j) + eps))`` for ``z (N, D)`` (unbiased Var)."""
    std = torch.sqrt(z.var(dim=0) + eps)  # (D,)
    return F.relu(gamma - std).mean()


def covariance_term(z):
    """``sum_{i != j} C_ij^2 / D`` with ``C = z_c^T z_c / (N - 1)``, ``z (N, D)``."""
    n, d = z.shape
    zc = z - z.mean(dim=0, keepdim=True)
    cov = zc.T @ zc / (n - 1)  # (D, D)
    # Mask the diagonal (sum(C^2) - sum(diag^2) would cancel catastrophically in fp32).
    off = cov.masked_fill(torch.eye(d, dtype=torch.bool, device=z.device), 0.0)
    return off.pow(2).sum() / d


class VICRegLoss(nn.Module):
    """Variance-invariance-covariance loss (arXiv 2105.04906).

    Arguments
    ---------
    inv_weight, var_weight, cov_weight : float
        lambda, mu, nu (sslsv: 1, 1, 0.04; paper: 25, 25, 1).
    gamma : float
        Target standard deviation of the variance hinge (1).
    eps : float
        Added to the variance before the square root (1e-4).
    gather_distributed : bool
        Compute the terms on the global batch under DDP.

    Example
    -------
    >>> loss = VICRegLoss()
    >>> loss(torch.randn(8, 4), torch.randn(8, 4)).shape
    torch.Size([])
    """

    def __init__(
        self,
        inv_weight=1.0,
        var_weight=1.0,
        cov_weight=0.04,
        gamma=1.0,
        eps=1e-4,
        gather_distributed=True,
    ):
        super().__init__()
        self.inv_weight = inv_weight
        self.var_weight = var_weight
        self.cov_weight = cov_weight
        self.gamma = gamma
        self.eps = eps
        self.gather_distributed = gather_distributed
        self.last_metrics = {}

    def covariance(self, z):
        """Covariance regulariser of one view ``z (N, D)`` (overridden by VIbCReg)."""
        return covariance_term(z)

    @fwd_default_precision(cast_inputs=torch.float32)
    def forward(self, z_a, z_b):
        """Loss of two views.

        Arguments
        ---------
        z_a, z_b : torch.Tensor
            ``(N, D)`` expander outputs of the two views.

        Returns
        -------
        torch.Tensor
            Scalar ``inv_w * s + var_w * (v_a + v_b) + cov_w * (c_a + c_b)``; the terms
            are in ``last_metrics`` (``inv``, ``var``, ``cov``).
        """
        check_pair(z_a, z_b, "VICRegLoss")
        z_a, z_b = z_a.float(), z_b.float()
        if self.gather_distributed:
            z_a, z_b = gather(z_a), gather(z_b)  # (N_global, D)
        inv = F.mse_loss(z_a, z_b)
        var = variance_term(z_a, self.gamma, self.eps) + variance_term(
            z_b, self.gamma, self.eps
        )
        cov = self.covariance(z_a) + self.covariance(z_b)
        loss = self.inv_weight * inv + self.var_weight * var + self.cov_weight * cov
        self.last_metrics = {
            "inv": inv.detach(),
            "var": var.detach(),
            "cov": cov.detach(),
        }
        return loss
