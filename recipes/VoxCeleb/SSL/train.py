#!/usr/bin/env python3
"""Train a self-supervised speaker encoder, then score the trial lists.

One entry point for every method: the yaml names the Brain class (``brain_class``).

Single process (CPU or one GPU)::

    python recipes/VoxCeleb/SSL/train.py hparams/simclr_ecapa.yaml \
        --data_folder=/path/to/data

Several GPUs (DDP through SpeechBrain's run options)::

    torchrun --nproc_per_node=4 recipes/VoxCeleb/SSL/train.py hparams/dino_ecapa.yaml \
        --data_folder=/path/to/data

Without ``--data_folder`` the embedded synthetic corpus is used (generated on first
use). After training, every trial list named in the yaml is scored (cosine, EER and
minDCF) for the trained encoder and, for comparison, for the untrained one; results go
to ``<output_folder>/verification.json``.

The flow lives in :mod:`sslsv_sb.recipe.train`.

Authors: the sslsv-sb developers.
"""

from sslsv_sb.recipe.cli import run_cli
from sslsv_sb.recipe.train import main

if __name__ == "__main__":
    run_cli(main)
