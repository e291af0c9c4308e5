"""Language-ID recipe: SSL pre-training, probes, language verification, fine-tuning."""

import json
import os
import subprocess
import sys

import pytest

from tests.tiny_run import BUDGET_ARGS, CORPUS_ARGS, MODEL_ARGS

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "recipes", "VoxLingua", "SSL", "language.py")
TINY = [
    *CORPUS_ARGS,
    "--language_train_list=train.csv",
    "--language_test_list=test.csv",
    "--language_n_target=40",
    "--language_n_nontarget=40",
    *BUDGET_ARGS,
    *MODEL_ARGS,
]


def run(args):
    proc = subprocess.run(
        [sys.executable, SCRIPT, *args], capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def test_bad_stage():
    proc = subprocess.run(
        [sys.executable, SCRIPT, "hparams/simclr_ecapa.yaml", "--stages=[dance]"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "--stages" in proc.stderr


@pytest.mark.slow
def test_language_recipe_end_to_end(tmp_path):
    from sslsv_sb.data.corpus import PRESETS, generate_corpus

    corpus = tmp_path / "corpus"
    cfg = PRESETS["tiny"]
    cfg = type(cfg)(**{**cfg.to_dict(), "languages": ("en-us", "fr")})
    generate_corpus(corpus, cfg, workers=1, verbose=False)
    out = tmp_path / "run"
    args = [
        "hparams/simclr_ecapa.yaml",
        f"--data_folder={corpus}",
        f"--output_folder={out}",
        "--stages=[pretrain,probe,verify,finetune]",
        *TINY,
    ]
    run(args)
    payload = json.loads((out / "language.json").read_text())
    assert payload["n_languages"] == 2 and payload["chance_accuracy"] == 0.5
    assert payload["trials"] == {"target": 40, "nontarget": 40}
    for model in ("ssl", "finetune"):
        for probe in ("linear", "mlp"):
            assert 0.0 <= payload[model]["probe"][probe]["accuracy"] <= 1.0
        assert 0.0 <= payload[model]["verification"]["eer"] <= 100.0
    # Held-out speakers: the probe's test rows are test.csv, whose speakers are not
    # in train.csv; no trial pairs two utterances of one speaker.
    lines = (out / "language_trials.txt").read_text().split("\n")
    for line in filter(None, lines):
        _, a, b = line.split()
        assert a.split("/")[1] != b.split("/")[1]
    assert (out / "language.md").is_file()
    assert (out / "finetune" / "finetune.done").is_file()
    second = run(args)  # resumes: every stage's output exists
    assert json.loads((out / "language.json").read_text()) == payload
    assert "results written" in second.stdout
