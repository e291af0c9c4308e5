"""tools/eval_speed.py: interleaved evaluation timing, ours against sslsv.

The run with sslsv's own code skips unless ``SSLSV_DIR`` and ``SSLSV_PYTHON`` name
an extracted sslsv and its virtual environment's python; the others use a stand-in
"sslsv python" that prints a fixed result.
"""

import json
import os
import stat
import subprocess

import pytest

from sslsv_sb.errors import SSLSVError
from sslsv_sb.recipe.tools.eval_speed import format_report, main, parse_variant

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SSLSV_DIR = os.environ.get("SSLSV_DIR")
SSLSV_PYTHON = os.environ.get("SSLSV_PYTHON")
TINY = ["--channels=8", "--emb_dim=8", "--n_mels=16", "--threads=1", "--warmup=2"]


def fake_sslsv(tmp_path, utt_per_s):
    """A stand-in sslsv folder and python printing one fixed timing."""
    (tmp_path / "sslsv" / "sslsv").mkdir(parents=True)
    py = tmp_path / "python"
    row = {"seconds": 1.0, "n_files": 5, "utt_per_s": utt_per_s, "eer": 50.0}
    py.write_text(f"#!/bin/sh\necho '{json.dumps({'rounds': [row]})}'\n")
    py.chmod(py.stat().st_mode | stat.S_IXUSR)
    return ["--sslsv", str(tmp_path / "sslsv"), "--sslsv_python", str(py)]


def test_variants():
    assert parse_variant("a:8:20:0.05:2") == (
        "a",
        {"max_batch": 8, "max_batch_seconds": 20.0, "bucket_ratio": 0.05, "jobs": 2},
    )
    for bad in ("a:8:20", "a:0:20:0", "a:8:x:0", "a:8:20:-1", ":8:20:0"):
        with pytest.raises(SSLSVError, match="--variant"):
            parse_variant(bad)


@pytest.mark.slow
def test_interleaved_rounds_and_ratios(tiny_corpus, tmp_path, capsys):
    out = tmp_path / "speed.json"
    result = main(
        [
            f"--data_folder={tiny_corpus}",
            "--rounds=2",
            "--variant=one:1:10:0",
            f"--out={out}",
            *TINY,
            *fake_sslsv(tmp_path, 4.0),
        ]
    )
    assert json.loads(out.read_text())["ratio_to_sslsv"] == result["ratio_to_sslsv"]
    assert set(result["ours"]) == {"yaml", "one"}
    for side in result["ours"].values():
        assert len(side["rounds"]) == 2 and side["utt_per_s_median"] > 0
    # both variants embed the same files: same EER (mirror padding ~ one at a time)
    assert result["ours"]["yaml"]["eer"] == pytest.approx(
        result["ours"]["one"]["eer"], abs=1.0
    )
    ratio = result["ours"]["yaml"]["utt_per_s_median"] / 4.0
    assert result["ratio_to_sslsv"]["yaml"] == pytest.approx(ratio)
    assert result["encoder"]["channels"] == 8 and result["threads"] == 1
    printed = capsys.readouterr().out
    assert "round 2 sslsv: 4.0 utt/s" in printed
    assert format_report(result) in printed


def test_bad_arguments_are_clear(tiny_corpus, tmp_path):
    with pytest.raises(SSLSVError, match="--sslsv needs --sslsv_python"):
        main([f"--data_folder={tiny_corpus}", "--sslsv=/x"])
    with pytest.raises(SSLSVError, match="--rounds: must be >= 1"):
        main([f"--data_folder={tiny_corpus}", "--rounds=0"])
    with pytest.raises(SSLSVError, match="unknown hyper-parameter"):
        main([f"--data_folder={tiny_corpus}", "--eval_batch_sise=4", *TINY])


@pytest.mark.slow
@pytest.mark.skipif(
    not (SSLSV_DIR and SSLSV_PYTHON and os.path.isfile(SSLSV_PYTHON)),
    reason="needs SSLSV_DIR (extracted sslsv) and SSLSV_PYTHON (its venv's python)",
)
def test_sslsv_side_runs_sslsv_evaluation(tiny_corpus):
    script = os.path.join(ROOT, "sslsv_sb", "sslsv_compare", "eval_timing.py")
    cmd = [SSLSV_PYTHON, script, f"--data_folder={tiny_corpus}", "--trials=trials.txt"]
    cmd += ["--channels=8", "--emb_dim=8", "--threads=1", "--warmup=2"]
    env = {**os.environ, "PYTHONPATH": SSLSV_DIR}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    row = json.loads(proc.stdout.strip().splitlines()[-1])["rounds"][0]
    with open(os.path.join(tiny_corpus, "trials.txt"), encoding="utf-8") as f:
        files = {p for line in f for p in line.split()[1:]}
    assert row["n_files"] == len(files) and row["utt_per_s"] > 0
    assert 0 <= row["eer"] <= 100
