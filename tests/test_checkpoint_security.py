"""Checkpoint files are loaded with ``torch.load(weights_only=True)``.

A run folder may come from someone else: a ``.ckpt`` file that holds pickled
Python objects (which run code when unpickled) must be refused with one clear
error, and the code must never run.
"""

import os
import pickle
from types import SimpleNamespace

import pytest
import torch
from speechbrain.utils.checkpoints import Checkpointer
from torch import nn

from sslsv_sb.errors import SSLSVError
from sslsv_sb.export import load_model
from sslsv_sb.training import RNGState


class _OpensAFile:
    """Unpickling this calls ``open(marker, "w")``: proof that code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _write_pickled_code(path, marker):
    torch.save({"weight": torch.zeros(2, 3), "payload": _OpensAFile(marker)}, path)


def _run(tmp_path, n_checkpoints):
    """A checkpointer with ``n_checkpoints`` saves of an ``embedding_model``."""
    model = nn.Linear(3, 2)
    ckpt = Checkpointer(str(tmp_path / "save"), {"embedding_model": model})
    for i in range(n_checkpoints):
        with torch.no_grad():
            model.weight.fill_(float(i))
        ckpt.save_checkpoint(meta={"unixtime": float(i)}, name=f"ep{i}")
    return SimpleNamespace(checkpointer=ckpt), model


def test_load_model_refuses_pickled_code(tmp_path):
    brain, _ = _run(tmp_path, 1)
    marker = tmp_path / "code_ran"
    folder = tmp_path / "save" / "CKPT+ep0"
    _write_pickled_code(folder / "embedding_model.ckpt", str(marker))
    with pytest.raises(SSLSVError) as e:
        load_model(brain, "last", 1)
    msg = str(e.value)
    evil = folder / "embedding_model.ckpt"  # named by the check before loading
    assert msg.startswith(
        f"{evil}: refused: it holds Python objects other than "
        "tensors and numbers (Unsupported global: GLOBAL "
    )
    assert msg.endswith("only load runs from people you trust") and "\n" not in msg
    assert not marker.exists()


def test_averaging_refuses_pickled_code(tmp_path):
    brain, model = _run(tmp_path, 2)
    marker = tmp_path / "code_ran"
    evil = tmp_path / "save" / "CKPT+ep0" / "embedding_model.ckpt"  # the older one
    _write_pickled_code(evil, str(marker))
    with pytest.raises(SSLSVError, match="only load runs from people you trust") as e:
        load_model(brain, "last", 2)
    assert str(e.value).startswith(f"{evil}: refused: ")
    assert not marker.exists()


def test_load_model_unreadable_checkpoint(tmp_path):
    brain, _ = _run(tmp_path, 1)
    folder = tmp_path / "save" / "CKPT+ep0"
    (folder / "embedding_model.ckpt").write_bytes(pickle.dumps([1, 2])[:3] + b"junk")
    with pytest.raises(SSLSVError) as e:
        load_model(brain, "last", 1)
    path = folder / "embedding_model.ckpt"
    assert str(e.value).startswith(f"{path}: unreadable checkpoint file (")


def test_load_model_plain_weights_still_load(tmp_path):
    brain, model = _run(tmp_path, 2)
    with torch.no_grad():
        model.weight.fill_(-7.0)
    info = load_model(brain, "last", 2)
    assert info["checkpoints"] == ["CKPT+ep1", "CKPT+ep0"]
    assert torch.allclose(model.weight, torch.full((2, 3), 0.5))  # mean of 0 and 1


def test_rng_state_refuses_pickled_code(tmp_path):
    marker = tmp_path / "code_ran"
    path = tmp_path / "rng.ckpt"
    _write_pickled_code(path, str(marker))
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        RNGState().load(str(path))
    assert not marker.exists()
    saved = tmp_path / "ok.ckpt"
    state = RNGState()
    state.save(str(saved))
    before = torch.rand(3)
    state.load(str(saved))
    assert torch.equal(torch.rand(3), before)
    assert os.path.isfile(saved)
