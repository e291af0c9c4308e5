"""Shared fixtures: a tiny generated corpus (numpy backend, seconds to render)."""

import os

import pytest

# Under pytest-xdist (`make test`: -n 2 on 2 cores) each worker and the training
# subprocesses it starts use one thread: two workers of two OpenMP threads each
# oversubscribe the cores, and idle OpenMP threads spin.
os.environ.setdefault(
    "OMP_NUM_THREADS", "1" if os.environ.get("PYTEST_XDIST_WORKER") else "2"
)


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    """A tiny VoxCeleb-shaped corpus shared by the data and recipe tests."""
    from sslsv_sb.data.corpus import PRESETS, generate_corpus

    out = tmp_path_factory.mktemp("tiny_corpus")
    generate_corpus(out, PRESETS["tiny"], workers=1, verbose=False)
    return out
