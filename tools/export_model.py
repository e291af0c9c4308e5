#!/usr/bin/env python3
"""Export a trained run for inference (offline SpeechBrain bundle, TorchScript, ONNX).

    python tools/export_model.py RUN_FOLDER OUT_FOLDER \
        [--checkpoint=last|best|RUN_FOLDER/save/CKPT+...] [--average_last=K] \
        [--best_key=valid_eer] [--best_mode=min] \
        [--formats=bundle,torchscript,onnx]

``RUN_FOLDER`` is a training output folder (its ``hyperparams.yaml`` and ``save/``).
``OUT_FOLDER`` receives ``hyperparams.yaml`` + ``embedding_model.ckpt`` (load with
``EncoderClassifier.from_hparams(source=<absolute OUT_FOLDER>, savedir=...)``),
``embedding_pipeline.ts.pt`` (``torch.jit.load``; ``wavs (B, L) -> (B, D)``),
``embedding_pipeline.onnx`` (input ``wavs``, output ``embeddings``) and
``export.json`` (provenance and the export-vs-eager checks). Exit status 2 on a user
error; an unsupported ONNX operator is reported without failing the other exports.
"""

import argparse
import json
import os
import sys

from hyperpyyaml import load_hyperpyyaml

from sslsv_sb.errors import SSLSVError
from sslsv_sb.export import build_brain, export_run, load_model


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
    yaml_path = os.path.join(run, "hyperparams.yaml")
    if not os.path.isfile(yaml_path):
        raise SSLSVError(f"{yaml_path}: not found ({run} is not a training run folder)")
    with open(yaml_path, encoding="utf-8") as f:
        hparams = load_hyperpyyaml(f)
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


if __name__ == "__main__":
    try:
        main()
    except SSLSVError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
