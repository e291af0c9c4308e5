"""Unit tests of the contrastive-family Brains (MoCo, margins, multi-views, supervised).

Brains are built directly with tiny modules and fed fake batches; no corpus needed.
"""

import functools
import math
from types import SimpleNamespace

import pytest
import speechbrain as sb
import torch
from speechbrain.utils.epoch_loop import EpochCounter
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from toys import Frames, NoNorm, TinyEncoder  # noqa: E402  (tests/brains/toys.py)

from sslsv_sb.brains.moco import MoCoBrain, MoCoMarginsBrain
from sslsv_sb.brains.simclr_margins import SimCLRMarginsBrain
from sslsv_sb.brains.simclr_multiviews import SimCLRMultiViewsBrain
from sslsv_sb.brains.supervised import SupervisedBrain
from sslsv_sb.distributed import unwrap
from sslsv_sb.errors import SSLSVError
from sslsv_sb.losses.aam import AAMSoftmaxLoss
from sslsv_sb.losses.margins import MarginNTXentLoss
from sslsv_sb.losses.moco import MoCoLoss
from tests.gloo import free_port, gloo_group

B, L, DIM = 4, 400, 8


def make_batch(n_views=2, length=L, labels=None, **extra_groups):
    """Fake PaddedBatch: ``views`` (B, V, L) plus optional groups and labels."""
    groups = {"views": torch.randn(B, n_views, length)}
    for key, (count, n) in extra_groups.items():
        groups[key] = torch.randn(B, count, n)
    batch = SimpleNamespace(**{k: SimpleNamespace(data=v) for k, v in groups.items()})
    if labels is not None:
        batch.label = torch.as_tensor(labels)
    return batch


def make_brain(cls, modules, epochs=1, lr=0.1, **hparams):
    torch.manual_seed(0)
    base = {
        "compute_features": Frames(),
        "mean_var_norm": NoNorm(),
        "embedding_model": TinyEncoder(),
    }
    base.update(modules)
    hp = {"epoch_counter": EpochCounter(epochs), "seed": 0, **hparams}
    brain = cls(
        modules=base,
        opt_class=functools.partial(torch.optim.SGD, lr=lr),
        hparams=hp,
        run_opts={"device": "cpu", "noprogressbar": True},
    )
    return brain


def start(brain, epoch=1):
    """What ``Brain.fit`` does before the first batch."""
    brain.on_fit_start()
    brain.on_stage_start(sb.Stage.TRAIN, epoch)
    brain.modules.train()
    return brain


def params(module):
    return [p.detach().clone() for p in module.parameters()]


def optimised_ids(brain):
    return {id(p) for g in brain.optimizer.param_groups for p in g["params"]}


# ---------------------------------------------------------------------- MoCo
def moco_brain(cls=MoCoBrain, queue_size=6, margin=None, **hparams):
    torch.manual_seed(1)  # the student is drawn after manual_seed(0)
    modules = {
        "teacher_model": TinyEncoder(),  # different random init than the student
        "loss": MoCoLoss(
            dim=DIM,
            queue_size=queue_size,
            temperature=0.1,
            margin=margin,
            prevent_class_collisions=hparams.get("prevent_class_collisions", False),
        ),
    }
    hp = {
        "momentum_pairs": [["embedding_model", "teacher_model"]],
        "start_tau": 0.9,
        "tau_scheduler": False,
    }
    hp.update(hparams)
    return make_brain(cls, modules, **hp)


def test_moco_teacher_copied_frozen_and_ema():
    brain = moco_brain()
    student, teacher = brain.modules.embedding_model, brain.modules.teacher_model
    assert not all(torch.equal(a, b) for a, b in zip(params(student), params(teacher)))
    start(brain)
    # teacher starts equal to the student, frozen, outside the optimiser
    for a, b in zip(params(student), params(teacher)):
        assert torch.equal(a, b)
    assert not any(p.requires_grad for p in teacher.parameters())
    ids = optimised_ids(brain)
    assert not any(id(p) in ids for p in teacher.parameters())
    assert all(id(p) in ids for p in student.parameters())

    teacher_before = params(teacher)
    loss = brain.fit_batch(make_batch())
    assert math.isfinite(float(loss))
    student_after = params(student)
    assert not all(torch.equal(a, b) for a, b in zip(student_after, teacher_before)), (
        "the student should have moved"
    )
    # EMA with tau = 0.9: teacher = 0.9 teacher_before + 0.1 student_after
    for t_old, s_new, t_new in zip(teacher_before, student_after, params(teacher)):
        torch.testing.assert_close(t_new, 0.9 * t_old + 0.1 * s_new)
    assert brain.epoch_metrics()["tau"] == pytest.approx(0.9)


def test_moco_queue_pointer_advances_and_wraps():
    brain = start(moco_brain(queue_size=6))
    loss_fn = brain.modules.loss
    assert int(loss_fn.queue_ptr) == 0
    queue0 = loss_fn.queue.clone()
    brain.fit_batch(make_batch())
    assert int(loss_fn.queue_ptr) == B
    assert not torch.equal(loss_fn.queue[:, :B], queue0[:, :B])
    torch.testing.assert_close(loss_fn.queue[:, B:], queue0[:, B:])
    brain.fit_batch(make_batch())
    assert int(loss_fn.queue_ptr) == (2 * B) % 6


def test_moco_keys_use_teacher_without_grad():
    brain = start(moco_brain())
    q1, q2, k1, k2 = brain.compute_forward(make_batch(), sb.Stage.TRAIN)
    assert q1.shape == k2.shape == (B, DIM)
    assert q1.requires_grad and not k1.requires_grad and not k2.requires_grad


def test_moco_shuffle_bn_splits_emulate_devices(monkeypatch):
    """``shuffle_bn_splits: 2``: queries are BatchNorm-ed per consecutive chunk, keys
    per chunk of the shuffled batch (independent recomputation of both)."""
    import sslsv_sb.brains.moco as moco_mod

    perm = torch.tensor([0, 4, 1, 5, 2, 6, 3, 7])  # 2B = 8 rows, view-major
    monkeypatch.setattr(
        moco_mod, "batch_shuffle", lambda x: (x[perm], torch.argsort(perm))
    )
    brain = start(moco_brain(shuffle_bn_splits=2))
    batch = make_batch()
    q1, q2, k1, k2 = brain.compute_forward(batch, sb.Stage.TRAIN)
    x = brain.view_major(batch.views.data)  # (8, L), no augmentation module
    student, teacher = brain.modules.embedding_model, brain.modules.teacher_model
    with torch.no_grad():
        q_ref = torch.cat([brain.embed(x[:4]), brain.embed(x[4:])])
        mods = brain.teacher_modules()
        k_ref = torch.empty(8, DIM)
        for rows in (perm[:4], perm[4:]):
            k_ref[rows] = brain.embed(x[rows], modules=mods)
    torch.testing.assert_close(torch.cat([q1, q2]).detach(), q_ref)
    torch.testing.assert_close(torch.cat([k1, k2]), k_ref)
    # with one split the whole batch shares the statistics (differs here)
    with torch.no_grad():
        whole = brain.embed(x)
    assert not torch.allclose(whole, q_ref, atol=1e-4)
    assert student is not teacher
    with pytest.raises(SSLSVError, match="shuffle_bn_splits=8"):
        start(moco_brain(shuffle_bn_splits=8)).compute_forward(
            make_batch(), sb.Stage.TRAIN
        )


def test_moco_with_projector_pairs():
    from sslsv_sb.models.heads import SimCLRProjectionHead

    brain = moco_brain(
        momentum_pairs=[
            ["embedding_model", "teacher_model"],
            ["projector", "teacher_projector"],
        ]
    )
    brain.modules["projector"] = SimCLRProjectionHead(DIM, 16, DIM, n_hidden=1)
    brain.modules["teacher_projector"] = SimCLRProjectionHead(DIM, 16, DIM, n_hidden=1)
    start(brain)
    proj, t_proj = brain.modules.projector, brain.modules.teacher_projector
    for a, b in zip(params(proj), params(t_proj)):
        assert torch.equal(a, b)
    ids = optimised_ids(brain)
    assert all(id(p) in ids for p in proj.parameters())
    assert not any(id(p) in ids for p in t_proj.parameters())
    before = params(t_proj)
    brain.fit_batch(make_batch())
    assert not all(torch.equal(a, b) for a, b in zip(before, params(t_proj)))


def test_moco_class_collisions_use_batch_labels():
    brain = start(
        moco_brain(prevent_class_collisions=True, label_key="Speaker", queue_size=8)
    )
    brain.fit_batch(make_batch(labels=[0, 1, 0, 2]))
    assert brain.modules.loss.queue_labels[:B].tolist() == [0, 1, 0, 2]
    no_labels = start(moco_brain(prevent_class_collisions=True, label_key=None))
    with pytest.raises(ValueError, match="label_key"):
        no_labels.fit_batch(make_batch())


def test_moco_margins_gets_unnormalised_queries():
    brain = start(moco_brain(MoCoMarginsBrain, margin="magface"))
    seen = {}
    loss_fn = brain.modules.loss
    orig = loss_fn.forward

    def spy(q1, q2, k1, k2, labels=None):
        seen["norms"] = q1.norm(dim=-1)
        return orig(q1, q2, k1, k2, labels)

    loss_fn.forward = spy
    brain.fit_batch(make_batch())
    assert not torch.allclose(seen["norms"], torch.ones(B), atol=1e-3)


# ---------------------------------------------------------------------- margins
@pytest.mark.parametrize("cls", [SimCLRMarginsBrain, MoCoMarginsBrain])
def test_margin_schedule_updates_per_epoch(cls):
    epochs = 4
    if cls is SimCLRMarginsBrain:
        brain = make_brain(
            cls,
            {"loss": MarginNTXentLoss("cosface", margin=0.2)},
            epochs=epochs,
            margin_scheduler=True,
        )
    else:
        brain = moco_brain(
            cls,
            margin={"margin_type": "cosface", "margin": 0.2},
            epoch_counter=EpochCounter(epochs),
            margin_scheduler=True,
        )
    brain.on_fit_start()
    margin_fn = brain.modules.loss.margin_fn
    factors = []
    for epoch in range(1, epochs + 1):  # SpeechBrain epochs start at 1
        brain.on_stage_start(sb.Stage.TRAIN, epoch)
        factors.append(float(margin_fn.margin_factor))
        assert brain.epoch_metrics()["margin_factor"] == pytest.approx(factors[-1])
    # cosine ramp over the first E // 2 = 2 epochs (schedule epochs 0, 1), then 1
    assert factors == pytest.approx([0.0, 0.5, 1.0, 1.0])
    assert float(margin_fn.effective_margin(10)) == pytest.approx(0.2)


def test_margin_schedule_off_keeps_full_margin():
    brain = make_brain(
        SimCLRMarginsBrain,
        {"loss": MarginNTXentLoss("cosface", margin=0.2)},
        epochs=4,
        margin_scheduler=False,
    )
    brain.on_fit_start()
    brain.on_stage_start(sb.Stage.TRAIN, 1)
    assert float(brain.modules.loss.margin_fn.margin_factor) == 1.0


def test_simclr_margins_step():
    brain = start(make_brain(SimCLRMarginsBrain, {"loss": MarginNTXentLoss("arcface")}))
    loss = brain.fit_batch(make_batch())
    assert math.isfinite(float(loss))
    metrics = brain.epoch_metrics()
    assert "accuracy" in metrics and "loss" not in metrics


# ---------------------------------------------------------------------- multi-views
def test_multiviews_six_crops_with_their_lengths():
    global_len, local_len = 400, 200
    brain = start(make_brain(SimCLRMultiViewsBrain, {"loss": MarginNTXentLoss()}))
    shapes = []
    orig_embed = brain.embed

    def spy(wavs, lengths=None, modules=None):
        shapes.append(tuple(wavs.shape))
        return orig_embed(wavs, lengths, modules)

    brain.embed = spy
    batch = make_batch(2, global_len, local_views=(4, local_len))
    z_local, z_global = brain.compute_forward(batch, sb.Stage.TRAIN)
    # one pass per crop length, view-major: 2 global + 4 local crops per sample
    assert shapes == [(2 * B, global_len), (4 * B, local_len)]
    assert z_local.shape == (B, 4, DIM) and z_global.shape == (B, 2, DIM)
    loss = brain.compute_objectives((z_local, z_global), batch, sb.Stage.TRAIN)
    assert math.isfinite(float(loss.detach()))


def test_multiviews_global_row_order_matches_samples():
    brain = start(make_brain(SimCLRMultiViewsBrain, {"loss": MarginNTXentLoss()}))
    brain.modules.eval()
    batch = make_batch(2, 400, local_views=(4, 200))
    with torch.no_grad():
        _, z_global = brain.compute_forward(batch, sb.Stage.VALID)
        direct = brain.embed(batch.views.data[:, 1])  # second global view
    torch.testing.assert_close(z_global[:, 1], direct)


# ---------------------------------------------------------------------- supervised
def supervised_brain(freeze):
    return make_brain(
        SupervisedBrain,
        {"loss": AAMSoftmaxLoss(in_dim=DIM, n_classes=3)},
        label_key="Speaker",
        freeze_encoder=freeze,
    )


def test_supervised_frozen_encoder_does_not_change():
    brain = start(supervised_brain(freeze=True))
    enc = brain.modules.embedding_model
    state = {k: v.clone() for k, v in enc.state_dict().items()}  # incl. BN stats
    clf = params(brain.modules.loss)
    ids = optimised_ids(brain)
    assert not any(id(p) in ids for p in enc.parameters())
    for _ in range(2):
        brain.fit_batch(make_batch(1, labels=[0, 1, 2, 0]))
    assert not enc.training
    for k, v in enc.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert not all(torch.equal(a, b) for a, b in zip(clf, params(brain.modules.loss)))


def test_supervised_unfrozen_encoder_trains():
    brain = start(supervised_brain(freeze=False))
    enc = brain.modules.embedding_model
    before = params(enc)
    brain.fit_batch(make_batch(1, labels=[0, 1, 2, 0]))
    assert enc.training
    assert not all(torch.equal(a, b) for a, b in zip(before, params(enc)))
    assert "accuracy" in brain.epoch_metrics()


def test_supervised_loads_encoder_checkpoint(tmp_path):
    ref = TinyEncoder()
    path = tmp_path / "embedding_model.ckpt"
    torch.save(ref.state_dict(), path)
    brain = make_brain(
        SupervisedBrain,
        {"loss": AAMSoftmaxLoss(in_dim=DIM, n_classes=3)},
        label_key="Speaker",
        freeze_encoder=True,
        encoder_checkpoint=str(path),
    )
    brain.on_fit_start()
    for a, b in zip(params(ref), params(brain.modules.embedding_model)):
        assert torch.equal(a, b)


def test_supervised_needs_one_crop():
    brain = start(supervised_brain(freeze=False))
    with pytest.raises(SSLSVError, match="1 crop per sample in view_groups.views"):
        brain.compute_forward(make_batch(2, labels=[0, 1, 2, 0]), sb.Stage.TRAIN)


# ---------------------------------------------------------------------- DDP (gloo)
class NoBNEncoder(nn.Module):
    """BatchNorm-free toy encoder (per-rank BN statistics differ from 1 process)."""

    def __init__(self, dim=DIM):
        super().__init__()
        self.linear = nn.Linear(40, dim)
        self.out = nn.Linear(dim, dim)
        self.out_dim = dim

    def forward(self, feats, lengths=None):
        return self.out(torch.tanh(self.linear(feats)).mean(dim=1))


DDP_STEPS, DDP_BATCH = 3, 8


def _ddp_brain(method):
    from sslsv_sb.brains.simclr import SimCLRBrain
    from sslsv_sb.losses.ntxent import NTXentLoss

    torch.manual_seed(0)  # same initial weights and queue in every process
    modules = {
        "compute_features": Frames(),
        "mean_var_norm": NoNorm(),
        "embedding_model": NoBNEncoder(),
    }
    hp = {"epoch_counter": EpochCounter(1), "seed": 0}
    if method == "simclr":
        cls = SimCLRBrain
        modules["loss"] = NTXentLoss(temperature=0.1)
    else:
        cls = MoCoBrain
        modules["teacher_model"] = NoBNEncoder()
        modules["loss"] = MoCoLoss(dim=DIM, queue_size=12, temperature=0.1)
        hp.update(
            momentum_pairs=[["embedding_model", "teacher_model"]],
            start_tau=0.9,
            tau_scheduler=False,
        )
    return cls(
        modules=modules,
        opt_class=functools.partial(torch.optim.SGD, lr=0.1),
        hparams=hp,
        run_opts={"device": "cpu", "noprogressbar": True},
    )


def _ddp_run(method, rank, world):
    """A few steps on the same global batches; rank r takes its contiguous slice."""
    brain = start(_ddp_brain(method))
    gen = torch.Generator().manual_seed(1)
    n = DDP_BATCH // world
    for _ in range(DDP_STEPS):
        views = torch.randn(DDP_BATCH, 2, L, generator=gen)
        local = views[rank * n : (rank + 1) * n]
        batch = SimpleNamespace(views=SimpleNamespace(data=local))
        brain.fit_batch(batch)
    if world > 1:  # the student is DDP-wrapped
        assert isinstance(brain.modules.embedding_model, DDP)
    names = ["embedding_model"] + (
        ["teacher_model", "loss"] if method == "moco" else []
    )
    state = {}
    for name in names:
        for k, v in unwrap(brain.modules[name]).state_dict().items():
            state[f"{name}.{k}"] = v
    return {k: v.detach().clone() for k, v in state.items()}


def _ddp_worker(rank, world, port, method, out_dir):
    import os

    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        OMP_NUM_THREADS="1",
    )
    torch.set_num_threads(1)
    with gloo_group(rank, world, port):
        state = _ddp_run(method, rank, world)
        torch.save(state, os.path.join(out_dir, f"{method}_rank{rank}.pt"))


@pytest.mark.slow
@pytest.mark.parametrize("method", ["simclr", "moco"])
def test_two_gloo_ranks_match_one_process(tmp_path, method):
    import torch.multiprocessing as mp

    mp.spawn(
        _ddp_worker, args=(2, free_port(), method, str(tmp_path)), nprocs=2, join=True
    )
    ref = _ddp_run(method, rank=0, world=1)
    r0 = torch.load(tmp_path / f"{method}_rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / f"{method}_rank1.pt", weights_only=True)
    assert r0.keys() == r1.keys() == ref.keys()
    initial = _ddp_brain(method).modules.embedding_model.state_dict()
    assert not torch.allclose(ref["embedding_model.out.weight"], initial["out.weight"])
    for k in ref:
        torch.testing.assert_close(r0[k], r1[k], atol=0, rtol=0, msg=k)
        torch.testing.assert_close(r0[k], ref[k], atol=1e-5, rtol=1e-4, msg=k)
