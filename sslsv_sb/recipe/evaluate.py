"""``recipes/VoxCeleb/SSL/evaluate.py``: score trial lists with a trained run.

:func:`main` splits the evaluation flags (:data:`EVAL_FLAGS`) from the yaml
overrides, checks and locks the folders before the yaml builds anything
(:class:`sslsv_sb.recipe.runfolder.EvaluationFolders`: a missing run folder is an
error, never created; a run being trained is refused; the results folder is
locked), builds the run's Brain (:func:`sslsv_sb.recipe.models.build_run_brain`),
checks that the checkpoints to load fit it (:func:`check_checkpoints`), scores the
seeded untrained model for the lists that lack it, loads the trained weights
(:func:`sslsv_sb.recipe.models.load_trained`) and writes the ``verification.json``
report (:func:`sslsv_sb.evaluation.verification.run_verification`; every results
file is written under a temporary name and renamed).
"""

import json
import os

from sslsv_sb.errors import SSLSVError
from sslsv_sb.evaluation.cache import model_fingerprint
from sslsv_sb.evaluation.verification import (
    EvalConfig,
    format_table,
    run_verification,
)
from sslsv_sb.export import check_checkpoint_fits, find_checkpoints, training_only
from sslsv_sb.recipe.cli import split_flags
from sslsv_sb.recipe.hparams import load_hparams
from sslsv_sb.recipe.models import build_run_brain, load_trained, run_meta
from sslsv_sb.recipe.paths import VOXCELEB_SSL
from sslsv_sb.recipe.runfolder import (
    RUN_HPARAMS,
    EvaluationFolders,
    describe_changes,
    record_differences,
    run_in_folders,
)

# Evaluation flags and their defaults; values are parsed as YAML scalars / lists.
EVAL_FLAGS = {
    "backends": None,
    "score_norm": None,
    "n_cohort": None,
    "cohort_top_k": None,
    "calibration_list": None,
    "checkpoint": "auto",
    "average_last": 1,
    "best_key": "valid_eer",
    "best_mode": "min",
    "eval_folder": None,
    "no_plots": False,
}


def _untrained_missing(hparams, out):
    """Whether a trial list of the yaml has no untrained score in ``out``."""
    path = os.path.join(out, "verification_untrained.json")
    have = {}
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            have = json.load(f)
    names = [
        os.path.splitext(os.path.basename(t))[0]
        for t in hparams.get("trial_lists") or []
    ]
    return any(n not in have for n in names)


def check_checkpoints(brain, hparams, opts, hparams_file=None, overrides=None):
    """Check, before any scoring, that the checkpoints to load fit the Brain.

    The checkpoints :func:`~sslsv_sb.recipe.models.load_trained` will read for
    ``opts`` (``--checkpoint``, ``--average_last``; with ``auto``, the last one, the
    best-validation one and the ``average_last_k`` most recent ones) are read
    (weights only) and compared with the modules
    (:func:`sslsv_sb.export.check_checkpoint_fits`). On a mismatch the message also
    names the settings of this command that differ from the run's
    ``hyperparams.yaml``.

    Arguments
    ---------
    brain : SSLBrain
        From :func:`~sslsv_sb.recipe.models.build_run_brain`.
    hparams : dict
    opts : dict
        The evaluation flags (:data:`EVAL_FLAGS`).
    hparams_file, overrides : str or None
        This command's yaml and overrides (to compare with the run's record).
    """
    ckpt = brain.checkpointer
    rank = {"best_key": opts["best_key"], "best_mode": opts["best_mode"]}
    if opts["checkpoint"] == "auto":
        last = find_checkpoints(ckpt, "last")
        chosen = last[: max(1, int(hparams.get("average_last_k") or 1))]
        if hparams.get("valid_trial_list"):
            chosen += ckpt.find_checkpoints(min_key="valid_eer")[:1]
    else:
        chosen = find_checkpoints(ckpt, str(opts["checkpoint"]), **rank)
        chosen = chosen[: max(1, int(opts["average_last"]))]
    seen = set()
    for c in chosen:
        if str(c.path) in seen:
            continue
        seen.add(str(c.path))
        try:
            check_checkpoint_fits(ckpt, c, training_only(brain))
        except SSLSVError as err:
            record = os.path.join(str(hparams["output_folder"]), RUN_HPARAMS)
            if hparams_file is None or not os.path.isfile(record):
                raise
            refused, _ = record_differences(record, hparams_file, overrides)
            if not refused:
                raise
            raise SSLSVError(
                f"{err} This command differs from {record}: {describe_changes(refused)}"
            ) from None


def main(argv):
    """Evaluate a trained run: ``argv`` -> the ``verification.json`` payload (dict).

    ``argv`` is ``[hparams file, --key=value, ...]``: the flags of
    :data:`EVAL_FLAGS`, yaml overrides and SpeechBrain run options. After a SIGTERM
    / SIGINT the exit status (143 / 130) is returned instead (the embedding cache
    keeps what was embedded).
    """
    opts, rest = split_flags(argv, EVAL_FLAGS)
    folders = EvaluationFolders(opts["eval_folder"])
    # SIGTERM / SIGINT: release the locks, exit 143 / 130
    return run_in_folders(folders, _evaluate, opts, rest, folders)


def _evaluate(opts, rest, folders):
    """:func:`main` with its folders checked and locked."""
    hparams_file, run_opts, overrides, hparams = load_hparams(
        rest, recipe_dir=str(VOXCELEB_SSL), before_load=folders.claim
    )
    data_folder = hparams["data_folder"]
    out = folders.ensure(hparams)
    overrides_eval = {
        "backends": opts["backends"],
        "score_norm": opts["score_norm"],
        "n_cohort": opts["n_cohort"],
        "cohort_top_k": opts["cohort_top_k"],
        "calibration_list": opts["calibration_list"],
        "plots": False if opts["no_plots"] else None,
    }
    EvalConfig.from_hparams(hparams, **overrides_eval)  # bad settings fail before work
    selection = {"best_key": opts["best_key"], "best_mode": opts["best_mode"]}
    brain = build_run_brain(hparams, run_opts, opts["checkpoint"], **selection)
    check_checkpoints(brain, hparams, opts, hparams_file, overrides)
    # Untrained baseline (the yaml's seeded initialisation) for lists lacking one.
    if hparams.get("eval_untrained", True) and _untrained_missing(hparams, out):
        run_verification(
            brain.encode,
            hparams,
            data_folder,
            out,
            model_id=model_fingerprint(brain.inference_modules()),
            tag="untrained",
            plots=overrides_eval["plots"],
        )
    info = load_trained(
        brain, hparams, opts["checkpoint"], opts["average_last"], **selection
    )
    meta = run_meta(brain, hparams)
    meta.update(info)
    payload = run_verification(
        brain.encode,
        hparams,
        data_folder,
        out,
        model_id=model_fingerprint(brain.inference_modules()),
        meta=meta,
        progress=not run_opts.get("noprogressbar", False),
        **overrides_eval,
    )
    print(format_table(payload["lists"], payload.get("untrained", {}).get("lists")))
    print(f"results written to {os.path.join(out, 'verification.json')}")
    return payload
