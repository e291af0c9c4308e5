"""BYOL regression loss (Grill et al., "Bootstrap Your Own Latent", arXiv 2006.07733).

Eq. (2): ``L(p, z') = ||p/||p|| - z'/||z'|| ||^2 = 2 - 2 cos(p, z')`` where ``p`` is the
online prediction and ``z'`` the target projection (stop-gradient); the loss is
symmetrised by swapping the views (eq. 2-3): ``L = L(p_1, z_2) + L(p_2, z_1)``, each
term averaged over the batch (sslsv: the same sum of the two directions).

The EMA-momentum schedule of the target network is ``sslsv_sb.schedules.cosine_tau``
(0.996 -> 1.0); ``cosine_tau`` is re-exported here for convenience.
"""

import torch
import torch.nn.functional as F
from speechbrain.utils.autocast import fwd_default_precision
from torch import nn

from sslsv_sb.schedules import cosine_tau

__all__ = ["BYOLLoss", "cosine_tau", "check_pair"]


def check_pair(a, b, name):
    """Raise ``ValueError`` unless ``a``, ``b`` are equal-shape ``(N, D)``, N >= 2."""
    if a.dim() != 2 or a.shape != b.shape:
        raise ValueError(
            f"{name} expects two (N, D) tensors of equal shape, got "
            f"{tuple(a.shape)} and {tuple(b.shape)}"
        )
    if a.shape[0] < 2:
        raise ValueError(f"{name} needs a batch of at least 2 samples, got 1")


class BYOLLoss(nn.Module):
    """Symmetric BYOL loss ``(2 - 2 cos(p1, sg(z2))) + (2 - 2 cos(p2, sg(z1)))``.

    Range [0, 8]; 0 when each prediction is aligned with the other view's target.

    Example
    -------
    >>> loss = BYOLLoss()
    >>> p1, p2, z1, z2 = torch.randn(4, 4, 8).unbind(0)
    >>> loss(p1, p2, z1, z2).shape
    torch.Size([])
    """

    def __init__(self):
        super().__init__()
        self.last_metrics = {}

    @staticmethod
    def regression(p, z):
        """``2 - 2 cos(p, sg(z))`` averaged over the batch; ``p, z (N, D)``."""
        p = F.normalize(p, dim=1)
        z = F.normalize(z.detach(), dim=1)
        return (2 - 2 * (p * z).sum(dim=1)).mean()

    @fwd_default_precision(cast_inputs=torch.float32)
    def forward(self, p1, p2, z1, z2):
        """BYOL loss of two views.

        Arguments
        ---------
        p1, p2 : torch.Tensor
            ``(N, D)`` online predictions of view 1 and view 2.
        z1, z2 : torch.Tensor
            ``(N, D)`` target (momentum) projections of views 1 and 2 (detached here).

        Returns
        -------
        torch.Tensor
            Scalar ``L(p1, z2) + L(p2, z1)``.
        """
        for a, b in ((p1, p2), (p1, z1), (p1, z2)):
            check_pair(a, b, "BYOLLoss")
        p1, p2, z1, z2 = p1.float(), p2.float(), z1.float(), z2.float()
        loss = self.regression(p1, z2) + self.regression(p2, z1)
        with torch.no_grad():
            self.last_metrics = {"z_std": F.normalize(z1, dim=1).std(dim=0).mean()}
        return loss
