"""SimCLR with additive margins, NT-Xent-AM (Lepage & Dehak, arXiv 2404.14913).

Same two-crop SimCLR as :class:`~sslsv_sb.brains.simclr.SimCLRBrain` (Chen et al.,
arXiv 2002.05709), with the large-margin penalties of face recognition (CosFace,
ArcFace, SphereFace, CurricularFace, MagFace, AdaFace) on the positive logit:
``sslsv_sb.losses.margins.MarginNTXentLoss``, scale ``s = 1 / 0.03``.

:class:`MarginScheduleMixin` (the per-epoch cosine margin ramp) is shared with
``MoCoMarginsBrain`` and ``SimCLRMultiViewsBrain``.
"""

import speechbrain as sb
import torch

from sslsv_sb.brains.base import unwrap
from sslsv_sb.brains.simclr import SimCLRBrain


def record_loss_metrics(brain, loss_module):
    """Record a loss' ``last_metrics`` except ``loss`` (the stage loss is logged).

    Arguments
    ---------
    brain : SSLBrain
        The Brain whose epoch metrics accumulate the values.
    loss_module : torch.nn.Module
        A loss exposing ``last_metrics`` (possibly DDP-wrapped).
    """
    metrics = getattr(unwrap(loss_module), "last_metrics", {})
    brain.record(**{k: v for k, v in metrics.items() if k != "loss"})


class MarginScheduleMixin:
    """Per-epoch cosine margin ramp (``margin_scheduler`` of arXiv 2404.14913).

    With ``margin_scheduler: True`` in the yaml, at the start of every training epoch
    ``modules.loss.update_margin(epoch - 1, number_of_epochs)`` sets the margin factor
    to ``(1 - cos(pi e / (E // 2))) / 2`` for ``e < E // 2``, then 1
    (``sslsv_sb.losses.margins.cosine_margin_schedule``; SpeechBrain's epoch counter
    starts at 1, the schedule at 0). The factor applies to every margin type. With
    ``margin_scheduler: False`` (sslsv's default) the full margin is used from the
    first step. Resuming recomputes the factor from the recovered epoch counter.
    """

    def margin_epochs(self):
        """Total number of epochs ``E`` of the schedule (the epoch counter's limit)."""
        return int(self.hparams.epoch_counter.limit)

    def on_stage_start(self, stage, epoch=None):
        """Update the margin factor for this epoch (TRAIN), then the base hook."""
        super().on_stage_start(stage, epoch)
        if (
            stage == sb.Stage.TRAIN
            and epoch is not None
            and getattr(self.hparams, "margin_scheduler", False)
        ):
            factor = unwrap(self.modules.loss).update_margin(
                int(epoch) - 1, self.margin_epochs()
            )
            self.record(margin_factor=factor)


class SimCLRMarginsBrain(MarginScheduleMixin, SimCLRBrain):
    """SimCLR with a margin on the positive logit (NT-Xent-AM, arXiv 2404.14913).

    ``modules``: the encoder modules, optional ``projector`` and ``loss``
    (:class:`~sslsv_sb.losses.margins.MarginNTXentLoss`, symmetric: each of the ``2N``
    views is an anchor against the other ``2N W - 1`` views of the global batch).
    hparams: ``margin_scheduler`` (see :class:`MarginScheduleMixin`).

    Example
    -------
    See ``hparams/simclr_margins_ecapa.yaml`` and
    ``tests/brains/test_contrastive_brains.py``.
    """

    method_name = "simclr_margins"

    def compute_objectives(self, predictions, batch, stage):
        """Margin NT-Xent of the two views.

        Arguments
        ---------
        predictions : tuple of torch.Tensor
            ``(z1, z2)``, each ``(B, D')`` un-normalised (MagFace / AdaFace use the
            norms).
        batch : PaddedBatch
            Unused.
        stage : sb.Stage
            Metrics are recorded in TRAIN.

        Returns
        -------
        torch.Tensor
            Scalar loss.
        """
        z1, z2 = predictions
        z2p = self.ssps_replace(batch, z2, stage)  # SSPS pseudo-positives (optional)
        loss = self.modules.loss(torch.stack([z1, z2p], dim=1))  # (B, 2, D')
        self.ssps_update(z2)
        if stage == sb.Stage.TRAIN:
            record_loss_metrics(self, self.modules.loss)
        return loss
