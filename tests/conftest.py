"""Shared fixtures: a tiny generated corpus (numpy backend, seconds to render)."""

import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    """A tiny VoxCeleb-shaped corpus shared by the data and recipe tests."""
    from sslsv_sb.data.corpus import PRESETS, generate_corpus

    out = tmp_path_factory.mktemp("tiny_corpus")
    generate_corpus(out, PRESETS["tiny"], workers=1, verbose=False)
    return out
