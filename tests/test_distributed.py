"""CPU DDP: synchronised BatchNorm, shuffle-BN, ``unwrap`` and 2-process training
equal to 1 process."""

import glob
import os
import socket
import subprocess
import sys

import pytest
import torch

from sslsv_sb.distributed import (
    CPUSyncBatchNorm,
    batch_shuffle,
    batch_unshuffle,
    convert_sync_batchnorm_cpu,
    unwrap,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(ROOT, "recipes", "VoxCeleb", "SSL", "train.py")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bn_worker(rank, world, port, x, out):
    import torch.distributed as dist

    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
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
    dist.destroy_process_group()


@pytest.mark.slow
def test_cpu_sync_batchnorm_matches_global_batch(tmp_path):
    torch.manual_seed(1)
    x = torch.randn(8, 3, 5) * 3 + 1
    torch.multiprocessing.spawn(
        _bn_worker, args=(2, _free_port(), x, str(tmp_path)), nprocs=2
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
    import torch.distributed as dist

    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    torch.manual_seed(rank)  # ranks draw different permutations: rank 0's is used
    x = torch.arange(4.0).view(4, 1) + 10 * rank  # rank r holds 10r .. 10r + 3
    xs, idx = batch_shuffle(x)
    back = batch_unshuffle(xs * 2, idx)
    torch.save({"xs": xs, "back": back}, os.path.join(out, f"shuffle{rank}.pt"))
    dist.destroy_process_group()


@pytest.mark.slow
def test_batch_shuffle_mixes_ranks_and_unshuffles(tmp_path):
    torch.multiprocessing.spawn(
        _shuffle_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2
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
