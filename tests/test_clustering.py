"""Tests of sslsv_sb.clustering (the k-means of DeepCluster, SSPS, pseudo-labels)."""

import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import adjusted_rand_score

from sslsv_sb import clustering
from sslsv_sb.clustering import kmeans_pp_init, spherical_kmeans


def _blobs(k=4, per=25, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = F.normalize(torch.randn(k, d, generator=g), dim=1)
    labels = torch.arange(k).repeat_interleave(per)
    x = centers[labels] + 0.05 * torch.randn(k * per, d, generator=g)
    return x * 3.0, labels, centers  # scale is irrelevant (points are normalised)


@pytest.mark.parametrize("init", ["kmeans++", "random"])
def test_recovers_well_separated_clusters(init):
    x, labels, centers = _blobs()
    best = max(
        adjusted_rand_score(
            labels,
            spherical_kmeans(
                x, 4, generator=torch.Generator().manual_seed(s), init=init
            )[1],
        )
        for s in range(3)
    )
    assert best == pytest.approx(1.0)
    c, a = spherical_kmeans(x, 4, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(c.norm(dim=1), torch.ones(4), atol=1e-5)
    if init == "kmeans++":  # greedy k-means++ seeding finds every cluster
        for s in range(5):
            c, _ = spherical_kmeans(x, 4, generator=torch.Generator().manual_seed(s))
            assert (c @ centers.T).max(1).values.min() > 0.99


def test_no_empty_clusters_and_consistent_assignments():
    x = torch.randn(12, 3, generator=torch.Generator().manual_seed(0))
    for k in (6, 11, 12):
        c, a = spherical_kmeans(
            x,
            k,
            n_iters=5,
            generator=torch.Generator().manual_seed(1),
            init="random",
            chunk_size=5,
        )
        assert torch.bincount(a, minlength=k).min() >= 1
    # Duplicated points make empties likely with random init: still none empty.
    dup = torch.cat([x[:2].repeat(5, 1), x[2:6]])  # 14 points, 6 distinct
    c, a = spherical_kmeans(
        dup, 6, generator=torch.Generator().manual_seed(2), init="random"
    )
    assert torch.bincount(a, minlength=6).min() >= 1


def test_deterministic_with_seeded_generator():
    x, _, _ = _blobs(k=5, per=10, seed=3)
    for init in ("kmeans++", "random"):
        r1 = spherical_kmeans(
            x, 5, generator=torch.Generator().manual_seed(7), init=init
        )
        r2 = spherical_kmeans(
            x, 5, generator=torch.Generator().manual_seed(7), init=init
        )
        assert torch.equal(r1[0], r2[0]) and torch.equal(r1[1], r2[1])


def test_kmeans_pp_seeding_spreads_centroids():
    # 8 tight blobs: D^2 seeding puts one seed in every blob, uniform seeding rarely
    x, labels, _ = _blobs(k=8, per=40, d=16, seed=5)
    x = F.normalize(x, dim=1)
    hits_pp, hits_random = [], []
    for s in range(10):
        g = torch.Generator().manual_seed(s)
        seeds = kmeans_pp_init(x, 8, g)
        hits_pp.append(labels[(seeds @ x.T).argmax(1)].unique().numel())
        perm = torch.randperm(len(x), generator=g)[:8]
        hits_random.append(labels[perm].unique().numel())
    assert min(hits_pp) == 8
    assert sum(hits_random) < sum(hits_pp)


def test_empty_cluster_is_reseeded_with_worst_point():
    x = F.normalize(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]]))
    far = F.normalize(torch.tensor([[1.0, 1.0]]))
    centroids = torch.cat([x[0:1], x[2:3], -far])  # cluster 2 attracts no point
    sims, labels = (x @ centroids.T).max(1)
    assert torch.bincount(labels, minlength=3)[2] == 0
    c, lab, reseeded = clustering._reseed_empty(x, centroids, sims, labels)
    worst = int(torch.argmin(sims))
    assert reseeded and lab[worst] == 2 and torch.equal(c[2], x[worst])
    assert torch.bincount(lab, minlength=3).min() == 1  # nobody else emptied
    # a point alone in its cluster is never moved: three singletons, one empty
    c, lab, _ = clustering._reseed_empty(
        x[:3], torch.cat([x[:3], -far]), torch.ones(3), torch.arange(3)
    )
    assert lab.tolist() == [0, 1, 2]
    # end to end: duplicates + k-means++ still give k non-empty clusters
    dup = torch.cat([x[:1].repeat(6, 1), x[2:3].repeat(6, 1), x[1:2]])
    _, a = spherical_kmeans(dup, 4, generator=torch.Generator().manual_seed(0))
    assert torch.bincount(a, minlength=4).min() >= 1


def test_recovers_blobs_exactly_with_restarts():
    x, labels, _ = _blobs(k=6, per=30, d=8, seed=11)
    for s in range(3):  # k-means++ finds the 6 blobs from any seed
        g = torch.Generator().manual_seed(s)
        _, a = spherical_kmeans(x, 6, n_iters=50, generator=g)
        assert adjusted_rand_score(labels, a) == 1.0
    # random seeding misses a blob from this seed; restarts keep the best run
    ari = [
        adjusted_rand_score(
            labels,
            spherical_kmeans(
                x,
                6,
                n_iters=50,
                generator=torch.Generator().manual_seed(0),
                init="random",
                n_init=n_init,
            )[1],
        )
        for n_init in (1, 10)
    ]
    assert ari[0] < 0.9 and ari[1] == 1.0


def test_early_stop_equals_full_lloyd():
    # diffuse data needs many iterations; stopping at a repeated assignment must give
    # exactly what a plain Lloyd loop gives after all its iterations
    raw = torch.randn(400, 3, generator=torch.Generator().manual_seed(4))
    c, a = spherical_kmeans(
        raw, 12, n_iters=200, generator=torch.Generator().manual_seed(1)
    )
    x = F.normalize(raw, dim=1)  # as spherical_kmeans does
    ref = kmeans_pp_init(x, 12, torch.Generator().manual_seed(1))
    moved = 0
    for _ in range(200):
        labels = (x @ ref.T).argmax(1)
        assert torch.bincount(labels, minlength=12).min() > 0
        new = F.normalize(torch.zeros_like(ref).index_add_(0, labels, x), dim=1)
        moved += int(not torch.equal(new, ref))
        ref = new
    assert moved > 3  # not a trivial case
    assert torch.equal(c, ref) and torch.equal(a, (x @ ref.T).argmax(1))


def test_errors():
    with pytest.raises(ValueError):
        spherical_kmeans(torch.randn(3, 2), 4)
    with pytest.raises(ValueError):
        spherical_kmeans(torch.randn(3), 1)
    with pytest.raises(ValueError):
        spherical_kmeans(torch.randn(5, 2), 2, init="bad")
    with pytest.raises(ValueError):
        spherical_kmeans(torch.randn(5, 2), 2, n_init=0)
