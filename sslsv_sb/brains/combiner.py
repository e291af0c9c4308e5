"""Combiner: weighted SSL losses on encoder and projector outputs (Lepage & Dehak,
"Label-Efficient Self-Supervised Speaker Verification With Information Maximization
and Contrastive Learning", arXiv 2207.05506).

Two views -> encoder ``Y`` -> projector ``Z``; the loss is a weighted sum of
component losses (InfoNCE, VICReg, Barlow Twins, ...) each applied to ``Y`` or to
``Z`` (:class:`~sslsv_sb.losses.combiner.CombinerLoss`). The terms, weights and
spaces are configured in the yaml (``hparams/combiner_ecapa.yaml``); every term's
loss and metrics are logged per epoch (``Y_loss``, ``Z_loss``,
``Y/infonce/accuracy``, ...).
"""

from sslsv_sb.brains.siamese import SiameseBrain, embed_views


class CombinerBrain(SiameseBrain):
    """Combiner (arXiv 2207.05506).

    ``modules`` (yaml): the encoder modules, ``projector`` (needed when a term is
    on ``projector``), ``augment`` (optional) and ``loss``
    (:class:`~sslsv_sb.losses.combiner.CombinerLoss`, called as
    ``loss(y1, y2, z1, z2)``). Each view goes through the encoder in its own pass
    (:func:`~sslsv_sb.brains.siamese.embed_views`). No SSPS (as sslsv).

    Example
    -------
    See ``hparams/combiner_ecapa.yaml`` and
    ``tests/brains/test_frame_level_brains.py``.
    """

    method_name = "combiner"

    def on_fit_start(self):
        """Refuse SSPS (not defined for the Combiner), then the base start."""
        if "ssps" in self.modules:
            raise ValueError("Combiner does not support SSPS (remove modules: ssps)")
        super().on_fit_start()

    def compute_forward(self, batch, stage):
        """``(y1, y2, z1, z2)``: encoder ``(B, D)`` and projector ``(B, D')``
        outputs of both views (``z`` is None without a projector)."""
        views = self.get_views(batch, n_views=2)  # (B, 2, L)
        _, (y1, y2) = embed_views(self, views, stage)
        if "projector" not in self.modules:
            return y1, y2, None, None
        return y1, y2, self.modules.projector(y1), self.modules.projector(y2)

    def compute_objectives(self, predictions, batch, stage):
        """Weighted sum of the terms; records every term's detached metrics."""
        return self.loss_and_record(self.modules.loss(*predictions), stage)


__all__ = ["CombinerBrain"]
