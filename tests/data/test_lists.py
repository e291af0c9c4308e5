"""Train/trial list validation: every error names the file and line."""

import numpy as np
import pytest
import soundfile as sf

from sslsv_sb.data import lists
from sslsv_sb.data.lists import (
    audio_policy_notes,
    read_train_list,
    read_trials,
    scan_audio,
)
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


# ------------------------------------------------------------------ audio policy
def test_zero_byte_list_and_header_columns(folder):
    with pytest.raises(SSLSVError, match=r"l.csv: the train list is empty"):
        read_train_list(write(folder / "l.csv", ""), str(folder))
    with pytest.raises(SSLSVError) as err:
        read_train_list(write(folder / "l.csv", "Path,Spk\na.wav,s\n"), str(folder))
    assert str(err.value).endswith("found ['Path', 'Spk']")  # no 'line' column


@pytest.fixture
def audio(folder):
    """a/b/c.wav (0.01 s) plus 1 s files: long.wav, stereo.wav, r8k.wav, bad.wav."""
    x = np.full(16000, 0.1, dtype="float32")
    sf.write(folder / "long.wav", x, 16000)
    sf.write(folder / "long2.wav", x, 16000)
    sf.write(folder / "stereo.wav", np.stack([x, -x], 1), 16000)
    sf.write(folder / "r8k.wav", x[:8000], 8000)
    (folder / "bad.wav").write_text("not audio")
    sf.write(folder / "empty.wav", x[:0], 16000)
    return folder


def policy(folder, rows, min_duration=0.5):
    text = "File,Speaker\n" + "".join(f"{r},s\n" for r in rows)
    return read_train_list(
        write(folder / "l.csv", text),
        str(folder),
        sample_rate=16000,
        min_duration=min_duration,
    )


def test_policy_drops_short_and_counts_channels(audio):
    df = policy(audio, ["a.wav", "long.wav", "stereo.wav", "empty.wav"])
    assert list(df["File"]) == ["long.wav", "stereo.wav"]
    assert list(df["channels"]) == [1, 2] and list(df["frames"]) == [16000, 16000]
    assert list(df.attrs["dropped"]["line"]) == [2, 5]
    notes = audio_policy_notes(df, "l.csv", 16000)
    assert notes[0].startswith("l.csv: dropped 2 of 4 files shorter than min_dur")
    assert "line 2, a.wav, 0.01 s" in notes[0]
    assert notes[1].startswith("l.csv: 1 multi-channel file is averaged to mono")
    assert audio_policy_notes(policy(audio, ["long.wav"]), "l.csv", 16000) == []


@pytest.mark.parametrize(
    "rows, min_duration, message",
    [
        (["long.wav", "r8k.wav"], 0.5, r"l.csv:3: .*r8k.wav: sample rate 8000 Hz"),
        (["long.wav", "bad.wav"], 0.5, r"l.csv:3: .*bad.wav: cannot read audio \(F"),
        (["bad.wav", "r8k.wav"], 0.5, r"l.csv:2: .*bad.wav.* \(2 bad files in this"),
        (["long.wav", "empty.wav"], 0, r"l.csv:3: .*empty.wav: zero-length audio"),
        (["a.wav", "b.wav"], 0.5, r"every file is shorter than min_duration 0.5 s"),
    ],
)
def test_policy_errors(audio, rows, min_duration, message):
    with pytest.raises(SSLSVError, match=message):
        policy(audio, rows, min_duration)


def test_policy_scan_is_remembered_until_the_list_changes(audio, monkeypatch):
    calls = []
    real = lists.audio_info
    monkeypatch.setattr(lists, "audio_info", lambda p: calls.append(p) or real(p))
    path = write(audio / "l.csv", "File,Speaker\nlong.wav,s\nstereo.wav,s\n")

    def read():
        return read_train_list(
            path, str(audio), sample_rate=16000, min_duration=0.5, keep=True
        )

    first = read()
    first.loc[0, "File"] = "changed"  # a copy: the kept table is untouched
    first.attrs["dropped"].loc[0] = [9, "x", 0]
    again = read()  # same list file, same arguments: not scanned again
    assert len(calls) == 2 and len(again) == 2
    assert again["File"][0] == "long.wav" and len(again.attrs["dropped"]) == 0
    read()  # kept for one read only: scanned again
    assert len(calls) == 4
    policy(audio, ["long.wav", "long2.wav"])  # l.csv rewritten, read without keep
    read()  # so nothing was kept: scanned again
    assert len(calls) == 8


def test_scan_audio_threads_keep_list_order(audio):
    paths = [str(audio / n) for n in ["long.wav", "stereo.wav"] * 40]
    frames, channels = scan_audio(paths, "l.csv", range(2, 82), 16000, workers=4)
    assert list(channels[:4]) == [1, 2, 1, 2] and (frames == 16000).all()


def test_trials_audio_scan(audio):
    text = "1 long.wav stereo.wav\n0 long.wav long2.wav\n"
    t = read_trials(write(audio / "t.txt", text), audio, sample_rate=16000)
    assert t.multichannel == 1
    for text, message in [
        ("1 long.wav long2.wav\n0 long.wav r8k.wav\n", r"t.txt:2: .*r8k.wav: sample"),
        ("1 long.wav empty.wav\n0 long.wav long2.wav\n", r"t.txt:1: .*empty.wav: zero"),
        ("1 long.wav long2.wav\n2 long.wav a.wav\n", r"t.txt:2: .*label '2' is nei"),
    ]:
        with pytest.raises(SSLSVError, match=message):
            read_trials(write(audio / "t.txt", text), audio, sample_rate=16000)
