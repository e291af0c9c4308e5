"""tools/compare_sslsv.py: the settings mapping, the data view, the runner's stand-ins.

Most tests need no sslsv. The ones that run sslsv's own code skip unless both an
extracted sslsv and the python of its virtual environment are given::

    SSLSV_DIR=/path/to/sslsv SSLSV_PYTHON=/path/to/sslsv-venv/bin/python \\
        pytest -n 0 tests/tools/test_compare_sslsv.py
"""

import dataclasses
import glob
import json
import math
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from sslsv_sb.errors import SSLSVError
from sslsv_sb.recipe.hparams import top_level_keys
from sslsv_sb.sslsv_compare import compare, dataview, mapping, runner

ROOT = Path(__file__).resolve().parents[2]
HPARAMS = ROOT / "recipes" / "VoxCeleb" / "SSL" / "hparams"
TOOL = ROOT / "tools" / "compare_sslsv.py"
SSLSV_DIR = os.environ.get("SSLSV_DIR")
SSLSV_PYTHON = os.environ.get("SSLSV_PYTHON")
needs_sslsv = pytest.mark.skipif(
    not (SSLSV_DIR and SSLSV_PYTHON and os.path.isfile(SSLSV_PYTHON)),
    reason="needs SSLSV_DIR (extracted sslsv) and SSLSV_PYTHON (its venv's python)",
)
PAIRS = [(m, e) for m, entry in mapping.METHODS.items() for e in entry.encoders]
# SpeechBrain run options we pass on the command line (not yaml keys).
RUN_OPTIONS = {"precision", "max_grad_norm"}
BANK = {"noise": 30, "music": 30, "speech": 30, "rir": 40}


def _mapping_for(method, encoder, overrides=None, bank=BANK):
    """Our settings, extra overrides, demo budget (11 epochs) and sslsv mapping."""
    ours, extra = mapping.our_settings(method, encoder, True, overrides)
    budget = mapping.make_budget(1440, ours["batch_size"], epochs=11)
    return ours, extra, budget, mapping.to_sslsv(method, encoder, ours, budget, bank)


# ------------------------------------------------------------------------ mapping
def test_table_methods_are_all_mapped():
    wanted = {"simclr", "moco", "dino", "byol", "simsiam", "vicreg", "barlow_twins"}
    assert wanted | {"swav", "cpc"} == set(mapping.METHODS)
    assert "resnet34" in mapping.METHODS["moco"].encoders
    assert mapping.METHODS["cpc"].encoders == ("resnet34",)


def test_cpc_runs_on_frames_and_other_resnet_methods_pool():
    """CPC's ResNet-34 has no pooling on both sides (sslsv ``encoder.pooling:
    false``); MoCo's keeps SAP pooling."""
    *_, cpc = _mapping_for("cpc", "resnet34")
    flat = mapping.flatten(cpc.config)
    assert flat["encoder.pooling"] is False and "encoder.pooling_mode" not in flat
    assert (
        flat["method.aggregator_type"] == "gru" and flat["method.aggregator_dim"] == 256
    )
    *_, moco = _mapping_for("moco", "resnet34")
    flat = mapping.flatten(moco.config)
    assert flat["encoder.pooling_mode"] == "sap" and "encoder.pooling" not in flat


@pytest.mark.parametrize("method,encoder", PAIRS)
def test_every_setting_is_a_key_of_our_yaml(method, encoder):
    """A renamed yaml key would make our run fail: catch it without running."""
    keys = set(top_level_keys(str(HPARAMS / mapping.yaml_name(method, encoder))))
    ours, _ = mapping.our_settings(method, encoder)
    missing = sorted(set(ours) - keys - RUN_OPTIONS)
    assert not missing, f"{method}_{encoder}.yaml has no key(s) {missing}"


@pytest.mark.parametrize("method,encoder", PAIRS)
def test_every_mapped_setting_reaches_the_sslsv_config(method, encoder):
    ours, _, budget, result = _mapping_for(method, encoder)
    flat = mapping.flatten(result.config)
    for row in result.rows:
        if row.sslsv_key and not row.sslsv_key.startswith("dataset.augmentation.musan"):
            assert row.sslsv_key in flat, row
            assert mapping.same_value(flat[row.sslsv_key], row.sslsv), row
        if row.ours_key in ours and row.sslsv_key:
            assert mapping.same_value(ours[row.ours_key], row.sslsv), row
    # equal budget: sslsv's epochs x (n // batch) = our optimiser steps
    assert flat["trainer.epochs"] == budget.epochs == 11
    assert flat["trainer.batch_size"] == ours["batch_size"]
    assert budget.epochs * (1440 // flat["trainer.batch_size"]) == budget.steps
    assert flat["method.type"] == mapping.METHODS[method].sslsv_type
    assert flat["trainer.mixed_precision"] is False
    assert flat["evaluation.validation"] == []
    assert flat["trainer.patience"] > budget.epochs  # no early stopping
    assert set(result.fixups) == {
        f"dataset.augmentation.musan_{c}_{k}"
        for c in ("noise", "music", "speech")
        for k in ("snr", "num")
    }
    # nothing is flagged at the defaults (the LR drops follow sslsv's epochs)
    assert [r.setting for r in result.differing()] == []


# (method, our key, sslsv path): names checked against sslsv's dataclasses
# (sslsv/methods/<M>/<M>.py, datasets/Dataset.py, trainer/Trainer.py).
KEY_PAIRS = [
    ("simclr", "temperature", "method.temperature"),
    ("simclr", "frame_length", "dataset.frame_length"),
    ("simclr", "n_mels", "encoder.mel_n_mels"),
    ("simclr", "emb_dim", "encoder.encoder_dim"),
    ("simclr", "channels", "encoder.channels"),
    ("simclr", "lr", "trainer.learning_rate"),
    ("simclr", "weight_decay", "trainer.weight_decay"),
    ("simclr", "optimizer_type", "trainer.optimizer"),
    ("simclr", "strategy", "dataset.augmentation.strategy"),
    ("simclr", "aug_prob", "dataset.augmentation.aug_prob"),
    ("simclr", "num_workers", "dataset.num_workers"),
    ("simclr", "seed", "seed"),
    ("moco", "queue_size", "method.queue_size"),
    ("moco", "start_tau", "method.start_tau"),
    ("moco", "tau_scheduler", "method.tau_scheduler"),
    ("moco", "prevent_class_collisions", "method.prevent_class_collisions"),
    ("dino", "frame_length", "dataset.ssl_dino_global_length"),
    ("dino", "local_length", "dataset.ssl_dino_local_length"),
    ("dino", "n_global", "method.global_count"),
    ("dino", "n_local", "dataset.ssl_dino_local_count"),
    ("dino", "head_out_dim", "method.head_output_dim"),
    ("dino", "head_bottleneck_dim", "method.head_bottleneck_dim"),
    ("dino", "student_temp", "method.student_temperature"),
    ("dino", "teacher_temp", "method.teacher_temperature"),
    ("dino", "warmup_teacher_temp", "method.teacher_temperature_warmup"),
    ("dino", "clip_grad", "method.clip_grad"),
    ("dino", "freeze_last_layer", "method.freeze_last_layer"),
    ("byol", "pred_hidden_dim", "method.predictor_hidden_dim"),
    ("byol", "proj_out_dim", "method.projector_output_dim"),
    ("simsiam", "pred_hidden_dim", "method.pred_hidden_dim"),
    ("vicreg", "cov_weight", "method.cov_weight"),
    ("barlow_twins", "lambd", "method.lamda"),
    ("swav", "n_prototypes", "method.nb_prototypes"),
    ("swav", "sk_iters", "method.sk_nb_iters"),
    ("swav", "queue_start_epoch", "method.queue_start_epoch"),
    ("cpc", "cpc_n_predict", "method.nb_t_to_predict"),
    ("cpc", "cpc_layers", "method.aggregator_nb_layers"),
    ("cpc", "cpc_hidden", "method.aggregator_dim"),
    ("cpc", "cpc_bidirectional", "method.bidirectional"),
    ("cpc", "cpc_aggregator", "method.aggregator_type"),
]


@pytest.mark.parametrize("method,key,path", KEY_PAIRS)
def test_key_names(method, key, path):
    encoder = mapping.METHODS[method].encoders[0]
    probe = {"channels": [32, 32, 32, 32, 96]} if key == "channels" else None
    if probe is None:
        default = mapping.our_settings(method, encoder)[0][key]
        if isinstance(default, bool):
            probe = {key: not default}
        elif isinstance(default, int | float):
            probe = {key: default * 2}
        else:
            probe = {key: {"adam": "adamw", "reverb+noise": "all"}.get(default, "x")}
    if method == "dino" and key == "frame_length":
        probe["local_length"] = probe[key] // 2
    *_, result = _mapping_for(method, encoder, probe)
    assert mapping.same_value(mapping.flatten(result.config)[path], probe[key])


def test_embedded_and_voxceleb_values():
    ours, _ = mapping.our_settings("swav", "ecapa", embedded=True)
    assert (ours["n_prototypes"], ours["queue_size"], ours["train_list"]) == (
        120,
        512,
        "train.csv",
    )
    ours, _ = mapping.our_settings("swav", "ecapa", embedded=False)
    assert (ours["n_prototypes"], ours["noise_folder"]) == (6000, "musan_split")
    assert mapping.our_settings("dino", "ecapa")[0]["head_out_dim"] == 4096


def test_unknown_method_or_encoder_is_a_clear_error():
    with pytest.raises(SSLSVError, match="'mocov3' is not in the comparison table"):
        mapping.our_settings("mocov3", "ecapa")
    with pytest.raises(SSLSVError, match="'resnet34' is not compared for dino"):
        mapping.yaml_name("dino", "resnet34")
    res = subprocess.run(
        [sys.executable, str(TOOL), "--method", "mocov3", "--dry-run"],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 2 and "mocov3" in res.stderr


def test_overrides_reach_both_sides_and_unmapped_ones_are_flagged():
    ours, extra, budget, result = _mapping_for(
        "simclr", "ecapa", {"temperature": 0.2, "valid_n_crops": 3}
    )
    assert result.config["method"]["temperature"] == 0.2
    assert extra == {"valid_n_crops": 3}
    args = mapping.our_cli_args(ours, extra, budget)
    assert "--temperature=0.2" in args and "--valid_n_crops=3" in args
    flagged = mapping.extra_rows(extra)
    assert [(r.setting, r.same) for r in flagged] == [("valid_n_crops", False)]
    with pytest.raises(SSLSVError, match="--steps / --epochs"):
        mapping.our_settings("simclr", "ecapa", overrides={"number_of_epochs": 3})


@pytest.mark.parametrize(
    "overrides,flag",
    [
        ({"eq_prob": 0.5}, "EQ augmentation"),
        ({"precision": "bf16"}, "precision"),
        ({"max_grad_norm": 5.0}, "global gradient clipping"),
        ({"proj_n_hidden": 3}, "projector hidden layers"),
    ],
)
def test_one_sided_settings_are_flagged(overrides, flag):
    method = "vicreg" if "proj_n_hidden" in overrides else "simclr"
    *_, result = _mapping_for(method, "ecapa", overrides)
    assert flag in [r.setting for r in result.differing()]


def test_dino_local_crop_must_be_half_the_global_one():
    *_, result = _mapping_for("dino", "ecapa", {"local_length": 6000})
    assert "local crop seen by the student" in [r.setting for r in result.differing()]
    *_, result = _mapping_for("dino", "ecapa")
    assert result.config["dataset"]["frame_sampling"] == "dino"
    assert result.config["dataset"]["frame_length"] == 16000


def test_siamese_methods_do_not_pad_to_the_dino_length():
    *_, result = _mapping_for("simclr", "ecapa", {"frame_length": 24000})
    data = result.config["dataset"]
    assert data["ssl_dino_global_length"] == data["ssl_dino_local_length"] == 24000


def test_babble_is_capped_by_the_speech_files_sslsv_can_sample(monkeypatch):
    monkeypatch.setitem(mapping.OUR_AUGMENT_CONSTANTS, "babble", [3, 7])
    bank = dict(BANK, speech=3)
    *_, result = _mapping_for("simclr", "ecapa", bank=bank)
    assert result.fixups["dataset.augmentation.musan_speech_num"] == [3, 3]
    assert "babble speakers" in [r.setting for r in result.differing()]


def test_moco_queue_must_be_a_multiple_of_the_batch():
    with pytest.raises(SSLSVError, match="queue_size 1000 is not a multiple"):
        _mapping_for("moco", "ecapa", {"queue_size": 1000})


def test_budget():
    b = mapping.make_budget(1440, 64, steps=10)
    assert (b.steps_per_epoch, b.epochs, b.steps, b.step_limit) == (22, 1, 10, 10)
    b = mapping.make_budget(1440, 64, steps=44)
    assert (b.epochs, b.step_limit) == (2, None)
    b = mapping.make_budget(1440, 64, epochs=11)
    assert (b.steps, b.step_limit) == (242, None)
    b = mapping.make_budget(1450, 64, steps=23)  # 1450 // 64 = 22: drop_last
    assert (b.steps_per_epoch, b.epochs, b.step_limit) == (22, 2, 23)
    for kwargs in ({}, {"steps": 1, "epochs": 1}, {"steps": 0}, {"epochs": 0}):
        with pytest.raises(SSLSVError):
            mapping.make_budget(1440, 64, **kwargs)
    with pytest.raises(SSLSVError, match="fewer than one batch"):
        mapping.make_budget(10, 64, epochs=1)
    ours, extra = mapping.our_settings("simclr", "ecapa")
    args = mapping.our_cli_args(ours, extra, mapping.make_budget(1440, 64, steps=10))
    assert args[-2:] == ["--number_of_epochs=1", "--optimizer_step_limit=10"]


def test_lr_drops_follow_the_recipe_schedule_and_sslsv():
    """Both formulas against the schedules they describe; the recipes' schedule
    drops at sslsv's epochs (SpeechBrain's StepScheduler would drop one earlier)."""
    from speechbrain.nnet.schedulers import StepScheduler

    from sslsv_sb.recipe.hparams import load_yaml

    epochs = 16
    tiny = {"lr": 1.0, "channels": [8, 8, 8, 8, 24], "emb_dim": 8}
    recipe = load_yaml(str(HPARAMS / "simclr_ecapa.yaml"), tiny)
    ours = mapping.lr_drop_epochs_ours(epochs, scheduler=recipe["lr_annealing"])
    assert ours == mapping.lr_drop_epochs_ours(epochs) == [5, 10, 15]
    # sslsv BaseMethod.update_optim "default": init_lr * 0.95 ** (epoch // 5)
    sslsv = [0.95 ** (k // 5) for k in range(epochs)]
    drops = [k for k in range(1, epochs) if sslsv[k] < sslsv[k - 1]]
    assert mapping.lr_drop_epochs_sslsv(epochs) == drops == ours
    sb_step = StepScheduler(initial_value=1.0, decay_factor=0.95, decay_drop=5)
    assert mapping.lr_drop_epochs_ours(epochs, scheduler=sb_step) == [4, 9, 14]


def test_cli_values():
    fmt = mapping.format_value
    assert fmt([256, 256]) == "[256,256]"
    assert (fmt(None), fmt(True), fmt(math.inf), fmt(5e-05)) == (
        "null",
        "True",
        "inf",
        "5e-05",
    )
    ours, extra = mapping.our_settings(
        "simclr", "ecapa", overrides={"train_list": "a=b"}
    )
    with pytest.raises(SSLSVError, match="contains '='"):
        mapping.our_cli_args(ours, extra, mapping.make_budget(1440, 64, epochs=1))
    assert compare.parse_overrides(["lr=1e-3", "channels=[8, 8]", "x=null"]) == {
        "lr": 0.001,
        "channels": [8, 8],
        "x": None,
    }
    with pytest.raises(SSLSVError, match="KEY=VALUE"):
        compare.parse_overrides(["temperature"])


def test_check_resolved_catches_ignored_and_changed_keys():
    *_, result = _mapping_for("simclr", "ecapa")
    resolved = json.loads(json.dumps(result.config))
    for path, value in result.fixups.items():
        *parents, leaf = path.split(".")
        node = resolved
        for p in parents:
            node = node[p]
        node[leaf] = value
    assert mapping.check_resolved(result, resolved) == []
    resolved["method"].pop("temperature")
    resolved["trainer"]["batch_size"] = 32
    problems = mapping.check_resolved(result, resolved)
    assert len(problems) == 2
    assert "method.temperature: not a field" in problems[0] + problems[1]


def test_settings_table_marks_differences():
    *_, result = _mapping_for("simclr", "ecapa", {"eq_prob": 0.5})
    lines = mapping.format_table(result.rows).splitlines()
    eq = next(line for line in lines if line.startswith("EQ augmentation"))
    assert "eq_prob=0.5" in eq and "DIFFERS" in eq
    temp = next(line for line in lines if line.startswith("temperature"))
    assert "method.temperature=0.07" in temp and "DIFFERS" not in temp


# ----------------------------------------------------------------------- data view
def test_data_view_matches_sslsv_layout(tiny_corpus, tmp_path):
    folder = str(tiny_corpus)
    before = compare.snapshot(folder)
    files, speakers = compare.read_train_rows(os.path.join(folder, "train.csv"), folder)
    bank = dataview.bank_files(folder, "noise", "rirs")
    view = tmp_path / "data"
    counts = dataview.build_view(
        str(view), folder, files, speakers, os.path.join(folder, "trials.txt"), bank
    )
    # sslsv's DataAugmentation globs and categories (sslsv/datasets/DataAugmentation.py)
    musan = glob.glob(str(view / "musan_split" / "*/*/*.wav"))
    by_cat = {c: sorted(f for f in musan if f.split(os.sep)[-3] == c) for c in bank}
    for category in dataview.CATEGORIES:
        assert [os.path.realpath(f) for f in by_cat[category]] == bank[category]
        assert counts[category] == len(bank[category]) > 0
    rirs = glob.glob(str(view / "simulated_rirs" / "*/*/*.wav"))
    assert sorted(os.path.realpath(f) for f in rirs) == bank["rir"]
    rows = (view / mapping.VIEW_TRAIN_LIST).read_text().splitlines()
    assert rows[0] == "File,Speaker" and len(rows) - 1 == len(files) == counts["train"]
    for line in rows[1:]:
        assert (view / line.split(",")[0]).is_file()
    trials = (view / mapping.VIEW_TRIAL_LIST).read_text().splitlines()
    assert len(trials) == counts["trials"]
    assert all((view / p).is_file() for t in trials for p in t.split(" ")[1:])
    assert compare.snapshot(folder) == before  # the data folder is untouched


def test_banks_sslsv_cannot_run_are_refused(tmp_path):
    bank = {"noise": ["a"], "music": [], "speech": ["b"], "rir": []}
    with pytest.raises(SSLSVError, match="empty: music, rir"):
        dataview.check_banks(bank, "reverb+noise", 1.0)
    dataview.check_banks(bank, "reverb+noise", 0.0)
    with pytest.raises(SSLSVError, match="noise_folder: folder not found"):
        dataview.bank_files(str(tmp_path), "missing", None)


# --------------------------------------------------------------------------- runner
def test_stand_ins_replace_s3prl_and_missing_speechbrain():
    modules = {}
    names = runner.install_stand_ins(modules, speechbrain_available=False)
    assert set(names) == set(runner.S3PRL_MODULES) | set(runner.SPEECHBRAIN_MODULES)
    assert modules["s3prl"].nn is modules["s3prl.nn"]
    assert modules["s3prl"].util.download is modules["s3prl.util.download"]
    for obj in (
        modules["s3prl.nn"].S3PRLUpstream,
        modules["s3prl.util.download"].set_dir,
        modules["speechbrain.processing.PLDA_LDA"].PLDA,
    ):
        with pytest.raises(runner.StandInError, match="stand-in"):
            obj("x")
    kept = {}
    assert set(runner.install_stand_ins(kept, speechbrain_available=True)) == set(
        runner.S3PRL_MODULES
    )


def test_stand_ins_let_sslsv_style_imports_work(monkeypatch):
    for name in runner.S3PRL_MODULES:
        monkeypatch.delitem(sys.modules, name, raising=False)
    runner.install_stand_ins(speechbrain_available=True)
    import s3prl  # noqa: F401  (what sslsv/encoders/S3PRL.py does)
    from s3prl.nn import Featurizer, S3PRLUpstream  # noqa: F401

    assert isinstance(sys.modules["s3prl"], types.ModuleType)


def test_wandb_disabled_run_answers_get_url():
    class NoopRun:  # like wandb's disabled run: no get_url
        name = "run"

    fake = types.SimpleNamespace(init=lambda **kw: NoopRun())
    runner.patch_wandb(fake)
    runner.patch_wandb(fake)  # idempotent
    run = fake.init(mode="disabled")
    assert run.get_url() is None and run.name == "run"

    class UrlRun:
        def get_url(self):
            return "https://x"

    fake = types.SimpleNamespace(init=lambda **kw: UrlRun())
    runner.patch_wandb(fake)
    assert fake.init().get_url() == "https://x"


def test_fixups_and_plain_config():
    @dataclasses.dataclass
    class Aug:
        musan_speech_num: tuple = (1, 1)

    @dataclasses.dataclass
    class Data:
        augmentation: Aug = dataclasses.field(default_factory=Aug)
        base_path: Path = Path("./data/")

    @dataclasses.dataclass
    class Config:
        dataset: Data = dataclasses.field(default_factory=Data)

    config = Config()
    runner.apply_fixups(config, {"dataset.augmentation.musan_speech_num": [3, 7]})
    assert config.dataset.augmentation.musan_speech_num == (3, 7)
    with pytest.raises(KeyError, match="no field dataset.augmentation.nope"):
        runner.apply_fixups(config, {"dataset.augmentation.nope": 1})
    plain = runner.plain(config)
    assert plain == {
        "dataset": {"augmentation": {"musan_speech_num": [3, 7]}, "base_path": "data"}
    }


def test_step_limited_loader_stops_across_epochs():
    class Loader(list):
        dataset = "ds"

    loader = runner.StepLimitedLoader(Loader(range(4)), limit=6)
    epochs = [list(loader) for _ in range(3)]
    assert epochs == [[0, 1, 2, 3], [0, 1], []]
    assert len(loader) == 4 and loader.dataset == "ds" and loader.yielded == 6
    assert list(runner.StepLimitedLoader(Loader(range(3)))) == [0, 1, 2]


def test_restore_initial_state_tolerates_buffers_added_in_training():
    import torch

    class Method(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = torch.nn.Linear(2, 2)
            self.head = torch.nn.utils.weight_norm(torch.nn.Linear(2, 3))

    method = Method()
    initial = {k: v.detach().clone() for k, v in method.state_dict().items()}
    with torch.no_grad():
        method.encoder.weight.add_(1.0)
    method.register_buffer("queue", torch.ones(4))  # as SwAV's on_train_start
    runner.restore_initial(method, initial)
    assert torch.equal(method.encoder.weight, initial["encoder.weight"])
    del initial["encoder.bias"]
    with pytest.raises(RuntimeError, match="encoder.bias"):
        runner.restore_initial(method, initial)


# ------------------------------------------------------------------------- compare
def test_scoring_is_the_same_code_for_both_toolkits(tmp_path):
    from sslsv_sb.data.lists import Trials
    from sslsv_sb.evaluation.metrics import verification_metrics

    rng = np.random.default_rng(0)
    ids = [f"wav/s{i % 4}/u{i}.wav" for i in range(12)]
    emb = rng.normal(size=(12, 8)).astype(np.float32)
    emb[:, 0] += 3 * np.array([i % 4 for i in range(12)])
    pairs = [(a, b) for a in range(12) for b in range(a + 1, 12)]
    trials = Trials(
        name="t",
        labels=np.array([int(a % 4 == b % 4) for a, b in pairs]),
        enrol=[ids[a] for a, _ in pairs],
        test=[ids[b] for _, b in pairs],
    )
    np.savez(tmp_path / "e.npz", ids=np.asarray(ids[::-1]), emb=emb[::-1])
    got = compare.score_embeddings(str(tmp_path / "e.npz"), trials)
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    scores = np.array([unit[a] @ unit[b] for a, b in pairs])
    want = verification_metrics(scores, trials.labels, p_targets=(0.01,))
    assert got["eer"] == pytest.approx(want["eer"])
    assert got["mindcf_0.01"] == pytest.approx(want["mindcf_0.01"])
    np.savez(tmp_path / "s.npz", t__cosine=scores, t__labels=trials.labels)
    assert compare.score_saved_scores(str(tmp_path / "s.npz"), trials) == got


def test_work_folders_and_snapshots(tmp_path):
    work = tmp_path / "w"
    compare.reset_dir(str(work))
    (work / "f").write_text("x")
    compare.reset_dir(str(work))  # our own folder: replaced
    assert not (work / "f").exists()
    (tmp_path / "other").mkdir()
    with pytest.raises(SSLSVError, match="not created by the comparison tool"):
        compare.reset_dir(str(tmp_path / "other"))
    before = compare.snapshot(str(tmp_path))
    (tmp_path / "other" / "new").write_text("y")
    diff = compare.snapshot_diff(before, compare.snapshot(str(tmp_path)))
    assert diff["added"] == [os.path.join("other", "new")]


def test_train_log_parsing(tmp_path):
    log = tmp_path / "train_log.txt"
    log.write_text(
        "epoch: 1, lr: 1.00e-03 - train loss: 4.25, train time_s: 12.50\n"
        "epoch: 2, lr: 1.00e-03 - train loss: 3.10e+00, train time_s: 11.00\n"
    )
    assert compare.parse_train_log(str(log)) == [
        {"loss": 4.25, "time_s": 12.5},
        {"loss": 3.1, "time_s": 11.0},
    ]


def test_our_step_limit_from_the_command_line_is_an_int():
    """``--optimizer_step_limit`` (our side of a partial-epoch budget) stops fit."""
    import torch
    from speechbrain.utils.run_opts import RunOptions

    from sslsv_sb.brains.sb_workarounds import SpeechBrainWorkarounds

    _, run_opts, _ = RunOptions.from_command_line_args(
        ["x.yaml", "--optimizer_step_limit=3"]
    )
    brain = SpeechBrainWorkarounds(
        modules={"m": torch.nn.Linear(1, 1)}, run_opts=run_opts
    )
    assert not brain._optimizer_step_limit_exceeded
    brain.optimizer_step = 3
    assert brain._optimizer_step_limit_exceeded


def test_venv_commands_install_the_package_list(tmp_path):
    cmds = compare.venv_commands(str(tmp_path / "v"), base_python="python3")
    assert cmds[0] == ["python3", "-m", "venv", str(tmp_path / "v")]
    assert cmds[1][-len(compare.SSLSV_VENV_PACKAGES) :] == list(
        compare.SSLSV_VENV_PACKAGES
    )


def test_missing_sslsv_is_a_clear_error(tmp_path):
    with pytest.raises(SSLSVError, match="--sslsv: give the extracted sslsv folder"):
        compare.check_sslsv_dir(None)
    with pytest.raises(SSLSVError, match="is not an sslsv folder"):
        compare.check_sslsv_dir(str(tmp_path))


# ------------------------------------------------------------ with sslsv (skipped)
@needs_sslsv
@pytest.mark.slow
@pytest.mark.parametrize("method,encoder", PAIRS)
def test_sslsv_loads_every_mapped_value(method, encoder, tiny_corpus, tmp_path):
    """sslsv's own loader (dacite ignores unknown keys) holds every written value."""
    args = compare.parse_args(
        [
            "--method",
            method,
            "--encoder",
            encoder,
            "--data_folder",
            str(tiny_corpus),
            "--out",
            str(tmp_path),
            "--steps",
            "1",
            "--sslsv",
            SSLSV_DIR,
            "--sslsv-python",
            SSLSV_PYTHON,
            "--overrides",
            "batch_size=8",
            "queue_size=64",
            "head_out_dim=256",
            "n_prototypes=16",
        ]
    )
    ctx = compare.prepare(args)
    out = compare.run_sslsv(ctx, dry_run=True)
    assert out["check"] == "ok" and out["sslsv_folder_unchanged"]


# Small models; DINO and SwAV have weight-normalised layers and SwAV a queue buffer
# created at train start (the untrained state is restored around them).
E2E = {
    "simclr": [],
    "dino": [
        "local_length=4000",
        "head_hidden_dim=64",
        "head_bottleneck_dim=16",
        "head_out_dim=32",
    ],
    "swav": ["proj_hidden_dim=64", "proj_out_dim=16", "n_prototypes=8"],
}


@needs_sslsv
@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(E2E))
def test_end_to_end_on_the_tiny_corpus(method, tiny_corpus, tmp_path):
    out = tmp_path / "cmp"
    payload = compare.main(
        [
            "--method",
            method,
            "--data_folder",
            str(tiny_corpus),
            "--steps",
            "2",
            "--out",
            str(out),
            "--threads",
            "2",
            "--sslsv",
            SSLSV_DIR,
            "--sslsv-python",
            SSLSV_PYTHON,
            "--overrides",
            "batch_size=8",
            "frame_length=8000",
            "channels=[32,32,32,32,96]",
            "emb_dim=32",
            "n_mels=40",
            *E2E[method],
        ]
    )
    rows = {r["toolkit"]: r for r in payload["report"]}
    assert set(rows) == {"sslsv", "ours"}
    for row in rows.values():
        assert row["steps"] == 2
        for key in ("untrained_eer", "trained_eer"):
            assert 0.0 <= row[key] <= 100.0
        assert row["s_per_step"] > 0
    sslsv = payload["results"]["sslsv"]
    assert sslsv["sslsv_folder_unchanged"] and sslsv["steps_per_epoch"] == 48 // 8
    # our scoring of our scores agrees with verification.json's own numbers
    ours = payload["results"]["ours"]["scores"]["trained"]
    assert ours["eer"] == pytest.approx(ours["own"]["eer"])
    saved = json.loads((out / "comparison.json").read_text())
    assert saved["report"] == payload["report"]


def _side(toolkit, untrained, trained):
    return {
        "toolkit": toolkit,
        "untrained_eer": untrained,
        "untrained_mindcf": 1.0,
        "trained_eer": trained,
        "trained_mindcf": 0.9,
        "steps": 242,
        "s_per_step": 2.0,
    }


def test_table_renders_saved_comparisons_without_training(tmp_path, capsys):
    run = {"started": "2026-12-07T08:00:00", "commit": "abcdef0123", "seed": 3}
    files = []
    for name, report in [
        ("a", [_side("sslsv", 27.6, 7.6), _side("ours", 27.9, 7.5)]),
        ("b", [_side("sslsv", 27.6, 28.1), _side("ours", 27.9, 26.2)]),
        ("c", [_side("ours", 30.0, 20.0)]),  # --only ours
    ]:
        path = tmp_path / f"{name}.json"
        payload = {"method": name, "encoder": "ecapa", "report": report, "run": run}
        path.write_text(json.dumps(payload))
        files.append(str(path))
    text = compare.main(["--table", *files])  # no --method needed
    assert capsys.readouterr().out.strip() == text
    rows = [line.split(" | ") for line in text.splitlines()[2:]]
    assert [r[6] for r in rows] == ["0.99", "0.93", "-"]  # ours / sslsv trained EER
    assert [r[7] for r in rows] == ["yes / yes", "no / no", "- / yes"]
    assert rows[0][2] == "3" and rows[0][-1] == "2026-12-07T08:00:00, abcdef0 |"


def test_table_joins_one_sided_runs_of_the_same_comparison(tmp_path):
    """`--only sslsv` and `--only ours` runs with every mapped setting equal become
    one row with a ratio; a run whose settings differ stays on its own row."""
    settings = [{"setting": "lr", "ours": 0.001, "sslsv": 0.001}]
    budget = {"steps": 880}

    def one(name, side, eer, lr=0.001, seed=1717):
        payload = {
            "method": "dino",
            "encoder": "ecapa",
            "budget": budget,
            "settings": [dict(settings[0], ours=lr, sslsv=lr)],
            "report": [_side(side, 27.0, eer)],
            "run": {
                "started": f"2026-12-07T1{name}",
                "commit": f"{name}" * 8,
                "seed": seed,
            },
        }
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(payload))
        return str(path)

    files = [
        one("2", "ours", 20.0, lr=0.1),  # other settings: not joined
        one("4", "sslsv", 12.0, seed=2),  # other seed: not joined
        one("1", "ours", 15.0),
        one("3", "sslsv", 12.0),
    ]
    payloads = [json.loads(Path(f).read_text()) for f in files]
    rows = [line.split(" | ") for line in compare.markdown_table(payloads).splitlines()]
    rows = rows[2:]
    assert len(rows) == 3
    assert [r[6] for r in rows] == ["-", "-", "1.25"]  # ours / sslsv trained EER
    assert rows[2][4].startswith("27.00 -> 12.00")  # sslsv's side
    assert rows[2][5].startswith("27.00 -> 15.00")  # ours
    both = "sslsv: 2026-12-07T13, 3333333; ours: 2026-12-07T11, 1111111 |"
    assert rows[2][-1] == both


def test_method_still_required_to_train():
    with pytest.raises(SystemExit) as err:
        compare.parse_args(["--steps", "2"])
    assert err.value.code == 2


def test_run_record_names_machine_commit_and_seed():
    args = compare.parse_args(["--method", "simclr", "--seed", "5", "--threads", "1"])
    rec = compare.run_record(args)
    assert rec["seed"] == 5 and rec["threads"] == 1
    assert rec["machine"]["cores"] == os.cpu_count() and rec["machine"]["cpu"]
    assert rec["commit"] is None or len(rec["commit"]) == 40
