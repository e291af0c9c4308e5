"""SimCLR for speaker embeddings (Chen et al., arXiv 2002.05709).

Two random crops of the same utterance are positives; every other crop of the
(global) batch is a negative. sslsv's speaker headline uses no projector and
tau = 0.03 (``hparams/simclr_ecapa.yaml``).

With an ``ssps`` module (``hparams/ssps_simclr_ecapa.yaml``), the second view's
embedding ``z2`` is replaced by a pseudo-positive (SSPS, arXiv 2501.17772); see
:class:`~sslsv_sb.brains.ssps.SSPSMixin`.
"""

import speechbrain as sb

from sslsv_sb.brains.base import SSLBrain
from sslsv_sb.brains.ssps import SSPSMixin


class SimCLRBrain(SSPSMixin, SSLBrain):
    """SimCLR: ``modules`` adds ``projector`` (optional), ``loss`` (NT-Xent) and
    ``ssps`` (optional, :class:`~sslsv_sb.brains.ssps.SSPSMixin`)."""

    method_name = "simclr"

    def compute_forward(self, batch, stage):
        """Embed both views; returns ``(z1, z2)``, each ``(B, D')``."""
        views = self.get_views(batch)  # (B, 2, L)
        if views.shape[1] != 2:
            raise ValueError(f"SimCLR needs 2 views per sample, got {views.shape[1]}")
        x = self.augment(self.view_major(views), stage)  # (2B, L)
        y = self.embed(x)  # (2B, D)
        if "projector" in self.modules:
            y = self.modules.projector(y)
        z1, z2 = y.chunk(2)  # (B, D') each
        return z1, z2

    def compute_objectives(self, predictions, batch, stage):
        """NT-Xent of the two views (``z2`` replaced by SSPS when enabled)."""
        z1, z2 = predictions
        loss = self.modules.loss(z1, self.ssps_replace(batch, z2, stage))
        self.ssps_update(z2)
        if stage == sb.Stage.TRAIN:
            self.record(**self.modules.loss.last_metrics)
        return loss
