"""sslsv_sb.recipe.trainset: loader options (workers, per-process batch)."""

import os

import pytest

from sslsv_sb.errors import SSLSVError
from sslsv_sb.recipe.trainset import loader_options, resolve_num_workers


def test_num_workers_auto(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert resolve_num_workers("auto") == 0
    monkeypatch.setattr(os, "cpu_count", lambda: 32)
    assert resolve_num_workers("auto") == 4
    assert resolve_num_workers("auto", world=8) == 2
    assert resolve_num_workers(3) == 3
    with pytest.raises(SSLSVError, match="num_workers"):
        resolve_num_workers("many")


def test_loader_options_split_the_global_batch(monkeypatch):
    hparams = {"dataloader_options": {"batch_size": 64, "num_workers": "2"}}
    one = loader_options(hparams, world=1)
    assert one == {"batch_size": 64, "num_workers": 2}
    assert loader_options(hparams, world=4)["batch_size"] == 16
    assert hparams["dataloader_options"]["batch_size"] == 64  # yaml left untouched
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert loader_options(hparams)["batch_size"] == 32
    with pytest.raises(SSLSVError, match="not divisible by the 3 processes"):
        loader_options(hparams, world=3)


def test_persistent_workers_are_refused():
    # A persistent worker would reuse its first epoch's crops and outlive fit().
    opts = {"batch_size": 8, "num_workers": 2, "persistent_workers": True}
    with pytest.raises(SSLSVError, match="persistent_workers"):
        loader_options({"dataloader_options": opts})
    opts["persistent_workers"] = False
    assert loader_options({"dataloader_options": opts})["num_workers"] == 2
