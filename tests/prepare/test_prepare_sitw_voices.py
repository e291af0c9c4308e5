"""SITW and VOiCES 2019 trial builders on fake trees in the real layouts."""

import os

import numpy as np
import pytest
import soundfile as sf

from sslsv_sb.data.lists import read_trials
from sslsv_sb.data.prepare.sitw import prepare_sitw
from sslsv_sb.data.prepare.voices import prepare_voices
from sslsv_sb.errors import SSLSVError


def write_audio(path, seconds=0.2, sr=16000):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    sf.write(path, np.full(int(seconds * sr), 0.01, np.float32), sr)
    return path


def make_sitw(tmp_path):
    root = tmp_path / "sitw"
    for s in ("dev", "eval"):
        for name in ("aahtm", "abtql", "adfxs", "aembl"):
            write_audio(str(root / s / "audio" / f"{name}.flac"))
        (root / s / "lists").mkdir(parents=True)
        (root / s / "keys").mkdir()
        (root / s / "lists" / "enroll-core.lst").write_text(
            "10010 audio/aahtm.flac\n10017 audio/abtql.flac\n"
        )
        (root / s / "keys" / "core-core.lst").write_text(
            "10010 audio/adfxs.flac tgt\n10010 audio/aembl.flac imp\n"
            "10017 audio/aembl.flac tgt\n"
        )
        (root / s / "keys" / "core-multi.lst").write_text(
            "10017 audio/adfxs.flac imp\n"
        )
    return root


def test_sitw(tmp_path):
    make_sitw(tmp_path)
    data = tmp_path / "data"
    prepare_sitw(str(data), str(tmp_path / "sitw"), verbose=False)
    lines = (data / "sitw_dev_core-core").read_text().splitlines()
    assert lines == [
        "1 sitw/dev/audio/aahtm.flac sitw/dev/audio/adfxs.flac",
        "0 sitw/dev/audio/aahtm.flac sitw/dev/audio/aembl.flac",
        "1 sitw/dev/audio/abtql.flac sitw/dev/audio/aembl.flac",
    ]
    assert (
        data / "sitw_eval_core-multi"
    ).read_text() == "0 sitw/eval/audio/abtql.flac sitw/eval/audio/adfxs.flac\n"
    assert len(read_trials(str(data / "sitw_eval_core-core"), str(data)).labels) == 3
    rep = prepare_sitw(str(data), str(tmp_path / "sitw"), verbose=False)
    assert any("already done" in line for line in rep.lines)


def test_sitw_errors(tmp_path):
    root = make_sitw(tmp_path)
    with open(root / "dev" / "keys" / "core-core.lst", "a") as f:
        f.write("99999 audio/aembl.flac imp\n")
    with pytest.raises(
        SSLSVError,
        match=r"dev/keys/core-core.lst:4: unknown id "
        "'99999'",
    ):
        prepare_sitw(str(tmp_path / "data"), str(root), verbose=False)
    rep = prepare_sitw(
        str(tmp_path / "data"), str(root), skip_missing=True, verbose=False
    )
    assert any("skipped 1 trials" in line for line in rep.lines)
    make_sitw(tmp_path / "fresh")
    root = tmp_path / "fresh" / "sitw"
    os.remove(root / "eval" / "audio" / "aembl.flac")
    with pytest.raises(
        SSLSVError,
        match=r"eval/keys/core-core.lst:2: unknown file "
        "'sitw/eval/audio/aembl.flac'",
    ):
        prepare_sitw(str(tmp_path / "data2"), str(root), verbose=False)
    (root / "dev" / "keys" / "core-multi.lst").write_text(
        "10017 audio/adfxs.flac maybe\n"
    )
    with pytest.raises(SSLSVError, match=r"core-multi.lst:1: unknown label 'maybe'"):
        prepare_sitw(
            str(tmp_path / "data3"), str(root), skip_missing=True, verbose=False
        )


VOICES_IDS = {
    "e1": "Lab41-SRI-VOiCES-rm1-none-sp0083-ch000054-sg0005-mc01-stu-clo-dg090",
    "t1": "Lab41-SRI-VOiCES-rm2-babb-sp0083-ch000054-sg0007-mc03-lav-mid-dg080",
    "t2": "Lab41-SRI-VOiCES-rm3-tele-sp2911-ch012345-sg0003-mc05-stu-far-dg030",
}


def make_voices(tmp_path, with_enroll=True):
    root = tmp_path / "VOiCES" / "Development_Data" / "Speaker_Recognition"
    paths = {}
    for k, name in VOICES_IDS.items():
        spk = name.split("-")[-7]
        paths[k] = f"sid_dev/{spk}/{name}.wav"
        write_audio(str(root / paths[k]))
    keys = root / "sid_dev_lists_and_keys"
    keys.mkdir()
    if with_enroll:
        (keys / "dev-enroll.lst").write_text(f"{VOICES_IDS['e1']} {paths['e1']}\n")
    (keys / "dev-trial-keys.lst").write_text(
        f"{VOICES_IDS['e1']} {paths['t1']} tgt\n{VOICES_IDS['e1']} {paths['t2']} imp\n"
    )
    return root, paths


@pytest.mark.parametrize("with_enroll", [True, False])
def test_voices(tmp_path, with_enroll):
    _, paths = make_voices(tmp_path, with_enroll)
    data = tmp_path / "data"
    prepare_voices(str(data), str(tmp_path / "VOiCES"), verbose=False)
    assert (data / "voices2019_dev").read_text().splitlines() == [
        f"1 voices/{paths['e1']} voices/{paths['t1']}",
        f"0 voices/{paths['e1']} voices/{paths['t2']}",
    ]
    assert len(read_trials(str(data / "voices2019_dev"), str(data)).labels) == 2


def test_voices_bad_audio(tmp_path):
    root, paths = make_voices(tmp_path)
    (root / paths["t2"]).write_bytes(b"RIFFjunk")
    with pytest.raises(
        SSLSVError,
        match=r"unreadable or corrupt audio .*"
        r"dev-trial-keys.lst:2",
    ):
        prepare_voices(str(tmp_path / "data"), str(root), verbose=False)
    rep = prepare_voices(
        str(tmp_path / "data"), str(root), skip_missing=True, verbose=False
    )
    assert any("skipped 1 trials" in line for line in rep.lines)


def test_sitw_missing_keys(tmp_path):
    root = make_sitw(tmp_path)
    data = tmp_path / "data"
    os.remove(root / "eval" / "keys" / "core-multi.lst")
    rep = prepare_sitw(str(data), str(root), verbose=False)
    assert any(
        line.endswith("eval/keys/core-multi.lst not found, skipped")
        for line in rep.lines
    )
    assert sorted(p.name for p in data.glob("sitw_*")) == [
        "sitw_dev_core-core",
        "sitw_dev_core-multi",
        "sitw_eval_core-core",
    ]
    # enrolment lists are read only when the step runs: a finished step needs none
    os.remove(root / "dev" / "lists" / "enroll-core.lst")
    rep = prepare_sitw(str(data), str(root), verbose=False)
    assert any("already done" in line for line in rep.lines)
    with pytest.raises(
        SSLSVError,
        match=r"dev/lists/enroll-core.lst: enrolment list "
        "not found",
    ):
        prepare_sitw(str(data), str(root), force=True, verbose=False)
    with pytest.raises(SSLSVError, match=r"sitw: no SITW key file found"):
        prepare_sitw(
            str(tmp_path / "data2"),
            str(root),
            sets=("eval",),
            conditions=("core-multi",),
            verbose=False,
        )
