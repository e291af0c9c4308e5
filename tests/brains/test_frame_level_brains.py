"""CPC (arXiv 1807.03748), LIM (arXiv 1812.00271) and Combiner (arXiv 2207.05506)
Brains, built with tiny modules and fed fake batches."""

import functools
from types import SimpleNamespace

import pytest
import speechbrain as sb
import torch
from speechbrain.utils.epoch_loop import EpochCounter
from torch import nn
from toys import Frames, NoNorm  # noqa: E402  (tests/brains/toys.py)

from sslsv_sb.brains.combiner import CombinerBrain
from sslsv_sb.brains.cpc import CPCBrain, CPCEncoder
from sslsv_sb.brains.lim import LIMBrain
from sslsv_sb.losses.barlow_twins import BarlowTwinsLoss
from sslsv_sb.losses.combiner import CombinerLoss
from sslsv_sb.losses.cpc import CPCHead, CPCLoss
from sslsv_sb.losses.infonce import InfoNCELoss
from sslsv_sb.losses.lim import LIMLoss
from sslsv_sb.losses.vicreg import VICRegLoss
from sslsv_sb.ssps import SSPS

B, L, C = 4, 800, 8


class FrameEncoder(nn.Module):
    """``(N, T, 40) -> (N, C, T)`` frame-level (or pooled ``(N, C)``)."""

    def __init__(self, pooled=False):
        super().__init__()
        self.linear = nn.Linear(40, C)
        self.pooled = pooled
        self.out_dim = C

    def forward(self, feats, lengths=None):
        y = torch.tanh(self.linear(feats)).transpose(1, 2)  # (N, C, T)
        return y.mean(dim=2) if self.pooled else y


def make_brain(cls, modules, **hparams):
    torch.manual_seed(0)
    mods = {"compute_features": Frames(), "mean_var_norm": NoNorm(), **modules}
    brain = cls(
        modules=mods,
        opt_class=functools.partial(torch.optim.SGD, lr=0.1),
        hparams={"epoch_counter": EpochCounter(1), "seed": 0, **hparams},
        run_opts={"device": "cpu", "noprogressbar": True},
    )
    brain.on_fit_start()
    brain.on_stage_start(sb.Stage.TRAIN, 1)
    brain.modules.train()
    return brain


def batch(n_views=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    views = torch.randn(B, n_views, L, generator=g)
    return SimpleNamespace(views=SimpleNamespace(data=views))


def cpc_brain(mode="two_crop", bidirectional=False, aggregator="gru"):
    head = CPCHead(
        C,
        aggregator=aggregator,
        hidden=6,
        n_predict=3,
        bidirectional=bidirectional,
        mode=mode,
    )
    enc = CPCEncoder(FrameEncoder(), head)
    return make_brain(CPCBrain, {"embedding_model": enc, "loss": CPCLoss()})


def weights(module):
    return [p.detach().clone() for p in module.parameters()]


@pytest.mark.parametrize(
    "mode,bidirectional,aggregator",
    [("two_crop", False, "gru"), ("same", False, "lstm"), ("two_crop", True, "gru")],
)
def test_cpc_step_trains_encoder_and_aggregator(mode, bidirectional, aggregator):
    brain = cpc_brain(mode, bidirectional, aggregator)
    enc = brain.modules.embedding_model
    before = weights(enc)
    loss = brain.fit_batch(batch())
    assert torch.isfinite(loss)
    after = weights(enc)
    assert all(not torch.equal(a, b) for a, b in zip(before, after))
    assert 0.0 <= brain.epoch_metrics()["accuracy"] <= 1.0
    preds = brain.compute_forward(batch(), sb.Stage.TRAIN)
    assert len(preds) == (1 if mode == "two_crop" else 2)
    dirs = 2 if bidirectional else 1
    if mode == "two_crop":  # one context (last state) per direction
        assert preds[0][0].shape == (B, dirs, 3, C)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_cpc_utterance_embedding_is_aggregator_state(bidirectional):
    brain = cpc_brain(bidirectional=bidirectional)
    wavs = torch.randn(3, L)
    emb = brain.encode(wavs)
    assert emb.shape == (3, 6 * (2 if bidirectional else 1))
    enc = brain.modules.embedding_model
    with torch.no_grad():
        want = enc.head.embed(enc.encoder(Frames()(wavs)))
    assert torch.allclose(emb, want, atol=1e-6)


def test_cpc_rejects_pooled_encoder():
    enc = CPCEncoder(FrameEncoder(pooled=True), CPCHead(C, hidden=6, n_predict=2))
    with pytest.raises(ValueError, match="frame-level"):
        enc(torch.randn(2, 10, 40))


@pytest.mark.parametrize("objective", ["bce", "nce", "mine"])
def test_lim_step_and_metrics(objective):
    brain = make_brain(
        LIMBrain,
        {
            "embedding_model": FrameEncoder(pooled=True),
            "projector": nn.Linear(C, 5),
            "loss": LIMLoss(objective=objective),
        },
    )
    before = weights(brain.modules.embedding_model)
    loss = brain.fit_batch(batch())
    assert torch.isfinite(loss)
    assert not torch.equal(before[0], weights(brain.modules.embedding_model)[0])
    m = brain.epoch_metrics()
    assert {"pos_sim", "neg_sim"} <= set(m)


def test_lim_and_combiner_refuse_ssps():
    for cls, loss in (
        (LIMBrain, LIMLoss()),
        (CombinerBrain, CombinerLoss([(1.0, InfoNCELoss(), "encoder")])),
    ):
        with pytest.raises(ValueError, match="SSPS"):
            make_brain(
                cls,
                {
                    "embedding_model": FrameEncoder(pooled=True),
                    "loss": loss,
                    "ssps": SSPS(8, C, C),
                },
            )


def test_combiner_terms_on_y_and_z():
    loss = CombinerLoss(
        [
            (1.0, InfoNCELoss(), "encoder"),
            (0.5, VICRegLoss(), "projector"),
            (0.1, BarlowTwinsLoss(), "projector"),
        ]
    )
    brain = make_brain(
        CombinerBrain,
        {
            "embedding_model": FrameEncoder(pooled=True),
            "projector": nn.Linear(C, 5),
            "loss": loss,
        },
    )
    proj = weights(brain.modules.projector)
    out = brain.fit_batch(batch())
    assert torch.isfinite(out)
    assert not torch.equal(proj[0], weights(brain.modules.projector)[0])
    m = brain.epoch_metrics()
    for key in ("Y_loss", "Z_loss", "Y/infonce/accuracy", "Z/vicreg/loss"):
        assert key in m
    y1, y2, z1, z2 = brain.compute_forward(batch(), sb.Stage.TRAIN)
    assert y1.shape == (B, C) and z1.shape == (B, 5)


def test_combiner_without_projector_needs_only_y_terms():
    brain = make_brain(
        CombinerBrain,
        {
            "embedding_model": FrameEncoder(pooled=True),
            "loss": CombinerLoss([(1.0, InfoNCELoss(), "encoder")]),
        },
    )
    assert torch.isfinite(brain.fit_batch(batch()))
