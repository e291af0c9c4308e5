"""VoxLingua107 and CREMA-D label lists."""

import csv
import os

import numpy as np
import pytest
import soundfile as sf

from sslsv_sb.data.lists import read_train_list
from sslsv_sb.data.prepare.cremad import parse_name, prepare_cremad
from sslsv_sb.data.prepare.voxlingua import prepare_voxlingua107
from sslsv_sb.errors import SSLSVError


def write_wav(path, seconds=0.2, sr=16000):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    sf.write(path, np.full(int(seconds * sr), 0.01, np.float32), sr)
    return path


def rows(p):
    with open(p) as f:
        return list(csv.reader(f))


def make_voxlingua(tmp_path):
    root = tmp_path / "voxlingua107"
    for lang, n in (("en", 10), ("fr", 10), ("haw", 4)):
        for i in range(n):
            name = f"-4kBT8p1D8w__U__S{i}---0427.140-0437.960.wav"
            write_wav(str(root / lang / name))
    return root


def test_voxlingua(tmp_path):
    root = make_voxlingua(tmp_path)
    data = tmp_path / "data"
    prepare_voxlingua107(str(data), str(root), verbose=False)
    r = rows(data / "voxlingua107_train.csv")
    assert r[0] == ["File", "Language"] and len(r) == 25
    assert r[1] == ["voxlingua107/en/-4kBT8p1D8w__U__S0---0427.140-0437.960.wav", "en"]
    df = read_train_list(
        str(data / "voxlingua107_train.csv"), str(data), label_key="Language"
    )
    assert df["label"].nunique() == 3
    # split + subsample, reproducible with the seed
    outs = []
    for name in ("a.csv", "b.csv"):
        prepare_voxlingua107(
            str(data),
            str(root),
            val_ratio=0.2,
            subsample=0.5,
            seed=3,
            out_name=name,
            force=True,
            verbose=False,
        )
        outs.append(rows(data / name))
    assert outs[0] == outs[1] and outs[0][0] == ["File", "Language", "Set"]
    body = outs[0][1:]
    assert len(body) == 5 + 5 + 2
    assert sum(x[2] == "test" for x in body) == 1 + 1 + 0


def test_voxlingua_errors(tmp_path):
    with pytest.raises(SSLSVError, match="no <language>/\\*.wav folders"):
        (tmp_path / "empty").mkdir()
        prepare_voxlingua107(
            str(tmp_path / "d"), str(tmp_path / "empty"), verbose=False
        )
    root = make_voxlingua(tmp_path)
    write_wav(str(root / "en" / "x8k.wav"), sr=8000)
    with pytest.raises(SSLSVError, match="x8k.wav: sample rate 8000"):
        prepare_voxlingua107(str(tmp_path / "d"), str(root), verbose=False)
    rep = prepare_voxlingua107(
        str(tmp_path / "d"), str(root), skip_invalid=True, verbose=False
    )
    assert any("skipped 1 invalid audio files" in line for line in rep.lines)


def make_cremad(tmp_path):
    audio = tmp_path / "CREMA-D" / "AudioWAV"
    emotions = ["ANG", "DIS", "FEA", "HAP", "NEU", "SAD"]
    for actor in range(1001, 1011):
        for k, sent in enumerate(("DFA", "IEO", "TIE")):
            level = "XX" if sent != "IEO" else "HI"
            emo = emotions[(actor + k) % 6]
            write_wav(str(audio / f"{actor}_{sent}_{emo}_{level}.wav"))
    return audio.parent


def test_cremad_speaker_split(tmp_path):
    root = make_cremad(tmp_path)
    data = tmp_path / "data"
    rep = prepare_cremad(
        str(data), str(root), split="speaker", test_ratio=0.2, seed=0, verbose=False
    )
    r = rows(data / "cremad_train.csv")
    assert r[0] == ["File", "Emotion", "Set"] and len(r) == 31
    assert r[1] == ["cremad/AudioWAV/1001_DFA_SAD_XX.wav", "SAD", r[1][2]]
    test_actors = {x[0].split("/")[-1][:4] for x in r[1:] if x[2] == "test"}
    train_actors = {x[0].split("/")[-1][:4] for x in r[1:] if x[2] == "train"}
    assert len(test_actors) == 2 and not test_actors & train_actors
    assert any("6 test" in line for line in rep.lines)
    df = read_train_list(
        str(data / "cremad_train.csv"), str(data), label_key="Emotion", set_name="train"
    )
    assert len(df) == 24


def test_cremad_random_split_drop_and_errors(tmp_path):
    root = make_cremad(tmp_path)
    data = tmp_path / "data"
    prepare_cremad(
        str(data),
        str(root),
        split="random",
        test_ratio=0.1,
        seed=1,
        drop_emotions=["DIS"],
        verbose=False,
    )
    r = rows(data / "cremad_train.csv")[1:]
    assert len(r) == 24 and all(x[1] != "DIS" for x in r)
    assert sum(x[2] == "test" for x in r) == 2  # round(0.1 * 24) files
    assert parse_name("1001_DFA_ANG_XX.wav") == ("1001", "DFA", "ANG", "XX")
    assert parse_name("1001_DFA_XYZ_XX.wav") is None
    # the real corpus has an empty file: it must be reported, not silently kept
    (root / "AudioWAV" / "1076_MTI_SAD_XX.wav").write_bytes(b"")
    with pytest.raises(SSLSVError, match="1076_MTI_SAD_XX.wav: zero-length file"):
        prepare_cremad(str(data), str(root), force=True, verbose=False)
    write_wav(str(root / "AudioWAV" / "notes.wav"))
    with pytest.raises(SSLSVError, match="notes.wav: file name does not match"):
        prepare_cremad(str(data), str(root), force=True, verbose=False)
    rep = prepare_cremad(
        str(data), str(root), force=True, skip_invalid=True, verbose=False
    )
    assert any("skipped 2 invalid files" in line for line in rep.lines)
    assert len(rows(data / "cremad_train.csv")) == 31
