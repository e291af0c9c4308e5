"""SimCLR with additive margins, NT-Xent-AM (Lepage & Dehak, arXiv 2404.14913).

The two-crop SimCLR of :class:`~sslsv_sb.brains.simclr.SimCLRBrain` (Chen et al.,
arXiv 2002.05709), with the large-margin penalties of face recognition (CosFace,
ArcFace, SphereFace, CurricularFace, MagFace, AdaFace) on the positive logit:
``sslsv_sb.losses.margins.MarginNTXentLoss``, scale ``s = 1 / 0.03``.
"""

import torch

from sslsv_sb.brains.margins import MarginScheduleMixin
from sslsv_sb.brains.siamese import SiameseBrain


class SimCLRMarginsBrain(MarginScheduleMixin, SiameseBrain):
    """SimCLR with a margin on the positive logit (NT-Xent-AM, arXiv 2404.14913).

    ``modules``: the encoder modules, optional ``projector``, ``loss``
    (:class:`~sslsv_sb.losses.margins.MarginNTXentLoss`, symmetric: each of the ``2N``
    views is an anchor against the other ``2N W - 1`` views of the global batch) and
    ``ssps`` (optional, :class:`~sslsv_sb.brains.ssps.SSPSMixin`). Both views go
    through the encoder in one pass, as in SimCLR. hparams: ``margin_scheduler``
    (:class:`~sslsv_sb.brains.margins.MarginScheduleMixin`).

    Example
    -------
    See ``hparams/simclr_margins_ecapa.yaml`` and
    ``tests/brains/test_contrastive_brains.py``.
    """

    method_name = "simclr_margins"
    joint_views = True

    def compute_objectives(self, predictions, batch, stage):
        """Margin NT-Xent of the two views.

        Arguments
        ---------
        predictions : tuple of torch.Tensor
            ``(z1, z2)``, each ``(B, D')`` un-normalised (MagFace / AdaFace use the
            norms).
        batch : PaddedBatch
            ``batch.index`` / ``batch.ref_view`` with SSPS.
        stage : sb.Stage
            SSPS samples in TRAIN only.

        Returns
        -------
        torch.Tensor
            Scalar loss.
        """
        z1, z2 = predictions
        z2p = self.ssps_replace(batch, z2, stage)  # SSPS pseudo-positives (optional)
        loss = self.modules.loss(torch.stack([z1, z2p], dim=1))  # (B, 2, D')
        self.ssps_update(z2)
        return loss


__all__ = ["SimCLRMarginsBrain"]
