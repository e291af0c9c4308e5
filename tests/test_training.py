"""sslsv_sb.training: effective_rank (dimensional-collapse monitor), closed forms."""

import numpy as np
import pytest
import torch

from sslsv_sb.training import effective_rank


def test_effective_rank_closed_forms():
    # 4 orthogonal centred directions of equal variance: rank 4 - 1 = 3 after centring
    assert effective_rank(torch.eye(4) - 0.25) == pytest.approx(3.0, abs=1e-5)
    # all variance along one direction: 1
    x = torch.randn(50, 1) * torch.tensor([[1.0, 2.0, -1.0]])
    assert effective_rank(x) == pytest.approx(1.0, abs=1e-4)
    # eigenvalue shares (1/2, 1/4, 1/4): exp(H) = 2 ** 1.5
    g = torch.linalg.qr(torch.randn(200, 3, dtype=torch.float64))[0]  # orthonormal
    g = g - g.mean(0)
    g = torch.linalg.qr(g)[0] * torch.tensor([2.0, 2**0.5, 2**0.5], dtype=torch.float64)
    g = g - g.mean(0)
    share = np.linalg.eigvalsh((g.T @ g).numpy())
    share = share / share.sum()
    expected = float(np.exp(-(share * np.log(share)).sum()))
    assert effective_rank(g) == pytest.approx(expected, rel=1e-4)
    assert expected == pytest.approx(2**1.5, rel=1e-2)


def test_effective_rank_errors_and_constant_input():
    with pytest.raises(ValueError, match="N >= 2"):
        effective_rank(torch.randn(1, 4))
    assert effective_rank(torch.ones(5, 3)) == 1.0


# ------------------------------------------------------------------- non-finite state
def test_state_tensors_lists_what_a_checkpoint_holds():
    from torch import nn

    from sslsv_sb.training import state_tensors

    class WithBuffers(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(2, 2)
            self.tied = self.lin  # the same tensors under a second name: once
            self.register_buffer("steps", torch.zeros((), dtype=torch.long))  # int
            self.register_buffer("cache", torch.ones(3), persistent=False)  # unsaved
            self.register_buffer("queue", torch.zeros(4, 2))

    named = state_tensors({"m": WithBuffers(), "bn": nn.BatchNorm1d(2)})
    assert [n for n, _ in named] == [
        "m.queue",  # state_dict order: own tensors, then the children's
        "m.lin.weight",
        "m.lin.bias",
        "bn.weight",
        "bn.bias",
        "bn.running_mean",
        "bn.running_var",
    ]
    wrapped = torch.nn.DataParallel(nn.Linear(2, 1))  # a wrapper's .module prefix
    assert [n for n, _ in state_tensors({"enc": wrapped})] == ["enc.weight", "enc.bias"]


def test_first_nonfinite_names_the_first_bad_tensor_only():
    from sslsv_sb.training import first_nonfinite

    big = torch.full((1000,), 3e38)  # finite; its float32 2-norm overflows
    named = [
        ("a", torch.ones(3)),
        ("big", big),
        ("half", torch.ones(2, dtype=torch.bfloat16)),
        ("b", torch.zeros(2)),
        ("c", torch.zeros(2)),
    ]
    assert first_nonfinite(named) is None
    named[4][1][1] = float("-inf")
    assert first_nonfinite(named) == "c"
    named[2][1][0] = float("nan")  # another dtype group, earlier in the list
    assert first_nonfinite(named) == "half"
    assert first_nonfinite([]) is None


def test_check_finite_model_refuses_a_nonfinite_inference_model():
    from types import SimpleNamespace

    from torch import nn

    from sslsv_sb.errors import SSLSVError
    from sslsv_sb.recipe.models import check_finite_model

    enc = nn.Linear(2, 2)
    brain = SimpleNamespace(
        checkpointer=SimpleNamespace(recoverables={"embedding_model": enc}),
        inference_modules=lambda: (nn.Identity(), nn.Identity(), enc),
    )
    check_finite_model(brain, "the final model")
    with torch.no_grad():
        enc.bias[1] = float("nan")
    with pytest.raises(
        SSLSVError,
        match=r"the final model is not finite: "
        r"embedding_model\.bias holds NaN or Inf",
    ):
        check_finite_model(brain, "the final model")


@pytest.mark.slow
def test_diverging_run_stops_and_keeps_the_last_finite_checkpoint(
    tiny_corpus, tmp_path
):
    """The issue's run: an LR of ~1e29 with skip_nonfinite_steps saved 61 non-finite
    tensors and logged ``train loss: 0.00e+00``. Here epoch 1 trains normally, the
    schedule then multiplies the LR by 1e32: the run stops with one error line and
    the epoch-1 checkpoint, finite, stays the only one."""
    import glob
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = tmp_path / "run"
    args = [
        os.path.join(root, "recipes", "VoxCeleb", "SSL", "train.py"),
        os.path.join(
            root, "recipes", "VoxCeleb", "SSL", "hparams", "simclr_ecapa.yaml"
        ),
        f"--data_folder={tiny_corpus}",
        f"--output_folder={out}",
        "--train_list=train.csv",
        "--trial_lists=[]",
        "--noise_folder=null",
        "--rir_folder=null",
        "--channels=[16,16,16,16,48]",
        "--emb_dim=16",
        "--batch_size=8",
        "--frame_length=4000",
        "--num_workers=0",
        "--noprogressbar",
        "--number_of_epochs=2",
        "--skip_nonfinite_steps=True",
        "--lr_annealing={decay_factor: 1.0e+32, decay_drop: 1}",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: non-finite model state at epoch 2, "), last
    (ckpt,) = glob.glob(os.path.join(out, "save", "CKPT+*"))
    assert f"the last checkpoint ({ckpt}, epoch 1) has finite weights" in last
    for path in glob.glob(os.path.join(ckpt, "*.ckpt")):
        try:
            state = torch.load(path, weights_only=True)
        except Exception:  # noqa: BLE001 -- yaml / text recoverables
            continue
        tensors = state.values() if isinstance(state, dict) else []
        for t in tensors:
            if torch.is_tensor(t) and t.is_floating_point():
                assert torch.isfinite(t).all(), path
    log = open(os.path.join(out, "train_log.txt")).read()
    assert "epoch: 1," in log and "epoch: 2," not in log and "0.00e+00" not in log

    # A checkpoint made non-finite elsewhere is refused by the export, unwritten.
    weights = os.path.join(ckpt, "embedding_model.ckpt")
    state = torch.load(weights, weights_only=True)
    state["blocks.0.conv.conv.weight"].view(-1)[5] = float("nan")
    torch.save(state, weights)
    export = os.path.join(root, "tools", "export_model.py")
    proc = subprocess.run(
        [sys.executable, export, str(out), str(tmp_path / "bundle")],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the model of CKPT+") and "is not finite: " in last
    assert "embedding_model.blocks.0.conv.conv.weight holds NaN or Inf" in last
    assert not (tmp_path / "bundle").exists()
