"""VIbCReg loss (Lee & Aune, "VIbCReg: Variance-Invariance-better-Covariance
Regularization for Self-Supervised Learning on Time Series", arXiv 2109.00783).

Same invariance and variance terms as VICReg (arXiv 2105.04906); the covariance term
uses the normalised covariance (correlation) matrix: each dimension is centred and
L2-normalised along the batch, ``C = Z_n^T Z_n`` (entries in [-1, 1]), the diagonal
is zeroed and ``c(Z) = mean(C^2)`` over all ``D x D`` entries. Paper weights
lambda = mu = 25, nu = 200; sslsv uses 1, 1, 8 (the same ratios), the defaults here.
The projector ends with ``IterNorm`` (``sslsv_sb.models.heads.VIbCRegProjectionHead``).
"""

import torch
import torch.nn.functional as F

from sslsv_sb.losses.vicreg import VICRegLoss


def normalized_covariance_term(z, eps=1e-12):
    """``mean(offdiag(C)^2)`` of the correlation matrix of ``z (N, D)``."""
    zc = z - z.mean(dim=0, keepdim=True)  # (N, D)
    zn = F.normalize(zc, dim=0, eps=eps)  # unit L2 norm along the batch
    corr = zn.T @ zn  # (D, D)
    d = corr.shape[0]
    off = corr * (1 - torch.eye(d, device=z.device, dtype=z.dtype))
    return off.pow(2).mean()


class VIbCRegLoss(VICRegLoss):
    """VICReg with the correlation-based covariance term (arXiv 2109.00783).

    Arguments
    ---------
    cov_weight : float
        Weight of the covariance term, 8 (sslsv; paper: 200).
    **kwargs
        ``inv_weight``, ``var_weight`` (sslsv: 1, 1; paper: 25, 25), ``gamma``,
        ``eps`` and ``gather_distributed`` as in ``VICRegLoss`` (same defaults).

    Example
    -------
    >>> loss = VIbCRegLoss()
    >>> loss(torch.randn(8, 4), torch.randn(8, 4)).shape
    torch.Size([])
    """

    def __init__(self, *, cov_weight=8.0, **kwargs):
        super().__init__(cov_weight=cov_weight, **kwargs)

    def covariance(self, z):
        """Correlation-based covariance regulariser of ``z (N, D)``."""
        return normalized_covariance_term(z)
