"""Barlow Twins for speaker embeddings (Zbontar et al., arXiv 2103.03230).

Also home of :class:`SiameseBrain`, the two-view "encoder -> projector -> loss(z1, z2)"
Brain shared by Barlow Twins, VICReg (arXiv 2105.04906), VIbCReg (arXiv 2109.00783)
and W-MSE (arXiv 2007.06346), and of the small helpers the other non-contrastive
Brains use (:func:`embed_views`, :func:`epoch0`).

sslsv's speaker headline ``barlowtwins_proj-2048-BN-R-2048-BN-R-512_lambda-0.005``:
projector 2048-2048-512, lambda 5e-3, loss scale 0.025
(``hparams/barlow_twins_ecapa.yaml``).
"""

import speechbrain as sb

from sslsv_sb.brains.base import SSLBrain
from sslsv_sb.brains.ssps import SSPSMixin
from sslsv_sb.training import effective_rank


def epoch0(brain):
    """0-based index of the running epoch (SpeechBrain's ``EpochCounter`` is 1-based).

    Every schedule of ``sslsv_sb.schedules`` / the losses takes 0-based epochs; this is
    ``epoch_counter.current - 1`` (0 before the first epoch).
    """
    return max(0, int(brain.hparams.epoch_counter.current) - 1)


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
    b, v, _ = views.shape
    if augmented is None:
        augmented = brain.augment(brain.view_major(views), stage)  # (V*B, L)
    chunks = augmented.split(b)  # V x (B, L)
    return augmented, [brain.embed(x, modules=modules) for x in chunks]


class SiameseBrain(SSPSMixin, SSLBrain):
    """Two views -> encoder -> ``projector`` -> ``loss(z1, z2)``.

    ``modules`` (yaml): ``compute_features``, ``mean_var_norm``, ``embedding_model``,
    ``projector`` (optional: without it the loss sees the encoder embeddings),
    ``augment`` (optional), ``loss`` (called as ``loss(z1, z2)``, with a
    ``last_metrics`` dict that is recorded every step) and ``ssps`` (optional SSPS,
    replacing ``z2``; :class:`~sslsv_sb.brains.ssps.SSPSMixin`).

    DDP: the losses all-gather both views themselves (global-batch statistics); this
    Brain calls the loss once per step on every rank, so the collectives match.
    """

    method_name = "siamese"

    def project(self, y):
        """Projector (identity without ``projector``): ``(B, D) -> (B, D')``."""
        return self.modules.projector(y) if "projector" in self.modules else y

    def compute_forward(self, batch, stage):
        """Projections of both views; returns ``(z1, z2)``, each ``(B, D')``."""
        views = self.get_views(batch)  # (B, 2, L)
        if views.shape[1] != 2:
            raise ValueError(
                f"{type(self).__name__} needs 2 views per sample, got {views.shape[1]}"
            )
        _, (y1, y2) = embed_views(self, views, stage)  # (B, D) each
        if stage == sb.Stage.TRAIN and y1.dim() == 2:
            self.record(emb_erank=effective_rank(y1))  # dimensional-collapse monitor
        return self.project(y1), self.project(y2)

    def compute_objectives(self, predictions, batch, stage):
        """``loss(z1, z2)``; records the loss's ``last_metrics``.

        With an ``ssps`` module, ``z2`` is replaced by SSPS pseudo-positives
        (arXiv 2501.17772; :class:`~sslsv_sb.brains.ssps.SSPSMixin`).
        """
        z1, z2 = predictions
        loss = self.modules.loss(z1, self.ssps_replace(batch, z2, stage))
        self.ssps_update(z2)
        if stage == sb.Stage.TRAIN:
            self.record(**self.modules.loss.last_metrics)
        return loss


class BarlowTwinsBrain(SiameseBrain):
    """Barlow Twins (arXiv 2103.03230): ``projector`` (e.g.
    :class:`~sslsv_sb.models.heads.BarlowTwinsProjectionHead`) and ``loss``
    (:class:`~sslsv_sb.losses.barlow_twins.BarlowTwinsLoss`, cross-correlation of the
    global batch under DDP).

    Example
    -------
    See ``hparams/barlow_twins_ecapa.yaml``.
    """

    method_name = "barlow_twins"


__all__ = ["BarlowTwinsBrain", "SiameseBrain", "embed_views", "epoch0"]
