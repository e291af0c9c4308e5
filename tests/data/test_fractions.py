"""Label fractions: reproducible, nested, per-speaker, minimum classes."""

import numpy as np
import pytest

from sslsv_sb.data.fractions import (
    fraction_order,
    read_list_for_fractions,
    select_fraction,
    write_fraction_list,
)
from sslsv_sb.errors import SSLSVError

FRACTIONS = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0]


def make_list(n_spk=50, n_utt=7):
    labels = [f"id{s:03d}" for s in range(n_spk) for _ in range(n_utt)]
    files = [f"wav/{lab}/{i:05d}.wav" for i, lab in enumerate(labels)]
    return files, labels


@pytest.mark.parametrize("unit", ["utterances", "speakers"])
def test_reproducible_and_nested(unit):
    files, labels = make_list()
    subsets = [set(select_fraction(files, labels, f, unit, seed=3)) for f in FRACTIONS]
    again = [set(select_fraction(files, labels, f, unit, seed=3)) for f in FRACTIONS]
    assert subsets == again
    for small, large in zip(subsets, subsets[1:], strict=False):
        assert small <= large
    assert subsets[-1] == set(range(len(files)))
    other = set(select_fraction(files, labels, 0.2, unit, seed=4))
    assert other != subsets[4]


def test_sizes_and_whole_speakers():
    files, labels = make_list(n_spk=50, n_utt=7)
    idx = select_fraction(files, labels, 0.1, "speakers", seed=0)
    chosen = {labels[i] for i in idx}
    assert len(chosen) == 5 and len(idx) == 35  # ceil(0.1 * 50) speakers, all utts
    idx = select_fraction(files, labels, 0.05, "utterances", seed=0)
    assert len(idx) == int(np.ceil(0.05 * 350))


def test_minimum_two_classes():
    files, labels = make_list(n_spk=50, n_utt=7)
    idx = select_fraction(files, labels, 0.01, "speakers", seed=0)
    assert len({labels[i] for i in idx}) == 2
    idx = select_fraction(files, labels, 1e-6, "utterances", seed=0)
    assert len({labels[i] for i in idx}) == 2
    assert set(idx) <= set(select_fraction(files, labels, 0.02, "utterances", seed=0))
    with pytest.raises(SSLSVError, match="class"):
        select_fraction(files[:7], labels[:7], 0.5, "speakers")


def test_order_independent():
    files, labels = make_list(n_spk=10, n_utt=3)
    perm = np.random.default_rng(0).permutation(len(files))
    a = {files[i] for i in select_fraction(files, labels, 0.3, "utterances", seed=1)}
    f2, l2 = [files[i] for i in perm], [labels[i] for i in perm]
    b = {f2[i] for i in select_fraction(f2, l2, 0.3, "utterances", seed=1)}
    assert a == b
    assert fraction_order(files, labels, "speakers", 1) == fraction_order(
        f2, l2, "speakers", 1
    )


@pytest.mark.parametrize("bad", [0, -0.1, 1.5, "x"])
def test_bad_fraction(bad):
    files, labels = make_list(n_spk=3, n_utt=2)
    with pytest.raises(SSLSVError, match="fraction"):
        select_fraction(files, labels, bad)
    with pytest.raises(SSLSVError, match="unit"):
        select_fraction(files, labels, 0.5, unit="sessions")


def test_read_and_write(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("File,Speaker,Set\na.wav,s1,train\nb.wav,s2,train\nc.wav,s2,test\n")
    df = read_list_for_fractions(str(path))
    assert list(df["File"]) == ["a.wav", "b.wav"] and "Set" not in df.columns
    out = write_fraction_list(df, [1], str(tmp_path / "sub" / "l.csv"))
    assert open(out).read().splitlines() == ["File,Speaker", "b.wav,s2"]
    with pytest.raises(SSLSVError, match="'Language'"):
        read_list_for_fractions(str(path), "Language")
    with pytest.raises(SSLSVError, match="not found"):
        read_list_for_fractions(str(tmp_path / "nope.csv"))
