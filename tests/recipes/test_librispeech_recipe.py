"""recipes/LibriSpeech/SSL: the yaml's defaults and a smoke run on the tiny corpus.

The real-speech numbers (recipe README) need the shelf excerpts; these tests do not.
"""

import json
import math
import os
import subprocess
import sys

import pytest

from sslsv_sb.errors import SSLSVError
from sslsv_sb.models.encoders import FeatureNorm
from sslsv_sb.recipe.hparams import load_hparams
from tests.tiny_run import BUDGET_ARGS, CORPUS_ARGS, MODEL_ARGS

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RECIPE = os.path.join(ROOT, "recipes", "LibriSpeech", "SSL")
TRAIN = os.path.join(RECIPE, "train.py")
YAML = os.path.join(RECIPE, "hparams", "simclr_ecapa.yaml")


def _load(tmp_path, *overrides):
    argv = [YAML, f"--data_folder={tmp_path}", f"--output_folder={tmp_path}/out"]
    return load_hparams([*argv, *overrides], recipe_dir=RECIPE)[3]


def test_defaults_fit_the_split_utterance_trials(tmp_path):
    h = _load(tmp_path)
    norm = h["modules"]["mean_var_norm"]
    assert isinstance(norm, FeatureNorm) and norm.norm == "none"
    assert h["modules"]["embedding_model"] is h["encoder"]["embedding_model"]
    assert h["aug_prob"] == 0.0 and h["eq_prob"] == 0.0
    assert h["lr_annealing"].decay_factor == 1.0  # constant LR on 3-step epochs
    assert h["eval_backends"] == ["cosine", "whiten", "mfcc_stats"]


def test_cross_session_settings_are_one_override_each(tmp_path):
    h = _load(tmp_path, "--feature_norm=sentence", "--aug_prob=1.0", "--lr_decay=0.95")
    assert h["modules"]["mean_var_norm"].norm == "sentence"
    assert h["lr_annealing"].decay_factor == 0.95
    with pytest.raises(SSLSVError, match="feature_norm: expected 'sentence' or 'none'"):
        _load(tmp_path, "--feature_norm=global")


@pytest.mark.slow
def test_librispeech_recipe_trains_and_scores_with_the_mfcc_baseline(
    tiny_corpus, tmp_path
):
    out = tmp_path / "run"
    proc = subprocess.run(
        [
            sys.executable,
            TRAIN,
            "hparams/simclr_ecapa.yaml",
            f"--data_folder={tiny_corpus}",
            f"--output_folder={out}",
            *CORPUS_ARGS,
            *MODEL_ARGS,
            *BUDGET_ARGS,
            "--precision=fp32",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out / "verification.json") as f:
        lists = json.load(f)["lists"]["trials"]
    assert set(lists) == {"cosine", "whiten", "mfcc_stats"}
    assert all(math.isfinite(m["eer"]) for m in lists.values())
