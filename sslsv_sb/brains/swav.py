"""SwAV for speaker embeddings (Caron et al., "Unsupervised Learning of Visual
Features by Contrasting Cluster Assignments", arXiv 2006.09882).

Encoder -> projector -> L2 normalisation -> scores against K trainable unit-norm
prototypes (:class:`~sslsv_sb.models.heads.SwAVPrototypes`); Sinkhorn-Knopp codes of
one view are predicted from the other view's scores
(:class:`~sslsv_sb.losses.swav.SwAVLoss`, with a feature queue from
``queue_start_epoch``). The prototypes' gradients are dropped during the first
``freeze_prototypes_epochs`` epoch(s) (paper: "freeze the prototypes during the first
epoch"; sslsv: 1).

sslsv's ECAPA headline ``swav_enc-ECAPATDNN-1024_proj-2048-BN-R-2048-BN-R-512_K-6000_
t-0.1``: projector 2048-2048-512, K = 6000, tau 0.1, Sinkhorn eps 0.05 x 3, queue
3840 from epoch 15; 8.12 % EER / 0.6148 on VoxCeleb1-O (``hparams/swav_ecapa.yaml``).
"""

import speechbrain as sb
import torch
import torch.nn.functional as F

from sslsv_sb.brains.base import SSLBrain
from sslsv_sb.brains.siamese import embed_views
from sslsv_sb.brains.ssps import SSPSMixin
from sslsv_sb.distributed import unwrap


class SwAVBrain(SSPSMixin, SSLBrain):
    """SwAV (arXiv 2006.09882).

    ``modules`` (yaml): ``compute_features``, ``mean_var_norm``, ``embedding_model``,
    ``projector``, ``prototypes`` (:class:`~sslsv_sb.models.heads.SwAVPrototypes`),
    ``augment`` (optional), ``loss`` (its ``queue`` buffers are a recoverable).

    hparams: ``freeze_prototypes_epochs`` (1).

    SSPS (optional ``ssps`` module, arXiv 2501.17772): the normalised projection of
    the second view is replaced by the pseudo-positive's stored one *before* the
    prototypes score it (as sslsv); :class:`~sslsv_sb.brains.ssps.SSPSMixin`.

    DDP: Sinkhorn all-reduces its sums inside the loss, called once per step on every
    rank. The prototype gradients are dropped after DDP's reduction, on every rank.

    Example
    -------
    See ``hparams/swav_ecapa.yaml``.
    """

    method_name = "swav"

    def compute_forward(self, batch, stage):
        """Normalised projections and prototype scores of every view.

        Returns
        -------
        z : torch.Tensor
            ``(V, B, D)`` L2-normalised projections.
        scores : torch.Tensor
            ``(V, B, K)`` prototype scores (with gradient).
        """
        views = self.get_views(batch)  # (B, V, L)
        _, ys = embed_views(self, views, stage)  # V x (B, D_enc)
        z = torch.stack([F.normalize(self.modules.projector(y), dim=-1) for y in ys])
        if self.ssps is not None:
            self._ssps_own = z[1].detach()
            z = torch.stack([z[0], self.ssps_replace(batch, z[1], stage), *z[2:]])
        v, b, d = z.shape
        scores = self.modules.prototypes(z.reshape(v * b, d)).reshape(v, b, -1)
        return z, scores

    def compute_objectives(self, predictions, batch, stage):
        """Swapped-prediction loss (the queue starts at ``queue_start_epoch``)."""
        z, scores = predictions
        prototypes = unwrap(self.modules.prototypes).normalized_weight()  # (K, D)
        loss = self.modules.loss(z, scores, prototypes, epoch=self.epoch0())
        if self.ssps is not None:
            self.ssps_update(self._ssps_own)
        if stage == sb.Stage.TRAIN:
            self.record(queue_filled=self.modules.loss.queue_filled)
        return loss

    def on_before_optimizer_step(self):
        """Drop the prototypes' gradients in the first epoch(s), before the step."""
        super().on_before_optimizer_step()
        freeze = int(getattr(self.hparams, "freeze_prototypes_epochs", 1))
        if self.epoch0() < freeze:
            unwrap(self.modules.prototypes).cancel_gradients()
