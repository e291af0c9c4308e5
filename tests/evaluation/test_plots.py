"""Plots write non-empty PNG files."""

import numpy as np
import pytest

from sslsv_sb.evaluation.plots import plot_det, plot_score_histograms, plot_tsne

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _is_png(path):
    data = path.read_bytes()
    return data[:8] == PNG_MAGIC and len(data) > 2000


def _scores(seed, sep):
    rng = np.random.default_rng(seed)
    y = rng.random(500) < 0.3
    return rng.normal(size=500) + sep * y, y


def test_det_and_histograms(tmp_path):
    systems = {
        "good": _scores(0, 3.0),
        "bad": _scores(1, 1.0),
        "perfect": ([0, 1], [0, 1]),
    }
    out = plot_det(systems, tmp_path / "sub" / "det.png")
    assert out == tmp_path / "sub" / "det.png" and _is_png(out)
    out = plot_score_histograms(*_scores(2, 2.0), tmp_path / "hist.png")
    assert _is_png(out)


def test_tsne(tmp_path):
    rng = np.random.default_rng(3)
    spk = np.repeat(np.arange(25), 4)
    x = rng.normal(size=(25, 8))[spk] + 0.1 * rng.normal(size=(100, 8))
    out = plot_tsne(x, spk, tmp_path / "tsne.png", max_speakers=5, seed=0)
    assert _is_png(out)


def test_empty_inputs(tmp_path):
    with pytest.raises(ValueError, match="no systems"):
        plot_det({}, tmp_path / "a.png")
    with pytest.raises(ValueError, match="sys1: no scores"):
        plot_det({"sys1": ([], [])}, tmp_path / "a.png")
    with pytest.raises(ValueError, match="target and non-target"):
        plot_score_histograms([1.0, 2.0], [1, 1], tmp_path / "b.png")
    with pytest.raises(ValueError, match="non-empty"):
        plot_tsne(np.zeros((0, 4)), [], tmp_path / "c.png")
    assert not list(tmp_path.iterdir())
