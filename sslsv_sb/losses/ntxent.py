"""NT-Xent, the normalised temperature-scaled cross-entropy of SimCLR.

Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations",
arXiv 2002.05709, eq. (1): for 2N views of N samples, each view's positive is the other
view of its sample and its negatives are the remaining 2N - 2 views (2 * N * world - 2
under DDP, where the candidates are gathered from every rank).
"""

import torch
import torch.nn.functional as F
from speechbrain.utils.autocast import fwd_default_precision
from torch import nn

from sslsv_sb.distributed import gather, rank


class NTXentLoss(nn.Module):
    """Symmetric NT-Xent over two views (SimCLR, arXiv 2002.05709).

    Arguments
    ---------
    temperature : float
        Softmax temperature tau (sslsv's speaker headline: 0.03; SimCLR paper: 0.5).
    gather_distributed : bool
        Use the views of every rank as candidates (negatives) under DDP.

    Example
    -------
    >>> loss = NTXentLoss(temperature=0.1)
    >>> z1, z2 = torch.randn(4, 8), torch.randn(4, 8)
    >>> loss(z1, z2).shape
    torch.Size([])

    Under bf16/fp16 autocast the loss still runs in fp32 (exp of logits / 0.03).
    """

    def __init__(self, temperature=0.03, gather_distributed=True):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature
        self.gather_distributed = gather_distributed
        self.last_metrics = {}

    @fwd_default_precision(cast_inputs=torch.float32)
    def forward(self, z1, z2):
        """Loss of two batches of views.

        Arguments
        ---------
        z1, z2 : torch.Tensor
            ``(N, D)`` embeddings of the first and second view of the same N samples
            (not necessarily normalised).

        Returns
        -------
        torch.Tensor
            Scalar: mean over the 2N local anchors of the cross-entropy of the positive.
        """
        if z1.shape != z2.shape or z1.dim() != 2:
            raise ValueError(
                f"NT-Xent expects two (N, D) tensors of equal shape, got "
                f"{tuple(z1.shape)} and {tuple(z2.shape)}"
            )
        n = z1.shape[0]
        if n < 2 and not self.gather_distributed:
            raise ValueError("NT-Xent needs a batch of at least 2 samples")
        z = F.normalize(torch.cat([z1, z2]).float(), dim=1)  # (2N, D) local anchors
        if self.gather_distributed:
            # Candidates from every rank, laid out [rank0: v1, v2 | rank1: v1, v2 ...].
            cand = gather(z)  # (2N * W, D)
        else:
            cand = z
        if cand.shape[0] < 4:
            raise ValueError("NT-Xent needs a (global) batch of at least 2 samples")
        offset = 2 * n * (rank() if self.gather_distributed else 0)
        logits = z @ cand.T / self.temperature  # (2N, 2N * W)
        rows = torch.arange(2 * n, device=z.device)
        self_cols = rows + offset
        pos_cols = (rows + n) % (2 * n) + offset
        # Exclude each anchor's own entry from the softmax denominator.
        logits = logits.masked_fill(
            F.one_hot(self_cols, cand.shape[0]).bool(), float("-inf")
        )
        loss = F.cross_entropy(logits, pos_cols)
        # Accuracy: per anchor row, the arg-max over its candidate columns (the
        # softmax axis of the loss, as in infonce.info_nce). Single process, the
        # masked matrix is symmetric (z @ z.T) and "positive of" is an involution
        # (i <-> i + N), so the column-wise arg-max gives the same number; under DDP
        # the matrix is (2N, 2N * W) and only the row-wise one is defined.
        with torch.no_grad():
            acc = (logits.argmax(dim=1) == pos_cols).float().mean()
        self.last_metrics = {"accuracy": acc}  # 0-d tensor: no host sync per step
        return loss
