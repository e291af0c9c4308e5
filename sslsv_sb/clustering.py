"""Spherical k-means on torch tensors (DeepCluster v2 prototypes, arXiv 2006.09882).

Points and centroids live on the unit sphere; the similarity is the cosine (a dot
product of L2-normalised vectors) and a centroid is the normalised mean of its points.
Everything is vectorised: the assignment step is a chunked ``(chunk, D) @ (D, k)``
matmul (memory ``chunk * k`` floats), the update is a ``index_add_``.

Empty clusters are re-seeded with the point that is least similar to its current
centroid, taken from a cluster that keeps at least one other point, so the returned
assignment never leaves a cluster empty when ``N >= k`` and the points are distinct.
Determinism: all random draws use ``generator`` (on the CPU); give every DDP rank a
generator with the same seed and the same data to get identical centroids.
"""

import math

import torch
import torch.nn.functional as F


def _assign(x, centroids, chunk_size):
    """Nearest centroid by cosine: ``x (N, D)``, ``centroids (k, D)`` -> (N,), (N,)."""
    sims, labels = [], []
    for start in range(0, x.shape[0], chunk_size):
        s = x[start : start + chunk_size] @ centroids.T  # (chunk, k)
        best, idx = s.max(dim=1)
        sims.append(best)
        labels.append(idx)
    return torch.cat(sims), torch.cat(labels)


def _kmeans_pp_init(x, k, generator):
    """Greedy k-means++ seeding with the squared chordal distance ``2 - 2 cos``.

    At each step ``2 + log(k)`` candidates are drawn with probability proportional to
    the distance to the closest chosen centroid, and the one that most reduces the
    total distance is kept (Arthur & Vassilvitskii 2007; scikit-learn's default).
    """
    n = x.shape[0]
    n_trials = 2 + int(math.log(k))
    first = torch.randint(n, (1,), generator=generator).item()
    chosen = [first]
    min_dist = (2 - 2 * (x @ x[first])).clamp_min(0)  # (N,)
    for _ in range(1, k):
        probs = min_dist.double().cpu()
        if probs.sum() <= 0:  # all remaining points coincide with a centroid
            probs = torch.ones(n, dtype=torch.double)
            probs[chosen] = 0
        cand = torch.multinomial(probs, n_trials, replacement=True, generator=generator)
        cand = cand.to(x.device)
        dists = torch.minimum(
            min_dist, (2 - 2 * (x[cand] @ x.T)).clamp_min(0)
        )  # (t, N)
        best = int(torch.argmin(dists.sum(dim=1)))
        chosen.append(int(cand[best]))
        min_dist = dists[best]
    return x[torch.tensor(chosen, device=x.device)].clone()


def _reseed_empty(x, centroids, sims, labels, k):
    """Move the worst-fitting points of non-singleton clusters into empty clusters."""
    counts = torch.bincount(labels, minlength=k)
    empty = torch.nonzero(counts == 0).flatten().tolist()
    if not empty:
        return centroids, labels
    labels = labels.clone()
    sims = sims.clone()
    centroids = centroids.clone()
    for c in empty:  # usually none or very few
        movable = counts[labels] > 1  # (N,) points whose cluster keeps another point
        if not movable.any():
            break
        cand = torch.where(movable, sims, torch.full_like(sims, float("inf")))
        p = int(torch.argmin(cand))
        counts[labels[p]] -= 1
        counts[c] += 1
        labels[p] = c
        sims[p] = float("inf")  # never move the same point twice
        centroids[c] = x[p]
    return centroids, labels


def spherical_kmeans(
    x, k, n_iters=10, generator=None, init="kmeans++", chunk_size=65536
):
    """Spherical k-means (cosine similarity, normalised-mean centroids).

    Arguments
    ---------
    x : torch.Tensor
        ``(N, D)`` points; they are L2-normalised here (any scale accepted).
    k : int
        Number of clusters, ``1 <= k <= N``.
    n_iters : int
        Number of (assign, update) iterations after the initialisation.
    generator : torch.Generator or None
        CPU generator for the initialisation (global RNG if None).
    init : str
        ``"kmeans++"`` (D^2 seeding with ``2 - 2 cos``) or ``"random"`` (k distinct
        random points, as in DeepCluster v2 / sslsv).
    chunk_size : int
        Rows per similarity matmul (bounds memory to ``chunk_size * k`` floats).

    Returns
    -------
    centroids : torch.Tensor
        ``(k, D)`` unit-norm centroids (dtype of ``x`` promoted to float32).
    assignments : torch.Tensor
        ``(N,)`` long, the cluster of each point (no cluster is empty if the points
        are distinct).

    Example
    -------
    >>> g = torch.Generator().manual_seed(0)
    >>> c, a = spherical_kmeans(torch.randn(50, 4), 3, generator=g)
    >>> c.shape, a.shape, int(a.max()) <= 2
    (torch.Size([3, 4]), torch.Size([50]), True)
    """
    if x.dim() != 2:
        raise ValueError(
            f"spherical_kmeans expects (N, D) points, got {tuple(x.shape)}"
        )
    n = x.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= N, got k={k} for N={n} points")
    if init not in ("kmeans++", "random"):
        raise ValueError(f"init must be 'kmeans++' or 'random', got {init!r}")
    with torch.no_grad():
        x = F.normalize(x.detach().float(), dim=1)  # (N, D)
        if init == "random":
            perm = torch.randperm(n, generator=generator)[:k].to(x.device)
            centroids = x[perm].clone()  # (k, D)
        else:
            centroids = _kmeans_pp_init(x, k, generator)
        for _ in range(n_iters):
            sims, labels = _assign(x, centroids, chunk_size)
            centroids, labels = _reseed_empty(x, centroids, sims, labels, k)
            sums = torch.zeros_like(centroids).index_add_(0, labels, x)  # (k, D)
            counts = torch.bincount(labels, minlength=k)
            # Clusters emptied by the re-seeding keep their (re-seeded) centroid.
            centroids = torch.where(
                (counts > 0)[:, None], F.normalize(sums, dim=1), centroids
            )
        sims, labels = _assign(x, centroids, chunk_size)
        centroids, labels = _reseed_empty(x, centroids, sims, labels, k)
    return centroids, labels
