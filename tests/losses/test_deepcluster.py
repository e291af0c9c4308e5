"""Tests of sslsv_sb.losses.deepcluster."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sslsv_sb.losses.deepcluster import DeepClusterLoss, DeepClusterMemory
from sslsv_sb.models.heads import DeepClusterPrototypes


def test_matches_explicit_loop_with_ignored_labels():
    torch.manual_seed(0)
    scores = [torch.randn(2, 4, 5), torch.randn(2, 4, 3)]
    targets = torch.tensor([[0, 1, 4, -1], [2, -1, 0, 1]])
    out = DeepClusterLoss(temperature=0.5)(scores, targets)
    heads = []
    for s, t in zip(scores, targets):
        terms = []
        for v in range(2):
            for i in range(4):
                if t[i] < 0:
                    continue
                logits = s[v, i].double().numpy() / 0.5
                logp = logits - np.log(np.exp(logits).sum())
                terms.append(-logp[t[i]])
        heads.append(np.mean(terms))
    assert out.item() == pytest.approx(np.mean(heads), rel=1e-5)


def test_no_label_gives_finite_zero_and_gradients_flow():
    scores = [torch.randn(2, 3, 4, requires_grad=True)]
    out = DeepClusterLoss()(scores, torch.full((1, 3), -1))
    out.backward()
    assert out.item() == 0.0 and torch.isfinite(scores[0].grad).all()
    scores = [torch.randn(2, 3, 4, requires_grad=True)]
    DeepClusterLoss()(scores, torch.tensor([[0, 1, 2]])).backward()
    assert scores[0].grad.abs().sum() > 0


def test_errors():
    with pytest.raises(ValueError):
        DeepClusterLoss()([torch.randn(2, 3, 4)], torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError):
        DeepClusterLoss()([torch.randn(2, 3, 4)], torch.tensor([[0, 9, 1]]))
    with pytest.raises(ValueError):
        DeepClusterLoss()([torch.randn(2, 1, 4)], torch.tensor([[0]]))


def test_memory_fill_cluster_and_first_epoch_targets():
    g = torch.Generator().manual_seed(0)
    centers = F.normalize(torch.randn(3, 8, generator=g), dim=1) * 10
    labels = torch.arange(30) % 3
    views = F.normalize(centers[labels] + torch.randn(2, 30, 8, generator=g), dim=-1)
    mem = DeepClusterMemory(32, 8, n_views=2, n_heads=2)
    for start in range(0, 30, 10):  # no-grad pre-fill pass before epoch 1
        idx = torch.arange(start, start + 10)
        mem.update(idx, views[:, idx])
    assert not mem.is_full()  # indices 30, 31 never seen
    centroids = mem.cluster(
        [3, 4], n_iters=5, generator=torch.Generator().manual_seed(1)
    )
    protos = DeepClusterPrototypes(8, [3, 4])
    protos.set_centroids(centroids)
    targets = mem.targets(torch.arange(32))  # (H, N)
    assert (targets[:, 30:] == -1).all() and (targets[:, :30] >= 0).all()
    # Head 0 recovers the 3 clusters (view 0) and its labels are the argmax of the
    # prototype scores, so the first-epoch loss is finite and informative.
    t0 = targets[0, :30]
    assert all(len(set(t0[labels == c].tolist())) == 1 for c in range(3))
    scores = protos(mem.bank[0, :30])
    assert torch.equal(scores[0].argmax(1), t0)
    loss = DeepClusterLoss()([s[None] for s in scores], targets[:, :30])
    assert torch.isfinite(loss)
    assert len(list(protos.parameters())) == 0 and "weight_0" in protos.state_dict()


def test_memory_errors():
    mem = DeepClusterMemory(5, 3, n_heads=1)
    with pytest.raises(ValueError, match="empty"):
        mem.cluster([2])
    with pytest.raises(ValueError):
        mem.update(torch.arange(2), torch.randn(3, 2, 3))
