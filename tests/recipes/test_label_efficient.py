"""Label-efficient command: nested subsets, frozen encoder, resume.

The option parsing is tested in ``tests/recipe/test_label_efficient_options.py``.
"""

import glob
import json
import os
import subprocess
import sys

import pytest
import torch

from tests.tiny_run import BUDGET_ARGS, CORPUS_ARGS, MODEL_ARGS

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RECIPE = os.path.join(ROOT, "recipes", "VoxCeleb", "SSL")

TINY = [*CORPUS_ARGS, *BUDGET_ARGS, *MODEL_ARGS]


def run(script, args):
    proc = subprocess.run(
        [sys.executable, os.path.join(RECIPE, script), *args],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_label_efficient_end_to_end(tiny_corpus, tmp_path):
    ssl = tmp_path / "ssl"
    run(
        "train.py",
        [
            os.path.join(RECIPE, "hparams", "simclr_ecapa.yaml"),
            f"--data_folder={tiny_corpus}",
            f"--output_folder={ssl}",
            *TINY,
        ],
    )
    out = tmp_path / "le"
    args = [
        os.path.join(RECIPE, "hparams", "supervised_ecapa.yaml"),
        f"--data_folder={tiny_corpus}",
        f"--output_folder={out}",
        f"--ssl_run={ssl}",
        "--fractions=[0.25,1.0]",
        "--modes=[finetune,frozen,scratch]",
        "--n_classes=999",  # replaced per run by the subset's class count
        *TINY,
    ]
    first = run("label_efficient.py", args)
    assert first.stdout.count("[label-efficient]") == 6
    for name in ("json", "md", "png"):
        assert os.path.isfile(out / f"label_efficient.{name}")
    payload = json.loads((out / "label_efficient.json").read_text())
    rows = payload["rows"]
    assert [r["fraction"] for r in rows] == [0.25, 1.0]
    assert rows[0]["n_classes"] == 2 and rows[1]["n_classes"] == 8  # 8 tiny speakers
    small = (out / "lists" / "train_25pct.csv").read_text().splitlines()[1:]
    full = (out / "lists" / "train_100pct.csv").read_text().splitlines()[1:]
    assert set(small) <= set(full) and len(small) == 12  # 2 speakers x 6 utterances
    for row in rows:
        for mode in ("finetune", "frozen", "scratch"):
            assert 0.0 <= row["results"][mode]["trials"]["eer"] <= 100.0

    # Frozen: the trained encoder (weights and BatchNorm statistics) is the SSL one.
    ssl_state = torch.load(out / "ssl_encoder.ckpt", weights_only=True)
    (ckpt,) = glob.glob(str(out / "frozen_25pct" / "save" / "CKPT+*"))
    frozen = torch.load(os.path.join(ckpt, "embedding_model.ckpt"), weights_only=True)
    assert ssl_state.keys() == frozen.keys()
    for k, v in ssl_state.items():
        assert torch.equal(v, frozen[k]), k
    (ckpt,) = glob.glob(str(out / "finetune_25pct" / "save" / "CKPT+*"))
    tuned = torch.load(os.path.join(ckpt, "embedding_model.ckpt"), weights_only=True)
    assert any(not torch.equal(v, tuned[k]) for k, v in ssl_state.items())
    # Fine-tuning: the encoder group runs at lr x 0.1 of the classifier group.
    opt = torch.load(os.path.join(ckpt, "optimizer.ckpt"), weights_only=True)
    lrs = {g["lr_factor"]: g["lr"] for g in opt["param_groups"]}
    assert lrs[0.1] == pytest.approx(0.1 * lrs[1.0])

    # Resumable: the same command again trains nothing and rewrites the outputs.
    second = run("label_efficient.py", args)
    assert "[label-efficient]" not in second.stdout
    assert json.loads((out / "label_efficient.json").read_text())["rows"] == rows
