"""Two-branch ("siamese") Brains and the per-view embedding they share.

:class:`SiameseBrain` is "two views -> encoder -> ``projector`` -> ``loss(z1, z2)``",
the Brain of SimCLR (arXiv 2002.05709), Barlow Twins (arXiv 2103.03230), VICReg
(arXiv 2105.04906), VIbCReg (arXiv 2109.00783), W-MSE (arXiv 2007.06346), LIM
(arXiv 1812.00271) and the Combiner (arXiv 2207.05506). :func:`embed_views` embeds
each view in its own encoder pass; BYOL, SimSiam, SwAV and DeepCluster use it too.
"""

import speechbrain as sb

from sslsv_sb.brains.base import SSLBrain
from sslsv_sb.brains.ssps import SSPSMixin
from sslsv_sb.training import effective_rank


def embed_views(brain, views, stage, modules=None, augmented=None):
    """Augment views once, then embed **each view in its own encoder pass**.

    One forward pass per view (as sslsv and the papers' code: BatchNorm statistics
    are those of one view of the batch, not of the two views mixed).

    Arguments
    ---------
    brain : SSLBrain
        The Brain (augmentation, features, encoder).
    views : torch.Tensor
        ``(B, V, L)`` raw views.
    stage : sb.Stage
        Augmentation only in TRAIN.
    modules : tuple or None
        ``(compute_features, mean_var_norm, embedding_model)`` (default: student).
    augmented : torch.Tensor or None
        ``(V * B, L)`` already augmented view-major waveforms (to feed the same
        augmented crops to a student and a teacher).

    Returns
    -------
    augmented : torch.Tensor
        ``(V * B, L)`` augmented view-major waveforms.
    embeddings : list of torch.Tensor
        V tensors ``(B, D)``.
    """
    b = views.shape[0]
    if augmented is None:
        augmented = brain.augment(brain.view_major(views), stage)  # (V*B, L)
    chunks = augmented.split(b)  # V x (B, L)
    return augmented, [brain.embed(x, modules=modules) for x in chunks]


def record_embedding_rank(brain, y, stage):
    """Record ``emb_erank``, the effective rank of ``(B, D)`` encoder embeddings.

    A dimensional-collapse monitor (:func:`~sslsv_sb.training.effective_rank`),
    recorded in TRAIN only and skipped for frame-level ``(B, D, T)`` outputs.
    """
    if stage == sb.Stage.TRAIN and y.dim() == 2:
        brain.record(emb_erank=effective_rank(y))


class SiameseBrain(SSPSMixin, SSLBrain):
    """Two views -> encoder -> ``projector`` -> ``loss(z1, z2)``.

    ``modules`` (yaml): ``compute_features``, ``mean_var_norm``, ``embedding_model``,
    ``projector`` (optional: without it the loss sees the encoder embeddings),
    ``augment`` (optional), ``loss`` (called as ``loss(z1, z2)``; its
    ``last_metrics`` are recorded every step by the base Brain) and ``ssps``
    (optional SSPS, replacing ``z2``; :class:`~sslsv_sb.brains.ssps.SSPSMixin`).

    ``joint_views`` (class attribute): False (default) embeds each view in its own
    encoder pass (:func:`embed_views`) and records ``emb_erank`` of the first view
    (:func:`record_embedding_rank`); True embeds and projects both views in one pass
    of ``2B`` rows (BatchNorm statistics over both views, as sslsv's SimCLR).

    DDP: the losses all-gather both views themselves (global-batch statistics); this
    Brain calls the loss once per step on every rank, so the collectives match.
    """

    method_name = "siamese"
    joint_views = False

    def project(self, y):
        """Projector (identity without ``projector``): ``(N, D) -> (N, D')``."""
        return self.modules.projector(y) if "projector" in self.modules else y

    def compute_forward(self, batch, stage):
        """``(z1, z2)``: the ``(B, D')`` projections of the two views of
        ``batch.views (B, 2, L)`` (augmented in TRAIN)."""
        views = self.get_views(batch, n_views=2)  # (B, 2, L)
        if self.joint_views:
            y = self.embed(self.augment(self.view_major(views), stage))  # (2B, D)
            return self.project(y).chunk(2)
        _, (y1, y2) = embed_views(self, views, stage)  # (B, D) each
        record_embedding_rank(self, y1, stage)
        return self.project(y1), self.project(y2)

    def compute_objectives(self, predictions, batch, stage):
        """``loss(z1, z2)``, with ``z2`` replaced by SSPS pseudo-positives when an
        ``ssps`` module is set (arXiv 2501.17772)."""
        z1, z2 = predictions
        loss = self.modules.loss(z1, self.ssps_replace(batch, z2, stage))
        self.ssps_update(z2)
        return loss


__all__ = ["SiameseBrain", "embed_views", "record_embedding_rank"]
