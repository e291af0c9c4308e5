"""MUSAN chunking (originals kept) and RIRS_NOISES listing."""

import csv
import hashlib
import io
import os
import subprocess
import sys
import tarfile

import numpy as np
import pytest
import soundfile as sf

from sslsv_sb.data.prepare import musan_rir
from sslsv_sb.data.prepare.common import parse_checksum
from sslsv_sb.data.prepare.musan_rir import chunk_bounds, prepare_augmentation
from sslsv_sb.errors import SSLSVError

SR = 16000
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# MUSAN chunking small enough for the fake 0.2-0.5 s recordings.
TINY_CHUNKS = {"chunk_length": 0.1, "stride": 0.1, "min_length": 0.04}


def write_wav(path, seconds, sr=SR):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    x = np.random.default_rng(1).uniform(-0.5, 0.5, int(round(seconds * sr)))
    sf.write(path, x.astype(np.float32), sr, subtype="PCM_16")
    return path


def md5(p):
    return hashlib.md5(open(p, "rb").read()).hexdigest()


def make_musan(tmp_path):
    m = tmp_path / "corpora" / "musan"
    files = {
        "noise/free-sound/noise-free-sound-0000.wav": 0.25,  # 3 chunks (tail .05)
        "noise/sound-bible/noise-sound-bible-0001.wav": 0.23,  # 2 (tail .03 dropped)
        "music/fma/music-fma-0000.wav": 0.1,  # exactly 1
        "speech/librivox/speech-librivox-0000.wav": 0.02,  # too short: none
        "speech/us-gov/speech-us-gov-0000.wav": 0.15,  # 2
    }
    for rel, sec in files.items():
        write_wav(str(m / rel), sec)
    (m / "README").write_text("MUSAN")
    return m, files


def make_rirs(tmp_path):
    r = tmp_path / "corpora" / "RIRS_NOISES" / "simulated_rirs"
    for room, n in (("smallroom", 2), ("mediumroom", 1), ("largeroom", 1)):
        for k in range(1, n + 1):
            write_wav(str(r / room / f"Room{k:03d}" / f"Room{k:03d}-00001.wav"), 0.05)
    return r.parent


def read_csv(p):
    with open(p) as f:
        return list(csv.DictReader(f))


def test_chunk_bounds():
    assert chunk_bounds(20, 8, 8, 3) == [(0, 8), (8, 16), (16, 20)]
    assert chunk_bounds(17, 8, 8, 3) == [(0, 8), (8, 16)]
    assert chunk_bounds(5, 8, 8, 3) == [(0, 5)]
    assert chunk_bounds(2, 8, 8, 3) == []
    assert chunk_bounds(16, 8, 4, 3) == [(0, 8), (4, 12), (8, 16)]


def test_musan_split_and_rirs(tmp_path):
    musan, files = make_musan(tmp_path)
    rirs = make_rirs(tmp_path)
    before = {rel: md5(musan / rel) for rel in files}
    data = tmp_path / "data"
    rep = prepare_augmentation(
        str(data),
        str(musan.parent),
        str(rirs),
        **TINY_CHUNKS,
        verbose=False,
    )
    # originals untouched
    assert {rel: md5(musan / rel) for rel in files} == before
    split = data / "musan_split"
    lengths = {
        os.path.relpath(os.path.join(d, f), split): sf.info(os.path.join(d, f)).frames
        for d, _, fs in os.walk(split)
        for f in fs
        if f.endswith(".wav")
    }
    assert lengths == {
        "noise/free-sound/noise-free-sound-0000_0.wav": 1600,
        "noise/free-sound/noise-free-sound-0000_1.wav": 1600,
        "noise/free-sound/noise-free-sound-0000_2.wav": 800,
        "noise/sound-bible/noise-sound-bible-0001_0.wav": 1600,
        "noise/sound-bible/noise-sound-bible-0001_1.wav": 1600,
        "music/fma/music-fma-0000_0.wav": 1600,
        "speech/us-gov/speech-us-gov-0000_0.wav": 1600,
        "speech/us-gov/speech-us-gov-0000_1.wav": 800,
    }
    # chunk content is the original signal
    orig, _ = sf.read(str(musan / "noise/free-sound/noise-free-sound-0000.wav"))
    c1, _ = sf.read(str(split / "noise/free-sound/noise-free-sound-0000_1.wav"))
    assert np.allclose(orig[1600:3200], c1)
    noise = read_csv(data / "musan_noise.csv")
    assert list(noise[0]) == ["ID", "duration", "wav", "wav_format", "wav_opts"]
    assert len(noise) == 5
    assert noise[0]["ID"] == "noise_free-sound_noise-free-sound-0000_0"
    assert noise[2]["duration"] == "0.050" and os.path.isabs(noise[0]["wav"])
    assert noise[0]["wav_format"] == "wav" and noise[0]["wav_opts"] == ""
    assert len(read_csv(data / "musan.csv")) == 8
    assert any("1 files shorter than min_length" in line for line in rep.lines)
    # RIRs: layout kept, CSV written
    rooms = data / "simulated_rirs" / "smallroom"
    assert (rooms / "Room002" / "Room002-00001.wav").is_file()
    rir = read_csv(data / "rirs.csv")
    assert len(rir) == 4 and rir[0]["ID"] == "smallroom_Room001_Room001-00001"
    # re-run skips; other settings on the same folder are refused
    rep2 = prepare_augmentation(
        str(data),
        str(musan),
        str(rirs),
        **TINY_CHUNKS,
        verbose=False,
    )
    assert sum("already done" in line for line in rep2.lines) == 2
    with pytest.raises(SSLSVError, match="made with different settings"):
        prepare_augmentation(
            str(data),
            str(musan),
            None,
            chunk_length=0.2,
            stride=0.2,
            min_length=0.04,
            verbose=False,
        )


def test_musan_csv_prefix_and_bad_audio(tmp_path):
    musan, _ = make_musan(tmp_path)
    write_wav(str(musan / "music/fma/music-fma-0001.wav"), 0.2, sr=8000)
    data = tmp_path / "data"
    with pytest.raises(SSLSVError, match="music-fma-0001.wav: sample rate 8000 Hz"):
        prepare_augmentation(
            str(data),
            str(musan),
            **TINY_CHUNKS,
            verbose=False,
        )
    rep = prepare_augmentation(
        str(data),
        str(musan),
        **TINY_CHUNKS,
        skip_invalid=True,
        csv_prefix="$data_folder",
        verbose=False,
    )
    assert any("skipped 1 invalid MUSAN files" in line for line in rep.lines)
    music = read_csv(data / "musan_music.csv")
    assert music[0]["wav"] == "$data_folder/musan_split/music/fma/music-fma-0000_0.wav"


def test_missing_rir_tree(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SSLSVError, match="no RIRS_NOISES simulated_rirs"):
        prepare_augmentation(
            str(tmp_path / "d"), rirs=str(tmp_path / "empty"), verbose=False
        )


def test_csv_loads_in_speechbrain_addnoise(tmp_path):
    """The noise CSV works with SpeechBrain's AddNoise (real integration check)."""
    torch = pytest.importorskip("torch")
    from speechbrain.augment.time_domain import AddNoise

    musan, _ = make_musan(tmp_path)
    data = tmp_path / "data"
    prepare_augmentation(
        str(data),
        str(musan),
        **TINY_CHUNKS,
        verbose=False,
    )
    aug = AddNoise(csv_file=str(data / "musan_noise.csv"), snr_low=0, snr_high=5)
    x = torch.randn(2, 1600) * 0.1
    y = aug(x, torch.ones(2))
    assert y.shape == x.shape and not torch.allclose(y, x)


# ------------------------------------------------------------------ downloads
def test_default_downloads_carry_published_checksums(monkeypatch, tmp_path):
    """The OpenSLR archives are verified against their published md5."""
    seen = {}

    def fake_download_all(entries, folder, **kwargs):
        seen.update({name: (url, checksum) for name, url, checksum, _ in entries})
        seen["verify"] = kwargs["verify"]
        raise SSLSVError("stop here")

    monkeypatch.setattr(musan_rir, "download_all", fake_download_all)
    with pytest.raises(SSLSVError, match="stop here"):
        prepare_augmentation(str(tmp_path / "d"), download=True, verbose=False)
    assert seen.pop("verify") is True
    assert seen == {
        "musan.tar.gz": (
            "https://www.openslr.org/resources/17/musan.tar.gz",
            "md5:0c472d4fc0c5141eca47ad1ffeb2a7df",
        ),
        "rirs_noises.zip": (
            "https://www.openslr.org/resources/28/rirs_noises.zip",
            "md5:e6f48e257286e05de56413b4779d8ffb",
        ),
    }
    assert all(parse_checksum(c)[0] == "md5" for _, c in seen.values())


def _augmentation_archive(tmp_path):
    """A tar.gz holding a small MUSAN tree and a small RIRS_NOISES tree."""
    musan, _ = make_musan(tmp_path)
    rirs = make_rirs(tmp_path)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        t.add(musan, "musan")
        t.add(rirs, "RIRS_NOISES")
    return buf.getvalue()


def _run_cli(data, urls, *extra):
    script = os.path.join(REPO, "tools", "prepare_data", "prepare_augmentation.py")
    return subprocess.run(
        [
            sys.executable,
            script,
            "--data_folder",
            str(data),
            "--download",
            "--urls",
            str(urls),
            "--chunk_length",
            "0.1",
            "--stride",
            "0.1",
            "--min_length",
            "0.04",
            *extra,
        ],
        capture_output=True,
        text=True,
    )


def test_download_cli_checksums(server, tmp_path):
    url, h = server
    archive = _augmentation_archive(tmp_path)
    md5 = hashlib.md5(archive).hexdigest()
    h.files.update({"aug.tar.gz": archive, "musan.tar.gz": archive})
    urls = tmp_path / "urls.txt"

    # A wrong checksum fails (the partial file is removed).
    urls.write_text(f"aug.tar.gz {url}/aug.tar.gz md5:{'0' * 32}\n")
    proc = _run_cli(tmp_path / "d1", urls)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'd1' / 'downloads' / 'aug.tar.gz'}: md5 checksum "
        f"mismatch (expected {'0' * 32}, got {md5}) for {url}/aug.tar.gz; the "
        "partial file was removed"
    ]

    # A mirror of musan.tar.gz listed without a checksum is checked against the
    # published MUSAN md5 (which this stand-in archive does not match).
    urls.write_text(f"musan.tar.gz {url}/musan.tar.gz\n")
    proc = _run_cli(tmp_path / "d2", urls)
    assert proc.returncode == 2
    assert "expected 0c472d4fc0c5141eca47ad1ffeb2a7df" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1

    # No known checksum: refused before any request, unless --no-verify.
    urls.write_text(f"# mirror\naug.tar.gz {url}/aug.tar.gz\n")
    h.log.clear()
    proc = _run_cli(tmp_path / "d3", urls)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: {urls}: no known checksum for aug.tar.gz (line 2); add md5:<hex> "
        "or sha256:<hex> as the third field of its URL-list line, or pass "
        "--no-verify to download it unverified"
    ]
    assert h.log == []
    proc = _run_cli(tmp_path / "d3", urls, "--no-verify")
    assert proc.returncode == 0, proc.stderr
    assert "no known checksum" in proc.stderr and "unverified" in proc.stderr
    assert len(read_csv(tmp_path / "d3" / "musan.csv")) == 8
    assert len(read_csv(tmp_path / "d3" / "rirs.csv")) == 4

    # With its checksum listed, the same archive passes without --no-verify.
    urls.write_text(f"aug.tar.gz {url}/aug.tar.gz md5:{md5}\n")
    proc = _run_cli(tmp_path / "d4", urls)
    assert proc.returncode == 0, proc.stderr
    assert len(read_csv(tmp_path / "d4" / "rirs.csv")) == 4
