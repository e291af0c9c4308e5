"""VoxCeleb preparation on a fake tree in the real layout."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from sslsv_sb.data.lists import read_train_list, read_trials
from sslsv_sb.data.prepare.voxceleb import prepare_voxceleb
from sslsv_sb.errors import SSLSVError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def write_wav(path, seconds=0.2, sr=16000):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    sf.write(path, np.zeros(int(seconds * sr), np.float32) + 0.01, sr, subtype="PCM_16")
    return path


VOX1_DEV = {
    "id10001": ["1zcIwhmdeo4/00001", "1zcIwhmdeo4/00002", "7gWzIy6yIIk/00001"],
    "id10002": ["0_laIeN-Q44/00001", "0_laIeN-Q44/00002"],
}
VOX1_TEST = {
    "id10270": ["5r0dWxy17C8/00001", "x6uYqmx31kE/00001"],
    "id10273": ["0OCW1HUxZyg/00001"],
}
VOX2_DEV = {
    "id00012": ["21Uxsk56VDQ/00001", "21Uxsk56VDQ/00002"],
    "id00015": ["0fijmz4vTVU/00001"],
}


def make_tree(tmp_path, vox2_ext=".wav"):
    """vox1_dev_wav/wav/..., vox1_test_wav/wav/..., vox2/dev/aac/..., meta/*.txt"""
    for spk, utts in VOX1_DEV.items():
        for u in utts:
            write_wav(str(tmp_path / "vox1_dev_wav" / "wav" / spk / f"{u}.wav"))
    for spk, utts in VOX1_TEST.items():
        for u in utts:
            write_wav(str(tmp_path / "vox1_test_wav" / "wav" / spk / f"{u}.wav"))
    for spk, utts in VOX2_DEV.items():
        for u in utts:
            p = write_wav(str(tmp_path / "vox2" / "dev" / "aac" / spk / f"{u}.wav"))
            if vox2_ext != ".wav":
                os.rename(p, p[:-4] + vox2_ext)
    meta = tmp_path / "meta"
    meta.mkdir()
    (meta / "veri_test2.txt").write_text(
        "1 id10270/x6uYqmx31kE/00001.wav id10270/5r0dWxy17C8/00001.wav\n"
        "0 id10270/x6uYqmx31kE/00001.wav id10273/0OCW1HUxZyg/00001.wav\n"
    )
    (meta / "list_test_all2.txt").write_text(
        "1 id10001/1zcIwhmdeo4/00001.wav id10001/7gWzIy6yIIk/00001.wav\n"
        "0 id10001/1zcIwhmdeo4/00001.wav id10002/0_laIeN-Q44/00001.wav\n"
        "0 id10002/0_laIeN-Q44/00002.wav id10270/5r0dWxy17C8/00001.wav\n"
    )
    (meta / "list_test_hard2.txt").write_text(
        "0 id10001/1zcIwhmdeo4/00002.wav id10002/0_laIeN-Q44/00001.wav\n"
    )
    (meta / "voxsrc2021_val.txt").write_text(
        "1 id10002/0_laIeN-Q44/00001.wav id10002/0_laIeN-Q44/00002.wav\n"
    )
    return tmp_path


def run(tmp_path, **kw):
    args = {
        "vox1": [str(tmp_path / "vox1_dev_wav"), str(tmp_path / "vox1_test_wav")],
        "vox2": [str(tmp_path / "vox2")],
        "trials_dir": str(tmp_path / "meta"),
        "verbose": False,
    }
    args.update(kw)
    return prepare_voxceleb(str(tmp_path / "data"), **args)


def test_voxceleb_lists(tmp_path):
    make_tree(tmp_path)
    rep = run(tmp_path)
    data = tmp_path / "data"
    v1 = (data / "voxceleb1_train.csv").read_text().splitlines()
    assert v1[0] == "File,Speaker"
    assert v1[1:] == [
        f"voxceleb1/{s}/{u}.wav,{s}" for s, us in VOX1_DEV.items() for u in us
    ]  # Vox1-O speakers id10270/id10273 removed
    v2 = (data / "voxceleb2_train.csv").read_text().splitlines()
    assert v2[1:] == [
        f"voxceleb2/{s}/{u}.wav,{s}" for s, us in VOX2_DEV.items() for u in us
    ]
    o = (data / "voxceleb1_test_O").read_text().splitlines()
    assert o[0] == (
        "1 voxceleb1/id10270/x6uYqmx31kE/00001.wav "
        "voxceleb1/id10270/5r0dWxy17C8/00001.wav"
    )
    assert [
        len((data / n).read_text().splitlines())
        for n in (
            "voxceleb1_test_O",
            "voxceleb1_test_E",
            "voxceleb1_test_H",
            "voxsrc2021_val",
        )
    ] == [2, 3, 1, 1]
    # the project's readers accept them
    df = read_train_list(str(data / "voxceleb1_train.csv"), str(data))
    assert len(df) == 5 and df["label"].nunique() == 2
    assert len(read_trials(str(data / "voxceleb1_test_E"), str(data)).labels) == 3
    assert any("2 test speakers excluded" in line for line in rep.lines)
    # re-run: every step skipped
    rep2 = run(tmp_path)
    assert sum("already done" in line for line in rep2.lines) == 5


def test_voxceleb2_m4a_conversion(monkeypatch, tmp_path):
    make_tree(tmp_path, vox2_ext=".m4a")
    script = tmp_path / "fake_ffmpeg"
    script.write_text(
        f"#!{sys.executable}\nimport sys, soundfile as sf\n"
        "a = sys.argv; x, sr = sf.read(a[a.index('-i') + 1])\n"
        "sf.write(a[-1], x, sr, subtype='PCM_16', format='WAV')\n"
    )
    script.chmod(0o755)
    monkeypatch.setattr(shutil, "which", lambda name: str(script))
    run(tmp_path, vox1=None, num_workers=2)
    data = tmp_path / "data"
    assert (data / "voxceleb2" / "id00012" / "21Uxsk56VDQ" / "00002.wav").is_file()
    assert len((data / "voxceleb2_train.csv").read_text().splitlines()) == 4
    assert not (data / "voxceleb1_train.csv").exists()


def test_voxceleb2_m4a_without_ffmpeg(monkeypatch, tmp_path):
    make_tree(tmp_path, vox2_ext=".m4a")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(SSLSVError, match="ffmpeg not found"):
        run(tmp_path, vox1=None)


def test_trial_with_unknown_file(tmp_path):
    make_tree(tmp_path)
    with open(tmp_path / "meta" / "list_test_all2.txt", "a") as f:
        f.write("1 id10001/1zcIwhmdeo4/00001.wav id10001/nope/00009.wav\n")
    with pytest.raises(
        SSLSVError,
        match=r"list_test_all2.txt:4: unknown file "
        r"'voxceleb1/id10001/nope/00009.wav'",
    ):
        run(tmp_path)
    rep = run(tmp_path, skip_missing=True)
    assert any("skipped 1 trials referencing 1 missing" in line for line in rep.lines)
    assert len((tmp_path / "data" / "voxceleb1_test_E").read_text().splitlines()) == 3


def test_bad_audio_and_missing_vox1_o(tmp_path):
    make_tree(tmp_path)
    bad = tmp_path / "vox1_dev_wav" / "wav" / "id10002" / "0_laIeN-Q44" / "00003.wav"
    bad.write_bytes(b"")
    with pytest.raises(SSLSVError, match=r"00003.wav: zero-length file"):
        run(tmp_path, vox2=None, skip_missing=True)
    rep = run(tmp_path, vox2=None, skip_invalid=True, skip_missing=True)
    assert any("skipped 1 invalid audio files" in line for line in rep.lines)
    assert (
        len((tmp_path / "data" / "voxceleb1_train.csv").read_text().splitlines()) == 6
    )  # header + 5 valid
    os.remove(tmp_path / "meta" / "veri_test2.txt")
    with pytest.raises(SSLSVError, match="veri_test2.txt .*needed"):
        run(tmp_path, vox2=None, force=True, skip_missing=True, skip_invalid=True)


def test_cli_error_is_one_line(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "tools/prepare_data/prepare_voxceleb.py"),
            "--data_folder",
            str(tmp_path / "d"),
            "--vox1",
            str(tmp_path / "nowhere"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'nowhere'}: folder not found"
    ]


def test_download_needs_checksums_unless_no_verify(server, tmp_path):
    url, h = server
    trials = b"1 id10270/x6uYqmx31kE/00001.wav id10270/5r0dWxy17C8/00001.wav\n"
    h.files["veri_test2.txt"] = trials
    urls = tmp_path / "urls.txt"
    urls.write_text(f"veri_test2.txt {url}/veri_test2.txt\n")
    script = os.path.join(REPO, "tools/prepare_data/prepare_voxceleb.py")
    cmd = [
        sys.executable,
        script,
        "--data_folder",
        str(tmp_path / "d"),
        "--download",
        "--urls",
        str(urls),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: {urls}: no known checksum for veri_test2.txt (line 1); add "
        "md5:<hex> or sha256:<hex> as the third field of its URL-list line, or pass "
        "--no-verify to download it unverified"
    ]
    assert h.log == []
    with pytest.raises(SSLSVError, match="nothing to prepare"):
        prepare_voxceleb(
            str(tmp_path / "d"),
            urls=str(urls),
            download=True,
            verbose=False,
            verify=False,
        )
    assert (tmp_path / "d" / "downloads" / "veri_test2.txt").read_bytes() == trials
    proc = subprocess.run(
        [*cmd, "--no-verify", "--force"], capture_output=True, text=True
    )
    assert proc.returncode == 2 and "error: nothing to prepare" in proc.stderr
