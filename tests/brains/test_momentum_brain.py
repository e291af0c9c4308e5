"""MomentumBrain: teacher BatchNorm synchronised under DDP, honouring
``sync_batchnorm`` (BYOL arXiv 2006.07733, DINO arXiv 2104.14294), never for
MoCo's shuffle-BN key encoder (arXiv 1911.05722)."""

import functools
from types import SimpleNamespace

import pytest
import torch
from speechbrain.utils.epoch_loop import EpochCounter
from toys import Frames, NoNorm, TinyEncoder  # noqa: E402  (tests/brains/toys.py)

from sslsv_sb.brains.byol import BYOLBrain
from sslsv_sb.brains.moco import MoCoBrain
from sslsv_sb.distributed import CPUSyncBatchNorm, unwrap
from sslsv_sb.losses.byol import BYOLLoss
from sslsv_sb.losses.moco import MoCoLoss
from sslsv_sb.models.heads import BYOLPredictionHead, BYOLProjectionHead
from tests.gloo import free_port, gloo_group

DIM, L = 8, 400
PAIRS = [["embedding_model", "teacher_model"], ["projector", "teacher_projector"]]


def byol_brain(**hparams):
    torch.manual_seed(0)  # same initial weights in every process
    modules = {
        "compute_features": Frames(),
        "mean_var_norm": NoNorm(),
        "embedding_model": TinyEncoder(DIM),
        "projector": BYOLProjectionHead(DIM, 12, 6),
        "predictor": BYOLPredictionHead(6, 12),
        "teacher_model": TinyEncoder(DIM),
        "teacher_projector": BYOLProjectionHead(DIM, 12, 6),
        "loss": BYOLLoss(),
    }
    hp = {
        "epoch_counter": EpochCounter(1),
        "seed": 0,
        "momentum_pairs": PAIRS,
        "start_tau": 0.9,
        "tau_scheduler": False,
        **hparams,
    }
    return BYOLBrain(
        modules=modules,
        opt_class=functools.partial(torch.optim.SGD, lr=0.1),
        hparams=hp,
        run_opts={"device": "cpu", "noprogressbar": True},
    )


def moco_brain(**hparams):
    torch.manual_seed(0)
    modules = {
        "compute_features": Frames(),
        "mean_var_norm": NoNorm(),
        "embedding_model": TinyEncoder(DIM),
        "teacher_model": TinyEncoder(DIM),
        "loss": MoCoLoss(dim=DIM, queue_size=8),
    }
    hp = {
        "epoch_counter": EpochCounter(1),
        "seed": 0,
        "momentum_pairs": [["embedding_model", "teacher_model"]],
        **hparams,
    }
    return MoCoBrain(
        modules=modules,
        opt_class=functools.partial(torch.optim.SGD, lr=0.1),
        hparams=hp,
        run_opts={"device": "cpu", "noprogressbar": True},
    )


def teacher_bns(brain, keys):
    return [
        m
        for key in keys
        for m in brain.modules[key].modules()
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
    ]


@pytest.mark.parametrize(
    "build, hparams, launched, synced",
    [
        (byol_brain, {}, True, True),  # sync_batchnorm defaults to True
        (byol_brain, {"sync_batchnorm": False}, True, False),
        (byol_brain, {}, False, False),  # one process: nothing to synchronise
        (moco_brain, {}, True, False),  # shuffle-BN keeps per-rank key statistics
    ],
)
def test_teacher_batchnorm_sync_honours_sync_batchnorm(
    build, hparams, launched, synced
):
    brain = build(**hparams)
    keys = [t for _, t in brain.hparams.momentum_pairs]
    teachers = [brain.modules[k] for k in keys]
    stats = [bn.running_mean for bn in teacher_bns(brain, keys)]
    names = [sorted(t.state_dict()) for t in teachers]
    brain.distributed_launch = launched  # only the flag: no process group needed
    brain.sync_teacher_batchnorm()
    bns = teacher_bns(brain, keys)
    assert len(bns) == len(stats) > 0
    assert all(isinstance(bn, CPUSyncBatchNorm) == synced for bn in bns)
    # in place: same teacher objects (checkpointer), keys and statistics tensors
    assert [brain.modules[k] for k in keys] == teachers
    assert [sorted(t.state_dict()) for t in teachers] == names
    assert all(bn.running_mean is s for bn, s in zip(bns, stats))
    if synced:
        assert not any(p.requires_grad for t in teachers for p in t.parameters())


# ---------------------------------------------------------------------- DDP (gloo)
STEPS, BATCH = 2, 8


def _run(rank, world, sync):
    """BYOL steps on the same global batches; rank r takes its contiguous slice."""
    brain = byol_brain(sync_batchnorm=sync)
    brain.on_fit_start()
    brain.modules.train()
    gen = torch.Generator().manual_seed(1)
    n = BATCH // world
    for step in range(1, STEPS + 1):
        views = torch.randn(BATCH, 2, L, generator=gen)
        brain.step = step
        brain.fit_batch(
            SimpleNamespace(views=SimpleNamespace(data=views[rank * n :][:n]))
        )
    return {
        f"{key}.{name}": value.detach().clone()
        for key in ("teacher_model", "teacher_projector")
        for name, value in unwrap(brain.modules[key]).state_dict().items()
        if "running_" in name
    }


def _worker(rank, world, port, out_dir):
    import os

    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), OMP_NUM_THREADS="1"
    )
    torch.set_num_threads(1)
    with gloo_group(rank, world, port):
        for sync in (True, False):
            torch.save(
                _run(rank, world, sync), os.path.join(out_dir, f"{sync}{rank}.pt")
            )


@pytest.mark.slow
def test_teacher_running_stats_are_global_under_ddp(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    load = functools.partial(torch.load, weights_only=True)
    one = _run(0, 1, True)  # one process on the global batch
    r0, r1 = (load(tmp_path / f"True{r}.pt") for r in (0, 1))
    assert r0.keys() == one.keys() and len(one) == 6  # 3 BN layers x mean / var
    for k in one:  # synchronised: both ranks hold the global-batch statistics
        torch.testing.assert_close(r0[k], r1[k], atol=0, rtol=0, msg=k)
        torch.testing.assert_close(r0[k], one[k], atol=1e-5, rtol=1e-4, msg=k)
    p0, p1 = (load(tmp_path / f"False{r}.pt") for r in (0, 1))
    key = "teacher_model.bn.running_mean"  # per-rank statistics of per-rank data
    assert not torch.allclose(p0[key], p1[key])
