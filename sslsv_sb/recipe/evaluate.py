"""``recipes/VoxCeleb/SSL/evaluate.py``: score trial lists with a trained run.

:func:`main` splits the evaluation flags (:data:`EVAL_FLAGS`) from the yaml
overrides, builds the run's Brain (:func:`sslsv_sb.recipe.models.build_run_brain`),
scores the seeded untrained model for the lists that lack it, loads the trained
weights (:func:`sslsv_sb.recipe.models.load_trained`) and writes the
``verification.json`` report
(:func:`sslsv_sb.evaluation.verification.run_verification`).
"""

import json
import os

from sslsv_sb.evaluation.cache import model_fingerprint
from sslsv_sb.evaluation.verification import (
    EvalConfig,
    format_table,
    run_verification,
)
from sslsv_sb.recipe.cli import split_flags
from sslsv_sb.recipe.hparams import load_hparams
from sslsv_sb.recipe.models import build_run_brain, load_trained, run_meta
from sslsv_sb.recipe.paths import VOXCELEB_SSL

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


def main(argv):
    """Evaluate a trained run: ``argv`` -> the ``verification.json`` payload (dict).

    ``argv`` is ``[hparams file, --key=value, ...]``: the flags of
    :data:`EVAL_FLAGS`, yaml overrides and SpeechBrain run options.
    """
    opts, rest = split_flags(argv, EVAL_FLAGS)
    _, run_opts, _, hparams = load_hparams(rest, recipe_dir=str(VOXCELEB_SSL))
    data_folder = hparams["data_folder"]
    out = opts["eval_folder"] or hparams["output_folder"]
    overrides = {
        "backends": opts["backends"],
        "score_norm": opts["score_norm"],
        "n_cohort": opts["n_cohort"],
        "cohort_top_k": opts["cohort_top_k"],
        "calibration_list": opts["calibration_list"],
        "plots": False if opts["no_plots"] else None,
    }
    EvalConfig.from_hparams(hparams, **overrides)  # bad settings fail before work
    selection = {"best_key": opts["best_key"], "best_mode": opts["best_mode"]}
    brain = build_run_brain(hparams, run_opts, opts["checkpoint"], **selection)
    # Untrained baseline (the yaml's seeded initialisation) for lists lacking one.
    if hparams.get("eval_untrained", True) and _untrained_missing(hparams, out):
        run_verification(
            brain.encode,
            hparams,
            data_folder,
            out,
            model_id=model_fingerprint(brain.inference_modules()),
            tag="untrained",
            plots=overrides["plots"],
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
        **overrides,
    )
    print(format_table(payload["lists"], payload.get("untrained", {}).get("lists")))
    print(f"results written to {os.path.join(out, 'verification.json')}")
    return payload
