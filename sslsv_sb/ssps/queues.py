"""Memory queues of SSPS (arXiv 2501.17772, 2505.14561).

* :class:`ReferenceQueue` (Q^ in the papers): one slot per dataset index holding the
  L2-normalised encoder embedding of the clean reference crop (latest value wins).
  It is what k-means clusters each epoch and what k-NN compares against.
* :class:`PositiveQueue` (Q'): FIFO ring of the last ``Q`` positive-branch embeddings
  (``P`` per sample, e.g. 2 keys for MoCo, 2 teacher outputs for DINO) with their
  dataset indices; SSPS replaces a positive by one of these entries.

Writes take the *gathered* batch (``gather`` without gradient), so every rank applies
the same writes in the same order and holds identical queues. All state is in
registered buffers (tensors only: ``torch.load(weights_only=True)`` works).
"""

import torch
import torch.nn.functional as F
from torch import nn

from sslsv_sb.distributed import gather


class _Queue(nn.Module):
    """Shared ``write`` protocol: gather the batch of every rank, then store it.

    Subclasses hold an ``indices`` buffer (one per slot) and implement ``_store``
    (and ``_check`` to validate the local batch before the gather).
    """

    @property
    def size(self):
        """Number of slots."""
        return self.indices.shape[0]

    def _check(self, embeddings):
        """Validate (and reshape) the local embeddings; returns them."""
        return embeddings

    @torch.no_grad()
    def write(self, indices, embeddings, distributed=True):
        """Store a batch (see the class docstring for where it goes).

        Arguments
        ---------
        indices : torch.Tensor
            ``(B,)`` local dataset indices.
        embeddings : torch.Tensor
            ``(B, D)`` local reference embeddings (:class:`ReferenceQueue`) or
            ``(B, P, D)`` positive embeddings (:class:`PositiveQueue`; ``(B, D)``
            when ``P == 1``).
        distributed : bool
            Gather across ranks first (keep True in training).
        """
        embeddings = self._check(embeddings)
        if distributed:
            indices, embeddings = (
                gather(indices),
                gather(embeddings.detach(), grad=False),
            )
        self._store(indices, embeddings)


class ReferenceQueue(_Queue):
    """Per-dataset-index reference embeddings.

    Arguments
    ---------
    dataset_size : int
        Number of training utterances ``R`` (dataset indices are ``0..R-1``).
    dim : int
        Reference (encoder) embedding dimension.

    Example
    -------
    >>> q = ReferenceQueue(10, 4)
    >>> q.write(torch.tensor([3, 7]), torch.randn(2, 4))
    >>> q.filled().tolist()
    [3, 7]
    """

    def __init__(self, dataset_size, dim):
        super().__init__()
        self.register_buffer("embeddings", torch.zeros(dataset_size, dim))  # (R, D)
        self.register_buffer(
            "indices", torch.full((dataset_size,), -1, dtype=torch.long)
        )

    def _store(self, indices, embeddings):
        """Store the normalised ``(B, D)`` embeddings at their dataset index."""
        indices = indices.to(self.indices.device).long()
        if indices.min() < 0 or indices.max() >= self.size:
            raise ValueError(
                f"ReferenceQueue: dataset index out of range [0, {self.size})"
            )
        emb = F.normalize(embeddings.detach().float(), dim=-1).to(self.embeddings)
        # duplicated indices in a batch: index_copy_ keeps one (same utterance)
        self.embeddings.index_copy_(0, indices, emb)
        self.indices.index_copy_(0, indices, indices)

    def filled(self):
        """``(F,)`` dataset indices that hold an embedding."""
        return torch.nonzero(self.indices >= 0)[:, 0]


class PositiveQueue(_Queue):
    """FIFO ring of positive-branch embeddings and their dataset indices.

    Arguments
    ---------
    size : int
        Capacity ``Q``.
    dim : int
        Positive embedding dimension.
    n_positives : int
        ``P`` embeddings stored per sample.

    Example
    -------
    >>> q = PositiveQueue(4, 2, n_positives=1)
    >>> q.write(torch.arange(6), torch.randn(6, 1, 2))
    >>> q.indices.tolist(), int(q.ptr)
    ([4, 5, 2, 3], 2)
    """

    def __init__(self, size, dim, n_positives=1):
        super().__init__()
        self.register_buffer(
            "embeddings", torch.zeros(n_positives, size, dim)
        )  # (P, Q, D)
        self.register_buffer(
            "indices", torch.full((size,), -1, dtype=torch.long)
        )  # (Q,)
        self.register_buffer(
            "ptr", torch.zeros((), dtype=torch.long)
        )  # next write slot
        self.register_buffer(
            "n_written", torch.zeros((), dtype=torch.long)
        )  # total writes

    def _check(self, embeddings):
        """``(B, P, D)`` positives (a ``(B, D)`` batch is ``P = 1``)."""
        if embeddings.dim() == 2:
            embeddings = embeddings[:, None]
        if embeddings.shape[1:] != (self.embeddings.shape[0], self.embeddings.shape[2]):
            raise ValueError(
                f"PositiveQueue: expected embeddings (B, {self.embeddings.shape[0]}, "
                f"{self.embeddings.shape[2]}), got {tuple(embeddings.shape)}"
            )
        return embeddings

    def _store(self, indices, embeddings):
        """Append ``(B, P, D)`` positives (the oldest entries are overwritten)."""
        n, q = indices.shape[0], self.size
        if n > q:  # only the last Q entries survive
            indices, embeddings = indices[-q:], embeddings[-q:]
            self.ptr.add_(n - q).remainder_(q)
            self.n_written.add_(n - q)
            n = q
        pos = (self.ptr + torch.arange(n, device=self.indices.device)) % q  # (n,)
        self.indices[pos] = indices.to(self.indices.device).long()
        self.embeddings[:, pos] = (
            embeddings.detach().to(self.embeddings).transpose(0, 1)
        )
        self.ptr.add_(n).remainder_(q)
        self.n_written.add_(n)

    def age(self):
        """``(Q,)`` write age of every slot: 0 = most recent write, ``-1`` = empty."""
        q = self.size
        age = (self.ptr - 1 - torch.arange(q, device=self.indices.device)) % q
        return torch.where(self.indices >= 0, age, torch.full_like(age, -1))

    def latest_mask(self):
        """``(Q,)`` True for filled slots holding the most recent entry of their index.

        A dataset index written twice within ``Q`` writes appears twice; only its
        freshest copy is a sampling candidate.
        """
        age = self.age()
        valid = age >= 0
        idx = self.indices.clamp(min=0)
        n_idx = int(idx.max()) + 1 if valid.any() else 1
        big = torch.full((n_idx,), self.size, dtype=torch.long, device=idx.device)
        youngest = big.scatter_reduce(0, idx[valid], age[valid], reduce="amin")
        return valid & (youngest[idx] == age)
