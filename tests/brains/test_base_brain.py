"""SSLBrain: non-finite losses, clipping, early stopping, RNG state, the running
epoch, metric recording, atomic checkpoints."""

import functools
import glob
import os
import random
from types import SimpleNamespace

import numpy as np
import pytest
import speechbrain as sb
import torch
import yaml
from speechbrain.utils.checkpoints import Checkpointer
from speechbrain.utils.epoch_loop import EpochCounter
from torch import nn
from toys import Frames, NoNorm  # noqa: E402  (tests/brains/toys.py)

from sslsv_sb.brains.sb_workarounds import COMPLETE_MARKER
from sslsv_sb.brains.simclr import SimCLRBrain
from sslsv_sb.errors import SSLSVError
from sslsv_sb.losses.ntxent import NTXentLoss
from sslsv_sb.training import RNGState, make_optimizer

B, L = 4, 400


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(40, 8)
        self.out_dim = 8

    def forward(self, feats, lengths=None):
        return self.linear(feats).mean(dim=1)


class NaNAtStep(NTXentLoss):
    """NT-Xent that returns NaN at the given (1-based) call."""

    def __init__(self, bad_call):
        super().__init__(0.1, gather_distributed=False)
        self.calls, self.bad_call = 0, bad_call

    def forward(self, z1, z2):
        self.calls += 1
        loss = super().forward(z1, z2)
        return loss * float("nan") if self.calls == self.bad_call else loss


def brain(loss, checkpointer=None, **hparams):
    torch.manual_seed(0)
    b = SimCLRBrain(
        modules={
            "compute_features": Frames(),
            "mean_var_norm": NoNorm(),
            "embedding_model": Encoder(),
            "loss": loss,
        },
        opt_class=functools.partial(torch.optim.SGD, lr=0.1),
        hparams={"epoch_counter": EpochCounter(1), "seed": 0, **hparams},
        run_opts={"device": "cpu", "noprogressbar": True},
        checkpointer=checkpointer,
    )
    b.on_fit_start()
    b.on_stage_start(sb.Stage.TRAIN, 1)
    b.modules.train()
    return b


def batch():
    return SimpleNamespace(views=SimpleNamespace(data=torch.randn(B, 2, L)))


def weights(b):
    return [p.detach().clone() for p in b.modules.embedding_model.parameters()]


def test_nonfinite_loss_stops_with_a_message_and_no_update():
    b = brain(NaNAtStep(bad_call=2))
    b.step = 1
    first = b.fit_batch(batch())
    before = weights(b)
    b.step = 2
    with pytest.raises(SSLSVError) as err:
        b.fit_batch(batch())
    msg = str(err.value)
    assert "step 2" in msg and "simclr" in msg and f"{float(first):.4f}"[:5] in msg
    assert all(torch.equal(x, y) for x, y in zip(before, weights(b)))


def test_nonfinite_loss_skipped_and_counted_when_configured():
    b = brain(NaNAtStep(bad_call=1), skip_nonfinite_steps=True)
    before = weights(b)
    b.step = 1
    b.fit_batch(batch())
    after = weights(b)
    assert b.skipped_steps == 1
    assert all(torch.equal(x, y) for x, y in zip(before, after))  # no update
    b.step = 2
    b.fit_batch(batch())  # the next finite step updates normally
    assert all(torch.isfinite(p).all() for p in weights(b))
    assert not all(torch.equal(x, y) for x, y in zip(after, weights(b)))


def test_clipping_covers_every_param_group_and_rejects_negative():
    b = brain(NTXentLoss(0.1, gather_distributed=False), no_weight_decay_bias_norm=True)
    assert len(b.optimizer.param_groups) == 2  # weights / biases
    b.max_grad_norm = 1e-6
    for p in b.modules.embedding_model.parameters():
        p.grad = torch.ones_like(p)
    b.optimizer.step = lambda: None  # inspect gradients, do not consume them
    b.optimizers_step()
    assert b.last_grad_norm == pytest.approx((8 * 40 + 8) ** 0.5, rel=1e-5)
    b.max_grad_norm = -1.0
    for p in b.modules.embedding_model.parameters():
        p.grad = torch.ones_like(p)
    with pytest.raises(SSLSVError, match="reverse the gradients"):
        b.optimizers_step()


def test_early_stopping_rule():
    b = brain(NTXentLoss(0.1, gather_distributed=False), patience=2)
    b.valid_history = [(1, 30.0), (2, 25.0), (3, 26.0)]
    assert not b._should_stop()  # 1 validation without gain < patience
    b.valid_history.append((4, 25.5))
    assert b._should_stop()  # 2 validations without gain
    b.valid_history.append((5, 20.0))
    assert not b._should_stop()


def test_rng_state_round_trip(tmp_path):
    state = RNGState()
    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    state.save(tmp_path / "rng.ckpt")
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(99)
    np.random.seed(99)
    random.seed(99)
    state.load(tmp_path / "rng.ckpt")
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], got[0])
    assert np.array_equal(expected[1], got[1]) and expected[2] == got[2]


def test_make_optimizer_names():
    p = [nn.Parameter(torch.zeros(2))]
    assert isinstance(make_optimizer(p, "sgd", lr=0.1), torch.optim.SGD)
    assert isinstance(make_optimizer(p, "AdamW", lr=0.1), torch.optim.AdamW)
    with pytest.raises(SSLSVError, match="unknown name"):
        make_optimizer(p, "lion")


# ---------------------------------------------------------------------- epoch, metrics
def test_epoch0_is_the_zero_based_running_epoch():
    b = brain(NTXentLoss(0.1, gather_distributed=False))
    for current, want in ((0, 0), (1, 0), (2, 1), (5, 4)):
        b.hparams.epoch_counter.current = current
        assert b.epoch0() == want


class ManyMetrics(NTXentLoss):
    """NT-Xent whose ``last_metrics`` hold ``n`` detached tensors and ``loss``."""

    def __init__(self, n):
        super().__init__(0.1, gather_distributed=False)
        self.n = n

    def forward(self, z1, z2):
        loss = super().forward(z1, z2)
        z = z1.detach()
        self.last_metrics = {f"m{i}": z.pow(i + 1).mean() for i in range(self.n)}
        self.last_metrics["loss"] = loss.detach()
        return loss


HOST_READS = ("item", "__float__", "__bool__", "tolist", "cpu")


def _count_host_reads(monkeypatch):
    """Count the calls of the Tensor methods that copy a value to the host."""
    calls = {"n": 0}
    for name in HOST_READS:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, **kwargs):
            calls["n"] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    return calls


def _host_reads_of_steps(monkeypatch, n_metrics, steps=3):
    b = brain(ManyMetrics(n_metrics))
    torch.manual_seed(1)
    batches = [batch() for _ in range(steps)]
    with monkeypatch.context() as m:
        calls = _count_host_reads(m)
        for i, x in enumerate(batches, start=1):
            b.step = i
            b.fit_batch(x)
        return calls["n"], b


def test_loss_metrics_recorded_without_a_host_read_per_step(monkeypatch):
    plain, _ = _host_reads_of_steps(monkeypatch, 0)
    many, b = _host_reads_of_steps(monkeypatch, 8)
    assert many == plain  # 8 tensor metrics x 3 steps: no extra synchronisation
    metrics = b.epoch_metrics()  # ... they are read back here, once per metric
    assert {f"m{i}" for i in range(8)} <= set(metrics)
    assert "loss" not in metrics  # the stage loss is logged on its own
    assert all(isinstance(v, float) for v in metrics.values())


def test_recorded_tensors_average_exactly_like_their_floats():
    b = brain(NTXentLoss(0.1, gather_distributed=False))
    values = torch.rand(1000, generator=torch.Generator().manual_seed(0)) * 1e3
    for v in values:
        b.record(as_tensor=v, as_float=float(v))
    metrics = b.epoch_metrics()
    assert metrics["as_tensor"] == metrics["as_float"]
    b.on_stage_start(sb.Stage.TRAIN, 2)
    assert b.epoch_metrics() == {}


# ---------------------------------------------------------------------- checkpoints
def _checkpointed_brain(folder):
    counter = EpochCounter(1)
    b = brain(
        NTXentLoss(0.1, gather_distributed=False),
        checkpointer=Checkpointer(folder, {"counter": counter}),
    )
    b.hparams.epoch_counter = counter
    return b


def test_epoch_checkpoint_is_atomic_and_stores_reset_counters(tmp_path):
    b = _checkpointed_brain(tmp_path)  # fit start done by brain()
    b.step, b.avg_train_loss = 7, 1.5  # the running values at the end of an epoch
    b.on_stage_end(sb.Stage.TRAIN, 1.5, epoch=1)
    (path,) = glob.glob(str(tmp_path / "CKPT+*"))
    assert os.path.isfile(os.path.join(path, COMPLETE_MARKER))
    with open(os.path.join(path, "brain.ckpt"), encoding="utf-8") as f:
        saved = yaml.safe_load(f)
    assert saved["step"] == 0 and saved["avg_train_loss"] == 0.0
    # Without its marker (killed while writing) the checkpoint is set aside at the
    # next fit start and not recovered.
    os.remove(os.path.join(path, COMPLETE_MARKER))
    _checkpointed_brain(tmp_path)
    assert not os.path.exists(path)
    aside = tmp_path / ("incomplete-" + os.path.basename(path))
    assert os.path.isfile(aside / "brain.ckpt")


# ------------------------------------------------------------------- non-finite state
def _poison(b, value=float("nan")):
    with torch.no_grad():
        b.modules.embedding_model.linear.bias[3] = value


def test_nonfinite_weights_are_never_saved_and_the_last_checkpoint_stays(tmp_path):
    b = _checkpointed_brain(tmp_path)
    b.on_stage_end(sb.Stage.TRAIN, 1.5, epoch=1)
    (first,) = glob.glob(str(tmp_path / "CKPT+*"))
    files = sorted(os.listdir(first))
    _poison(b, float("inf"))
    with pytest.raises(SSLSVError) as err:
        b.on_stage_end(sb.Stage.TRAIN, 1.4, epoch=2)
    msg = str(err.value)
    assert "embedding_model.linear.bias holds NaN or Inf" in msg
    assert "before saving a checkpoint" in msg and "simclr" in msg
    assert f"last checkpoint ({first}, epoch 1)" in msg and "resume point" in msg
    assert glob.glob(str(tmp_path / "CKPT+*")) == [first]  # nothing new, not removed
    assert sorted(os.listdir(first)) == files
    # the intra-epoch save path (SpeechBrain's own) goes through the same check
    with pytest.raises(SSLSVError, match="non-finite model state"):
        b._save_intra_epoch_ckpt()
    assert glob.glob(str(tmp_path / "CKPT+*")) == [first]


def test_weights_checked_every_n_optimizer_steps(tmp_path):
    b = brain(NTXentLoss(0.1, gather_distributed=False), check_finite_every=2)
    b.modules["unused"] = nn.Linear(2, 2)  # not in the loss: a NaN there stays silent
    with torch.no_grad():
        b.modules.unused.weight[0, 0] = float("nan")
    b.step = 1
    b.fit_batch(batch())  # optimizer step 1: not a checked step
    assert b.optimizer_step == 1
    b.step = 2
    with pytest.raises(SSLSVError) as err:
        b.fit_batch(batch())
    msg = str(err.value)
    assert "optimizer step 2" in msg and "checked after the optimizer step" in msg
    assert "unused.weight holds NaN or Inf" in msg and "no checkpoint was saved" in msg


def test_nonfinite_loss_from_nonfinite_weights_is_not_skipped():
    b = brain(NTXentLoss(0.1, gather_distributed=False), skip_nonfinite_steps=True)
    _poison(b)
    b.step = 1
    with pytest.raises(SSLSVError, match="found at a non-finite loss.*linear.bias"):
        b.fit_batch(batch())
    assert b.skipped_steps == 0


class LossAt(NTXentLoss):
    """Returns the given values (NaN to skip) as successive losses."""

    def __init__(self, values):
        super().__init__(0.1, gather_distributed=False)
        self.values = list(values)

    def forward(self, z1, z2):
        return super().forward(z1, z2) * 0 + self.values.pop(0)


def _epoch(b, n):
    b.on_stage_start(sb.Stage.TRAIN, 1)
    for _ in range(n):
        b.step += 1
        b.avg_train_loss = b.update_average(b.fit_batch(batch()), b.avg_train_loss)
    return b.epoch_loss(b.avg_train_loss)


def test_epoch_loss_is_the_mean_of_finite_losses_and_nan_when_all_skipped():
    nan = float("nan")
    b = brain(LossAt([2.0, nan, 4.0, nan, nan]), skip_nonfinite_steps=True)
    assert _epoch(b, 3) == pytest.approx(3.0)  # SpeechBrain's average: 2.0
    assert b.skipped.epoch == 1
    b.step, b.avg_train_loss = 0, 0.0  # as SpeechBrain does after on_stage_end
    assert np.isnan(_epoch(b, 2))  # every batch skipped: NaN, not 0.0
    assert (b.skipped.epoch, b.skipped_steps) == (2, 3)


def test_skip_of_an_accumulated_batch_drops_the_whole_step():
    nan = float("nan")
    b = brain(LossAt([nan, 1.0]), skip_nonfinite_steps=True)
    b.grad_accumulation_factor = 2
    before = weights(b)
    _epoch(b, 2)  # a NaN in the first half of the step, a finite second half
    assert b.optimizer_step == 0
    assert all(torch.equal(x, y) for x, y in zip(before, weights(b)))


def test_a_step_skipped_on_another_rank_is_skipped_here(monkeypatch):
    """Under DDP the gradients are averaged in backward, so a NaN loss on one rank
    reaches every rank's gradients: the skip decision is all-reduced (MAX) and a
    rank whose own loss was finite skips too."""
    import sslsv_sb.brains.sb_workarounds as sbw

    b = brain(NTXentLoss(0.1, gather_distributed=False), skip_nonfinite_steps=True)
    reduced = []

    def other_rank_skipped(flag, op=None):  # a 2-rank MAX with a skipping peer
        reduced.append(int(flag))
        flag.fill_(1)

    monkeypatch.setattr(sbw, "is_distributed", lambda: True)
    monkeypatch.setattr(torch.distributed, "all_reduce", other_rank_skipped)
    before = weights(b)
    b.step = 1
    b.fit_batch(batch())  # finite loss here
    assert reduced == [0] and b.optimizer_step == 0
    assert all(torch.equal(x, y) for x, y in zip(before, weights(b)))
    monkeypatch.setattr(torch.distributed, "all_reduce", lambda flag, op=None: None)
    b.step = 2
    b.fit_batch(batch())  # no rank skips: the step is taken
    assert b.optimizer_step == 1
