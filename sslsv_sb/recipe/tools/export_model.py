"""Export a trained run for inference (offline SpeechBrain bundle, TorchScript, ONNX).

The command of ``tools/export_model.py`` (usage there): check the output folder
(:func:`check_export_folder`), read the run under a shared lock (a training that
writes the run folder refuses it, :class:`sslsv_sb.recipe.runfolder.FolderLock`),
load the run's yaml (pointed at the folder given when the run was moved or copied,
:func:`moved_run_overrides`) and checkpoint (:func:`sslsv_sb.export.load_model`),
then :func:`sslsv_sb.export.export_run` (every file written atomically).
"""

import argparse
import json
import os

from sslsv_sb.errors import SSLSVError
from sslsv_sb.export import build_brain, export_run, load_model
from sslsv_sb.recipe.models import check_finite_model, load_run_hparams
from sslsv_sb.recipe.runfolder import (
    RUN_HPARAMS,
    FolderLock,
    is_run_folder,
    parse_resolved,
)


class _Parser(argparse.ArgumentParser):
    """``argparse`` whose errors are one :class:`SSLSVError` line (exit status 2)."""

    def error(self, message):
        raise SSLSVError(f"{self.prog}: {message} (--help for the usage)")


def check_export_folder(out, run, force=False):
    """Refuse an output folder the export could damage; before any work.

    Arguments
    ---------
    out : str
        The export folder (created if missing).
    run : str
        The run folder exported.
    force : bool
        Allow a non-empty folder (files of the same names are replaced).

    Raises
    ------
    SSLSVError
        ``out`` is the run folder or another training run folder (its
        ``hyperparams.yaml`` has ``brain_class``, or it holds checkpoints or a run
        lock), even with ``force``; or ``out`` is not empty and ``force`` is off;
        or ``out`` is not a folder.
    """
    out, run = os.path.abspath(out), os.path.abspath(run)
    if os.path.exists(out) and not os.path.isdir(out):
        raise SSLSVError(f"{out}: exists and is not a folder")
    if out == run or is_run_folder(out):
        raise SSLSVError(
            f"{out} is a training run folder: export_model.py never writes into one "
            "(it would replace the run's hyperparams.yaml), not even with --force; "
            "give another OUT_FOLDER"
        )
    if os.path.isdir(out) and os.listdir(out) and not force:
        raise SSLSVError(
            f"{out} is not empty: give an empty or new OUT_FOLDER, or --force to "
            "replace the files of an earlier export there"
        )


def moved_run_overrides(run):
    """Overrides that point a moved or copied run's yaml at the folder given.

    A run's ``hyperparams.yaml`` records absolute paths (``output_folder``,
    ``save_folder``, the ``checkpointer``'s ``checkpoints_dir``): read as recorded,
    a copy of a run would export the original folder's checkpoints (and build its
    ``save`` folder if gone). Paths inside the recorded ``output_folder`` are moved
    into ``run``; the others are kept.

    Arguments
    ---------
    run : str
        The run folder given on the command line (absolute).

    Returns
    -------
    dict
        HyperPyYAML overrides (empty when the run did not move or the record cannot
        be read: loading it then reports the problem).
    """
    try:
        with open(os.path.join(run, RUN_HPARAMS), encoding="utf-8") as f:
            doc = parse_resolved(f.read())
    except Exception:  # noqa: BLE001 -- load_run_hparams reports it properly
        return {}
    recorded = doc.get("output_folder")
    if not isinstance(recorded, str) or os.path.abspath(recorded) == run:
        return {}

    def moved(path):
        if not isinstance(path, str):
            return None
        rel = os.path.relpath(os.path.abspath(path), os.path.abspath(recorded))
        return (
            None
            if rel.startswith(os.pardir)
            else os.path.normpath(os.path.join(run, rel))
        )

    out = {"output_folder": run}
    if moved(doc.get("save_folder")):
        out["save_folder"] = moved(doc["save_folder"])
    ckpt = doc.get("checkpointer")
    args = ckpt.get("value") if isinstance(ckpt, dict) else None
    if isinstance(args, dict) and moved(args.get("checkpoints_dir")):
        out["checkpointer"] = {"checkpoints_dir": moved(args["checkpoints_dir"])}
    return out


def main(argv=None):
    """Parse arguments, load the run, write the exports; returns the report."""
    parser = _Parser(
        prog="export_model.py", description=__doc__.split("\n", maxsplit=1)[0]
    )
    parser.add_argument("run_folder")
    parser.add_argument("out_folder")
    parser.add_argument("--checkpoint", default="last")
    parser.add_argument("--average_last", type=int, default=1)
    parser.add_argument("--best_key", default="valid_eer")
    parser.add_argument("--best_mode", default="min", choices=["min", "max"])
    parser.add_argument("--formats", default="bundle,torchscript,onnx")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--force",
        action="store_true",
        help="write into a non-empty OUT_FOLDER (never into a run folder)",
    )
    args = parser.parse_args(argv)

    run = os.path.abspath(args.run_folder)
    out = os.path.abspath(args.out_folder)
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    unknown = sorted(set(formats) - {"bundle", "torchscript", "onnx"})
    if unknown or not formats:
        raise SSLSVError(f"--formats: unknown or no format ({unknown or formats})")
    check_export_folder(out, run, args.force)
    with FolderLock(
        run,
        shared=True,
        role="export_model.py",
        hint="wait for the training to end before exporting",
    ):
        yaml_path, hparams = load_run_hparams(run, moved_run_overrides(run))
        brain = build_brain(hparams, {"device": args.device})
        info = load_model(
            brain, args.checkpoint, args.average_last, args.best_key, args.best_mode
        )
        check_finite_model(brain, f"the model of {', '.join(info['checkpoints'])}")
        method = getattr(brain, "method_name", None)
        meta = {"run_folder": run, "method": method, **info}
        report = export_run(brain, yaml_path, out, formats, meta)
    print(json.dumps(report, indent=2))
    return report
