"""SimSiam loss (Chen & He, "Exploring Simple Siamese Representation Learning",
arXiv 2011.10566).

Eq. (1)-(2): ``D(p, z) = -cos(p, sg(z))`` and
``L = D(p1, sg(z2)) / 2 + D(p2, sg(z1)) / 2`` (batch means). Range [-1, 1].
"""

import torch
import torch.nn.functional as F
from speechbrain.utils.autocast import fwd_default_precision
from torch import nn

from sslsv_sb.losses.byol import check_pair


class SimSiamLoss(nn.Module):
    """Symmetric negative cosine ``(-cos(p1, sg(z2)) - cos(p2, sg(z1))) / 2``.

    ``last_metrics["z_std"]``: mean per-dimension std of the normalised ``z1``
    (the paper's collapse monitor, ~``1/sqrt(D)`` without collapse, 0 when collapsed).

    Example
    -------
    >>> loss = SimSiamLoss()
    >>> p1, p2, z1, z2 = torch.randn(4, 4, 8).unbind(0)
    >>> bool(-1 <= loss(p1, p2, z1, z2) <= 1)
    True
    """

    def __init__(self):
        super().__init__()
        self.last_metrics = {}

    @fwd_default_precision(cast_inputs=torch.float32)
    def forward(self, p1, p2, z1, z2):
        """SimSiam loss of two views.

        Arguments
        ---------
        p1, p2 : torch.Tensor
            ``(N, D)`` predictor outputs of view 1 and view 2.
        z1, z2 : torch.Tensor
            ``(N, D)`` projector outputs of view 1 and view 2 (detached here).

        Returns
        -------
        torch.Tensor
            Scalar loss.
        """
        for a, b in ((p1, p2), (p1, z1), (p1, z2)):
            check_pair(a, b, "SimSiamLoss")
        p1, p2, z1, z2 = p1.float(), p2.float(), z1.float(), z2.float()
        d12 = -F.cosine_similarity(p1, z2.detach(), dim=1).mean()
        d21 = -F.cosine_similarity(p2, z1.detach(), dim=1).mean()
        with torch.no_grad():
            self.last_metrics = {"z_std": F.normalize(z1, dim=1).std(dim=0).mean()}
        return (d12 + d21) / 2
