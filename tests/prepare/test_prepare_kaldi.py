"""Kaldi data-directory import (wav.scp + utt2spk + trials)."""

import csv
import os

import numpy as np
import pytest
import soundfile as sf

from sslsv_sb.data.lists import read_train_list, read_trials
from sslsv_sb.data.prepare.kaldi import import_kaldi, read_wav_scp
from sslsv_sb.errors import SSLSVError


def write_wav(path, seconds=0.2, sr=16000):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    sf.write(path, np.full(int(seconds * sr), 0.01, np.float32), sr)
    return path


def make_kaldi(tmp_path):
    data = tmp_path / "data"
    kd = tmp_path / "kaldi" / "train"
    kd.mkdir(parents=True)
    utts = {"spkA-u1": "spkA", "spkA-u2": "spkA", "spkB-u1": "spkB"}
    scp = []
    for u in utts:
        scp.append(f"{u} {write_wav(str(data / 'audio' / (u + '.wav')))}")
    ext = write_wav(str(tmp_path / "elsewhere" / "spkC-u1.wav"))
    scp.append(f"spkC-u1 {ext}")
    utts["spkC-u1"] = "spkC"
    (kd / "wav.scp").write_text("\n".join(scp) + "\n")
    (kd / "utt2spk").write_text("".join(f"{u} {s}\n" for u, s in utts.items()))
    (kd / "trials").write_text(
        "spkA-u1 spkA-u2 target\nspkA-u1 spkB-u1 nontarget\nspkB-u1 spkC-u1 nontarget\n"
    )
    return data, kd, ext


def test_import_with_utt2spk_and_trials(tmp_path):
    data, kd, ext = make_kaldi(tmp_path)
    import_kaldi(
        str(data),
        str(kd),
        trials=[str(kd / "trials")],
        out_trials=["kaldi_trials"],
        verbose=False,
    )
    with open(data / "kaldi_train.csv") as f:
        r = list(csv.reader(f))
    assert r == [
        ["File", "Speaker"],
        ["audio/spkA-u1.wav", "spkA"],
        ["audio/spkA-u2.wav", "spkA"],
        ["audio/spkB-u1.wav", "spkB"],
        [ext, "spkC"],
    ]  # outside the data folder: absolute
    assert (data / "kaldi_trials").read_text().splitlines() == [
        "1 audio/spkA-u1.wav audio/spkA-u2.wav",
        "0 audio/spkA-u1.wav audio/spkB-u1.wav",
        f"0 audio/spkB-u1.wav {ext}",
    ]
    assert len(read_train_list(str(data / "kaldi_train.csv"), str(data))) == 4
    assert len(read_trials(str(data / "kaldi_trials"), str(data)).labels) == 3


def test_import_without_utt2spk(tmp_path):
    data, kd, _ = make_kaldi(tmp_path)
    import_kaldi(str(data), str(kd / "wav.scp"), out_csv="ssl.csv", verbose=False)
    with open(data / "ssl.csv") as f:
        r = list(csv.reader(f))
    assert r[1] == ["audio/spkA-u1.wav", "spkA-u1"]


def test_wav_scp_errors(tmp_path):
    data, kd, _ = make_kaldi(tmp_path)
    scp = kd / "wav.scp"
    lines = scp.read_text().splitlines()
    pipe = "spkD-u1 sox -t flac /x/y.flac -t wav - |"
    scp.write_text("\n".join([*lines, pipe]) + "\n")
    with pytest.raises(SSLSVError, match=r"wav.scp:5: 'spkD-u1' is a piped command"):
        import_kaldi(str(data), str(kd), verbose=False)
    # documented skip: counted, and utt2spk must then not need it
    rep = import_kaldi(
        str(data), str(scp), out_csv="a.csv", on_command="skip", verbose=False
    )
    assert any("skipped 1 invalid wav.scp entries" in line for line in rep.lines)
    scp.write_text("\n".join([*lines, lines[0]]) + "\n")
    with pytest.raises(
        SSLSVError,
        match=r"wav.scp:5: duplicate utterance id "
        r"'spkA-u1' \(first on line 1\)",
    ):
        read_wav_scp(str(scp))
    scp.write_text("\n".join(lines[:3]) + "\n")
    with pytest.raises(SSLSVError, match=r"utt2spk:4: utterance 'spkC-u1' is not in"):
        import_kaldi(str(data), str(kd), verbose=False)


def test_utt2spk_and_audio_errors(tmp_path):
    data, kd, _ = make_kaldi(tmp_path)
    (kd / "utt2spk").write_text("spkA-u1 spkA\nspkA-u2 spkA\nspkC-u1 spkC\n")
    with pytest.raises(
        SSLSVError,
        match=r"wav.scp:3: utterance 'spkB-u1' has no "
        "speaker",
    ):
        import_kaldi(str(data), str(kd), verbose=False)
    rep = import_kaldi(str(data), str(kd), skip_invalid=True, verbose=False)
    assert any("skipped 1 invalid utterances" in line for line in rep.lines)
    data2, kd2, _ = make_kaldi(tmp_path / "b")
    os.remove(data2 / "audio" / "spkA-u2.wav")
    with pytest.raises(
        SSLSVError,
        match=r"spkA-u2.wav: file not found \(listed at "
        r".*wav.scp:2\)",
    ):
        import_kaldi(str(data2), str(kd2), verbose=False)


def test_trial_with_unknown_utterance(tmp_path):
    data, kd, _ = make_kaldi(tmp_path)
    with open(kd / "trials", "a") as f:
        f.write("spkA-u1 ghost nontarget\n")
    with pytest.raises(SSLSVError, match=r"trials:4: unknown id 'ghost'"):
        import_kaldi(
            str(data), str(kd), out_csv=None, trials=[str(kd / "trials")], verbose=False
        )
    rep = import_kaldi(
        str(data),
        str(kd),
        out_csv=None,
        trials=[str(kd / "trials")],
        skip_invalid=True,
        verbose=False,
    )
    assert (data / "train_trials").is_file()  # default name: <dir>_<file>
    assert any("skipped 1 trials" in line for line in rep.lines)
