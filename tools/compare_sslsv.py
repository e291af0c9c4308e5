#!/usr/bin/env python
"""Train one method with sslsv and with the project side by side, on identical settings.

Usage::

    python tools/compare_sslsv.py --method simclr --sslsv /path/to/sslsv \\
        --sslsv-python /path/to/sslsv-venv/bin/python [--encoder ecapa] \\
        [--steps N | --epochs N] [--overrides KEY=VALUE ...] [--only sslsv|ours] \\
        [--out DIR] [--threads 2] [--seed 1717] [--data_folder DIR | --corpus tiny] \\
        [--dry-run] [--verbose]

``--sslsv`` defaults to ``$SSLSV_DIR`` and ``--sslsv-python`` to ``$SSLSV_PYTHON``
(``--make-venv DIR`` creates sslsv's environment with pip). Both toolkits train on the
same lists (the embedded demo corpus by default) with the same encoder, crops, batch,
optimiser, learning rate, augmentation, seed and number of optimiser steps; both
encoders, untrained and trained, are scored by the project's metrics on the same
trials (cosine, full utterances). The settings table (every mapped setting, differing
ones flagged), the result table (EER, minDCF, steps, time, s/step) and
``<out>/comparison.json`` are the output. No file of the sslsv folder is changed (this
is checked). See ``docs/sslsv_comparison.md``.
"""

from sslsv_sb.recipe.cli import run_cli
from sslsv_sb.sslsv_compare.compare import main

if __name__ == "__main__":
    run_cli(main)
