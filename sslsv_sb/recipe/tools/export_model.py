"""Export a trained run for inference (offline SpeechBrain bundle, TorchScript, ONNX).

The command of ``tools/export_model.py`` (usage there): load the run's yaml and
checkpoint (:func:`sslsv_sb.export.load_model`), then
:func:`sslsv_sb.export.export_run`.
"""

import argparse
import json
import os

from sslsv_sb.export import build_brain, export_run, load_model
from sslsv_sb.recipe.models import load_run_hparams


def main(argv=None):
    """Parse arguments, load the run, write the exports; returns the report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_folder")
    parser.add_argument("out_folder")
    parser.add_argument("--checkpoint", default="last")
    parser.add_argument("--average_last", type=int, default=1)
    parser.add_argument("--best_key", default="valid_eer")
    parser.add_argument("--best_mode", default="min", choices=["min", "max"])
    parser.add_argument("--formats", default="bundle,torchscript,onnx")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    run = os.path.abspath(args.run_folder)
    yaml_path, hparams = load_run_hparams(run)
    brain = build_brain(hparams, {"device": args.device})
    info = load_model(
        brain, args.checkpoint, args.average_last, args.best_key, args.best_mode
    )
    meta = {"run_folder": run, "method": getattr(brain, "method_name", None), **info}
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    report = export_run(
        brain, yaml_path, os.path.abspath(args.out_folder), formats, meta
    )
    print(json.dumps(report, indent=2))
    return report

