"""Two-stage pipeline: SSL run -> pseudo-labels (k-means + merging, NMI vs speakers)
-> supervised AAM training initialised from the SSL encoder.

The clustering itself is tested in ``tests/recipe/test_pseudo_labels.py``.
"""

import json
import os
import subprocess
import sys

import pytest
import torch

from tests.tiny_run import BUDGET_ARGS, CORPUS_ARGS, MODEL_ARGS

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RECIPE = os.path.join(ROOT, "recipes", "VoxCeleb", "SSL")
TRAIN = os.path.join(RECIPE, "train.py")
PSEUDO = os.path.join(RECIPE, "pseudo_labels.py")
COMMON = [*CORPUS_ARGS, *BUDGET_ARGS, *MODEL_ARGS, "--eval_untrained=False"]


def run(script, args):
    proc = subprocess.run(
        [sys.executable, script, *args], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_ssl_then_pseudo_labels_then_supervised(tiny_corpus, tmp_path):
    hp = os.path.join(RECIPE, "hparams")
    ssl = tmp_path / "ssl"
    data = f"--data_folder={tiny_corpus}"
    run(
        TRAIN,
        [
            os.path.join(hp, "simclr_ecapa.yaml"),
            data,
            f"--output_folder={ssl}",
            *COMMON,
        ],
    )
    proc = run(
        PSEUDO,
        [
            os.path.join(hp, "simclr_ecapa.yaml"),
            data,
            f"--output_folder={ssl}",
            "--n_clusters=12",
            "--n_merged=8",
            *COMMON,
        ],
    )
    assert "NMI" in proc.stdout and "supervised_pseudo_ecapa.yaml" in proc.stdout
    folder = ssl / "pseudo_labels"
    with open(folder / "pseudo_labels.json") as f:
        info = json.load(f)
    assert info["n_pseudo_speakers"] == 8 and info["n_utterances"] > 8
    assert 0.0 <= info["vs_true_speakers"]["nmi"] <= 1.0
    assert "trials" in info["ssl_eer"]
    lines = (folder / "pseudo_labels.csv").read_text().splitlines()
    assert lines[0] == "File,Speaker" and len(lines) == info["n_utterances"] + 1
    # stage 3: supervised AAM from the SSL weights on the pseudo-labels
    sup = tmp_path / "sup"
    args = [
        os.path.join(hp, "supervised_pseudo_ecapa.yaml"),
        data,
        f"--output_folder={sup}",
        f"--pseudo_folder={folder}",
        "--n_classes=8",
        *[a for a in COMMON if not a.startswith("--train_list")],
    ]
    run(TRAIN, args)
    assert "encoder weights loaded" in (sup / "log.txt").read_text()
    with open(sup / "verification.json") as f:
        assert 0.0 <= json.load(f)["lists"]["trials"]["cosine"]["eer"] <= 100.0
    # the SSL encoder was the starting point: same architecture as stage 3's
    ssl_state = torch.load(folder / "ssl_encoder.ckpt", weights_only=True)
    ckpt = next((sup / "save").glob("CKPT+*/embedding_model.ckpt"))
    sup_state = torch.load(ckpt, weights_only=True)
    assert {k: v.shape for k, v in ssl_state.items()} == {
        k: v.shape for k, v in sup_state.items()
    }
