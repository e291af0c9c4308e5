"""Crop sampler: lengths, determinism, independence, short files, bad audio."""

import numpy as np
import pytest
import soundfile as sf
import torch

from sslsv_sb.data.sampling import (
    EpochState,
    ViewSampler,
    read_crops,
    read_evenly_spaced_crops,
)
from sslsv_sb.errors import SSLSVError


@pytest.fixture
def wav(tmp_path):
    x = np.linspace(0.05, 0.95, 48000).astype("float32")  # unique values, no zeros
    path = tmp_path / "u.wav"
    sf.write(path, x, 16000)
    return str(path), x


def test_crop_lengths_and_content(wav):
    path, x = wav
    sampler = ViewSampler({"views": (2, 16000), "local_views": (4, 8000)}, seed=1)
    out = sampler.sample(path, 0)
    assert out["views"].shape == (2, 16000) and out["local_views"].shape == (4, 8000)
    # Every crop is a contiguous slice of the file (PCM16 quantisation tolerance).
    for crop in [*out["views"], *out["local_views"]]:
        c = crop.numpy()
        start = int(np.argmin(np.abs(x[: len(x) - len(c) + 1] - c[0])))
        assert np.allclose(x[start : start + len(c)], c, atol=1e-3)


def test_determinism_and_independence(wav):
    path, _ = wav
    state = EpochState(0)
    sampler = ViewSampler({"views": (2, 4000)}, seed=7, epoch_state=state)
    a = sampler.sample(path, 3)["views"]
    assert torch.equal(a, sampler.sample(path, 3)["views"])  # same seed/epoch/index
    assert not torch.equal(a[0], a[1])  # the two views are independent crops
    assert not torch.equal(a, sampler.sample(path, 4)["views"])  # other index
    state.epoch = 1
    assert not torch.equal(a, sampler.sample(path, 3)["views"])  # other epoch
    other = ViewSampler({"views": (2, 4000)}, seed=8, epoch_state=EpochState(0))
    assert not torch.equal(a, other.sample(path, 3)["views"])  # other seed


def test_reads_only_the_crop(wav, monkeypatch):
    path, _ = wav
    requested = []
    real_read = sf.SoundFile.read

    def spy(self, frames=-1, *args, **kwargs):
        requested.append(frames)
        return real_read(self, frames, *args, **kwargs)

    monkeypatch.setattr(sf.SoundFile, "read", spy)
    read_crops(path, [8000, 8000], np.random.default_rng(0))
    assert requested == [8000, 8000]


def test_short_file_wraps_without_padding_values(tmp_path):
    path = tmp_path / "short.wav"
    x = (np.arange(1000) % 50 + 1).astype("float32") / 100  # strictly positive
    sf.write(path, x, 16000)
    crops = read_crops(str(path), [4000], np.random.default_rng(0))
    assert crops[0].shape == (4000,) and crops[0].min() > 0  # no zero/sentinel pad
    ev = read_evenly_spaced_crops(str(path), 3000, 3)
    assert ev.shape == (3, 3000) and ev.min() > 0


def test_bad_audio_errors(tmp_path):
    sf.write(tmp_path / "sr.wav", np.ones(100, dtype="float32") * 0.1, 8000)
    with pytest.raises(SSLSVError, match="sr.wav: sample rate 8000"):
        read_crops(str(tmp_path / "sr.wav"), [10], np.random.default_rng(0))
    sf.write(tmp_path / "empty.wav", np.zeros(0, dtype="float32"), 16000)
    with pytest.raises(SSLSVError, match="empty.wav: zero-length"):
        read_crops(str(tmp_path / "empty.wav"), [10], np.random.default_rng(0))
    (tmp_path / "bad.wav").write_bytes(b"RIFF0000garbage")
    with pytest.raises(SSLSVError, match="bad.wav: cannot read audio"):
        read_crops(str(tmp_path / "bad.wav"), [10], np.random.default_rng(0))
    with pytest.raises(SSLSVError, match="cannot read audio"):
        read_crops(str(tmp_path / "missing.wav"), [10], np.random.default_rng(0))


def test_same_speaker_positive_pairs(tmp_path):
    a, b = tmp_path / "a.wav", tmp_path / "b.wav"
    sf.write(a, np.full(8000, 0.25, dtype="float32"), 16000)
    sf.write(b, np.full(8000, -0.5, dtype="float32"), 16000)
    sampler = ViewSampler({"views": (2, 1000)}, seed=0, partners=[[str(b)], []])
    views = sampler.sample(str(a), 0)["views"]
    assert views[0].mean() == pytest.approx(0.25, abs=1e-3)  # anchor: own file
    assert views[1].mean() == pytest.approx(-0.5, abs=1e-3)  # positive: partner
    alone = sampler.sample(str(a), 1)["views"]  # no partner: same utterance
    assert alone.mean() == pytest.approx(0.25, abs=1e-3)


def test_augmentation_in_workers_is_per_crop_and_reproducible(tmp_path):
    path = tmp_path / "u.wav"
    sf.write(path, np.sin(np.arange(16000) * 0.05).astype("float32") * 0.5, 16000)
    calls = []

    def fake_augment(x, generator=None):
        calls.append(x.shape)
        return x + torch.randn(x.shape, generator=generator)

    sampler = ViewSampler(
        {"views": (2, 4000), "ref_view": (1, 4000)},
        seed=3,
        augment=fake_augment,
        augment_keys=["views"],
    )
    out1, out2 = sampler.sample(str(path), 5), sampler.sample(str(path), 5)
    assert calls == [(2, 4000), (2, 4000)]  # the clean reference crop is untouched
    assert torch.equal(out1["views"], out2["views"])
    assert torch.equal(out1["ref_view"], out2["ref_view"])
