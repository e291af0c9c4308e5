"""Barlow Twins loss (Zbontar et al., "Barlow Twins: Self-Supervised Learning via
Redundancy Reduction", arXiv 2103.03230).

Eq. (1): ``L = sum_i (1 - C_ii)^2 + lambda sum_i sum_{j != i} C_ij^2`` with the
cross-correlation ``C = Z_a^T Z_b / N`` of the two views, each standardised along the
batch (BatchNorm without affine, batch statistics). Paper: lambda = 5e-3 and a loss
scale of 1/32 = 0.03125 in the official code (1/0.024 in the BN-free variant); sslsv:
lambda = 0.005, scale = 0.025.

DDP: the per-dimension mean/std and ``C`` must be those of the **global** batch (one
process on the global batch). sslsv standardises each rank's slice with its own
statistics and only averages ``C`` over ranks, which is not the same loss. Here both
views are all-gathered with gradient (``sslsv_sb.distributed.gather``) and every rank
computes the loss of the global batch: the value is the single-process value, and the
gradient convention of ``gather`` (backward sums over ranks, DDP divides by the world
size) gives each rank exactly the single-process gradient of its samples. Cost: the
``D x D`` matmul on ``W * N`` rows is repeated on every rank (``N_global * D^2`` flops).
"""

import torch
from speechbrain.utils.autocast import fwd_default_precision
from torch import nn

from sslsv_sb.distributed import gather
from sslsv_sb.losses.byol import check_pair


def batch_standardize(z, eps=1e-5):
    """BatchNorm1d (train mode, ``affine=False``): ``(z - mean) / sqrt(var + eps)``.

    ``z (N, D)``; biased variance, like ``nn.BatchNorm1d`` in training mode.
    """
    mean = z.mean(dim=0, keepdim=True)  # (1, D)
    var = z.var(dim=0, unbiased=False, keepdim=True)  # (1, D)
    return (z - mean) / torch.sqrt(var + eps)


class BarlowTwinsLoss(nn.Module):
    """Barlow Twins redundancy-reduction loss (arXiv 2103.03230).

    Arguments
    ---------
    lambd : float
        Weight of the off-diagonal (redundancy) term (paper and sslsv: 5e-3).
    scale : float
        Global loss scale (sslsv: 0.025).
    eps : float
        Variance epsilon of the batch standardisation (BatchNorm's 1e-5).
    gather_distributed : bool
        Compute the loss on the global batch under DDP (see module docstring).

    Example
    -------
    >>> loss = BarlowTwinsLoss()
    >>> loss(torch.randn(8, 4), torch.randn(8, 4)).shape
    torch.Size([])
    """

    def __init__(self, lambd=0.005, scale=0.025, eps=1e-5, gather_distributed=True):
        super().__init__()
        self.lambd = lambd
        self.scale = scale
        self.eps = eps
        self.gather_distributed = gather_distributed
        self.last_metrics = {}

    def cross_correlation(self, z_a, z_b):
        """``(N, D), (N, D) -> (D, D)`` cross-correlation of the standardised views."""
        za = batch_standardize(z_a, self.eps)
        zb = batch_standardize(z_b, self.eps)
        return za.T @ zb / z_a.shape[0]

    @fwd_default_precision(cast_inputs=torch.float32)
    def forward(self, z_a, z_b):
        """Barlow Twins loss of two views.

        Arguments
        ---------
        z_a, z_b : torch.Tensor
            ``(N, D)`` projector outputs of the two views (local batch under DDP).

        Returns
        -------
        torch.Tensor
            Scalar ``scale * [sum_i (1 - C_ii)^2 + lambd * sum_{i != j} C_ij^2]``.
        """
        check_pair(z_a, z_b, "BarlowTwinsLoss")
        z_a, z_b = z_a.float(), z_b.float()
        if self.gather_distributed:
            z_a, z_b = gather(z_a), gather(z_b)  # (N_global, D)
        c = self.cross_correlation(z_a, z_b)  # (D, D)
        diag = torch.diagonal(c)
        on_diag = (1 - diag).pow(2).sum()
        eye = torch.eye(c.shape[0], dtype=torch.bool, device=c.device)
        off_diag = c.masked_fill(eye, 0.0).pow(2).sum()
        loss = self.scale * (on_diag + self.lambd * off_diag)
        with torch.no_grad():
            self.last_metrics = {
                "on_diag": on_diag.detach(),
                "off_diag": off_diag.detach(),
            }
        return loss
