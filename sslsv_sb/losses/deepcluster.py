"""DeepCluster v2 loss and memory bank (Caron et al., arXiv 2006.09882, appendix
"DeepCluster-v2"; original DeepCluster: arXiv 1807.05520).

Each epoch starts with a spherical k-means (one per clustering head, with its own K)
on the memory bank of L2-normalised projections of the whole dataset; the centroids
become the (frozen) prototypes and each sample gets one pseudo-label per head. The
loss is, per head, the cross-entropy of the prototype scores at temperature tau
against the sample's pseudo-label, on every view, averaged over heads.

First epoch (sslsv bug, inventory §9 item 6): sslsv starts with all pseudo-labels at
-1, so epoch 0 has a NaN loss and no gradient. The intended flow (as in the official
DeepCluster-v2 code, ``init_memory``) is to fill the bank **before the first step**
with a no-grad pass over the training set, then cluster:

.. code-block:: python

    # Brain.on_stage_start(TRAIN, epoch) -- every epoch, epoch 1 included
    if not memory.is_full():          # only before the first epoch
        with torch.no_grad():
            for batch in train_loader:    # indices (N,), views -> z (V, N, D)
                memory.update(batch.idx, F.normalize(project(views), dim=-1))
    centroids = memory.cluster(n_prototypes, n_iters=10, generator=g)
    prototypes.set_centroids(centroids)   # DeepClusterPrototypes
    # Brain.compute_objectives: targets = memory.targets(batch.idx) -> (H, N)
    #                           memory.update(batch.idx, z.detach())

If the bank is only partly filled, samples without a pseudo-label get -1 and are
ignored; a batch with no labelled sample returns a zero loss (still differentiable)
instead of NaN.
"""

import torch
import torch.nn.functional as F
from speechbrain.utils.autocast import fwd_default_precision
from torch import nn

from sslsv_sb.clustering import spherical_kmeans
from sslsv_sb.distributed import gather


class DeepClusterLoss(nn.Module):
    """Per-head cross-entropy against k-means pseudo-labels (DeepCluster v2).

    Arguments
    ---------
    temperature : float
        tau applied to the prototype scores (0.1).

    Example
    -------
    >>> loss = DeepClusterLoss()
    >>> scores = [torch.randn(2, 4, 5), torch.randn(2, 4, 3)]
    >>> targets = torch.tensor([[0, 1, 4, -1], [2, 2, 0, 1]])
    >>> loss(scores, targets).shape
    torch.Size([])
    """

    def __init__(self, temperature=0.1):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature
        self.last_metrics = {}

    @fwd_default_precision(cast_inputs=torch.float32)
    def forward(self, scores, targets):
        """Loss averaged over heads (and over views and labelled samples per head).

        Arguments
        ---------
        scores : list of torch.Tensor
            One ``(V, N, K_h)`` tensor per head: prototype scores of L2-normalised
            projections (``DeepClusterPrototypes``), views stacked on dim 0.
        targets : torch.Tensor
            ``(H, N)`` long pseudo-labels, -1 = no label (ignored).

        Returns
        -------
        torch.Tensor
            Scalar loss.
        """
        if targets.dim() != 2 or len(scores) != targets.shape[0]:
            raise ValueError(
                f"DeepClusterLoss: {len(scores)} heads of scores but targets "
                f"{tuple(targets.shape)} (expected (H, N))"
            )
        n = targets.shape[1]
        if n < 2:
            raise ValueError("DeepClusterLoss needs a batch of at least 2 samples")
        loss = None
        for s, t in zip(scores, targets):
            if s.dim() != 3 or s.shape[1] != n or int(t.max()) >= s.shape[2]:
                raise ValueError(
                    f"DeepClusterLoss: scores {tuple(s.shape)} must be (V, {n}, K_h) "
                    f"with targets < K_h"
                )
            v = s.shape[0]
            logits = s.float().reshape(v * n, -1) / self.temperature  # (V*N, K_h)
            tgt = t.long().repeat(v)  # (V*N,) view-major like the logits
            valid = tgt >= 0
            if valid.any():
                head = F.cross_entropy(logits[valid], tgt[valid])
            else:
                head = logits.sum() * 0.0  # no labelled sample: zero, not NaN
            loss = head if loss is None else loss + head
        return loss / len(scores)


class DeepClusterMemory(nn.Module):
    """Memory bank of projections indexed by dataset index, with per-head k-means.

    Every rank stores the whole bank (updates are all-gathered) and runs the same
    k-means with the same generator seed, so the prototypes and pseudo-labels are
    identical across ranks without further communication. Memory:
    ``n_views * dataset_size * D`` floats (e.g. 2 x 1.1M x 128 fp32 = 1.1 GB for
    VoxCeleb2; use ``dtype=torch.float16`` to halve it).

    Arguments
    ---------
    dataset_size : int
        Number of training samples (indices in ``[0, dataset_size)``).
    embed_dim : int
        D.
    n_views : int
        Views stored per sample (2); head h clusters view ``h % n_views``.
    n_heads : int
        Number of clustering heads (sslsv: 3).
    dtype : torch.dtype
        Storage dtype of the bank.

    Buffers (checkpoint them): ``bank (n_views, dataset_size, D)``, ``filled
    (dataset_size,)`` bool, ``assignments (n_heads, dataset_size)`` long (-1 = none).

    Example
    -------
    >>> mem = DeepClusterMemory(10, 4, n_heads=2)
    >>> mem.update(torch.arange(10), F.normalize(torch.randn(2, 10, 4), dim=-1))
    >>> g = torch.Generator().manual_seed(0)
    >>> [c.shape for c in mem.cluster([3, 2], generator=g)]
    [torch.Size([3, 4]), torch.Size([2, 4])]
    >>> mem.targets(torch.tensor([0, 1])).shape
    torch.Size([2, 2])
    """

    def __init__(
        self, dataset_size, embed_dim, n_views=2, n_heads=3, dtype=torch.float32
    ):
        super().__init__()
        self.n_views = n_views
        self.n_heads = n_heads
        self.register_buffer(
            "bank", torch.zeros(n_views, dataset_size, embed_dim, dtype=dtype)
        )
        self.register_buffer("filled", torch.zeros(dataset_size, dtype=torch.bool))
        self.register_buffer(
            "assignments", torch.full((n_heads, dataset_size), -1, dtype=torch.long)
        )

    def is_full(self):
        """True once every dataset index has been stored at least once."""
        return bool(self.filled.all())

    @torch.no_grad()
    def update(self, indices, embeddings):
        """Store ``embeddings (V, N, D)`` (detached) at dataset ``indices (N,)``.

        Under DDP the updates of all ranks are gathered, so every rank's bank is the
        same.
        """
        if embeddings.dim() != 3 or embeddings.shape[0] != self.n_views:
            raise ValueError(
                f"DeepClusterMemory.update expects ({self.n_views}, N, D), got "
                f"{tuple(embeddings.shape)}"
            )
        if indices.shape != (embeddings.shape[1],):
            raise ValueError("DeepClusterMemory.update: indices must be (N,)")
        idx = gather(indices.to(self.filled.device).long(), grad=False)  # (N_global,)
        emb = gather(embeddings.detach().transpose(0, 1).contiguous(), grad=False)
        self.bank[:, idx] = emb.transpose(0, 1).to(self.bank)  # (V, N_global, D)
        self.filled[idx] = True

    @torch.no_grad()
    def cluster(self, n_prototypes, n_iters=10, generator=None, init="random"):
        """Run one spherical k-means per head on the filled part of the bank.

        Arguments
        ---------
        n_prototypes : list of int
            K_h per head (length ``n_heads``).
        n_iters : int
            k-means iterations (10).
        generator : torch.Generator or None
            Seeded identically on every rank for identical results.
        init : str
            ``"random"`` (DeepCluster v2 / sslsv) or ``"kmeans++"``.

        Returns
        -------
        list of torch.Tensor
            Centroids ``(K_h, D)`` per head; ``self.assignments`` is updated
            (unfilled indices get -1).
        """
        if len(n_prototypes) != self.n_heads:
            raise ValueError(
                f"need {self.n_heads} prototype counts, got {n_prototypes}"
            )
        where = torch.nonzero(self.filled).flatten()
        if where.numel() == 0:
            raise ValueError(
                "DeepClusterMemory.cluster: the bank is empty; fill it first"
            )
        centroids = []
        self.assignments.fill_(-1)
        for h, k in enumerate(n_prototypes):
            x = self.bank[h % self.n_views, where].float()  # (N_filled, D)
            c, a = spherical_kmeans(
                x, k, n_iters=n_iters, generator=generator, init=init
            )
            self.assignments[h, where] = a
            centroids.append(c)
        return centroids

    def targets(self, indices):
        """``(H, N)`` pseudo-labels of dataset ``indices (N,)`` (-1 = none)."""
        return self.assignments[:, indices.to(self.assignments.device).long()]
