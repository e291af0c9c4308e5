"""CPU DDP: synchronised BatchNorm, shuffle-BN, ``unwrap``, 2-process training equal
to 1 process, exact resume of a killed 2-process run."""

import glob
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from sslsv_sb.distributed import (
    CPUSyncBatchNorm,
    batch_shuffle,
    batch_unshuffle,
    convert_sync_batchnorm_cpu,
    unwrap,
)
from tests.gloo import free_port, gloo_group

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(ROOT, "recipes", "VoxCeleb", "SSL", "train.py")


def _bn_worker(rank, world, port, x, out):

    with gloo_group(rank, world, port):
        torch.manual_seed(0)
        bn = convert_sync_batchnorm_cpu(torch.nn.Sequential(torch.nn.BatchNorm1d(3)))
        assert isinstance(bn[0], CPUSyncBatchNorm)
        n = x.shape[0] // world
        xi = x[rank * n : (rank + 1) * n].clone().requires_grad_(True)
        y = bn(xi)
        (y * torch.arange(y.numel()).view_as(y).float()).sum().backward()
        torch.save(
            {
                "y": y.detach(),
                "g": xi.grad,
                "rm": bn[0].running_mean,
                "rv": bn[0].running_var,
            },
            os.path.join(out, f"bn{rank}.pt"),
        )


@pytest.mark.slow
def test_cpu_sync_batchnorm_matches_global_batch(tmp_path):
    torch.manual_seed(1)
    x = torch.randn(8, 3, 5) * 3 + 1
    torch.multiprocessing.spawn(
        _bn_worker, args=(2, free_port(), x, str(tmp_path)), nprocs=2
    )
    ref_bn = torch.nn.BatchNorm1d(3)
    xr = x.clone().requires_grad_(True)
    y = ref_bn(xr)
    # Each rank weights its own outputs by positions 0..n-1, as in the workers.
    w = torch.cat([torch.arange(y[:4].numel()).view_as(y[:4])] * 2).float()
    (y * w).sum().backward()
    r0, r1 = (torch.load(tmp_path / f"bn{r}.pt", weights_only=True) for r in (0, 1))
    assert torch.allclose(torch.cat([r0["y"], r1["y"]]), y.detach(), atol=1e-5)
    assert torch.allclose(torch.cat([r0["g"], r1["g"]]), xr.grad, atol=1e-4)
    assert torch.allclose(r0["rm"], ref_bn.running_mean, atol=1e-6)
    assert torch.allclose(r1["rv"], ref_bn.running_var, atol=1e-5)


def test_unwrap_returns_the_wrapped_module():
    lin = torch.nn.Linear(2, 2)
    assert unwrap(lin) is lin
    assert unwrap(torch.nn.DataParallel(lin)) is lin


def test_batch_shuffle_roundtrip():
    torch.manual_seed(0)
    x = torch.arange(12.0).view(6, 2)
    xs, idx = batch_shuffle(x)
    assert not torch.equal(xs, x)  # a real permutation (seed 0)
    assert sorted(xs[:, 0].tolist()) == x[:, 0].tolist()
    assert torch.equal(batch_unshuffle(xs, idx), x)


def _shuffle_worker(rank, world, port, out):

    with gloo_group(rank, world, port):
        torch.manual_seed(rank)  # ranks draw different permutations: rank 0's is used
        x = torch.arange(4.0).view(4, 1) + 10 * rank  # rank r holds 10r .. 10r + 3
        xs, idx = batch_shuffle(x)
        back = batch_unshuffle(xs * 2, idx)
        torch.save({"xs": xs, "back": back}, os.path.join(out, f"shuffle{rank}.pt"))


@pytest.mark.slow
def test_batch_shuffle_mixes_ranks_and_unshuffles(tmp_path):
    torch.multiprocessing.spawn(
        _shuffle_worker, args=(2, free_port(), str(tmp_path)), nprocs=2
    )
    r0, r1 = (
        torch.load(tmp_path / f"shuffle{r}.pt", weights_only=True) for r in (0, 1)
    )
    shuffled = torch.cat([r0["xs"], r1["xs"]])[:, 0].tolist()
    assert sorted(shuffled) == [0, 1, 2, 3, 10, 11, 12, 13]  # one global permutation
    for r, res in enumerate((r0, r1)):  # outputs come back to their own rank
        want = (torch.arange(4.0).view(4, 1) + 10 * r) * 2
        assert torch.equal(res["back"], want)


def _train(args, nproc, out, env_extra=None):
    env = dict(os.environ, OMP_NUM_THREADS="1", **(env_extra or {}))
    if nproc > 1:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={nproc}",
            TRAIN,
        ]
        args = [*args, "--distributed_backend=gloo"]
    else:
        cmd = [sys.executable, TRAIN]
    proc = subprocess.run(
        [*cmd, *args, f"--output_folder={out}"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (ckpt,) = glob.glob(os.path.join(out, "save", "CKPT+*"))
    return ckpt


def _common(corpus, yaml_name, extra, train_list):
    return [
        os.path.join(ROOT, "recipes", "VoxCeleb", "SSL", "hparams", yaml_name),
        f"--data_folder={corpus}",
        f"--train_list={train_list}",
        "--trial_lists=[]",
        "--noise_folder=null",
        "--rir_folder=null",
        "--frame_length=4000",
        "--number_of_epochs=1",
        "--num_workers=0",
        "--noprogressbar",
        "--eval_untrained=False",
        "--batch_size=16",
        "--dataloader_options={shuffle: False}",
        # SGD: Adam would blow float round-off on zero-gradient parameters (the
        # bias of a softmax-attention logit) up to a full lr-sized step.
        "--optimizer_type=sgd",
        "--lr=0.01",
        *extra,
    ]


@pytest.mark.slow
@pytest.mark.parametrize(
    "yaml_name, extra, modules",
    [
        (
            "simclr_ecapa.yaml",
            ["--channels=[16,16,16,16,48]", "--emb_dim=16", "--temperature=0.5"],
            ["embedding_model"],
        ),
        (
            # A momentum method. (MoCo's shuffle-BN deliberately normalises keys with
            # per-rank statistics of a shuffled sub-batch, so it has no 1-process
            # equivalent; BYOL's EMA target uses synchronised BatchNorm.)
            "byol_ecapa.yaml",
            [
                "--channels=[16,16,16,16,48]",
                "--emb_dim=16",
                "--proj_hidden_dim=32",
                "--proj_out_dim=16",
                "--pred_hidden_dim=32",
            ],
            ["embedding_model", "teacher_model", "projector", "teacher_projector"],
        ),
    ],
)
def test_two_processes_equal_one(tiny_corpus, tmp_path, yaml_name, extra, modules):
    hp = os.path.join(ROOT, "recipes", "VoxCeleb", "SSL", "hparams", yaml_name)
    if not os.path.isfile(hp):
        pytest.skip(f"{yaml_name} not available")
    # Two optimiser steps of 16 utterances: BatchNorm nets on tiny batches are
    # chaotic (fp32 round-off differences of 1e-7 grow ~100x per step), so the
    # comparison is made where round-off cannot have grown past the tolerance.
    rows = (tiny_corpus / "train.csv").read_text().splitlines()[:33]
    train_list = tmp_path / "train32.csv"
    train_list.write_text("\n".join(rows) + "\n")
    args = _common(tiny_corpus, yaml_name, extra, train_list)
    one = _train(args, 1, tmp_path / "one")
    two = _train(args, 2, tmp_path / "two")
    for name in modules:
        a = torch.load(os.path.join(one, f"{name}.ckpt"), weights_only=True)
        b = torch.load(os.path.join(two, f"{name}.ckpt"), weights_only=True)
        for key in a:
            if a[key].is_floating_point():
                diff = (a[key] - b[key]).abs().max().item()
                # Parameters: 1e-5 absolute; BatchNorm running statistics (large
                # values, e.g. variances of raw features): 1e-5 relative.
                scale = a[key].abs().max().item() if "running_" in key else 1.0
                assert diff < 1e-5 * max(scale, 1.0), f"{name}.{key} differs by {diff}"


def _torchrun(nproc, args, out):
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        TRAIN,
        *args,
        "--distributed_backend=gloo",
        f"--output_folder={out}",
    ]


def _last_checkpoint(out):
    """The end-of-epoch checkpoint of the last epoch."""
    ckpts = [
        c
        for c in glob.glob(os.path.join(out, "save", "CKPT+*"))
        if "end-of-epoch: true" in open(os.path.join(c, "CKPT.yaml")).read()
    ]
    return max(ckpts, key=lambda c: int(open(os.path.join(c, "counter.ckpt")).read()))


def _intra_epoch_checkpoint_of(out, epoch, max_step):
    """True once a complete intra-epoch checkpoint of ``epoch`` exists, saved at
    a step <= ``max_step`` (so that batches of the epoch remain after it)."""
    for c in glob.glob(os.path.join(out, "save", "CKPT+*")):
        try:
            complete = os.path.isfile(os.path.join(c, "COMPLETE"))
            meta = open(os.path.join(c, "CKPT.yaml")).read()
            counter = open(os.path.join(c, "counter.ckpt")).read().strip()
            step = re.search(
                r"^step: (\d+)", open(os.path.join(c, "brain.ckpt")).read(), re.M
            )
        except OSError:  # being written or deleted
            continue
        if (
            complete
            and "end-of-epoch: false" in meta
            and counter == str(epoch)
            and step is not None
            and int(step.group(1)) <= max_step
        ):
            return True
    return False


def _process_tree(pid):
    """``pid`` and all its descendants (from ``/proc``)."""
    children = {}
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat) as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.split("/")[2]))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo += children.get(p, [])
    return tree


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _kill_all(proc):
    """SIGKILL the launcher and every worker at once, wait until all are gone.

    torchrun starts each worker in a session of its own, so killing the launcher's
    process group would leave the workers running (and writing).
    """
    tree = _process_tree(proc.pid)
    for pid in tree:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
    deadline = time.time() + 30
    while any(_alive(pid) for pid in tree):
        assert time.time() < deadline, "a worker survived SIGKILL"
        time.sleep(0.05)
    return tree


ENV = dict(os.environ, OMP_NUM_THREADS="1")


@pytest.fixture(scope="module")
def ddp_reference(tiny_corpus, tmp_path_factory):
    """An uninterrupted 2-process gloo run (``torchrun --standalone``) with on-device
    augmentation, 1 epoch of 4 steps and a checkpoint every step:
    ``(args, run folder)``."""
    tmp = tmp_path_factory.mktemp("ddp_reference")
    rows = (tiny_corpus / "train.csv").read_text().splitlines()[:33]
    train_list = tmp / "train32.csv"  # 4 global batches of 8 per epoch
    train_list.write_text("\n".join(rows) + "\n")
    args = [
        os.path.join(
            ROOT, "recipes", "VoxCeleb", "SSL", "hparams", "simclr_ecapa.yaml"
        ),
        f"--data_folder={tiny_corpus}",
        f"--train_list={train_list}",
        "--trial_lists=[]",
        "--noise_folder=noise",
        "--rir_folder=rirs",
        "--eq_prob=0.5",
        "--channels=[16,16,16,16,48]",
        "--emb_dim=16",
        "--batch_size=8",
        "--frame_length=4000",
        "--num_workers=0",
        "--noprogressbar",
        "--eval_untrained=False",
        "--number_of_epochs=1",
        "--ckpt_interval_steps=1",
    ]
    ref = tmp / "ref"
    proc = subprocess.run(
        _torchrun(2, args, ref), capture_output=True, text=True, env=ENV, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return args, ref


def _log(run):
    return re.findall(r"train loss: .*?, train accuracy: \S+", _read(run))


def _assert_same_run(ref, out, recoverables=("embedding_model", "optimizer")):
    """Same logged losses and metrics, same final checkpoint."""
    assert len(_log(ref)) == 1 and _log(out) == _log(ref)
    a, b = _last_checkpoint(ref), _last_checkpoint(out)
    for name in recoverables:
        wa = torch.load(os.path.join(a, f"{name}.ckpt"), weights_only=True)
        wb = torch.load(os.path.join(b, f"{name}.ckpt"), weights_only=True)
        _assert_equal(wa, wb, name)
    return a, b


@pytest.mark.slow
def test_ddp_kill9_mid_epoch_then_resume_is_identical(ddp_reference, tmp_path):
    """2 gloo processes with on-device augmentation (each rank its own RNG stream),
    killed (SIGKILL of the launcher and both workers) after the intra-epoch checkpoint
    of step 1 or 2 of 4, then the same command again: the same loss, metrics, weights,
    optimiser and RNG streams as the uninterrupted run (issue 15: ranks > 0 drew new
    augmentations after a resume)."""
    args, ref = ddp_reference
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        _torchrun(2, args, out),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=ENV,
    )
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            if _intra_epoch_checkpoint_of(out, 1, max_step=2):
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the run ended before an intra-epoch checkpoint"
    finally:
        assert len(_kill_all(proc)) >= 3  # the launcher and 2 workers
    log = out / "train_log.txt"  # written at the end of an epoch
    assert not log.exists() or "epoch: 1," not in log.read_text()  # killed inside
    proc = subprocess.run(
        _torchrun(2, args, out), capture_output=True, text=True, env=ENV, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = _assert_same_run(ref, out)
    ra = torch.load(os.path.join(a, "rng.ckpt"), weights_only=True)["ranks"]
    rb = torch.load(os.path.join(b, "rng.ckpt"), weights_only=True)["ranks"]
    assert len(ra) == 2 and not torch.equal(ra[0]["torch"], ra[1]["torch"])
    for r in (0, 1):  # each rank continued its own stream
        assert torch.equal(ra[r]["torch"], rb[r]["torch"]), f"rank {r}"


@pytest.mark.slow
def test_two_nodes_with_c10d_rendezvous_equal_one_node(ddp_reference, tmp_path):
    """The multi-node path: two launchers (two "nodes" on this machine, one worker
    each) meet through c10d rendezvous on localhost and train on a shared run folder.
    Both finish, and the run equals the 2-process single-node run."""
    args, ref = ddp_reference
    out = tmp_path / "two_nodes"
    port = free_port()
    launcher = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes=2",
        "--nproc_per_node=1",
        "--rdzv_backend=c10d",
        f"--rdzv_endpoint=localhost:{port}",
        f"--rdzv_id=two_nodes_{port}",
        TRAIN,
        *args,
        "--distributed_backend=gloo",
        f"--output_folder={out}",
    ]
    logs = [open(tmp_path / f"node{n}.err", "w+") for n in range(2)]
    nodes = [
        subprocess.Popen(launcher, stdout=subprocess.DEVNULL, stderr=f, env=ENV)
        for f in logs
    ]
    try:
        codes = [node.wait(timeout=600) for node in nodes]
    finally:
        for node in nodes:
            if node.poll() is None:
                _kill_all(node)
    for f, code in zip(logs, codes):
        f.seek(0)
        assert code == 0, f.read()[-3000:]
    _assert_same_run(ref, out)


def _read(run):
    with open(os.path.join(run, "train_log.txt")) as f:
        return f.read()


def _assert_equal(a, b, where):
    """Nested state dicts hold exactly equal tensors."""
    if torch.is_tensor(a):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_equal(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_equal(x, y, f"{where}[{i}]")
    else:
        assert a == b, where
