"""Method yamls, merged over their defaults, expose the same top-level keys.

Every method yaml names the files it builds on with ``extends:``
(``hparams/defaults.yaml``, ``hparams/blocks/optim.yaml``, ...); the recipe loader
(:mod:`sslsv_sb.recipe.hparams`) merges them. The consistency checks read the merged
text (no object is built); the loader tests use small yamls written here.
"""

import glob
import os
import re
import sys

import pytest
import speechbrain as sb
from hyperpyyaml import load_hyperpyyaml
from ruamel.yaml import YAML

from sslsv_sb.errors import SSLSVError
from sslsv_sb.recipe.cli import run_cli
from sslsv_sb.recipe.hparams import (
    load_hparams,
    load_yaml,
    merged_text,
    repeated_keys,
    top_level_keys,
    write_merged,
)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HPARAMS = os.path.join(ROOT, "recipes", "VoxCeleb", "SSL", "hparams")
DEFAULTS = os.path.join(HPARAMS, "defaults.yaml")
YAMLS = sorted(
    p
    for p in glob.glob(os.path.join(HPARAMS, "*.yaml"))
    + glob.glob(os.path.join(ROOT, "recipes", "VoxLingua", "SSL", "hparams", "*.yaml"))
    if p != DEFAULTS
)
MAX_LINES = 90

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
]  # fmt: skip
MODULES = ["compute_features", "mean_var_norm", "embedding_model"]


def name(path):
    return os.path.relpath(path, os.path.join(ROOT, "recipes"))


def test_there_are_recipes():
    assert len(YAMLS) >= 29


@pytest.mark.parametrize("path", YAMLS, ids=name)
def test_required_keys(path):
    doc = YAML().load(merged_text(path))
    keys = [str(k) for k in doc]
    missing = [k for k in REQUIRED if k not in keys]
    assert not missing, f"{name(path)} lacks {missing}"
    assert "extends" not in keys
    for mod in MODULES:
        assert mod in doc["modules"], f"modules lacks {mod}"
    assert "embedding_model" in doc["checkpointer"]["recoverables"]
    # Keys that argparse would swallow as abbreviations of SpeechBrain run options.
    for key in keys:
        for opt in ("optimizer_step_limit", "debug_batches", "device", "compile"):
            assert key == opt or not opt.startswith(key), f"{key} abbreviates --{opt}"


@pytest.mark.parametrize("path", YAMLS, ids=name)
def test_method_yaml_is_short_and_only_holds_its_choices(path):
    with open(path) as f:
        text = f.read()
    assert len(text.splitlines()) <= MAX_LINES, f"{name(path)}: over {MAX_LINES} lines"
    own = top_level_keys_of_file(text)
    assert "extends" in own and "output_folder" in own
    assert "defaults.yaml" in text.split("\nextends:", 1)[1].split("\n\n", 1)[0]
    assert not repeated_keys(path), f"{name(path)} repeats {repeated_keys(path)}"
    banner = text.split("\n\n", 1)[0]
    assert banner.startswith("# ") and "arXiv" in banner, "banner naming the paper"


def top_level_keys_of_file(text):
    return set(re.findall(r"^([A-Za-z_][A-Za-z0-9_]*):", text, flags=re.M))


# ----------------------------------------------------------------------------------
# The loader, on small yamls.
# ----------------------------------------------------------------------------------
BASE = """\
# base banner
root: !ref <output_folder>/x     # set in the method file
lr: 0.1
epochs: 3
lengths: [2, !ref <crop>]
crop: 100
obj: !new:collections.OrderedDict
    lr: !ref <lr>
"""
METHOD = """\
# method banner (arXiv 0000.00000)
extends: base.yaml              # merged under this file
output_folder: !ref out/<epochs>
lr: 0.5                         # the method's own value
half: !ref <crop> // 2
lengths: [2, !ref <half>]
"""


@pytest.fixture
def yamls(tmp_path):
    (tmp_path / "base.yaml").write_text(BASE)
    (tmp_path / "method.yaml").write_text(METHOD)
    return tmp_path


def test_method_key_wins_and_refs_resolve_both_ways(yamls):
    hp = load_yaml(str(yamls / "method.yaml"), "")
    assert hp["lr"] == 0.5 and hp["obj"]["lr"] == 0.5  # method value, used by base
    assert hp["epochs"] == 3  # default kept
    assert hp["root"] == "out/3/x"  # default refers to a key of the method file
    # The method's `lengths` replaces the default in place and refers to `half`,
    # a `!ref` value defined further down in the method: moved above it.
    assert hp["lengths"] == [2, 50]
    assert "extends" not in hp
    text = merged_text(str(yamls / "method.yaml"))
    assert "# method banner" in text and "# base banner" in text
    assert "# the method's own value" in text and "!new:collections" in text


def test_override_of_a_default_key(yamls):
    hp = load_yaml(str(yamls / "method.yaml"), "epochs: 7\ncrop: 40")
    assert hp["epochs"] == 7 and hp["root"] == "out/7/x" and hp["lengths"] == [2, 20]


def test_unknown_override_is_one_line_exit_2(yamls, tmp_path, capsys):
    argv = [str(yamls / "method.yaml"), "--bogus=1", f"--data_folder={tmp_path}"]
    with pytest.raises(SystemExit) as exc:
        run_cli(load_hparams, argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    assert "method.yaml" in err[0] and "bogus" in err[0]


def test_missing_defaults_file_names_it(yamls):
    (yamls / "method.yaml").write_text(METHOD.replace("base.yaml", "nowhere.yaml"))
    with pytest.raises(SSLSVError, match=r"method\.yaml: extends: nowhere\.yaml"):
        load_yaml(str(yamls / "method.yaml"), "")


def test_document_marker_of_a_default_is_dropped(yamls):
    (yamls / "base.yaml").write_text("%YAML 1.2\n---\n" + BASE)
    assert load_yaml(str(yamls / "method.yaml"), "")["epochs"] == 3


def test_circular_extends_is_an_error(yamls):
    (yamls / "base.yaml").write_text("extends: method.yaml\n" + BASE)
    with pytest.raises(SSLSVError, match="circular"):
        merged_text(str(yamls / "method.yaml"))


def test_placeholder_replaced_in_place_keeps_build_order(tmp_path):
    """A method value for a default's placeholder is built where the default stood."""
    (tmp_path / "block.yaml").write_text(
        "first: !new:collections.OrderedDict\n    k: 1\n"
        "enc: !PLACEHOLDER\n"
        "head: !new:collections.OrderedDict\n    n: 2\n"
    )
    (tmp_path / "m.yaml").write_text(
        "extends: [block.yaml]\n"
        "size: [3, 3]\n"
        "enc: !new:collections.OrderedDict\n    size: !ref <size>\n"
    )
    text = merged_text(str(tmp_path / "m.yaml"))
    assert text.index("first:") < text.index("enc: !new") < text.index("head:")
    assert text.index("size: [3, 3]") < text.index("enc: !new")
    assert load_yaml(str(tmp_path / "m.yaml"), "")["enc"]["size"] == [3, 3]


def test_placeholder_left_unset_names_the_key(yamls):
    (yamls / "base.yaml").write_text(BASE + "data: !PLACEHOLDER\n")
    with pytest.raises(SSLSVError, match=r"method\.yaml: data has no value.*--data="):
        load_yaml(str(yamls / "method.yaml"), "")
    assert load_yaml(str(yamls / "method.yaml"), "data: /d")["data"] == "/d"


def test_repeated_keys_are_found(yamls):
    (yamls / "method.yaml").write_text(METHOD + "epochs: 3    # same value\n")
    assert repeated_keys(str(yamls / "method.yaml")) == ["epochs"]


def test_saved_hyperparams_yaml_is_standalone(tmp_path, monkeypatch):
    """The file load_hparams returns is what the run folder keeps: it loads alone."""
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    out = tmp_path / "run"
    argv = [
        os.path.join(HPARAMS, "simclr_ecapa.yaml"),
        f"--data_folder={tmp_path}",
        f"--output_folder={out}",
        "--channels=[8,8,8,8,24]",
        "--emb_dim=8",
        "--batch_size=4",
    ]
    merged, _, overrides, hp = load_hparams(argv)
    assert merged != argv[0] and "\nextends:" not in open(merged).read()
    sb.create_experiment_directory(
        experiment_directory=str(out), hyperparams_to_save=merged, overrides=overrides
    )
    with open(out / "hyperparams.yaml") as f:
        saved = load_hyperpyyaml(f)
    assert set(saved) == set(hp)
    for key, value in hp.items():
        if isinstance(value, (int, float, str, list, type(None))):
            assert saved[key] == value, key
        else:
            assert type(saved[key]) is type(value), key
    assert saved["batch_size"] == 4 and saved["lr"] == 0.001
    assert saved["save_folder"] == f"{out}/save"
    n = sum(p.numel() for p in saved["modules"]["embedding_model"].parameters())
    assert n == sum(p.numel() for p in hp["modules"]["embedding_model"].parameters())


def test_yaml_without_extends_is_used_as_is(tmp_path):
    path = tmp_path / "plain.yaml"
    path.write_text("a: 1\nb: !ref <a>\n")
    assert write_merged(str(path)) == str(path)
    assert top_level_keys(str(path)) == ["a", "b"]


def _makefile_commands():
    """``{target: (yaml, [--key=value, ...])}`` of the Makefile's demo targets."""
    text = open(os.path.join(ROOT, "Makefile")).read().replace("\\\n", " ")
    variables = dict(re.findall(r"^(\w+) \?= (.*)$", text, flags=re.M))
    commands = {}
    for target, body in re.findall(r"^(demo[\w-]*):.*\n\t(.*)$", text, flags=re.M):
        for _ in range(2):  # DINO_ARGS holds $(DEMO_PRECISION)
            body = re.sub(r"\$\((\w+)\)", lambda m: variables.get(m[1], m[0]), body)
        words = body.split()
        yaml = next(w for w in words if w.endswith(".yaml"))
        commands[target] = (yaml, [w for w in words if w.startswith("--")])
    return commands


def test_makefile_demo_commands_load(tmp_path, monkeypatch):
    """`make demo` and `make demo-dino` pass only keys their yamls define (a typo in
    the Makefile would otherwise surface only after a fresh install)."""
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    commands = _makefile_commands()
    assert set(commands) >= {"demo", "demo-dino"}
    for target, (yaml, args) in commands.items():
        assert not any("$(" in a for a in args), (target, args)
        args = [a for a in args if not a.startswith("--output_folder=")]
        argv = [os.path.join(ROOT, yaml), *args, f"--data_folder={tmp_path}"]
        argv.append(f"--output_folder={tmp_path / target}")
        _, run_opts, _, hp = load_hparams(argv)
        for arg in args:
            key = arg[2:].split("=", 1)[0]
            assert key in hp or key in run_opts, (target, key)  # yaml key or run option
        assert run_opts["precision"] == "bf16" and hp["batch_size"] == 64, target


@pytest.mark.parametrize(
    "path", [p for p in YAMLS if "ssps_kmeans_clusters" in merged_text(p)], ids=name
)
def test_embedded_ssps_clusters_leave_several_per_speaker(path):
    """With ``inter_sampling_size >= 1`` the pseudo-positive comes from the nearest
    *other* cluster, so K must split each speaker into several clusters (sslsv's
    K = 25k gives ~4 per VoxCeleb2 speaker). K = number of speakers made 85 % of the
    demo's pseudo-positives other speakers."""
    from sslsv_sb.data.corpus.config import PRESETS

    data = YAML().load(merged_text(path))
    if int(data["ssps_inter_sampling_size"]) < 1:
        return
    k = int(data["embedded"]["ssps_kmeans_clusters"])
    assert k >= 3 * PRESETS["demo"].n_train_speakers, (path, k)
