"""Margin schedules for the Brains with additive-margin losses (arXiv 2404.14913).

:class:`MarginScheduleMixin` ramps the margin of ``modules.loss`` per epoch; it is
shared by ``SimCLRMarginsBrain``, ``MoCoMarginsBrain`` and ``SimCLRMultiViewsBrain``.
"""

import speechbrain as sb

from sslsv_sb.distributed import unwrap


class MarginScheduleMixin:
    """Per-epoch cosine margin ramp (``margin_scheduler`` of arXiv 2404.14913).

    With ``margin_scheduler: True`` in the yaml, at the start of every training epoch
    ``modules.loss.update_margin(epoch - 1, number_of_epochs)`` sets the margin factor
    to ``(1 - cos(pi e / (E // 2))) / 2`` for ``e < E // 2``, then 1
    (``sslsv_sb.losses.margins.cosine_margin_schedule``; SpeechBrain's epoch counter
    starts at 1, the schedule at 0). The factor applies to every margin type and is
    recorded as ``margin_factor``. With ``margin_scheduler: False`` (sslsv's default)
    the full margin is used from the first step. Resuming recomputes the factor from
    the recovered epoch counter.

    Mixed into an :class:`~sslsv_sb.brains.base.SSLBrain` subclass (listed before
    it) whose ``modules.loss`` has ``update_margin(epoch, total_epochs) -> factor``.
    """

    def margin_epochs(self):
        """Total number of epochs ``E`` of the schedule (the epoch counter's limit)."""
        return int(self.hparams.epoch_counter.limit)

    def on_stage_start(self, stage, epoch=None):
        """Base hook, then the margin factor of this epoch (TRAIN)."""
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


__all__ = ["MarginScheduleMixin"]
