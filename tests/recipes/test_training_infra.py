"""Recipe-level reliability: kill -9 and resume, corrupt checkpoints, bf16, model
selection (validation EER, averaging) and logging."""

import glob
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN = os.path.join(ROOT, "recipes", "VoxCeleb", "SSL", "train.py")
YAML = os.path.join(ROOT, "recipes", "VoxCeleb", "SSL", "hparams", "simclr_ecapa.yaml")


def base_args(corpus, out, *extra):
    return [
        YAML,
        f"--data_folder={corpus}",
        f"--output_folder={out}",
        "--train_list=train.csv",
        "--trial_lists=[trials.txt]",
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
        *extra,
    ]


def run(args, check=True):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, TRAIN, *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def epoch_losses(out):
    with open(os.path.join(out, "train_log.txt")) as f:
        return [float(m) for m in re.findall(r"train loss: ([0-9.e+-]+)", f.read())]


def final_weights(out):
    (ckpt,) = glob.glob(os.path.join(out, "save", "CKPT+*", "embedding_model.ckpt"))
    return torch.load(ckpt, weights_only=True)


@pytest.mark.slow
def test_kill9_mid_epoch_then_resume_is_identical(tiny_corpus, tmp_path):
    """An intra-epoch checkpoint, SIGKILL, the same command again: same result."""
    extra = ["--number_of_epochs=2", "--ckpt_interval_steps=2"]
    ref = tmp_path / "ref"
    run(base_args(tiny_corpus, ref, *extra))

    out = tmp_path / "killed"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(
        [sys.executable, TRAIN, *base_args(tiny_corpus, out, *extra)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        metas = glob.glob(os.path.join(out, "save", "CKPT+*", "CKPT.yaml"))
        if any("end-of-epoch: false" in open(m).read() for m in metas):
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before an intra-epoch checkpoint"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    run(base_args(tiny_corpus, out, *extra))  # same command resumes
    assert epoch_losses(out)[-2:] == pytest.approx(epoch_losses(ref), rel=1e-6)
    a, b = final_weights(ref), final_weights(out)
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.slow
def test_corrupt_checkpoint_is_a_clear_error(tiny_corpus, tmp_path):
    out = tmp_path / "out"
    run(base_args(tiny_corpus, out, "--number_of_epochs=1"))
    (ckpt,) = glob.glob(os.path.join(out, "save", "CKPT+*", "embedding_model.ckpt"))
    with open(ckpt, "wb") as f:
        f.write(b"not a checkpoint")
    proc = run(base_args(tiny_corpus, out, "--number_of_epochs=2"), check=False)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: cannot resume from") and "CKPT+" in last


@pytest.mark.slow
def test_bf16_accumulation_validation_averaging_and_tensorboard(tiny_corpus, tmp_path):
    out = tmp_path / "out"
    proc = run(
        base_args(
            tiny_corpus,
            out,
            "--number_of_epochs=2",
            "--precision=bf16",
            "--grad_accumulation_factor=2",
            "--valid_trial_list=trials.txt",
            "--valid_crop_seconds=0.5",
            "--valid_n_crops=2",
            "--keep_checkpoints=2",
            "--average_last_k=2",
            "--tensorboard=True",
            "--log_every_steps=1",
        )
    )
    log = open(os.path.join(out, "train_log.txt")).read()
    assert log.count("valid_eer") == 2
    assert "averaged embedding_model over 2 checkpoints" in proc.stderr + proc.stdout
    assert glob.glob(os.path.join(out, "tensorboard", "events.out.tfevents.*"))
    assert len(glob.glob(os.path.join(out, "save", "CKPT+*"))) >= 2
    assert all(x == x for x in epoch_losses(out))  # finite under bf16
    # 6 batches per epoch, accumulated by 2: 3 optimiser steps per epoch.
    (ckpt,) = [
        c
        for c in glob.glob(os.path.join(out, "save", "CKPT+*"))
        if "epoch: 2" in open(os.path.join(c, "CKPT.yaml")).read()
    ]
    brain_state = open(os.path.join(ckpt, "brain.ckpt")).read()
    assert "optimizer_step: 6" in brain_state
