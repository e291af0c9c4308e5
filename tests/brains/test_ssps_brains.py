"""SSPS wired into the Brains (arXiv 2501.17772, 2505.14561).

Brains are built directly with tiny modules and fed fake batches (``views``,
``ref_view``, ``index``); one recipe-level test runs the SSPS yaml on the tiny corpus
through the SSPS start and resumes it mid-SSPS.
"""

import functools
import glob
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import speechbrain as sb
import torch
import torch.nn.functional as F
from speechbrain.utils.checkpoints import Checkpointer
from speechbrain.utils.epoch_loop import EpochCounter
from torch import nn
from toys import Frames, NoNorm, TinyEncoder  # noqa: E402  (tests/brains/toys.py)

from sslsv_sb.brains.barlow_twins import BarlowTwinsBrain
from sslsv_sb.brains.dino import DINOBrain
from sslsv_sb.brains.moco import MoCoBrain
from sslsv_sb.brains.simclr import SimCLRBrain
from sslsv_sb.brains.simclr_margins import SimCLRMarginsBrain
from sslsv_sb.brains.ssps import init_from_run
from sslsv_sb.brains.swav import SwAVBrain
from sslsv_sb.brains.vicreg import VICRegBrain
from sslsv_sb.losses.barlow_twins import BarlowTwinsLoss
from sslsv_sb.losses.dino import DINOLoss
from sslsv_sb.losses.margins import MarginNTXentLoss
from sslsv_sb.losses.moco import MoCoLoss
from sslsv_sb.losses.ntxent import NTXentLoss
from sslsv_sb.losses.swav import SwAVLoss
from sslsv_sb.losses.vicreg import VICRegLoss
from sslsv_sb.models.heads import SwAVPrototypes
from sslsv_sb.ssps import SSPS

B, L, DIM, R = 4, 400, 8, 12


def make_ssps(pos_dim=DIM, n_pos=1, sampling="kmeans-repr", start=1, **kw):
    args = {
        "sampling": sampling,
        "start_epoch": start,
        "pos_queue_size": 16,
        "kmeans_clusters": 3,
        "kmeans_iters": 5,
    }
    args.update(kw)
    return SSPS(R, DIM, pos_dim, n_positives=n_pos, **args)


def make_brain(cls, modules, epochs=3, checkpointer=None, **hparams):
    torch.manual_seed(0)
    base = {
        "compute_features": Frames(),
        "mean_var_norm": NoNorm(),
        "embedding_model": TinyEncoder(),
    }
    base.update(modules)
    hp = {"epoch_counter": EpochCounter(epochs), "seed": 0, **hparams}
    return cls(
        modules=base,
        opt_class=functools.partial(torch.optim.SGD, lr=0.01),
        hparams=hp,
        run_opts={"device": "cpu", "noprogressbar": True},
        checkpointer=checkpointer,
    )


def make_batch(indices, n_views=2, local=None):
    g = torch.Generator().manual_seed(int(indices[0]))
    groups = {
        "views": torch.randn(len(indices), n_views, L, generator=g),
        "ref_view": torch.randn(len(indices), 1, 2 * L, generator=g),
    }
    if local:
        groups["local_views"] = torch.randn(len(indices), *local, generator=g)
    batch = SimpleNamespace(**{k: SimpleNamespace(data=v) for k, v in groups.items()})
    batch.index = torch.as_tensor(indices)
    return batch


def run_epoch(brain, epoch):
    """One TRAIN epoch over the R dataset indices (batches of B)."""
    brain.on_stage_start(sb.Stage.TRAIN, epoch)
    brain.modules.train()
    losses = []
    for start in range(0, R, B):
        batch = make_batch(list(range(start, start + B)))
        losses.append(float(brain.fit_batch(batch)))
    return losses


# ------------------------------------------------------------------ brains
def simclr(ssps=None, ckpt_dir=None, **kw):
    mods = {"loss": NTXentLoss(temperature=0.1)}
    if ssps is not None:
        mods["ssps"] = ssps
    if ckpt_dir is None:
        return make_brain(SimCLRBrain, mods, **kw)
    torch.manual_seed(0)
    mods["embedding_model"] = TinyEncoder()
    counter = EpochCounter(3)
    rec = {"embedding_model": mods["embedding_model"], "counter": counter}
    if ssps is not None:
        rec["ssps"] = ssps  # recoverables as the yaml lists them
    ckpt = Checkpointer(ckpt_dir, rec)
    return make_brain(SimCLRBrain, mods, checkpointer=ckpt, epoch_counter=counter, **kw)


def test_inert_without_ssps_module():
    brain = simclr()
    brain.on_fit_start()
    losses = run_epoch(brain, 1)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert "ssps_coverage" not in brain.epoch_metrics()


def test_reference_is_clean_eval_no_grad_encoder():
    ssps = make_ssps()
    brain = simclr(ssps)
    brain.on_fit_start()
    brain.on_stage_start(sb.Stage.TRAIN, 1)  # SSPS epoch 0: filling
    brain.modules.train()
    batch = make_batch([0, 1, 2, 3])
    brain.fit_batch(batch)
    enc = brain.modules.embedding_model
    assert enc.training  # restored after the eval-mode reference pass
    enc.eval()
    with torch.no_grad():
        x = batch.ref_view.data[:, 0]
        want = F.normalize(enc(Frames()(x)), dim=-1)
    # the reference pass ran before the optimiser step: compare before/after loosely
    got = ssps.ref_queue.embeddings[:4]
    assert ssps.ref_queue.filled().tolist() == [0, 1, 2, 3]
    assert torch.allclose(got.norm(dim=1), torch.ones(4), atol=1e-5)
    assert F.cosine_similarity(got, want).min() > 0.9
    assert int(ssps.pos_queue.n_written) == 4


def test_no_queue_writes_before_start_minus_one():
    ssps = make_ssps(start=2)
    brain = simclr(ssps)
    brain.on_fit_start()
    run_epoch(brain, 1)  # SSPS epoch 0 < start - 1
    assert int(ssps.pos_queue.n_written) == 0
    assert ssps.ref_queue.filled().numel() == 0


@pytest.mark.parametrize("sampling", ["kmeans-repr", "knn", "kmeans-centroid"])
def test_simclr_positives_replaced_never_by_anchor(sampling):
    ssps = make_ssps(sampling=sampling, same_space=True)
    brain = simclr(ssps)
    brain.on_fit_start()
    ssps.set_labels(torch.arange(R) % 3)
    run_epoch(brain, 1)  # fill
    brain.on_stage_start(sb.Stage.TRAIN, 2)
    assert ssps.active
    brain.modules.train()
    batch = make_batch([0, 1, 2, 3])
    z1, z2 = brain.compute_forward(batch, sb.Stage.TRAIN)
    replaced = brain.ssps_replace(batch, z2.detach())
    targets = ssps.sampler.sample(batch.index, brain.ssps_reference(batch))
    assert (targets >= 0).all()
    if sampling != "kmeans-centroid":
        # every pseudo-positive is a queued entry of another utterance
        chosen = ssps.pos_queue.indices[targets]
        assert (chosen != batch.index).all()
        for row in replaced:
            d = (ssps.pos_queue.embeddings[0] - row).abs().sum(dim=1)
            assert float(d.min()) < 1e-6
    brain.ssps_update(z2)
    metrics = brain.epoch_metrics()
    assert metrics["ssps_coverage"] == 1.0
    if sampling != "kmeans-centroid":
        assert 0.0 <= metrics["ssps_speaker_acc"] <= 1.0


def test_simclr_queue_holds_own_positive_not_replacement():
    ssps = make_ssps()
    brain = simclr(ssps)
    brain.on_fit_start()
    run_epoch(brain, 1)
    brain.on_stage_start(sb.Stage.TRAIN, 2)
    brain.modules.train()
    batch = make_batch([4, 5, 6, 7])
    preds = brain.compute_forward(batch, sb.Stage.TRAIN)
    brain.compute_objectives(preds, batch, sb.Stage.TRAIN)
    ptr = int(ssps.pos_queue.ptr)
    stored = ssps.pos_queue.embeddings[0, (ptr - 4) % 16 : (ptr - 4) % 16 + 4]
    assert torch.allclose(stored, preds[1].detach())
    assert ssps.pos_queue.indices[(ptr - 4) % 16 :][:4].tolist() == [4, 5, 6, 7]


def _moco():
    mods = {
        "teacher_model": TinyEncoder(),
        "loss": MoCoLoss(dim=DIM, queue_size=8, temperature=0.1),
        "ssps": make_ssps(n_pos=2),
    }
    hp = {
        "momentum_pairs": [["embedding_model", "teacher_model"]],
        "start_tau": 0.9,
        "tau_scheduler": False,
    }
    return make_brain(MoCoBrain, mods, **hp)


def _dino():
    from sslsv_sb.models.heads import DINOHead

    head = {"in_dim": DIM, "hidden_dim": 16, "bottleneck_dim": 8, "out_dim": 32}
    mods = {
        "head": DINOHead(**head),
        "teacher_model": TinyEncoder(),
        "teacher_head": DINOHead(**head),
        "loss": DINOLoss(out_dim=32, n_global=2, warmup_epochs=0),
        "ssps": make_ssps(pos_dim=32, n_pos=2),
    }
    hp = {
        "momentum_pairs": [
            ["embedding_model", "teacher_model"],
            ["head", "teacher_head"],
        ],
        "tau_scheduler": False,
    }
    return make_brain(DINOBrain, mods, **hp)


def _swav():
    mods = {
        "projector": nn.Linear(DIM, 6),
        "prototypes": SwAVPrototypes(dim=6, n_prototypes=5),
        "loss": SwAVLoss(n_prototypes=5),
        "ssps": make_ssps(pos_dim=6),
    }
    return make_brain(SwAVBrain, mods)


def _siamese(cls, loss):
    mods = {"projector": nn.Linear(DIM, 6), "loss": loss, "ssps": make_ssps(pos_dim=6)}
    return make_brain(cls, mods)


BUILDERS = {
    "simclr": lambda: simclr(make_ssps()),
    "simclr_margins": lambda: make_brain(
        SimCLRMarginsBrain,
        {"loss": MarginNTXentLoss("arcface"), "ssps": make_ssps()},
    ),
    "moco": _moco,
    "dino": _dino,
    "swav": _swav,
    "vicreg": lambda: _siamese(VICRegBrain, VICRegLoss()),
    "barlow_twins": lambda: _siamese(BarlowTwinsBrain, BarlowTwinsLoss()),
}


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_every_method_trains_with_ssps_active(name):
    brain = BUILDERS[name]()
    brain.on_fit_start()
    ssps = brain.ssps
    run_epoch(brain, 1)
    written = int(ssps.pos_queue.n_written)
    assert written == R
    losses = run_epoch(brain, 2)
    assert ssps.active and all(torch.isfinite(torch.tensor(losses)))
    assert int(ssps.pos_queue.n_written) == 2 * R
    assert brain.epoch_metrics()["ssps_coverage"] > 0.5


def test_momentum_brains_reference_with_teacher_in_eval_mode():
    for brain in (_moco(), _dino()):
        brain.on_fit_start()
        mods = brain.ssps_reference_modules()
        assert mods[2] is brain.modules.teacher_model
        brain.on_stage_start(sb.Stage.TRAIN, 1)
        brain.modules.train()
        seen = []

        def record(module, args, seen=seen):
            seen.append(module.training)

        hook = brain.modules.teacher_model.register_forward_pre_hook(record)
        brain.ssps_reference(make_batch([0, 1, 2, 3]))
        hook.remove()
        assert seen == [False] and brain.modules.teacher_model.training


def test_moco_replaces_both_keys():
    brain = _moco()
    brain.on_fit_start()
    run_epoch(brain, 1)
    brain.on_stage_start(sb.Stage.TRAIN, 2)
    brain.modules.train()
    batch = make_batch([0, 1, 2, 3])
    preds = brain.compute_forward(batch, sb.Stage.TRAIN)
    own = torch.stack([preds[2], preds[3]], dim=1)
    new = brain.ssps_replace(batch, own)
    assert new.shape == (B, 2, DIM)
    assert not torch.allclose(new, own)


def test_missing_ref_view_is_a_clear_error():
    brain = simclr(make_ssps())
    brain.on_fit_start()
    brain.on_stage_start(sb.Stage.TRAIN, 1)
    batch = make_batch([0, 1, 2, 3])
    del batch.ref_view
    with pytest.raises(Exception, match="ref_view"):
        brain.fit_batch(batch)


def test_resize_and_checkpoint_roundtrip(tmp_path):
    ssps = SSPS(1, DIM, DIM, start_epoch=1, pos_queue_size=16, kmeans_clusters=3)
    brain = simclr(ssps, ckpt_dir=tmp_path)
    brain._ssps_dataset_size = R  # what make_dataloader records in fit()
    brain.on_fit_start()
    assert ssps.ref_queue.size == R
    run_epoch(brain, 1)
    brain.on_stage_start(sb.Stage.TRAIN, 2)
    brain.checkpointer.save_checkpoint()
    fresh = SSPS(1, DIM, DIM, start_epoch=1, pos_queue_size=16, kmeans_clusters=3)
    brain2 = simclr(fresh, ckpt_dir=tmp_path)
    brain2._ssps_dataset_size = R
    brain2.on_fit_start()
    assert torch.equal(fresh.ref_queue.embeddings, ssps.ref_queue.embeddings)
    assert torch.equal(fresh.pos_queue.embeddings, ssps.pos_queue.embeddings)
    assert torch.equal(fresh.sampler.assignments, ssps.sampler.assignments)
    assert fresh.active  # restored clustering: a second prepare keeps it
    assert fresh.prepare_epoch(1) == {}


def test_init_from_loads_base_run_without_ssps(tmp_path):
    base = simclr(ckpt_dir=tmp_path / "base" / "save")
    base.hparams.epoch_counter.current = 2
    base.checkpointer.save_checkpoint()
    brain = simclr(
        make_ssps(),
        ckpt_dir=tmp_path / "ssps" / "save",
        init_from=str(tmp_path / "base"),
    )
    brain.on_fit_start()
    want = base.modules.embedding_model.state_dict()
    for k, v in brain.modules.embedding_model.state_dict().items():
        assert torch.equal(v, want[k])
    assert brain.hparams.epoch_counter.current == 2
    with pytest.raises(Exception, match="no checkpoint"):
        init_from_run(brain, str(tmp_path / "nowhere"))


# ------------------------------------------------------------------ recipe level
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN = os.path.join(ROOT, "recipes", "VoxCeleb", "SSL", "train.py")
YAML = os.path.join(
    ROOT, "recipes", "VoxCeleb", "SSL", "hparams", "ssps_simclr_ecapa.yaml"
)


@pytest.mark.slow
def test_recipe_ssps_start_and_resume_mid_ssps(tiny_corpus, tmp_path):
    """Epoch 1 fills the queues, epoch 2 samples; a longer re-run resumes."""
    out = tmp_path / "out"
    args = [
        YAML,
        f"--data_folder={tiny_corpus}",
        f"--output_folder={out}",
        "--train_list=train.csv",
        "--noise_folder=noise",
        "--rir_folder=rirs",
        "--batch_size=8",
        "--frame_length=4000",
        "--num_workers=0",
        "--noprogressbar",
        "--channels=[16,16,16,16,48]",
        "--emb_dim=16",
        "--ssps_start_epoch=1",
        "--ssps_frame_length=8000",
        "--ssps_kmeans_clusters=4",
        "--ssps_pos_queue_size=32",
        "--eval_untrained=False",
        "--trial_lists=[]",
    ]

    def run(epochs):
        proc = subprocess.run(
            [sys.executable, TRAIN, *args, f"--number_of_epochs={epochs}"],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc

    run(2)
    log = (out / "train_log.txt").read_text()
    assert "ssps_coverage" in log.splitlines()[-1]
    assert "ssps_speaker_acc" in log  # tiny corpus list has Speaker
    assert glob.glob(str(out / "save" / "CKPT+*" / "ssps.ckpt"))
    run(3)
    text = (out / "log.txt").read_text()
    assert text.count("Going into epoch 1") == 1  # not restarted
    assert "Going into epoch 3" in text
    lines = (out / "train_log.txt").read_text().splitlines()
    assert lines[-1].startswith("epoch: 3") and "ssps_coverage" in lines[-1]
    # evaluate.py builds the Brain afresh (reference queue of size 1): the SSPS
    # queues are training state and must not stop it from scoring the run
    evaluate = os.path.join(os.path.dirname(TRAIN), "evaluate.py")
    eval_args = [a for a in args if not a.startswith("--trial_lists=")]
    proc = subprocess.run(
        [sys.executable, evaluate, *eval_args, "--trial_lists=[trials.txt]"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "trials" in (out / "verification.json").read_text()
