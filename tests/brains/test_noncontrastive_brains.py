"""Unit tests of the non-contrastive / clustering Brains (tiny modules, no corpus).

DINO (teacher init, freezing, EMA, frozen last layer, per-parameter clipping,
teacher inference, multi-crop lengths, warm-up + cosine LR), SwAV (frozen prototypes
in epoch 0), DeepCluster v2 (bank filled before the first step, finite loss) and
SimSiam (fixed predictor LR).
"""

import functools

import pytest
import speechbrain as sb
import torch
from speechbrain.dataio.dataset import DynamicItemDataset
from speechbrain.nnet.schedulers import StepScheduler
from speechbrain.utils.epoch_loop import EpochCounter
from torch import nn

from sslsv_sb.brains.base import clip_gradients_per_parameter
from sslsv_sb.brains.deepcluster import DeepClusterBrain, shard_indices
from sslsv_sb.brains.dino import DINOBrain
from sslsv_sb.brains.simsiam import SimSiamBrain
from sslsv_sb.brains.swav import SwAVBrain
from sslsv_sb.losses.deepcluster import DeepClusterLoss
from sslsv_sb.losses.dino import DINOLoss
from sslsv_sb.losses.simsiam import SimSiamLoss
from sslsv_sb.losses.swav import SwAVLoss
from sslsv_sb.models import heads as H
from sslsv_sb.schedules import cosine_warmup_lr

FRAME = 16  # samples per "feature frame" of the toy front-end
B = 4  # batch size


class Frames(nn.Module):
    """Toy front-end: ``(N, L) -> (N, L // 16, 16)``."""

    def forward(self, x):
        n, length = x.shape
        return x[:, : length // FRAME * FRAME].reshape(n, -1, FRAME)


class Norm(nn.Module):
    """Toy ``mean_var_norm``: per-utterance mean removal."""

    def forward(self, feats, lengths):
        return feats - feats.mean(dim=1, keepdim=True)


class Encoder(nn.Module):
    """Toy encoder ``(N, T, 16) -> (N, D)`` recording the feature shapes it sees."""

    def __init__(self, dim=8):
        super().__init__()
        self.lin = nn.Linear(FRAME, dim)
        self.bn = nn.BatchNorm1d(dim)
        self.out_dim = dim
        self.seen = []

    def forward(self, feats, lengths=None):
        self.seen.append(tuple(feats.shape))
        return self.bn(self.lin(torch.log1p(feats.abs()).mean(dim=1)))


def views_dataset(n=8, groups=(("views", 2, 256),), seed=0):
    """In-memory dataset with ``index`` and random view groups."""
    g = torch.Generator().manual_seed(seed)
    data = {}
    for i in range(n):
        item = {"index": i}
        for key, count, length in groups:
            item[key] = torch.randn(count, length, generator=g)
        data[f"u{i}"] = item
    ds = DynamicItemDataset(data)
    ds.set_output_keys(["id", "index", *[k for k, _, _ in groups]])
    return ds


def make_brain(cls, modules, hparams, opt_class):
    base = {"epoch_counter": EpochCounter(3), "seed": 0}
    base.update(hparams)
    brain = cls(
        modules=modules,
        opt_class=opt_class,
        hparams=base,
        run_opts={"device": "cpu", "max_grad_norm": float("inf")},
        checkpointer=None,
    )
    return brain


def first_batch(brain, dataset):
    loader = brain.make_dataloader(
        dataset, sb.Stage.TRAIN, batch_size=B, drop_last=True, shuffle=False
    )
    return next(iter(loader))


def train_step(brain, batch, epoch):
    """One training step at 1-based SpeechBrain ``epoch``."""
    brain.hparams.epoch_counter.current = epoch
    brain.modules.train()
    brain.step = 1
    return brain.fit_batch(batch)


def state(module):
    return {k: v.detach().clone() for k, v in module.named_parameters()}


# ------------------------------------------------------------------------ DINO
K = 32
GLOBAL_LEN, LOCAL_LEN = 320, 160


def dino_brain(**hparams):
    torch.manual_seed(0)
    modules = {
        "compute_features": Frames(),
        "mean_var_norm": Norm(),
        "embedding_model": Encoder(),
        "head": H.DINOHead(8, 16, 8, K),
        "teacher_model": Encoder(),
        "teacher_head": H.DINOHead(8, 16, 8, K),
        "loss": DINOLoss(K, n_global=2),
    }
    hp = {
        "momentum_pairs": [
            ["embedding_model", "teacher_model"],
            ["head", "teacher_head"],
        ],
        "start_tau": 0.9,
        "clip_grad": 3.0,
        "freeze_last_layer": 1,
        "no_weight_decay_bias_norm": True,
        "lr": 0.1,
    }
    hp.update(hparams)
    opt = functools.partial(torch.optim.SGD, lr=0.1, momentum=0.9, weight_decay=1e-4)
    brain = make_brain(DINOBrain, modules, hp, opt)
    ds = views_dataset(groups=(("views", 2, GLOBAL_LEN), ("local_views", 4, LOCAL_LEN)))
    batch = first_batch(brain, ds)
    brain.on_fit_start()
    return brain, batch


def optimised_params(brain):
    return {id(p) for g in brain.optimizer.param_groups for p in g["params"]}


def test_dino_teacher_starts_equal_frozen_and_ema():
    brain, batch = dino_brain()
    m = brain.modules
    for student, teacher in (
        (m.embedding_model, m.teacher_model),
        (m.head, m.teacher_head),
    ):
        for (name, s), t in zip(student.named_parameters(), teacher.parameters()):
            assert torch.equal(s, t), name
            assert not t.requires_grad
        assert not optimised_params(brain) & {id(p) for p in teacher.parameters()}
    # Biases / norms without weight decay, weights with.
    wds = {g["weight_decay"] for g in brain.optimizer.param_groups}
    assert wds == {0.0, 1e-4}
    s0, t0 = state(m.head), state(m.teacher_head)
    train_step(brain, batch, epoch=2)  # after the frozen-last-layer epoch
    tau = brain._metric_sums["tau"]
    assert 0.9 <= tau < 1.0
    s1, t1 = state(m.head), state(m.teacher_head)
    moved = False
    for name in s0:
        expected = tau * t0[name] + (1 - tau) * s1[name]
        torch.testing.assert_close(t1[name], expected)
        moved |= not torch.equal(t1[name], t0[name])
    assert moved


def test_dino_last_layer_frozen_in_first_epoch_only():
    brain, batch = dino_brain()
    v = brain.modules.head.last_layer.parametrizations.weight.original1
    mlp = brain.modules.head.mlp.layers[0].weight
    v0, mlp0 = v.detach().clone(), mlp.detach().clone()
    train_step(brain, batch, epoch=1)  # epoch index 0: frozen
    assert torch.equal(v, v0)
    assert not torch.equal(mlp, mlp0)
    train_step(brain, batch, epoch=2)  # epoch index 1: trained
    assert not torch.equal(v, v0)


def test_clip_gradients_per_parameter():
    a = nn.Parameter(torch.zeros(3))
    b = nn.Parameter(torch.zeros(2))
    c = nn.Parameter(torch.zeros(1))  # no gradient: skipped
    a.grad = torch.tensor([30.0, 40.0, 0.0])  # norm 50 -> 3
    b.grad = torch.tensor([0.3, 0.4])  # norm 0.5: unchanged
    norms = clip_gradients_per_parameter([a, b, c], 3.0)
    assert [round(float(n), 4) for n in norms] == [50.0, 0.5]
    torch.testing.assert_close(a.grad.norm(), torch.tensor(3.0), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(b.grad, torch.tensor([0.3, 0.4]))
    assert c.grad is None


def test_dino_clips_each_parameter_in_the_brain():
    brain, batch = dino_brain(clip_grad=1e-3)
    brain.hparams.epoch_counter.current = 2
    brain.modules.train()
    out = brain.compute_forward(batch, sb.Stage.TRAIN)
    brain.compute_objectives(out, batch, sb.Stage.TRAIN).backward()
    params = [p for g in brain.optimizer.param_groups for p in g["params"]]
    before = [p.grad.norm() for p in params if p.grad is not None]
    assert max(before) > 1e-3  # something to clip
    brain.on_before_optimizer_step()
    after = [p.grad.norm() for p in params if p.grad is not None]
    assert len(after) == len(before)
    for b_, a_ in zip(before, after):  # each clipped on its own
        assert float(a_) <= 1e-3 * (1 + 1e-4)
        if float(b_) <= 1e-3:
            assert torch.isclose(a_, b_)


def test_dino_multicrop_lengths_and_teacher_inference():
    brain, batch = dino_brain()
    enc = brain.modules.embedding_model
    enc.seen.clear()
    brain.modules.teacher_model.seen.clear()
    train_step(brain, batch, epoch=2)
    # One student pass per crop length (no padding, no cut), teacher on globals.
    assert enc.seen == [
        (2 * B, GLOBAL_LEN // FRAME, FRAME),
        (4 * B, LOCAL_LEN // FRAME, FRAME),
    ]
    assert brain.modules.teacher_model.seen == [(2 * B, GLOBAL_LEN // FRAME, FRAME)]
    # Inference: teacher encoder, in eval mode.
    assert brain.inference_modules()[2] is brain.modules.teacher_model
    wavs = torch.randn(3, GLOBAL_LEN)
    emb = brain.encode(wavs)
    teacher = brain.modules.teacher_model.eval()
    student = brain.modules.embedding_model.eval()
    feats = Norm()(Frames()(wavs), None)
    torch.testing.assert_close(emb, teacher(feats))
    assert not torch.allclose(emb, student(feats))
    # Validation scores the teacher (selects the model) and the student (logged).
    encoders = brain.validation_encoders()
    assert list(encoders) == ["valid_eer", "valid_eer_student"]
    torch.testing.assert_close(encoders["valid_eer"](wavs), teacher(feats))
    torch.testing.assert_close(encoders["valid_eer_student"](wavs), student(feats))


def test_dino_warmup_cosine_schedule():
    brain, batch = dino_brain(warmup_cosine=True, warmup_epochs=1, min_lr=0.0)
    assert brain.hparams.lr_annealing is None
    total = brain.total_optimizer_steps()  # 3 epochs x 2 steps
    assert total == 6
    brain.optimizer_step = 1
    brain.on_fit_batch_start(batch, True)
    expected = cosine_warmup_lr(1, total, 0.1, warmup_steps=2)
    assert expected == pytest.approx(0.05)
    assert [g["lr"] for g in brain.optimizer.param_groups] == [pytest.approx(0.05)] * 2


# ------------------------------------------------------------------------ SwAV
def test_swav_prototypes_frozen_in_epoch_0_only():
    torch.manual_seed(0)
    modules = {
        "compute_features": Frames(),
        "mean_var_norm": Norm(),
        "embedding_model": Encoder(),
        "projector": H.SwAVProjectionHead(8, 16, 6),
        "prototypes": H.SwAVPrototypes(6, 5),
        "loss": SwAVLoss(5, queue_size=0, embed_dim=6),
    }
    brain = make_brain(
        SwAVBrain,
        modules,
        {"freeze_prototypes_epochs": 1},
        functools.partial(torch.optim.SGD, lr=0.5),
    )
    batch = first_batch(brain, views_dataset())
    brain.on_fit_start()
    protos = brain.modules.prototypes.layer.parametrizations.weight.original1
    proj = brain.modules.projector.layers[0].weight
    p0, j0 = protos.detach().clone(), proj.detach().clone()
    loss = train_step(brain, batch, epoch=1)
    assert torch.isfinite(loss)
    assert torch.equal(protos, p0) and not torch.equal(proj, j0)
    train_step(brain, batch, epoch=2)
    assert not torch.equal(protos, p0)


# ------------------------------------------------------------------------ DeepCluster
class ProbeDeepCluster(DeepClusterBrain):
    """Records the bank state and the loss of every training step."""

    def compute_objectives(self, predictions, batch, stage):
        full = self.modules.memory.is_full()
        labelled = bool((self.modules.memory.assignments >= 0).all())
        loss = super().compute_objectives(predictions, batch, stage)
        self.probe.append((full, labelled, float(loss.detach())))
        return loss


def test_shard_indices_cover_everything_with_equal_lengths():
    for n, bs, world in [(10, 4, 1), (10, 4, 3), (7, 3, 2), (5, 2, 2), (9, 4, 2)]:
        shards = [shard_indices(n, bs, r, world) for r in range(world)]
        assert len({len(s) for s in shards}) == 1
        assert set().union(*shards) == set(range(n))
        assert all(len(s) % bs != 1 for s in shards)


def test_deepcluster_bank_full_and_loss_finite_at_first_step():
    torch.manual_seed(0)
    modules = {
        "compute_features": Frames(),
        "mean_var_norm": Norm(),
        "embedding_model": Encoder(),
        "projector": H.DeepClusterProjectionHead(8, 16, 6),
        "prototypes": H.DeepClusterPrototypes(6, [3, 4]),
        "loss": DeepClusterLoss(),
    }
    brain = make_brain(
        ProbeDeepCluster,
        modules,
        {"view_groups": {"views": [2, 256]}, "kmeans_iters": 3},
        functools.partial(torch.optim.Adam, lr=1e-3),
    )
    brain.probe = []
    brain.hparams.epoch_counter = EpochCounter(1)
    # 10 utterances, batch 4, drop_last: the training loop never sees 2 of them,
    # the fill pass does.
    brain.fit(
        brain.hparams.epoch_counter,
        views_dataset(n=10),
        train_loader_kwargs={"batch_size": B, "drop_last": True, "shuffle": False},
        progressbar=False,
    )
    assert len(brain.probe) == 2
    full, labelled, loss = brain.probe[0]
    assert full and labelled
    assert torch.isfinite(torch.tensor(loss)) and loss > 0
    memory = brain.modules.memory
    assert memory.bank.shape == (2, 10, 6)
    assert torch.allclose(memory.bank.norm(dim=-1), torch.ones(2, 10), atol=1e-5)
    for w in brain.modules.prototypes.weights():  # centroids on the unit sphere
        assert torch.allclose(w.norm(dim=1), torch.ones(w.shape[0]), atol=1e-5)


# ------------------------------------------------------------------------ SimSiam
def test_simsiam_predictor_lr_stays_fixed():
    torch.manual_seed(0)
    modules = {
        "compute_features": Frames(),
        "mean_var_norm": Norm(),
        "embedding_model": Encoder(),
        "projector": H.SimSiamProjectionHead(8, 16, 6),
        "predictor": H.SimSiamPredictionHead(6, 4),
        "loss": SimSiamLoss(),
    }
    brain = make_brain(
        SimSiamBrain,
        modules,
        {
            "lr_annealing": StepScheduler(
                initial_value=0.1, decay_factor=0.5, decay_drop=1
            )
        },
        functools.partial(torch.optim.Adam, lr=0.1),
    )
    batch = first_batch(brain, views_dataset())
    brain.on_fit_start()
    groups = brain.optimizer.param_groups
    pred_ids = {id(p) for p in brain.modules.predictor.parameters()}
    fixed = [g for g in groups if g.get("fixed_lr")]
    assert len(fixed) == 1 and {id(p) for p in fixed[0]["params"]} == pred_ids
    others = [g for g in groups if not g.get("fixed_lr")]
    assert not {id(p) for g in others for p in g["params"]} & pred_ids
    # Epoch-level annealing (all groups in SpeechBrain) ...
    brain.on_stage_start(sb.Stage.TRAIN, 1)
    brain.on_stage_end(sb.Stage.TRAIN, 1.0, epoch=1)
    assert all(g["lr"] < 0.1 for g in others)
    assert fixed[0]["lr"] == 0.1
    # ... and a per-step schedule.
    brain.hparams.lr_schedule = lambda step, total: 0.01
    loss = train_step(brain, batch, epoch=2)
    assert torch.isfinite(loss)
    assert all(g["lr"] == 0.01 for g in others) and fixed[0]["lr"] == 0.1
    # the encoder output's effective rank is monitored (B = 4 rows: at most 3)
    erank = brain._metric_sums["emb_erank"] / brain._metric_count_per["emb_erank"]
    assert 1.0 <= erank <= B - 1 + 1e-4
