"""Contrastive Predictive Coding loss for speaker embeddings (arXiv 1807.03748).

:class:`CPCLoss` is the mean over the prediction steps (and context positions and
directions) of InfoNCE between ``W_k c_t`` and the true future frame ``z_{t+k}``;
negatives are the same-step targets of the other samples of the (gathered) batch;
raw dot products with temperature 1 by default (sslsv's setting), both configurable.
The predictions come from :class:`~sslsv_sb.models.heads.CPCHead` (aggregator and
future-step predictors; re-exported here, so ``sslsv_sb.losses.cpc.CPCHead`` keeps
working in yamls).
"""

import torch

from sslsv_sb.distributed import gather, rank
from sslsv_sb.losses.infonce import InfoNCELoss, info_nce
from sslsv_sb.models.heads import CPCHead


class CPCLoss(InfoNCELoss):
    """CPC InfoNCE loss (arXiv 1807.03748) over predictions of :class:`CPCHead`.

    For each context position / direction ``s`` and step ``j``, sample ``b``'s
    prediction must pick its own future frame among the same-``(s, j)`` future frames
    of every sample of the gathered batch. The loss is the mean over all ``(s, j, b)``:
    the :class:`~sslsv_sb.losses.infonce.InfoNCELoss` of every ``(s, j)`` problem,
    with CPC's defaults (raw dot products, temperature 1).

    Arguments
    ---------
    temperature : float
        Logit temperature (1 = sslsv / paper log-bilinear score).
    normalize : bool
        Cosine instead of raw dot-product scores.

    Example
    -------
    >>> head, loss = CPCHead(16, hidden=8, n_predict=2), CPCLoss()
    >>> out = loss(*head(torch.randn(4, 16, 10)))
    >>> out["loss"].shape
    torch.Size([])
    """

    def __init__(self, temperature=1.0, normalize=False):
        super().__init__(temperature, normalize)

    def forward(self, predictions, targets):
        """InfoNCE of each prediction against the same-step targets of the batch.

        Arguments
        ---------
        predictions : torch.Tensor
            ``(B, S, k, C)`` from :meth:`CPCHead.forward`.
        targets : torch.Tensor
            ``(B, S, k, C)`` true future frames.

        Returns
        -------
        dict
            ``"loss"`` (scalar) and ``"accuracy"`` (detached top-1 accuracy).
        """
        if predictions.dim() != 4 or predictions.shape != targets.shape:
            raise ValueError(
                "CPCLoss expects predictions and targets of the same shape "
                "(B, S, k, C), "
                f"got {tuple(predictions.shape)} and {tuple(targets.shape)}"
            )
        b, s, k, c = predictions.shape
        cands = gather(targets.float())  # (B * W, S, k, C)
        if cands.shape[0] < 2:
            raise ValueError("CPCLoss needs at least 2 samples in the global batch")
        anchors = (
            predictions.float().permute(1, 2, 0, 3).reshape(s * k, b, c)
        )  # (S*k, B, C)
        cands = cands.permute(1, 2, 0, 3).reshape(s * k, -1, c)  # (S*k, B*W, C)
        labels = torch.arange(b, device=predictions.device) + rank() * b  # (B,)
        loss, acc = info_nce(anchors, cands, labels, self.temperature, self.normalize)
        return {"loss": loss, "accuracy": acc}


__all__ = ["CPCHead", "CPCLoss"]
