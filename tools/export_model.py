#!/usr/bin/env python3
"""Export a trained run for inference (offline SpeechBrain bundle, TorchScript, ONNX).

    python tools/export_model.py RUN_FOLDER OUT_FOLDER \
        [--checkpoint=last|best|RUN_FOLDER/save/CKPT+...] [--average_last=K] \
        [--best_key=valid_eer] [--best_mode=min] \
        [--formats=bundle,torchscript,onnx] [--force]

``RUN_FOLDER`` is a training output folder (its ``hyperparams.yaml`` and ``save/``);
it is only read (a run that is being trained is refused). ``OUT_FOLDER`` must be new
or empty (``--force``: non-empty, e.g. an earlier export, whose files of the same
names are replaced) and is never a training run folder, not even with ``--force``.
Every file is written under a temporary name and renamed once checked.
``OUT_FOLDER`` receives ``hyperparams.yaml`` + ``embedding_model.ckpt`` (load with
``EncoderClassifier.from_hparams(source=<absolute OUT_FOLDER>, savedir=...)``),
``embedding_pipeline.ts.pt`` (``torch.jit.load``; ``wavs (B, L) -> (B, D)``),
``embedding_pipeline.onnx`` (input ``wavs``, output ``embeddings``) and
``export.json`` (provenance and the export-vs-eager checks). Exit status 2 on a user
error; an unsupported ONNX operator is reported without failing the other exports.
"""

from sslsv_sb.recipe.cli import run_cli
from sslsv_sb.recipe.tools.export_model import main

if __name__ == "__main__":
    run_cli(main)
