"""Per-view augmentation: SNR achieved in range, independence, strategies."""

import numpy as np
import pytest
import soundfile as sf
import torch

from sslsv_sb.data.augment import ViewAugment
from sslsv_sb.errors import SSLSVError


@pytest.fixture
def banks(tmp_path):
    rng = np.random.default_rng(0)
    for cat in ("noise", "music", "speech"):
        (tmp_path / "noise" / cat).mkdir(parents=True)
        for k in range(3):
            x = rng.standard_normal(16000 * 2).astype("float32") * (0.1 + 0.2 * k)
            sf.write(tmp_path / "noise" / cat / f"{k}.wav", x, 16000)
    (tmp_path / "rirs").mkdir()
    for k in range(3):
        r = np.exp(-np.arange(2000) / 300.0) * rng.standard_normal(2000)
        r[0] = 0.0
        r[5] = 3.0  # direct path after a small delay
        sf.write(tmp_path / "rirs" / f"{k}.wav", r.astype("float32") / 4, 16000)
    return tmp_path


def speechlike(b, n=8000):
    t = torch.arange(n) / 16000
    f0 = torch.linspace(100, 300, b)[:, None]
    return (
        0.5 * torch.sin(2 * torch.pi * f0 * t) * (1 + torch.sin(2 * torch.pi * 3 * t))
    )


def test_snr_within_category_ranges(banks):
    aug = ViewAugment(noise_folder=str(banks / "noise"), strategy="noise").load()
    x = speechlike(64)
    y = aug(x, generator=torch.Generator().manual_seed(0))
    noise = y - x
    snr = 10 * torch.log10(x.pow(2).mean(1) / noise.pow(2).mean(1))
    assert snr.min() >= 0.0 - 1e-3 and snr.max() <= 20.0 + 1e-3
    assert snr.std() > 1.0  # drawn per row, not per batch


def test_rows_are_augmented_independently(banks):
    aug = ViewAugment(str(banks / "noise"), str(banks / "rirs")).load()
    x = speechlike(1).repeat(8, 1)
    y = aug(x, generator=torch.Generator().manual_seed(1))
    diffs = [(y[0] - y[i]).abs().max().item() for i in range(1, 8)]
    assert min(diffs) > 1e-3


def test_reverb_only_keeps_level_and_changes_signal(banks):
    aug = ViewAugment(rir_folder=str(banks / "rirs"), strategy="reverb").load()
    x = speechlike(4)
    y = aug(x)
    assert torch.allclose(y.pow(2).mean(1), x.pow(2).mean(1), rtol=1e-3)
    assert (y - x).abs().max() > 1e-2


def test_prob_zero_is_identity_and_bad_config(banks):
    aug = ViewAugment(str(banks / "noise"), str(banks / "rirs"), aug_prob=0.0).load()
    x = speechlike(4)
    assert torch.equal(aug(x), x)
    with pytest.raises(SSLSVError, match="strategy"):
        ViewAugment(strategy="loud")
    with pytest.raises(SSLSVError, match="noise folder not found"):
        ViewAugment(noise_folder=str(banks / "nope")).load()


def test_check_reads_headers_only_and_names_the_file(banks):
    aug = ViewAugment(noise_folder="noise", rir_folder="rirs", max_files=2)
    files = aug.bank_files(seed=1, data_folder=str(banks))
    assert sorted(files) == ["music", "noise", "rir", "speech"]
    assert all(len(v) == 2 for v in files.values())
    aug.check(str(banks), seed=1)
    assert aug.noise_folder == "noise" and not aug.loaded  # nothing changed
    aug.load(str(banks), seed=1)  # loads exactly the files checked
    assert aug.bank_speech.shape[0] == 2
    sf.write(banks / "rirs" / "1.wav", np.zeros(100, dtype="float32"), 8000)
    sf.write(banks / "rirs" / "0.wav", np.zeros(100, dtype="float32"), 8000)
    sf.write(banks / "rirs" / "2.wav", np.zeros(100, dtype="float32"), 8000)
    with pytest.raises(SSLSVError, match=r"rirs/\d.wav: sample rate 8000 Hz"):
        aug.check(str(banks), seed=1)
    for folder, message in [
        ("missing", "noise folder not found"),
        ("rirs", r"no wav files under .*rirs/\{noise,music,speech\}"),
    ]:
        with pytest.raises(SSLSVError, match=message):
            ViewAugment(noise_folder=folder).check(str(banks))
