"""One-directional InfoNCE with in-batch negatives (CPC, arXiv 1807.03748).

Used on its own by Combiner (arXiv 2207.05506) and, with ``temperature=1`` and no
normalisation, by :class:`sslsv_sb.losses.cpc.CPCLoss`.
"""

import torch
import torch.nn.functional as F
from torch import nn

from sslsv_sb.distributed import gather, rank


def info_nce(anchors, candidates, targets, temperature=1.0, normalize=False):
    """Cross-entropy of ``anchors`` against ``candidates`` with given positive columns.

    Arguments
    ---------
    anchors : torch.Tensor
        ``(..., N, D)``.
    candidates : torch.Tensor
        ``(..., M, D)`` (same leading dims as ``anchors``).
    targets : torch.Tensor
        ``(N,)`` long, column of the positive of each anchor in ``candidates``.
    temperature : float
        Logits are divided by it.
    normalize : bool
        L2-normalise both sides first (cosine logits).

    Returns
    -------
    tuple of torch.Tensor
        ``loss`` (scalar, mean over every anchor and leading dim) and ``accuracy``
        (detached scalar: fraction of anchors whose top-1 candidate is the positive).

    Notes
    -----
    Accuracy axis. ``logits[i, j]`` scores anchor ``i`` (row) against candidate ``j``
    (column), and the cross-entropy is a softmax along each row: anchor ``i`` must
    retrieve its positive ``targets[i]`` among the ``M`` candidates (Oord et al.,
    arXiv 1807.03748, eq. 4: the context's prediction against one positive and
    ``M - 1`` negative samples). The accuracy therefore takes, for every row, the
    arg-max over its columns: it is the top-1 accuracy of exactly the classifier the
    loss trains. The other axis (for every column, the arg-max over the rows) asks
    the reverse question, which anchor a candidate retrieves; this one-directional
    loss does not optimise it, and it is not even defined in general: under DDP the
    rows are the ``N`` local anchors but the columns the ``N * W`` gathered
    candidates (a column from another rank has no positive among the rows), and
    without normalisation (CPC) it compares anchors of different norms against one
    candidate, a comparison no softmax of the loss makes. The matrix is not
    symmetric in meaning: in CPC the rows are predictions and the columns the true
    future frames; for two views (Combiner) the roles are exchangeable in
    distribution, so both accuracies have the same expectation, but only the row
    one matches the loss (they differ on individual batches, e.g. when one
    candidate is the nearest of two anchors). sslsv's ``determine_accuracy(Z_a,
    Z_b)`` also arg-maxes each row of ``Z_a @ Z_b.T``; Combiner calls it in the
    loss's order, so it agrees with this one (on the local batch and always with
    cosine scores), while its disabled CPC call passes (targets, predictions),
    which transposes the matrix and would measure the column accuracy.
    """
    anchors, candidates = anchors.float(), candidates.float()
    if normalize:
        anchors = F.normalize(anchors, dim=-1)
        candidates = F.normalize(candidates, dim=-1)
    logits = anchors @ candidates.transpose(-1, -2) / temperature  # (..., N, M)
    flat = logits.reshape(-1, logits.shape[-1])  # (L*N, M)
    tgt = targets.expand(logits.shape[:-1]).reshape(-1)  # (L*N,)
    loss = F.cross_entropy(flat, tgt)
    # per row (anchor), arg-max over the columns (candidates): the softmax axis
    accuracy = (flat.detach().argmax(dim=-1) == tgt).float().mean()
    return loss, accuracy


class InfoNCELoss(nn.Module):
    """InfoNCE (arXiv 1807.03748): anchor ``i`` must pick positive ``i`` among the
    positives of the whole (gathered) batch.

    One-directional (anchors -> positives). Negatives of anchor ``i`` are the
    positives of every other sample of the global batch (``gather`` with gradient
    under DDP); the loss is the mean over the local anchors, which after DDP's
    gradient averaging equals the gradient of the global mean.

    Arguments
    ---------
    temperature : float
        Softmax temperature (0.2 is the Combiner / sslsv default).
    normalize : bool
        Cosine (True) or raw dot-product (False) logits.

    Example
    -------
    >>> loss = InfoNCELoss()
    >>> out = loss(torch.randn(8, 16), torch.randn(8, 16))
    >>> sorted(out)
    ['accuracy', 'loss']
    """

    def __init__(self, temperature=0.2, normalize=True):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"InfoNCELoss: temperature must be > 0, got {temperature}")
        self.temperature = temperature
        self.normalize = normalize

    def forward(self, anchors, positives):
        """Compute the loss.

        Arguments
        ---------
        anchors : torch.Tensor
            ``(N, D)``.
        positives : torch.Tensor
            ``(N, D)``; row ``i`` is the positive of anchor ``i``.

        Returns
        -------
        dict
            ``"loss"`` (scalar) and ``"accuracy"`` (detached top-1 accuracy).
        """
        if anchors.dim() != 2 or anchors.shape != positives.shape:
            raise ValueError(
                "InfoNCELoss expects anchors and positives of the same shape (N, D), "
                "got "
                f"{tuple(anchors.shape)} and {tuple(positives.shape)}"
            )
        n = anchors.shape[0]
        candidates = gather(positives.float())  # (N * W, D)
        if candidates.shape[0] < 2:
            raise ValueError("InfoNCELoss needs at least 2 samples in the global batch")
        targets = torch.arange(n, device=anchors.device) + rank() * n  # (N,)
        loss, acc = info_nce(
            anchors, candidates, targets, self.temperature, self.normalize
        )
        return {"loss": loss, "accuracy": acc}
