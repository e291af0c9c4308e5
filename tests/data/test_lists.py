"""Train/trial list validation: every error names the file and line."""

import numpy as np
import pytest
import soundfile as sf

from sslsv_sb.data.lists import read_train_list, read_trials
from sslsv_sb.errors import SSLSVError


@pytest.fixture
def folder(tmp_path):
    for name in ("a", "b", "c"):
        sf.write(tmp_path / f"{name}.wav", np.zeros(160, dtype="float32") + 0.1, 16000)
    return tmp_path


def write(path, text):
    path.write_text(text)
    return str(path)


def test_reads_sslsv_and_speechbrain_lists(folder):
    df = read_train_list(
        write(folder / "l.csv", "File,Speaker\na.wav,s1\nb.wav,s2\n"), str(folder)
    )
    assert list(df["label"]) == ["s1", "s2"]
    assert list(df["line"]) == [2, 3]
    sb_csv = "ID,duration,wav,start,stop,spk_id\nu1,0.01,a.wav,0,160,s1\n"
    df = read_train_list(write(folder / "sb.csv", sb_csv), str(folder))
    assert list(df["label"]) == ["s1"] and df["path"][0].endswith("a.wav")


def test_set_column_filters(folder):
    text = "File,Speaker,Set\na.wav,s1,train\nb.wav,s2,test\n"
    df = read_train_list(write(folder / "l.csv", text), str(folder))
    assert list(df["File"]) == ["a.wav"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("File,Speaker\n", "empty"),
        ("Path,Speaker\na.wav,s\n", "l.csv:1: header must contain 'File'"),
        ("File,Speaker\na.wav,s\na.wav,s\n", "l.csv:3: duplicate entry a.wav"),
        ("File,Speaker\na.wav,s\nzz.wav,s\n", "l.csv:3: audio file not found"),
        ("File,Name\na.wav,s\n", "label column 'Speaker'"),
    ],
)
def test_train_list_errors(folder, text, message):
    with pytest.raises(SSLSVError, match=message):
        read_train_list(write(folder / "l.csv", text), str(folder))


def test_missing_list(folder):
    with pytest.raises(SSLSVError, match="train list not found"):
        read_train_list(str(folder / "nope.csv"), str(folder))


def test_trials_ok(folder):
    t = read_trials(write(folder / "t.txt", "1 a.wav b.wav\n0 a.wav c.wav\n"), folder)
    assert (
        t.name == "t"
        and list(t.labels) == [1, 0]
        and t.files() == ["a.wav", "b.wav", "c.wav"]
    )


@pytest.mark.parametrize(
    "text, message",
    [
        ("1 a.wav b.wav\n1 a.wav\n", "t.txt:2: malformed trial line"),
        ("1 a.wav b.wav\nyes a.wav c.wav\n", "t.txt:2: malformed"),
        ("1 a.wav b.wav\n0 a.wav zz.wav\n", "t.txt:2: unknown file zz.wav"),
        ("1 a.wav b.wav\n1 a.wav c.wav\n", "both target"),
        ("\n", "empty"),
    ],
)
def test_trial_errors(folder, text, message):
    with pytest.raises(SSLSVError, match=message):
        read_trials(write(folder / "t.txt", text), folder)
