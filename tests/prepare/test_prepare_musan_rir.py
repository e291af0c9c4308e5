"""MUSAN chunking (originals kept) and RIRS_NOISES listing."""

import csv
import hashlib
import os

import numpy as np
import pytest
import soundfile as sf

from sslsv_sb.data.prepare.musan_rir import chunk_bounds, prepare_augmentation
from sslsv_sb.errors import SSLSVError

SR = 16000


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
    rep = prepare_augmentation(str(data), str(musan.parent), str(rirs),
                               chunk_length=0.1, stride=0.1, min_length=0.04,
                               verbose=False)
    # originals untouched
    assert {rel: md5(musan / rel) for rel in files} == before
    split = data / "musan_split"
    lengths = {
        os.path.relpath(os.path.join(d, f), split): sf.info(os.path.join(d, f)).frames
        for d, _, fs in os.walk(split) for f in fs if f.endswith(".wav")}
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
    rep2 = prepare_augmentation(str(data), str(musan), str(rirs), chunk_length=0.1,
                                stride=0.1, min_length=0.04, verbose=False)
    assert sum("already done" in line for line in rep2.lines) == 2
    with pytest.raises(SSLSVError, match="made with different settings"):
        prepare_augmentation(str(data), str(musan), None, chunk_length=0.2,
                             stride=0.2, min_length=0.04, verbose=False)


def test_musan_csv_prefix_and_bad_audio(tmp_path):
    musan, _ = make_musan(tmp_path)
    write_wav(str(musan / "music/fma/music-fma-0001.wav"), 0.2, sr=8000)
    data = tmp_path / "data"
    with pytest.raises(SSLSVError, match="music-fma-0001.wav: sample rate 8000 Hz"):
        prepare_augmentation(str(data), str(musan), chunk_length=0.1, stride=0.1,
                             min_length=0.04, verbose=False)
    rep = prepare_augmentation(str(data), str(musan), chunk_length=0.1, stride=0.1,
                               min_length=0.04, skip_invalid=True,
                               csv_prefix="$data_folder", verbose=False)
    assert any("skipped 1 invalid MUSAN files" in line for line in rep.lines)
    music = read_csv(data / "musan_music.csv")
    assert music[0]["wav"] == "$data_folder/musan_split/music/fma/music-fma-0000_0.wav"


def test_missing_rir_tree(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SSLSVError, match="no RIRS_NOISES simulated_rirs"):
        prepare_augmentation(str(tmp_path / "d"), rirs=str(tmp_path / "empty"),
                             verbose=False)


def test_csv_loads_in_speechbrain_addnoise(tmp_path):
    """The noise CSV works with SpeechBrain's AddNoise (real integration check)."""
    torch = pytest.importorskip("torch")
    from speechbrain.augment.time_domain import AddNoise

    musan, _ = make_musan(tmp_path)
    data = tmp_path / "data"
    prepare_augmentation(str(data), str(musan), chunk_length=0.1, stride=0.1,
                         min_length=0.04, verbose=False)
    aug = AddNoise(csv_file=str(data / "musan_noise.csv"), snr_low=0, snr_high=5)
    x = torch.randn(2, 1600) * 0.1
    y = aug(x, torch.ones(2))
    assert y.shape == x.shape and not torch.allclose(y, x)
