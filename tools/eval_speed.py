#!/usr/bin/env python
"""Evaluation speed (embed + score a trial list), ours against sslsv, interleaved.

Usage::

    python tools/eval_speed.py [--data_folder DIR] [--trials trials.txt] \\
        [--channels 256 --emb_dim 192 --n_mels 40] [--rounds 3] [--threads N] \\
        [--variant NAME:BATCH:SECONDS:RATIO[:JOBS] ...] [--out result.json] \\
        [--sslsv /path/to/sslsv --sslsv_python /path/to/venv/bin/python] \\
        [--key=value yaml overrides]

See :mod:`sslsv_sb.recipe.tools.eval_speed` and ``docs/evaluation.md``.
"""

from sslsv_sb.recipe.cli import run_cli
from sslsv_sb.recipe.tools.eval_speed import main

if __name__ == "__main__":
    run_cli(main)
