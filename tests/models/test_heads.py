"""Tests of sslsv_sb.models.heads (non-contrastive, clustering and CPC heads)."""

import pytest
import torch
from torch import nn

from sslsv_sb.models import heads as H


@pytest.mark.parametrize(
    "head, in_dim, out_dim",
    [
        (H.BYOLProjectionHead(8, 16, 4), 8, 4),
        (H.BYOLPredictionHead(4, 16), 4, 4),
        (H.SimSiamProjectionHead(8, 16, 6), 8, 6),
        (H.SimSiamPredictionHead(6, 4), 6, 6),
        (H.BarlowTwinsProjectionHead(8, 16, 6), 8, 6),
        (H.VICRegProjectionHead(8, 16, 6, n_hidden=1), 8, 6),
        (H.WMSEProjectionHead(8, 16, 4), 8, 4),
        (H.SwAVProjectionHead(8, 16, 4), 8, 4),
        (H.VIbCRegProjectionHead(8, 16, 8, iternorm_groups=2), 8, 8),
        (H.DINOHead(8, 16, 4, 32), 8, 32),
        (H.DINOHead(8, 16, 4, 32, n_layers=1, use_bn=False), 8, 32),
        (H.SwAVPrototypes(8, 5), 8, 5),
    ],
)
def test_output_shapes(head, in_dim, out_dim):
    out = head(torch.randn(6, in_dim))
    assert out.shape == (6, out_dim)
    if hasattr(head, "out_dim"):
        assert head.out_dim == out_dim


def test_simsiam_projector_layout():
    head = H.SimSiamProjectionHead(8, 16, 6)
    bns = [m for m in head.modules() if isinstance(m, nn.BatchNorm1d)]
    assert len(bns) == 3 and not bns[-1].affine and bns[0].affine
    assert all(m.bias is None for m in head.modules() if isinstance(m, nn.Linear))
    assert not isinstance(list(head.layers)[-1], nn.ReLU)


def test_dino_head_weight_norm_gain_fixed_to_one():
    torch.manual_seed(0)
    head = H.DINOHead(8, 16, 4, 12)
    g = head.last_layer.parametrizations.weight.original0
    assert not g.requires_grad and torch.all(g == 1)
    opt = torch.optim.SGD([p for p in head.parameters() if p.requires_grad], lr=1.0)
    head(torch.randn(5, 8)).pow(2).sum().backward()
    assert g.grad is None
    opt.step()
    assert torch.all(g == 1)
    rows = head.last_layer.weight.norm(dim=1)
    assert torch.allclose(rows, torch.ones(12), atol=1e-5)  # unit-norm prototypes
    # The bottleneck is L2-normalised: logits are cosines, |logit| <= 1.
    assert head(torch.randn(5, 8)).abs().max() <= 1 + 1e-5
    free = H.DINOHead(8, 16, 4, 12, norm_last_layer=False)
    assert free.last_layer.parametrizations.weight.original0.requires_grad


def test_dino_cancel_last_layer_gradients():
    head = H.DINOHead(8, 16, 4, 12)
    head(torch.randn(5, 8)).sum().backward()
    v = head.last_layer.parametrizations.weight.original1
    assert v.grad is not None
    head.cancel_last_layer_gradients()
    assert v.grad is None
    assert head.mlp.layers[0].weight.grad is not None  # the MLP still trains


def test_swav_prototypes_unit_norm_and_cancel():
    protos = H.SwAVPrototypes(4, 7)
    assert torch.allclose(protos.normalized_weight().norm(dim=1), torch.ones(7))
    assert not protos.normalized_weight().requires_grad
    protos(torch.randn(3, 4)).sum().backward()
    protos.cancel_gradients()
    assert all(p.grad is None for p in protos.parameters())


def test_deepcluster_prototypes_frozen_and_settable():
    protos = H.DeepClusterPrototypes(3, [2, 4])
    assert len(list(protos.parameters())) == 0
    c = [torch.eye(3)[:2], torch.eye(3)[[0, 1, 2, 0]]]
    protos.set_centroids(c)
    out = protos(torch.eye(3))
    assert torch.equal(out[0], torch.eye(3)[:, :2])
    with pytest.raises(ValueError):
        protos.set_centroids([torch.eye(3)])


def test_iternorm_whitens_groups_and_uses_running_stats():
    torch.manual_seed(0)
    norm = H.IterNorm(6, num_groups=2, T=10, affine=False)
    mix = torch.block_diag(
        torch.randn(3, 3) + 2 * torch.eye(3), torch.randn(3, 3) + 2 * torch.eye(3)
    )
    x = torch.randn(400, 6) @ mix + 1.0
    y = norm(x)
    for grp in (slice(0, 3), slice(3, 6)):
        cov = torch.cov(y[:, grp].T, correction=0)
        assert torch.allclose(cov, torch.eye(3), atol=2e-2)
    assert y.mean(0).abs().max() < 1e-4
    norm.eval()
    assert norm(x[:1]).shape == (1, 6)  # eval: running statistics, any batch size
    assert not torch.allclose(norm.running_wm, torch.eye(3).expand(2, 3, 3))
    with pytest.raises(ValueError):
        H.IterNorm(6, num_groups=4)
    with pytest.raises(ValueError):
        H.IterNorm(6, num_groups=2).train()(torch.randn(1, 6))


def test_base_heads_unchanged():
    head = H.SimCLRProjectionHead(8, 16, 4)
    assert head(torch.randn(3, 8)).shape == (3, 4)
    assert H.Identity(5).out_dim == 5
    assert len(H.mlp_blocks(4, [8, 8], 2, last_bn=True)) == 3


# ------------------------------------------------------------------------ CPC
@pytest.mark.parametrize("aggregator", ["gru", "lstm"])
def test_same_mode_alignment_and_causality(aggregator):
    torch.manual_seed(0)
    head = H.CPCHead(6, aggregator=aggregator, hidden=5, n_predict=3)
    x = torch.randn(2, 6, 9)
    pred, tgt = head(x)
    assert pred.shape == tgt.shape == (2, 6, 3, 6)  # T - k = 6 contexts
    for t in range(6):
        for j in range(1, 4):
            assert torch.equal(tgt[:, t, j - 1], x[:, :, t + j])
    # prediction from context t must not depend on frames after t
    x2 = x.clone()
    x2[:, :, 4:] += 10.0
    pred2, _ = head(x2)
    assert torch.allclose(pred[:, :4], pred2[:, :4])
    assert not torch.allclose(pred[:, 4:], pred2[:, 4:])
    # context="last" keeps only the last context position
    head.context = "last"
    pl, tl = head(x)
    assert torch.allclose(pl[:, 0], pred[:, -1]) and torch.equal(tl[:, 0], tgt[:, -1])


def test_embed_respects_lengths():
    torch.manual_seed(0)
    head = H.CPCHead(4, hidden=3, n_predict=2, bidirectional=True)
    x = torch.randn(2, 4, 10)
    e = head.embed(x, torch.tensor([1.0, 0.6]))
    assert torch.allclose(e[0], head.embed(x[:1])[0], atol=1e-6)
    assert torch.allclose(e[1], head.embed(x[1:2, :, :6])[0], atol=1e-6)


@pytest.mark.parametrize(
    "kwargs", [{"aggregator": "rnn"}, {"mode": "both"}, {"context": "first"}]
)
def test_cpc_head_rejects_unknown_choices(kwargs):
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=f"CPCHead: {name} must be one of"):
        H.CPCHead(4, **kwargs)


def test_cpc_head_needs_more_frames_than_steps():
    with pytest.raises(ValueError, match="more than n_predict"):
        H.CPCHead(4, n_predict=4)(torch.randn(2, 4, 4))
