"""DeepCluster v2 for speaker embeddings (Caron et al., arXiv 2006.09882, appendix
"DeepCluster-v2"; original DeepCluster: arXiv 1807.05520).

Encoder -> projector -> L2 normalisation; a memory bank holds the projections of every
training utterance (both views). At the start of every epoch one spherical k-means per
clustering head (each with its own K) runs on the bank; the centroids become the
frozen prototypes of that head and every utterance gets one pseudo-label per head.
The loss is the cross-entropy of the prototype scores (temperature 0.1) against the
pseudo-labels of ``batch.index``, on both views, averaged over heads
(:class:`~sslsv_sb.losses.deepcluster.DeepClusterLoss`); the bank is then updated
with the batch's projections.

**No NaN epoch.** sslsv starts with every pseudo-label at -1, so its whole first epoch
has a NaN loss and no gradient (inventory §9 item 6). Here, as in the official
DeepCluster-v2 code (``init_memory``), the bank is filled **before the first step** by
a no-grad pass over the whole training set (every index exactly covered, DDP ranks
sharded with equal batch counts), and clustered at once.

sslsv's speaker headline ``deepcluster_proj-2048-BN-R-2048-BN-R-512_K-3000-3000-3000
_t-0.1``: projector 2048-2048-512, 3 heads of 3000 prototypes, tau 0.1, 10 k-means
iterations (``hparams/deepcluster_ecapa.yaml``).
"""

import math

import speechbrain as sb
import torch
import torch.nn.functional as F
from speechbrain.dataio.batch import PaddedBatch
from torch.utils.data import DataLoader, Subset

from sslsv_sb.brains.base import SSLBrain
from sslsv_sb.brains.siamese import embed_views
from sslsv_sb.distributed import rank, unwrap, world_size
from sslsv_sb.losses.deepcluster import DeepClusterMemory


def shard_indices(n, batch_size, rank_=0, world=1):
    """Dataset indices of one rank for a full pass, equal in length on every rank.

    Strided sharding (``rank, rank + world, ...``) padded by wrapping around, so that
    every index ``0..n-1`` is visited by some rank, every rank has the same number of
    rows (collectives in ``DeepClusterMemory.update`` need equal batches) and no batch
    has a single row (BatchNorm in training mode needs two).

    Arguments
    ---------
    n : int
        Dataset size.
    batch_size : int
        Rows per batch of the pass.
    rank_, world : int
        This rank and the world size.

    Returns
    -------
    list of int

    Example
    -------
    >>> shard_indices(5, 2, 0, 2), shard_indices(5, 2, 1, 2)
    ([0, 2, 4, 1], [1, 3, 0, 2])
    """
    per_rank = math.ceil(n / world)
    if per_rank % batch_size == 1 and per_rank > 1:
        per_rank += 1  # no trailing batch of one row
    return [(rank_ + world * i) % n for i in range(per_rank)]


class DeepClusterBrain(SSLBrain):
    """DeepCluster v2 (arXiv 2006.09882).

    ``modules`` (yaml): ``compute_features``, ``mean_var_norm``, ``embedding_model``,
    ``projector``, ``prototypes``
    (:class:`~sslsv_sb.models.heads.DeepClusterPrototypes`, frozen buffers),
    ``augment`` (optional), ``loss`` (:class:`DeepClusterLoss`). The memory bank
    (:class:`~sslsv_sb.losses.deepcluster.DeepClusterMemory`) is built by the Brain
    at fit start, sized from the training set (``batch.index`` in ``[0, N)``), and
    added to ``modules["memory"]`` and (``checkpoint_memory: True``) to the
    checkpointer as ``memory`` (a resumed run then re-clusters exactly the bank it
    stopped with; without it the bank is refilled by a no-grad pass on resume).

    hparams: ``kmeans_iters`` (10), ``kmeans_init`` (``random`` as DeepCluster v2 /
    sslsv, or ``kmeans++``), ``memory_dtype`` (``float32`` | ``float16``),
    ``checkpoint_memory`` (True), ``seed``.

    DDP: every rank keeps the whole bank (updates are all-gathered, so every rank
    calls them at every step) and runs the same k-means with the same seed, so
    prototypes and pseudo-labels agree without further communication.

    Example
    -------
    See ``hparams/deepcluster_ecapa.yaml`` and
    ``tests/brains/test_noncontrastive_brains.py``.
    """

    method_name = "deepcluster"

    # ------------------------------------------------------------------ memory bank
    def make_dataloader(self, dataset, stage, ckpt_prefix="dataloader-", **kwargs):
        """Keep the training set and loader options for the memory fill pass."""
        loader = super().make_dataloader(dataset, stage, ckpt_prefix, **kwargs)
        if stage == sb.Stage.TRAIN:
            self.train_dataset = dataset
            self.fill_batch_size = loader.batch_size or kwargs.get("batch_size", 1)
            self.fill_num_workers = kwargs.get("num_workers", 0)
        return loader

    def build_memory(self, dataset_size):
        """Create the bank (``(V, N, D)``) on the device and register it."""
        protos = unwrap(self.modules.prototypes)
        n_views = int(self.hparams.view_groups["views"][0])
        dtype = getattr(torch, str(getattr(self.hparams, "memory_dtype", "float32")))
        memory = DeepClusterMemory(
            dataset_size,
            protos.dim,
            n_views=n_views,
            n_heads=len(protos.n_prototypes),
            dtype=dtype,
        ).to(self.device)
        self.modules["memory"] = memory
        if self.checkpointer is not None and getattr(
            self.hparams, "checkpoint_memory", True
        ):
            self.checkpointer.add_recoverable("memory", memory)
        return memory

    def on_fit_start(self):
        """Build the bank (before checkpoint recovery, so it is recovered too)."""
        if "memory" not in self.modules:
            if not hasattr(self, "train_dataset"):
                raise ValueError(
                    "DeepClusterBrain needs the training set (call fit with a dataset)"
                )
            self.build_memory(len(self.train_dataset))
        super().on_fit_start()

    @torch.no_grad()
    def fill_memory(self):
        """No-grad pass over the whole training set that fills the bank.

        Same forward as training (training mode, augmentation), every dataset index
        covered; under DDP the ranks take strided shards of equal length.
        """
        memory = self.modules.memory
        order = shard_indices(
            len(self.train_dataset), self.fill_batch_size, rank(), world_size()
        )
        loader = DataLoader(
            Subset(self.train_dataset, order),
            batch_size=self.fill_batch_size,
            shuffle=False,
            num_workers=self.fill_num_workers,
            collate_fn=PaddedBatch,
        )
        self.modules.train()
        for batch in loader:
            with self.training_ctx:
                z, _ = self.compute_forward(batch, sb.Stage.TRAIN)
            memory.update(batch.index.to(self.device), z.float())
        if not memory.is_full():  # cannot happen with shard_indices; be explicit
            raise RuntimeError("DeepCluster memory bank not full after the fill pass")

    @torch.no_grad()
    def cluster(self, epoch):
        """k-means per head on the bank; prototypes <- centroids (same on all ranks)."""
        protos = unwrap(self.modules.prototypes)
        generator = torch.Generator().manual_seed(
            int(getattr(self.hparams, "seed", 0)) * 1000 + int(epoch)
        )
        centroids = self.modules.memory.cluster(
            protos.n_prototypes,
            n_iters=int(getattr(self.hparams, "kmeans_iters", 10)),
            generator=generator,
            init=getattr(self.hparams, "kmeans_init", "random"),
        )
        protos.set_centroids([c.to(protos.weight_0) for c in centroids])

    def on_stage_start(self, stage, epoch=None):
        """TRAIN: fill the bank if needed (first epoch / no saved bank), cluster."""
        super().on_stage_start(stage, epoch)
        if stage != sb.Stage.TRAIN:
            return
        if not self.modules.memory.is_full():
            self.fill_memory()
        self.cluster(epoch if epoch is not None else 0)

    # ------------------------------------------------------------------ forward
    def compute_forward(self, batch, stage):
        """Normalised projections and per-head prototype scores.

        Returns
        -------
        z : torch.Tensor
            ``(V, B, D)`` L2-normalised projections.
        scores : list of torch.Tensor
            One ``(V, B, K_h)`` tensor per head.
        """
        views = self.get_views(batch)  # (B, V, L)
        _, ys = embed_views(self, views, stage)
        z = torch.stack([F.normalize(self.modules.projector(y), dim=-1) for y in ys])
        v, b, d = z.shape
        scores = [
            s.reshape(v, b, -1) for s in self.modules.prototypes(z.reshape(v * b, d))
        ]
        return z, scores

    def compute_objectives(self, predictions, batch, stage):
        """Cross-entropy against the pseudo-labels; then update the bank (TRAIN)."""
        z, scores = predictions
        index = batch.index.to(self.device)  # (B,)
        targets = self.modules.memory.targets(index)  # (H, B)
        loss = self.modules.loss(scores, targets)
        if stage == sb.Stage.TRAIN:
            self.modules.memory.update(index, z.detach().float())
            self.record(labelled=(targets >= 0).float().mean())
        return loss
