"""Spherical k-means on torch tensors: the one k-means of sslsv_sb.

Used by DeepCluster v2 (prototypes, arXiv 2006.09882), SSPS (pseudo-positive
clusters, arXiv 2501.17772) and the two-stage pseudo-labels recipe.

Points and centroids live on the unit sphere; the similarity is the cosine (a dot
product of L2-normalised vectors) and a centroid is the normalised mean of its points.
Everything is vectorised: the assignment step is a chunked ``(chunk, D) @ (D, k)``
matmul (memory ``chunk * k`` floats, by default about 2**24), the update is an
``index_add_``. Iterations stop early once an assignment repeats (a fixed point: the
remaining iterations would change nothing).

Seeding: k-means++ (greedy D^2 sampling, Arthur & Vassilvitskii 2007) or ``k``
distinct random points (DeepCluster v2 / sslsv / SSPS). Empty clusters are re-seeded
with the points that fit their own centroid worst, never the last point of a cluster,
so no cluster is left empty when ``N >= k``. Determinism: all random draws use
``generator`` (on the CPU); give every DDP rank a generator with the same seed and the
same data to get identical centroids.
"""

import math

import torch
import torch.nn.functional as F

# Similarity entries per assignment block when ``chunk_size`` is None (64 MiB fp32).
_BLOCK_ENTRIES = 2**24


def _assign(x, centroids, chunk_size):
    """Nearest centroid by cosine.

    Arguments
    ---------
    x : torch.Tensor
        ``(N, D)`` unit-norm points.
    centroids : torch.Tensor
        ``(k, D)`` unit-norm centroids.
    chunk_size : int
        Rows per ``(chunk, k)`` similarity block.

    Returns
    -------
    tuple of torch.Tensor
        ``(similarity (N,), labels (N,) long)``.
    """
    sims, labels = [], []
    for start in range(0, x.shape[0], chunk_size):
        best, idx = (x[start : start + chunk_size] @ centroids.T).max(dim=1)
        sims.append(best)
        labels.append(idx)
    return torch.cat(sims), torch.cat(labels)


def kmeans_pp_init(x, k, generator=None):
    """Greedy k-means++ seeding with the squared chordal distance ``2 - 2 cos``.

    At each step ``2 + log(k)`` candidates are drawn with probability proportional to
    the distance to the closest chosen centroid, and the one that most reduces the
    total distance is kept (Arthur & Vassilvitskii 2007; scikit-learn's default).

    Arguments
    ---------
    x : torch.Tensor
        ``(N, D)`` unit-norm points.
    k : int
        Number of centroids, ``1 <= k <= N``.
    generator : torch.Generator or None
        CPU generator (global RNG if None).

    Returns
    -------
    torch.Tensor
        ``(k, D)`` initial centroids (rows of ``x``).

    Example
    -------
    >>> x = torch.tensor([[1.0, 0.0], [0.99, 0.14], [0.0, 1.0], [-1.0, 0.0]])
    >>> c = kmeans_pp_init(x, 3, torch.Generator().manual_seed(0))
    >>> sorted({tuple(r) for r in c.round().tolist()})  # one point per direction
    [(-1.0, 0.0), (0.0, 1.0), (1.0, 0.0)]
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


def _reseed_empty(x, centroids, sims, labels):
    """Move the worst-fitting points into the empty clusters.

    Every non-empty cluster keeps its best-fitting point; among the other points, the
    ``E`` least similar to their centroid move, the worst to the lowest empty index,
    and become the centroids of the ``E`` empty clusters.

    Arguments
    ---------
    x : torch.Tensor
        ``(N, D)`` unit-norm points.
    centroids : torch.Tensor
        ``(k, D)`` centroids.
    sims : torch.Tensor
        ``(N,)`` similarity of each point to its centroid.
    labels : torch.Tensor
        ``(N,)`` long assignments.

    Returns
    -------
    tuple
        ``(centroids, labels, reseeded)``: new tensors when clusters were re-seeded
        (``reseeded`` True), the inputs otherwise.
    """
    k = centroids.shape[0]
    empty = torch.nonzero(torch.bincount(labels, minlength=k) == 0).flatten()
    if empty.numel() == 0:
        return centroids, labels, False
    # points grouped by cluster, best-fitting first: the first of a group is kept
    order = torch.argsort(sims, descending=True, stable=True)
    order = order[torch.argsort(labels[order], stable=True)]
    grouped = labels[order]
    first = torch.ones_like(grouped, dtype=torch.bool)
    first[1:] = grouped[1:] != grouped[:-1]
    kept = torch.zeros_like(first)
    kept[order[first]] = True
    movable = sims.masked_fill(kept, float("inf"))
    n_moves = min(empty.numel(), int((~kept).sum()))
    movers = torch.argsort(movable, stable=True)[:n_moves]
    targets = empty[:n_moves]
    labels = labels.clone()
    labels[movers] = targets
    centroids = centroids.clone()
    centroids[targets] = x[movers]
    return centroids, labels, True


def _lloyd(x, centroids, n_iters, chunk_size):
    """Spherical Lloyd iterations from ``centroids``, stopping at a fixed point.

    Arguments
    ---------
    x : torch.Tensor
        ``(N, D)`` unit-norm points.
    centroids : torch.Tensor
        ``(k, D)`` initial centroids.
    n_iters : int
        Maximum number of (assign, update) iterations.
    chunk_size : int
        Rows per similarity block.

    Returns
    -------
    tuple of torch.Tensor
        ``(centroids (k, D), labels (N,))``, consistent: every point is assigned to
        its most similar centroid except the points moved into empty clusters.
    """
    previous = None
    for step in range(n_iters + 1):
        sims, labels = _assign(x, centroids, chunk_size)
        centroids, labels, reseeded = _reseed_empty(x, centroids, sims, labels)
        repeated = previous is not None and torch.equal(labels, previous)
        if step == n_iters or (repeated and not reseeded):
            break
        sums = torch.zeros_like(centroids).index_add_(0, labels, x)  # (k, D)
        centroids = F.normalize(sums, dim=1)
        previous = labels
    return centroids, labels


def spherical_kmeans(
    x, k, n_iters=10, generator=None, init="kmeans++", chunk_size=None, n_init=1
):
    """Spherical k-means (cosine similarity, normalised-mean centroids).

    Arguments
    ---------
    x : torch.Tensor
        ``(N, D)`` points; they are L2-normalised here (any scale accepted, computed
        in fp32 on the device of ``x``).
    k : int
        Number of clusters, ``1 <= k <= N``.
    n_iters : int
        Maximum number of (assign, update) iterations after the initialisation
        (fewer when the assignment stops changing).
    generator : torch.Generator or None
        CPU generator for the initialisation (global RNG if None).
    init : str
        ``"kmeans++"`` (D^2 seeding with ``2 - 2 cos``) or ``"random"`` (k distinct
        random points, as in DeepCluster v2 / sslsv / SSPS).
    chunk_size : int or None
        Rows per similarity matmul (memory ``chunk_size * k`` floats); None keeps a
        block near 2**24 entries.
    n_init : int
        Runs from successive initialisations; the one with the largest total cosine
        to the assigned centroids is returned.

    Returns
    -------
    centroids : torch.Tensor
        ``(k, D)`` float32 unit-norm centroids.
    assignments : torch.Tensor
        ``(N,)`` long, the cluster of each point (no cluster is empty).

    Example
    -------
    >>> g = torch.Generator().manual_seed(0)
    >>> c, a = spherical_kmeans(torch.randn(50, 4), 3, generator=g)
    >>> c.shape, a.shape, torch.bincount(a, minlength=3).min().item() > 0
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
    if n_init < 1 or n_iters < 0:
        raise ValueError(f"need n_init >= 1 and n_iters >= 0, got {n_init}, {n_iters}")
    if chunk_size is None:
        chunk_size = max(1, _BLOCK_ENTRIES // k)
    best, best_score = None, -math.inf
    with torch.no_grad():
        x = F.normalize(x.detach().float(), dim=1)  # (N, D)
        for _ in range(n_init):
            if init == "random":
                perm = torch.randperm(n, generator=generator)[:k].to(x.device)
                centroids = x[perm].clone()  # (k, D)
            else:
                centroids = kmeans_pp_init(x, k, generator)
            result = _lloyd(x, centroids, n_iters, chunk_size)
            score = float((x * result[0][result[1]]).sum()) if n_init > 1 else 0.0
            if best is None or score > best_score:
                best, best_score = result, score
    return best
