"""sslsv_sb.recipe.pseudo_labels: k-means pseudo-speakers, merging, label metrics."""

import numpy as np
import pytest

from sslsv_sb.errors import SSLSVError
from sslsv_sb.recipe.pseudo_labels import cluster, label_metrics


def blobs(k=5, per=20, d=16, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, d))
    labels = np.repeat(np.arange(k), per)
    return centers[labels] + 0.05 * rng.normal(size=(k * per, d)), labels


def test_kmeans_recovers_speakers_and_metrics():
    x, y = blobs()
    pseudo = cluster(x, 5)
    m = label_metrics(pseudo, [f"spk{i}" for i in y])
    assert m["nmi"] > 0.99 and m["purity"] == 1.0 and m["n_true_speakers"] == 5
    assert sorted(set(pseudo.tolist())) == list(range(5))


def test_overclustering_then_merging():
    x, y = blobs()
    over = cluster(x, 15)
    assert len(set(over.tolist())) == 15
    merged = cluster(x, 15, merge_threshold=0.5)
    assert len(set(merged.tolist())) == 5
    assert label_metrics(merged, y)["nmi"] > 0.99
    assert len(set(cluster(x, 15, n_merged=7).tolist())) == 7
    with pytest.raises(SSLSVError):
        cluster(x, 15, merge_threshold=0.5, n_merged=3)
    with pytest.raises(SSLSVError):
        cluster(x, 1000)
