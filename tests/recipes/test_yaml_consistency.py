"""Every method yaml exposes the same top-level keys (so every CLI override works).

The checks read the yaml text (top-level keys), without building any object.
"""

import glob
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HPARAMS = os.path.join(ROOT, "recipes", "VoxCeleb", "SSL", "hparams")
YAMLS = sorted(glob.glob(os.path.join(HPARAMS, "*.yaml")))

REQUIRED = [
    # run
    "seed", "brain_class", "output_folder", "save_folder",
    # data
    "data_folder", "corpus_preset", "train_list", "label_key", "trial_lists",
    "embedded", "sample_rate", "view_groups", "positive_pairs", "augment_in_workers",
    # training
    "number_of_epochs", "batch_size", "num_workers", "lr", "optimizer_type",
    "opt_class", "skip_nonfinite_steps", "keep_checkpoints", "dataloader_options",
    "modules", "epoch_counter", "train_logger", "checkpointer",
    # monitoring / model selection
    "valid_trial_list", "patience", "average_last_k", "lr_schedule", "tensorboard",
    "wandb", "wandb_mode", "log_every_steps",
    # evaluation
    "eval_crop_seconds", "eval_n_crops", "eval_untrained",
]
MODULES = ["compute_features", "mean_var_norm", "embedding_model"]


def top_level_keys(text):
    return set(re.findall(r"^([A-Za-z_][A-Za-z0-9_]*):", text, flags=re.M))


def test_there_are_recipes():
    assert len(YAMLS) >= 1


@pytest.mark.parametrize("path", YAMLS, ids=os.path.basename)
def test_required_keys(path):
    with open(path) as f:
        text = f.read()
    missing = [k for k in REQUIRED if k not in top_level_keys(text)]
    assert not missing, f"{os.path.basename(path)} lacks {missing}"
    block = text.split("\nmodules:", 1)[1].split("\n\n", 1)[0]
    for mod in MODULES:
        assert re.search(rf"^\s+{mod}:", block, flags=re.M), f"modules lacks {mod}"
    assert "embedding_model:" in text.split("\ncheckpointer:", 1)[1]
    # Keys that argparse would swallow as abbreviations of SpeechBrain run options.
    for key in top_level_keys(text):
        for opt in ("optimizer_step_limit", "debug_batches", "device", "compile"):
            assert key == opt or not opt.startswith(key), f"{key} abbreviates --{opt}"
