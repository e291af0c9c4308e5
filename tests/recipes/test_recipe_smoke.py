"""Recipe smoke runs on the tiny generated corpus (SpeechBrain recipe-test style).

Each yaml under ``recipes/VoxCeleb/SSL/hparams/`` trains 1 epoch with a tiny encoder
and must write ``verification.json`` with finite metrics, ``train_log.txt``, the
resolved ``hyperparams.yaml`` and a checkpoint.
"""

import glob
import json
import math
import os
import subprocess
import sys

import pytest

from tests.tiny_run import BUDGET_ARGS, CORPUS_ARGS

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RECIPE = os.path.join(ROOT, "recipes", "VoxCeleb", "SSL")
TRAIN = os.path.join(RECIPE, "train.py")

# Per-yaml overrides shrinking the model to smoke-test size: one file per yaml,
# tests/recipes/smoke_args/<yaml stem>.args, whitespace-separated CLI arguments.
SMOKE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "smoke_args")
SMOKE = {
    os.path.basename(p)[: -len(".args")] + ".yaml": open(p).read().split()
    for p in sorted(glob.glob(os.path.join(SMOKE_DIR, "*.args")))
}
COMMON = [*CORPUS_ARGS, *BUDGET_ARGS]


def run(args, timeout=600):
    proc = subprocess.run(
        [sys.executable, TRAIN, *args], capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def check_outputs(out):
    with open(os.path.join(out, "verification.json")) as f:
        ver = json.load(f)
    for system in (ver["lists"], ver["untrained"]["lists"]):
        m = system["trials"]["cosine"]
        assert 0.0 <= m["eer"] <= 100.0 and math.isfinite(m["mindcf_0.01"])
    assert os.path.isfile(os.path.join(out, "train_log.txt"))
    assert os.path.isfile(os.path.join(out, "hyperparams.yaml"))
    assert glob.glob(os.path.join(out, "save", "CKPT+*", "embedding_model.ckpt"))
    return ver


@pytest.mark.slow
@pytest.mark.parametrize("yaml_name", sorted(SMOKE))
def test_recipe_runs(tiny_corpus, tmp_path, yaml_name):
    out = tmp_path / "out"
    run(
        [
            os.path.join(RECIPE, "hparams", yaml_name),
            f"--data_folder={tiny_corpus}",
            f"--output_folder={out}",
            *COMMON,
            *SMOKE[yaml_name],
        ]
    )
    check_outputs(out)


def test_every_yaml_has_a_smoke_entry():
    yamls = {
        os.path.basename(p)
        for p in glob.glob(os.path.join(RECIPE, "hparams", "*.yaml"))
    } - {"defaults.yaml"}  # merged under every method yaml, not a recipe
    assert yamls == set(SMOKE), "add each new recipe yaml to SMOKE"


@pytest.mark.slow
def test_embedded_corpus_default_and_resume(tmp_path, monkeypatch):
    """No --data_folder: the embedded corpus is generated; a re-run resumes."""
    monkeypatch.setenv("SSLSV_SB_DATA", str(tmp_path / "embedded"))
    out = tmp_path / "out"
    args = [
        os.path.join(RECIPE, "hparams", "simclr_ecapa.yaml"),
        "--corpus_preset=tiny",
        f"--output_folder={out}",
        *COMMON[4:],
        *SMOKE["simclr_ecapa.yaml"],
    ]
    first = run(args)
    assert "trials" in first.stdout and "EER" in first.stdout
    assert glob.glob(str(tmp_path / "embedded" / "**" / "corpus.json"), recursive=True)
    check_outputs(out)
    # Same command again: recovers the finished run instead of training again.
    second = run(args)
    assert "Going into epoch" not in second.stderr
    check_outputs(out)
