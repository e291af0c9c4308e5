"""SSPS module: queues, per-epoch clustering, per-step sampling.

Papers: arXiv 2501.17772, 2505.14561.

Call protocol for a Brain (every rank calls every method, in the same order)::

    # on_stage_start(TRAIN, epoch)   (epoch counted from 0 like sslsv's start_epoch)
    metrics = ssps.prepare_epoch(epoch)        # k-means on Q^ when epoch >= start_epoch

    # compute_objectives, per step
    ref = normalize(encoder_eval_no_grad(clean_crop))          # (B, D_ref)
    targets = ssps.sample(indices, ref)          # (B,), all -1 when inactive
    positives_pp = ssps.apply(positives, targets)                # (B, P, D) or (B, D)
    loss = loss_fn(anchors, positives_pp)
    ssps.update(indices, ref, positives)   # after the loss; stores the *own* positives

``update`` writes only when ``epoch >= start_epoch - 1`` (the queues are filled during
the epoch before SSPS starts). ``ssps.metrics`` holds the last step's coverage /
pool size / speaker accuracy.
"""

import torch
from torch import nn

from sslsv_sb.ssps.queues import PositiveQueue, ReferenceQueue
from sslsv_sb.ssps.sampler import SSPSSampler


class SSPS(nn.Module):
    """Self-Supervised Positive Sampling (arXiv 2501.17772, 2505.14561).

    Arguments
    ---------
    dataset_size : int
        Number of training utterances (dataset indices ``0..R-1``).
    ref_dim : int
        Reference (encoder) embedding dimension.
    pos_dim : int
        Dimension of the positive-branch embeddings being replaced.
    n_positives : int
        Positive embeddings per sample (1 SimCLR/SwAV/VICReg, 2 MoCo keys / DINO
        teacher globals).
    start_epoch : int
        First epoch (0-based) where positives are replaced; queues fill from
        ``start_epoch - 1``.
    pos_queue_size : int
        Capacity of the positive queue.
    kmeans_clusters : int
        K of the per-epoch k-means.
    **sampler_options
        Options of :class:`sslsv_sb.ssps.sampler.SSPSSampler` with their defaults
        there: ``sampling`` (``"kmeans-repr"``, ``"kmeans-centroid"`` or
        ``"knn"``), ``kmeans_iters``, ``inter_sampling_size``,
        ``inter_sampling_prob_fn``, ``inter_sampling_exp_lambda``,
        ``intra_sampling_size``, ``intra_sampling_prob_fn``,
        ``intra_sampling_exp_lambda``, ``same_space`` (positives are the normalised
        encoder outputs, allows ``kmeans-centroid``) and ``seed`` (k-means seed).

    Example
    -------
    >>> ssps = SSPS(20, 4, 3, sampling="knn", start_epoch=1, pos_queue_size=8)
    >>> _ = ssps.prepare_epoch(0)
    >>> ssps.update(torch.arange(8), torch.randn(8, 4), torch.randn(8, 3))
    >>> _ = ssps.prepare_epoch(1)
    >>> t = ssps.sample(torch.arange(8, 12), torch.randn(4, 4))
    >>> ssps.apply(torch.randn(4, 3), t).shape
    torch.Size([4, 3])
    """

    def __init__(
        self,
        dataset_size,
        ref_dim,
        pos_dim,
        n_positives=1,
        start_epoch=100,
        pos_queue_size=50000,
        kmeans_clusters=50000,
        **sampler_options,
    ):
        super().__init__()
        self.start_epoch = start_epoch
        self.ref_queue = ReferenceQueue(dataset_size, ref_dim)
        self.pos_queue = PositiveQueue(pos_queue_size, pos_dim, n_positives)
        self.sampler = SSPSSampler(
            self.ref_queue,
            self.pos_queue,
            n_clusters=kmeans_clusters,
            **sampler_options,
        )
        self.register_buffer("epoch", torch.full((), -1, dtype=torch.long))
        # monitoring only, never checkpointed, never read from a hard-coded file
        self.register_buffer("labels", None, persistent=False)
        self.metrics = {}

    def set_labels(self, labels):
        """Per-dataset-index speaker ids ``(R,)`` (long) for monitoring, or None."""
        if labels is not None:
            labels = torch.as_tensor(labels, dtype=torch.long, device=self.epoch.device)
            if labels.shape != (self.ref_queue.size,):
                raise ValueError(
                    f"SSPS.set_labels: expected ({self.ref_queue.size},), "
                    f"got {tuple(labels.shape)}"
                )
        self.labels = labels

    @property
    def filling(self):
        """Queues are written (epoch >= start_epoch - 1)."""
        return int(self.epoch) >= self.start_epoch - 1

    @property
    def active(self):
        """Positives are replaced (epoch >= start_epoch and clustering done)."""
        return int(self.epoch) >= self.start_epoch and bool(self.sampler.fitted)

    def prepare_epoch(self, epoch, force=False):
        """Set the epoch; cluster the reference queue when SSPS is on.

        Arguments
        ---------
        epoch : int
            Current epoch (0-based).
        force : bool
            Re-cluster even if this epoch was already prepared. By default a
            second call for the same epoch (e.g. after resuming mid-epoch from a
            checkpoint, which restores ``epoch`` and the clustering buffers) keeps
            the restored clustering.

        Returns
        -------
        dict
            k-means metrics (``ssps_kmeans_nmi_speaker`` with labels).
        """
        if not force and int(self.epoch) == int(epoch) and self.active:
            return {}
        self.epoch.fill_(int(epoch))
        if int(epoch) < self.start_epoch:
            return {}
        return self.sampler.fit(epoch, labels=self.labels)

    @torch.no_grad()
    def sample(self, indices, ref, generator=None):
        """``(B,)`` targets for :meth:`apply` (all ``-1`` while inactive)."""
        if not self.active:
            self.metrics = {}
            return torch.full(
                (indices.shape[0],), -1, dtype=torch.long, device=indices.device
            )
        targets = self.sampler.sample(
            indices, ref, labels=self.labels, generator=generator
        )
        self.metrics = self.sampler.metrics
        return targets

    def apply(self, positives, targets):
        """Replace positives by pseudo-positives (see ``SSPSSampler.apply``)."""
        if not bool((targets >= 0).any()):
            return positives
        return self.sampler.apply(positives, targets)

    @torch.no_grad()
    def update(self, indices, ref, positives):
        """Write the (gathered) batch into both queues (no-op before start_epoch - 1).

        Arguments
        ---------
        indices : torch.Tensor
            ``(B,)`` local dataset indices.
        ref : torch.Tensor
            ``(B, D_ref)`` reference embeddings.
        positives : torch.Tensor
            ``(B, P, D)`` or ``(B, D)`` the sample's own positive embeddings.
        """
        if not self.filling:
            return
        self.ref_queue.write(indices, ref)
        self.pos_queue.write(indices, positives)

    def forward(self, indices, ref, positives, generator=None):
        """``sample`` + ``apply``; returns ``(positives_pp, metrics)``."""
        targets = self.sample(indices, ref, generator=generator)
        return self.apply(positives, targets), dict(self.metrics)
