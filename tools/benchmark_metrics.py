#!/usr/bin/env python
"""Time and peak memory of the sort-based verification metrics.

Usage::

    OMP_NUM_THREADS=1 python tools/benchmark_metrics.py [--n 1000000] [--repeats 3]

Prints one JSON object: per metric the best wall time over ``--repeats`` runs (s) and
the peak Python-heap allocation during one run (MiB, ``tracemalloc``, which sees
numpy buffers), plus the process peak RSS (``resource``). ``eer+mindcf`` is
``verification_metrics`` (EER and minDCF at 0.01 and 0.05 from one sort).
"""

from sslsv_sb.recipe.cli import run_cli
from sslsv_sb.recipe.tools.benchmark_metrics import main

if __name__ == "__main__":
    run_cli(main)
