"""W-MSE loss (Ermolov et al., "Whitening for Self-Supervised Representation
Learning", arXiv 2007.06346).

Sec. 3-4: the embeddings of each view are whitened in sub-batches,
``w = W_V (z - mu_V)`` with ``W_V W_V^T = Sigma_V^{-1}`` from the Cholesky factor of
the sub-batch covariance (shrunk towards I: ``(1 - eps) Sigma + eps I``; sslsv
eps = 0), and the loss is the MSE of the L2-normalised whitened positives,
``2 - 2 cos(w_a, w_b)`` averaged over the batch. The batch is split by a random
permutation into sub-batches of ``whitening_size`` and the procedure is repeated
``iters`` times with new permutations (the loss is averaged over iterations).

Remainder (sslsv requires the global batch to be a multiple of ``whitening_size``):
here the permuted batch of ``B`` rows is split with ``torch.tensor_split`` into
``max(1, B // whitening_size)`` contiguous chunks whose sizes differ by at most one,
so every sample is used and every chunk has at least ``whitening_size`` rows (or
``B`` when ``B < whitening_size``). A chunk must have more rows than dimensions
(``n > D``) when ``eps == 0``, otherwise its covariance is singular: ``ValueError``.

DDP: both views are all-gathered with gradient and the permutation is broadcast from
rank 0, so every rank computes the same global loss (equal to one process).
"""

import torch
import torch.distributed as dist
import torch.nn.functional as F
from speechbrain.utils.autocast import fwd_default_precision
from torch import nn

from sslsv_sb.distributed import gather, is_distributed
from sslsv_sb.losses.byol import check_pair


def whiten(x, eps=0.0):
    """Whiten ``x (n, D)``: ``(x - mean) L^-T``, ``L L^T = (1-eps) Sigma + eps I``.

    ``Sigma`` is the unbiased covariance, so the output has identity (unbiased)
    covariance when ``eps = 0``.

    Returns
    -------
    torch.Tensor
        ``(n, D)`` whitened rows.
    """
    n, d = x.shape
    xc = x - x.mean(dim=0, keepdim=True)  # (n, D)
    cov = xc.T @ xc / (n - 1)  # (D, D)
    eye = torch.eye(d, device=x.device, dtype=x.dtype)
    cov = (1 - eps) * cov + eps * eye
    chol = torch.linalg.cholesky(cov)  # (D, D) lower
    # Solve L Y = xc^T  ->  Y = L^{-1} xc^T, whitened rows = Y^T.
    return torch.linalg.solve_triangular(chol, xc.T, upper=False).T  # (n, D)


class WMSELoss(nn.Module):
    """Whitened MSE between two views (arXiv 2007.06346).

    Arguments
    ---------
    whitening_size : int
        Target sub-batch size (paper and sslsv: 128; must exceed D when eps = 0).
    iters : int
        Number of random sub-batch splits per step (sslsv: 1).
    eps : float
        Shrinkage of the covariance towards the identity (sslsv: 0).
    gather_distributed : bool
        Whiten the global batch under DDP.

    Example
    -------
    >>> loss = WMSELoss(whitening_size=16)
    >>> loss(torch.randn(32, 4), torch.randn(32, 4)).shape
    torch.Size([])
    """

    def __init__(self, whitening_size=128, iters=1, eps=0.0, gather_distributed=True):
        super().__init__()
        if whitening_size < 2 or iters < 1 or not 0 <= eps <= 1:
            raise ValueError(
                "WMSELoss needs whitening_size >= 2, iters >= 1 and 0 <= eps <= 1"
            )
        self.whitening_size = whitening_size
        self.iters = iters
        self.eps = eps
        self.gather_distributed = gather_distributed
        self.last_metrics = {}

    def chunks(self, batch_size, device, generator=None):
        """Random split of ``range(batch_size)`` into sub-batches (see module doc)."""
        perm = torch.randperm(batch_size, generator=generator).to(device)
        if self.gather_distributed and is_distributed():
            dist.broadcast(perm, src=0)  # same split on every rank
        n_chunks = max(1, batch_size // self.whitening_size)
        return torch.tensor_split(perm, n_chunks)

    @fwd_default_precision(cast_inputs=torch.float32)
    def forward(self, z_a, z_b, generator=None):
        """W-MSE loss of two views.

        Arguments
        ---------
        z_a, z_b : torch.Tensor
            ``(N, D)`` projector outputs of the two views.
        generator : torch.Generator or None
            CPU generator for the permutations (global RNG if None).

        Returns
        -------
        torch.Tensor
            Scalar ``mean_iters (2 - 2 mean_batch cos(w_a, w_b))``.
        """
        check_pair(z_a, z_b, "WMSELoss")
        z_a, z_b = z_a.float(), z_b.float()
        if self.gather_distributed:
            z_a, z_b = gather(z_a), gather(z_b)  # (B, D)
        b, d = z_a.shape
        smallest = b // max(1, b // self.whitening_size)
        if self.eps == 0 and smallest <= d:
            raise ValueError(
                f"WMSELoss: whitening sub-batches of {smallest} rows cannot whiten "
                f"{d} dimensions with eps=0 (need more rows than dimensions: raise "
                f"whitening_size / the batch size, or set eps > 0)"
            )
        loss = z_a.new_zeros(())
        for _ in range(self.iters):
            w_a = torch.empty_like(z_a)
            w_b = torch.empty_like(z_b)
            for idx in self.chunks(b, z_a.device, generator):
                w_a[idx] = whiten(z_a[idx], self.eps)
                w_b[idx] = whiten(z_b[idx], self.eps)
            cos = F.cosine_similarity(w_a, w_b, dim=1)  # (B,)
            loss = loss + (2 - 2 * cos.mean())
        loss = loss / self.iters
        with torch.no_grad():
            self.last_metrics = {"z_std": F.normalize(z_a, dim=1).std(dim=0).mean()}
        return loss
