#!/usr/bin/env python3
"""Downstream classification probes on frozen embeddings of a trained run.

Any ``File,<label>[,Set]`` CSV works: language (VoxLingua107 lists), emotion
(CREMA-D lists), or the embedded corpus's ``Language`` / ``Gender`` columns::

    python recipes/VoxCeleb/SSL/downstream.py hparams/simclr_ecapa.yaml \
        --data_folder=DATA --output_folder=RUN \
        --task_csv=train.csv --task_key=Language \
        [--task_test_csv=test.csv] [--probes=[linear,mlp]] [--test_fraction=0.25] \
        [--checkpoint=auto|last|best|CKPT folder] [--average_last=K]

Split: ``--task_test_csv`` if given; else the CSV's ``Set`` column (``train`` /
``test`` rows); else held-out speakers (``Speaker`` column, a seeded ``test_fraction``
of the speakers) so no speaker is in both sides; else a seeded random row split.
Results (accuracy, macro / weighted F1 per probe) are merged into
``<output_folder>/downstream.json`` under ``"<csv stem>:<key>"``.

Fine-tuning through the encoder is a supervised-recipe job: train the supervised AAM
recipe with ``--label_key=Language`` (see ``docs/evaluation.md``).

The flow lives in :mod:`sslsv_sb.recipe.downstream`.
"""

from sslsv_sb.recipe.cli import run_cli
from sslsv_sb.recipe.downstream import main

if __name__ == "__main__":
    run_cli(main)
