"""Tests of sslsv_sb.clustering.spherical_kmeans."""

import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import adjusted_rand_score

from sslsv_sb.clustering import spherical_kmeans


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


def test_errors():
    with pytest.raises(ValueError):
        spherical_kmeans(torch.randn(3, 2), 4)
    with pytest.raises(ValueError):
        spherical_kmeans(torch.randn(3), 1)
    with pytest.raises(ValueError):
        spherical_kmeans(torch.randn(5, 2), 2, init="bad")
