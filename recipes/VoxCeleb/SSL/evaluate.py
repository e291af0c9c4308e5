#!/usr/bin/env python3
"""Score trial lists with a trained run (any method, any back-end).

Uses the training yaml (it names the Brain class), loads the run's checkpoint and
writes ``verification.json``, ``verification.md``, ``scores_trained.npz`` and
``plots/`` into the run folder (or ``--eval_folder``)::

    python recipes/VoxCeleb/SSL/evaluate.py hparams/simclr_ecapa.yaml \
        --data_folder=DATA --output_folder=results/simclr_ecapa/1717 \
        [--trial_lists=[voxceleb1_test_O.txt,voxceleb1_test_H.txt]] \
        [--backends=[cosine,plda]] [--score_norm=as-norm] [--n_cohort=2000] \
        [--cohort_top_k=300] [--calibration_list=voxsrc2021_val.txt] \
        [--checkpoint=auto|last|best|save/CKPT+...] [--average_last=K] \
        [--eval_folder=DIR] [--no_plots]

``--checkpoint=auto`` (default) gives the model ``train.py`` scored: the last
checkpoint, then the best-validation checkpoint / average of the last
``average_last_k`` checkpoints when the yaml asks for it. Other values are explicit:
``last``, ``best`` (by ``--best_key``/``--best_mode`` in the checkpoint meta, default
``valid_eer``/``min``) or one checkpoint folder; ``--average_last=K`` averages the
weights of the first K checkpoints of that order.

Flags above are evaluation flags; every other ``--key=value`` overrides the yaml as
in ``train.py``. Errors (no checkpoint, unknown list, bad back-end) print one line and
exit with status 2.

Authors: the sslsv-sb developers.
"""

import logging
import os
import sys

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from sslsv_sb.errors import SSLSVError, run_cli  # noqa: E402
from sslsv_sb.evaluation.cache import model_fingerprint  # noqa: E402
from sslsv_sb.evaluation.verification import (  # noqa: E402
    EvalConfig,
    format_table,
    run_verification,
)
from sslsv_sb.export import build_brain, find_checkpoints  # noqa: E402
from sslsv_sb.export import load_model as _load_checkpoint  # noqa: E402

logger = logging.getLogger(__name__)

# flag -> (parser, default); values are parsed as YAML scalars / flow lists.
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


def split_eval_args(argv, flags=EVAL_FLAGS):
    """Separate evaluation flags from the yaml overrides.

    Arguments
    ---------
    argv : list of str
    flags : dict
        ``{flag name: default}``.

    Returns
    -------
    (dict, list)
        Parsed evaluation options and the remaining arguments.
    """
    opts, rest = dict(flags), []
    i = 0
    while i < len(argv):
        arg = argv[i]
        name = arg[2:].split("=", 1)[0] if arg.startswith("--") else None
        if name in flags:
            if flags[name] is False and "=" not in arg:  # boolean switch
                opts[name] = True
            elif "=" in arg:
                opts[name] = arg.split("=", 1)[1]
            else:
                if i + 1 >= len(argv):
                    raise SSLSVError(f"--{name}: missing value")
                i += 1
                opts[name] = argv[i]
            if isinstance(opts[name], str):
                try:
                    opts[name] = yaml.safe_load(opts[name])
                except yaml.YAMLError as err:
                    raise SSLSVError(f"--{name}: cannot parse {opts[name]!r}") from err
        else:
            rest.append(arg)
        i += 1
    return opts, rest


def load_model(brain, hparams, checkpoint="auto", average_last=1, **kwargs):
    """Load the trained weights into ``brain`` (see the module docstring).

    Arguments
    ---------
    brain : SSLBrain
    hparams : dict
    checkpoint : str
        ``auto``, ``last``, ``best`` or a checkpoint folder.
    average_last : int
    **kwargs
        ``best_key``, ``best_mode`` for ``checkpoint="best"``.

    Returns
    -------
    dict
        Checkpoint provenance for the report.
    """
    if checkpoint == "auto":
        info = _load_checkpoint(brain, "last", 1)
        try:
            from train import select_final_model
        except ImportError:  # older train.py: last checkpoint only
            select_final_model = None
        if select_final_model is not None:
            select_final_model(brain, hparams)
            info["selection"] = "train.py select_final_model"
        return info
    return _load_checkpoint(brain, str(checkpoint), int(average_last), **kwargs)


def main(argv):
    """Evaluate a trained run; returns the ``verification.json`` payload."""
    from train import load_hparams, run_meta

    opts, rest = split_eval_args(argv)
    _, run_opts, _, hparams = load_hparams(rest)
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
    brain = build_brain(hparams, run_opts)
    if brain.checkpointer is None or not os.path.isdir(
        brain.checkpointer.checkpoints_dir
    ):
        folder = getattr(brain.checkpointer, "checkpoints_dir", "<no checkpointer>")
        raise SSLSVError(
            f"{folder}: no checkpoint folder (--output_folder must be a trained run)"
        )
    # Fail early (before any embedding) when the run has no usable checkpoint.
    find_checkpoints(
        brain.checkpointer,
        "last" if opts["checkpoint"] == "auto" else str(opts["checkpoint"]),
        opts["best_key"],
        opts["best_mode"],
    )
    # Untrained baseline (the yaml's seeded initialisation) for lists lacking one.
    untrained_json = os.path.join(out, "verification_untrained.json")
    if hparams.get("eval_untrained", True):
        import json

        have = {}
        if os.path.isfile(untrained_json):
            with open(untrained_json, encoding="utf-8") as f:
                have = json.load(f)
        names = [
            os.path.splitext(os.path.basename(t))[0]
            for t in hparams.get("trial_lists") or []
        ]
        if any(n not in have for n in names):
            run_verification(
                brain.encode,
                hparams,
                data_folder,
                out,
                model_id=model_fingerprint(brain.inference_modules()),
                tag="untrained",
                **{k: v for k, v in overrides.items() if k == "plots"},
            )
    info = load_model(
        brain,
        hparams,
        opts["checkpoint"],
        opts["average_last"],
        best_key=opts["best_key"],
        best_mode=opts["best_mode"],
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


if __name__ == "__main__":
    run_cli(main)
