"""Pseudo-positive sampler of SSPS (arXiv 2501.17772, 2505.14561).

For each anchor of the batch, :meth:`SSPSSampler.sample` returns the slot of the
positive queue holding its pseudo-positive (``-1`` when none), or, in
``kmeans-centroid`` mode, the id of the cluster whose centroid replaces the positive.
Everything is vectorised over the batch:

* ``kmeans-repr`` (SSPS-Clustering): queue slots are grouped by the cluster of their
  dataset index with one ``argsort`` (CSR layout: ``order``, ``starts``, ``counts``);
  the anchor picks a cluster (its own when ``inter_sampling_size == 0``, else one of
  its ``M`` nearest *other* clusters, by rank), then a slot of that cluster by rank of
  recency (rank 0 = freshest entry, at most ``intra_sampling_size`` candidates); the
  anchor's own slot is skipped by shifting the sampled offset past it.
* ``kmeans-centroid``: the (inter-sampled) cluster centroid itself. Centroids live in
  the reference (encoder) space, so this mode is only valid when the positives are in
  that space (``same_space=True`` and equal dims); otherwise it raises.
* ``knn`` (SSPS-NN): one matmul between the anchors' reference embeddings and the
  reference embeddings of the queued indices, anchor's own index and stale duplicates
  masked, ``topk(intra_sampling_size)``, then a rank is sampled.

Rank weighting (``*_prob_fn``): ``"uniform"`` or ``"exp"`` with
``p_r ∝ λ e^{-λ r}`` truncated to the available ranks (sampled exactly by inverse CDF).
A pseudo-positive is never the anchor itself (same dataset index).
"""

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from sslsv_sb.clustering import spherical_kmeans
from sslsv_sb.distributed import is_distributed, rank
from sslsv_sb.errors import SSLSVError

MODES = ("kmeans-repr", "kmeans-centroid", "knn")
PROB_FNS = ("uniform", "exp")


def sample_ranks(n, prob_fn="uniform", lam=0.7, generator=None):
    """Sample one rank ``r in [0, n_b)`` per row.

    Arguments
    ---------
    n : torch.Tensor
        ``(B,)`` long, number of available ranks (rows with 0 get 0; mask them).
    prob_fn : str
        ``"uniform"`` or ``"exp"`` (``p_r ∝ λ e^{-λ r}``, truncated to ``n_b``).
    lam : float
        λ of the exponential weighting.
    generator : torch.Generator, optional
        Random source (must live on ``n``'s device).

    Returns
    -------
    torch.Tensor
        ``(B,)`` long ranks.
    """
    u = torch.rand(n.shape, generator=generator, device=n.device, dtype=torch.float64)
    nf = n.double()
    if prob_fn == "uniform":
        r = torch.floor(u * nf)
    elif prob_fn == "exp":
        # inverse CDF of the exponential truncated to [0, n): floor gives p_r ∝ e^{-λ r}
        r = torch.floor(-torch.log1p(-u * (-torch.expm1(-lam * nf))) / lam)
    else:
        raise ValueError(f"unknown prob_fn {prob_fn!r}, expected one of {PROB_FNS}")
    return torch.minimum(r.long(), (n - 1).clamp(min=0))


class SSPSSampler(nn.Module):
    """Clustering state and vectorised pseudo-positive sampling.

    Arguments
    ---------
    ref_queue : sslsv_sb.ssps.queues.ReferenceQueue
        Reference queue (not registered as a submodule: the owner checkpoints it).
    pos_queue : sslsv_sb.ssps.queues.PositiveQueue
        Positive queue (idem).
    sampling : str
        ``"kmeans-repr"``, ``"kmeans-centroid"`` or ``"knn"``.
    n_clusters : int
        K for k-means.
    kmeans_iters : int
        k-means iterations per epoch.
    inter_sampling_size : int
        M nearest other clusters (0: own cluster).
    inter_sampling_prob_fn, inter_sampling_exp_lambda
        Rank weighting over the M clusters.
    intra_sampling_size : int
        Max candidates: neighbours for ``knn``, freshest cluster members for
        ``kmeans-repr``.
    intra_sampling_prob_fn, intra_sampling_exp_lambda
        Rank weighting over the candidates.
    same_space : bool
        The positives are L2-normalised encoder outputs (the reference space);
        required by ``kmeans-centroid``.
    seed : int
        k-means seed (``seed + epoch``); the k-means
        (:func:`sslsv_sb.clustering.spherical_kmeans`) starts from K distinct random
        reference embeddings.
    """

    def __init__(
        self,
        ref_queue,
        pos_queue,
        sampling="kmeans-repr",
        n_clusters=50000,
        kmeans_iters=10,
        inter_sampling_size=0,
        inter_sampling_prob_fn="uniform",
        inter_sampling_exp_lambda=0.7,
        intra_sampling_size=10_000_000,
        intra_sampling_prob_fn="uniform",
        intra_sampling_exp_lambda=0.7,
        same_space=False,
        seed=0,
    ):
        super().__init__()
        if sampling not in MODES:
            raise SSLSVError(
                f"ssps.sampling: expected one of {MODES}, got {sampling!r}"
            )
        for key, val in (
            ("inter_sampling_prob_fn", inter_sampling_prob_fn),
            ("intra_sampling_prob_fn", intra_sampling_prob_fn),
        ):
            if val not in PROB_FNS:
                raise SSLSVError(f"ssps.{key}: expected one of {PROB_FNS}, got {val!r}")
        if inter_sampling_size < 0 or intra_sampling_size < 1 or n_clusters < 1:
            raise SSLSVError(
                "ssps: need inter_sampling_size >= 0, intra_sampling_size >= 1, "
                "kmeans_nb_prototypes >= 1"
            )
        ref_dim, pos_dim = ref_queue.embeddings.shape[1], pos_queue.embeddings.shape[2]
        if sampling == "kmeans-centroid" and not (same_space and ref_dim == pos_dim):
            raise SSLSVError(
                "ssps.sampling: 'kmeans-centroid' replaces positives by k-means "
                "centroids, "
                "which live in the reference (encoder) space; the positives here are "
                f"{'in another space' if not same_space else 'of another dimension'} "
                f"(reference dim {ref_dim}, positive dim {pos_dim}, "
                f"same_space={same_space}). "
                "Use 'kmeans-repr' or 'knn', or apply SSPS to encoder outputs."
            )
        if inter_sampling_size >= n_clusters:
            raise SSLSVError(
                f"ssps.inter_sampling_size={inter_sampling_size} must be < "
                f"kmeans_nb_prototypes={n_clusters}"
            )
        # queues are held without registration (the SSPS module owns and saves them)
        self.__dict__["_ref"] = ref_queue
        self.__dict__["_pos"] = pos_queue
        self.sampling = sampling
        self.n_clusters = n_clusters
        self.kmeans_iters = kmeans_iters
        self.inter_size = inter_sampling_size
        self.inter_prob = (inter_sampling_prob_fn, inter_sampling_exp_lambda)
        self.intra_size = intra_sampling_size
        self.intra_prob = (intra_sampling_prob_fn, intra_sampling_exp_lambda)
        self.seed = seed
        clusters = sampling != "knn"
        self.register_buffer(
            "assignments",
            torch.full((ref_queue.size if clusters else 0,), -1, dtype=torch.long),
        )
        self.register_buffer(
            "centroids", torch.zeros(n_clusters if clusters else 0, ref_dim)
        )
        self.register_buffer(
            "nearby",
            torch.zeros(
                n_clusters if clusters else 0,
                max(inter_sampling_size, 1),
                dtype=torch.long,
            ),
        )
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))
        self.metrics = {}

    # ------------------------------------------------------------------ per epoch
    @torch.no_grad()
    def fit(self, epoch=0, labels=None):
        """Cluster the reference queue (k-means modes; no-op for ``knn``).

        Rank 0 runs the k-means and broadcasts the result, so every rank holds the
        same assignments / centroids whatever the device's numerics.

        Arguments
        ---------
        epoch : int
            Used to vary the seed across epochs.
        labels : torch.Tensor, optional
            ``(R,)`` speaker id per dataset index, for the NMI metric only.

        Returns
        -------
        dict
            ``ssps_kmeans_nmi_speaker`` (if labels), ``ssps_kmeans_n_stored``.
        """
        if self.sampling == "knn":
            self.fitted.fill_(True)
            return {}
        filled = self._ref.filled()  # (F,)
        if filled.numel() < self.n_clusters:
            raise SSLSVError(
                f"ssps.kmeans_nb_prototypes={self.n_clusters} exceeds the "
                f"{filled.numel()} reference embeddings stored (fill the queues "
                "for at least one epoch first)"
            )
        data = self._ref.embeddings[filled]  # (F, D)
        if rank() == 0:
            generator = torch.Generator().manual_seed(self.seed + int(epoch))
            centroids, assign = spherical_kmeans(
                data, self.n_clusters, self.kmeans_iters, generator, init="random"
            )
        else:
            assign = torch.empty(filled.numel(), dtype=torch.long, device=data.device)
            centroids = torch.empty_like(self.centroids)
        if is_distributed():
            dist.broadcast(assign, src=0)
            dist.broadcast(centroids, src=0)
        self.assignments.fill_(-1)
        self.assignments[filled] = assign
        self.centroids.copy_(centroids)
        self.nearby.copy_(self._nearby_clusters(centroids))
        self.fitted.fill_(True)
        metrics = {"ssps_kmeans_n_stored": float(filled.numel())}
        if labels is not None:
            from sklearn.metrics import normalized_mutual_info_score

            lab = labels.to(filled.device)[filled]
            metrics["ssps_kmeans_nmi_speaker"] = float(
                normalized_mutual_info_score(lab.cpu().numpy(), assign.cpu().numpy())
            )
        return metrics

    def _nearby_clusters(self, centroids, chunk=1024):
        """``(K, max(M, 1))``: own cluster (M = 0) or the M nearest other clusters."""
        k = centroids.shape[0]
        if self.inter_size == 0:
            return torch.arange(k, device=centroids.device)[:, None]
        out = []
        for start in range(0, k, chunk):
            sims = centroids[start : start + chunk] @ centroids.T  # (chunk, K)
            rows = torch.arange(sims.shape[0], device=sims.device)
            sims[rows, rows + start] = -math.inf  # never the cluster itself
            out.append(sims.topk(self.inter_size, dim=1).indices)
        return torch.cat(out)

    # ------------------------------------------------------------------ per step
    @torch.no_grad()
    def sample(self, anchor_indices, anchor_ref, labels=None, generator=None):
        """Pseudo-positive of each anchor.

        Arguments
        ---------
        anchor_indices : torch.Tensor
            ``(B,)`` dataset indices of the local anchors.
        anchor_ref : torch.Tensor
            ``(B, D_ref)`` reference embeddings of the anchors (``knn``, and the
            nearest-centroid fallback for anchors absent from the last clustering).
        labels : torch.Tensor, optional
            ``(R,)`` speaker id per dataset index (monitoring only).
        generator : torch.Generator, optional
            Random source.

        Returns
        -------
        torch.Tensor
            ``(B,)`` long: positive-queue slot (``kmeans-repr``, ``knn``) or cluster id
            (``kmeans-centroid``), ``-1`` when the anchor keeps its own positive.
            Monitoring values are left in ``self.metrics``.
        """
        if not bool(self.fitted):
            raise RuntimeError("SSPSSampler.sample called before fit()")
        anchor_indices = anchor_indices.to(self._pos.indices.device).long()
        anchor_ref = F.normalize(anchor_ref.detach().float(), dim=-1)
        if self.sampling == "knn":
            targets, pool = self._sample_knn(anchor_indices, anchor_ref, generator)
        else:
            targets, pool = self._sample_kmeans(anchor_indices, anchor_ref, generator)
        ok = targets >= 0
        metrics = {
            "ssps_coverage": ok.float().mean(),
            "ssps_sampling_pool": pool[ok].float().mean()
            if ok.any()
            else pool.new_zeros((), dtype=torch.float),
        }
        if labels is not None and self.sampling != "kmeans-centroid":
            labels = labels.to(targets.device)
            same = (
                labels[anchor_indices]
                == labels[self._pos.indices[targets.clamp(min=0)].clamp(min=0)]
            )
            metrics["ssps_speaker_acc"] = (
                same[ok].float().mean() if ok.any() else torch.tensor(float("nan"))
            )
        self.metrics = metrics
        return targets

    def _anchor_clusters(self, anchor_indices, anchor_ref):
        """``(B,)`` cluster of each anchor: stored assignment, else nearest centroid."""
        clusters = self.assignments[anchor_indices]  # (B,)
        missing = clusters < 0
        if missing.any():
            sims = anchor_ref[missing] @ self.centroids.T  # (b, K)
            clusters[missing] = sims.argmax(dim=1)
        return clusters

    def _target_clusters(self, anchor_clusters, generator):
        """Inter-cluster sampling: own cluster or one of the M nearest others."""
        if self.inter_size == 0:
            return anchor_clusters
        r = sample_ranks(
            torch.full_like(anchor_clusters, self.inter_size),
            *self.inter_prob,
            generator=generator,
        )
        return self.nearby[anchor_clusters, r]

    def _sample_kmeans(self, anchor_indices, anchor_ref, generator):
        ca = self._anchor_clusters(anchor_indices, anchor_ref)  # (B,)
        target = self._target_clusters(ca, generator)  # (B,)
        if self.sampling == "kmeans-centroid":
            return target, torch.ones_like(target)
        pos = self._pos
        q, k = pos.size, self.n_clusters
        slots = torch.arange(q, device=ca.device)
        cand = pos.latest_mask()  # (Q,)
        cl = torch.where(cand, self.assignments[pos.indices.clamp(min=0)], -1)  # (Q,)
        cand = cl >= 0
        # CSR layout: slots sorted by (cluster, age); invalid slots last
        age = pos.age()
        key = torch.where(cand, cl * (q + 1) + age, k * (q + 1) + slots)
        order = key.argsort()  # (Q,) slots in sorted order
        inv = torch.empty_like(order)
        inv[order] = slots  # (Q,) position of each slot in `order`
        counts = torch.bincount(cl[cand], minlength=k)  # (K,)
        starts = counts.cumsum(0) - counts  # (K,)
        # the anchor's own (latest) slot, if queued: skip it within its cluster
        slot_of = torch.full((self._ref.size,), -1, dtype=torch.long, device=ca.device)
        slot_of[pos.indices[cand]] = slots[cand]
        s = slot_of[anchor_indices]  # (B,)
        self_in = (s >= 0) & (cl[s.clamp(min=0)] == target)  # (B,)
        o_self = inv[s.clamp(min=0)] - starts[target]  # (B,) offset in the segment
        n_eff = counts[target] - self_in.long()  # (B,)
        n_pool = n_eff.clamp(max=self.intra_size)
        r = sample_ranks(n_pool, *self.intra_prob, generator=generator)  # (B,)
        r = r + (self_in & (r >= o_self)).long()
        chosen = order[(starts[target] + r).clamp(max=q - 1)]  # (B,)
        ok = n_pool > 0
        return torch.where(ok, chosen, -1), n_pool

    def _sample_knn(self, anchor_indices, anchor_ref, generator):
        pos = self._pos
        idx = pos.indices.clamp(min=0)  # (Q,)
        cand = pos.latest_mask() & (self._ref.indices[idx] >= 0)  # (Q,)
        refs = self._ref.embeddings[idx]  # (Q, D)
        sims = anchor_ref @ refs.T  # (B, Q)
        mask = cand[None, :] & (
            pos.indices[None, :] != anchor_indices[:, None]
        )  # (B, Q)
        sims = sims.masked_fill(~mask, -math.inf)
        m = min(self.intra_size, pos.size)
        top_v, top_i = sims.topk(m, dim=1)  # (B, m), descending similarity
        n_pool = torch.isfinite(top_v).sum(dim=1)  # (B,)
        r = sample_ranks(n_pool, *self.intra_prob, generator=generator)
        chosen = top_i.gather(1, r[:, None])[:, 0]
        return torch.where(n_pool > 0, chosen, -1), n_pool

    # ------------------------------------------------------------------ replace
    def apply(self, positives, targets):
        """Replace the positives of anchors that have a pseudo-positive.

        Arguments
        ---------
        positives : torch.Tensor
            ``(B, P, D)`` (or ``(B, D)`` for ``P == 1``) positive-branch embeddings.
        targets : torch.Tensor
            ``(B,)`` from :meth:`sample`.

        Returns
        -------
        torch.Tensor
            Same shape; replaced rows are detached queue entries (or centroids), the
            others keep their gradient.
        """
        squeeze = positives.dim() == 2
        x = positives[:, None] if squeeze else positives  # (B, P, D)
        t = targets.to(x.device).clamp(min=0)
        if self.sampling == "kmeans-centroid":
            rep = self.centroids[t][:, None].expand(-1, x.shape[1], -1)  # (B, P, D)
        else:
            rep = self._pos.embeddings[:, t].transpose(0, 1)  # (B, P, D)
        if rep.shape != x.shape:
            raise ValueError(
                f"SSPS.apply: positives {tuple(x.shape)} vs stored {tuple(rep.shape)}"
            )
        out = torch.where(
            (targets >= 0).to(x.device)[:, None, None], rep.to(x.dtype), x
        )
        return out[:, 0] if squeeze else out
