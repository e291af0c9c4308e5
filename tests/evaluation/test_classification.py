"""Downstream probes and label CSV reading."""

import numpy as np
import pytest

from sslsv_sb.errors import SSLSVError
from sslsv_sb.evaluation.classification import linear_probe, mlp_probe, read_label_csv


def _blobs(n_per, seed, n_cls=4, dim=16):
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(100).normal(size=(n_cls, dim)) * 2
    y = np.repeat(np.array([f"c{k}" for k in range(n_cls)]), n_per)
    x = centers[np.repeat(np.arange(n_cls), n_per)] + rng.normal(size=(len(y), dim))
    return x, y


@pytest.mark.parametrize("probe", [linear_probe, mlp_probe])
def test_probe_beats_chance(probe):
    xtr, ytr = _blobs(40, 0)
    xte, yte = _blobs(20, 1)
    out = probe(xtr, ytr, xte, yte)
    assert set(out) >= {"accuracy", "f1_macro", "f1_weighted"}
    assert out["accuracy"] > 0.8 > 0.25  # chance is 0.25
    assert out["f1_macro"] > 0.8 and out["n_classes"] == 4


def test_probe_on_noise_is_near_chance():
    rng = np.random.default_rng(2)
    y = np.repeat(np.arange(4), 50)
    out = linear_probe(rng.normal(size=(200, 8)), y, rng.normal(size=(200, 8)), y)
    assert out["accuracy"] < 0.45


def test_probe_errors():
    with pytest.raises(ValueError, match="2 classes"):
        linear_probe(np.ones((4, 2)), [0] * 4, np.ones((2, 2)), [0, 0])
    with pytest.raises(ValueError, match="dims differ"):
        linear_probe(np.ones((4, 2)), [0, 1, 0, 1], np.ones((2, 3)), [0, 1])


def test_read_label_csv(tmp_path):
    (tmp_path / "a.wav").write_bytes(b"x")
    (tmp_path / "b.wav").write_bytes(b"x")
    csv = tmp_path / "cremad.csv"
    csv.write_text("File,Emotion,Set\na.wav,happy,train\nb.wav,sad,test\n")
    rows = read_label_csv(csv, "Emotion", tmp_path)
    assert [(r.label, r.set) for r in rows] == [("happy", "train"), ("sad", "test")]
    assert rows[0].file == str(tmp_path / "a.wav")
    nosplit = tmp_path / "nosplit.csv"
    nosplit.write_text("File,Gender\na.wav,m\n")
    assert read_label_csv(nosplit, "Gender", tmp_path)[0].set is None


def test_read_label_csv_errors(tmp_path):
    (tmp_path / "a.wav").write_bytes(b"x")
    csv = tmp_path / "l.csv"
    csv.write_text("File,Emotion\na.wav,happy\n")
    with pytest.raises(SSLSVError, match=r"l.csv:1: missing column 'Language'"):
        read_label_csv(csv, "Language", tmp_path)
    csv.write_text("File,Emotion\na.wav,happy\nmissing.wav,sad\n")
    with pytest.raises(SSLSVError, match=r"l.csv:3: audio file not found"):
        read_label_csv(csv, "Emotion", tmp_path)
    csv.write_text("File,Emotion\na.wav,happy\na.wav\n")
    with pytest.raises(SSLSVError, match=r"l.csv:3: 1 fields"):
        read_label_csv(csv, "Emotion", tmp_path)
    with pytest.raises(SSLSVError, match="not found"):
        read_label_csv(tmp_path / "none.csv", "Emotion", tmp_path)
