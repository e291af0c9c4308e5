"""Bad input to the training recipe: one clear error naming file/line/key, exit 2."""

import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from sslsv_sb.errors import SSLSVError
from sslsv_sb.recipe.train import main as train_main

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN = os.path.join(ROOT, "recipes", "VoxCeleb", "SSL", "train.py")
HPARAMS = os.path.join(
    ROOT, "recipes", "VoxCeleb", "SSL", "hparams", "simclr_ecapa.yaml"
)


@pytest.fixture
def data(tmp_path):
    rng = np.random.default_rng(0)
    rows = ["File,Speaker"]
    for i in range(4):
        path = tmp_path / f"u{i}.wav"
        sf.write(path, (0.1 * rng.standard_normal(8000)).astype("float32"), 16000)
        rows.append(f"u{i}.wav,s{i % 2}")
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "trials.txt").write_text("1 u0.wav u2.wav\n0 u0.wav u1.wav\n")
    return tmp_path


def args(data, out, *extra):
    base = [
        HPARAMS,
        f"--data_folder={data}",
        "--train_list=train.csv",
        "--trial_lists=[trials.txt]",
        "--noise_folder=null",
        "--rir_folder=null",
        "--channels=[8,8,8,8,24]",
        "--emb_dim=8",
        "--batch_size=2",
        "--frame_length=2000",
        "--number_of_epochs=1",
        "--num_workers=0",
        f"--output_folder={out}",
        "--noprogressbar",
        "--eval_untrained=False",
    ]
    keys = {e.split("=")[0] for e in extra}
    return [a for a in base if a.split("=")[0] not in keys] + list(extra)


@pytest.mark.parametrize(
    "setup, extra, message",
    [
        (None, ["--data_folder=/nonexistent/x"], "data folder not found"),
        ("empty_list", [], "the train list is empty"),
        ("missing_audio", [], r"train.csv:3: audio file not found"),
        ("bad_trial", [], r"trials.txt:2: malformed trial line"),
        ("corrupt_audio", [], r"u1.wav: cannot read audio"),
        (None, ["--bogus_key=3"], "unknown hyper-parameter.*bogus_key"),
        ("tiny_list", ["--batch_size=8"], "fewer than one batch"),
    ],
)
def test_bad_input_raises_clear_error(data, tmp_path, setup, extra, message):
    if setup == "empty_list":
        (data / "train.csv").write_text("File,Speaker\n")
    elif setup == "missing_audio":
        os.remove(data / "u1.wav")
    elif setup == "bad_trial":
        (data / "trials.txt").write_text("1 u0.wav u2.wav\n1 u0.wav\n")
    elif setup == "corrupt_audio":
        (data / "u1.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    with pytest.raises(SSLSVError, match=message):
        train_main(args(data, tmp_path / "out", *extra))


def test_cli_exit_code_and_message(data, tmp_path):
    os.remove(data / "u1.wav")
    proc = subprocess.run(
        [sys.executable, TRAIN, *args(data, tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "train.csv:3" in last and "u1.wav" in last
