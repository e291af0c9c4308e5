#!/usr/bin/env python
"""Training and evaluation benchmarks of sslsv-sb (GitHub issue 9).

Usage::

    python tools/generate_corpus.py --out /tmp/bench_corpus --preset demo
    python tools/benchmark.py --data_folder /tmp/bench_corpus \
        --out benchmarks/results/cpu.json --render docs/benchmarks.md
    python tools/benchmark.py --quick --data_folder /tmp/tiny   # smoke run, seconds

Every measurement runs in its own subprocess (``--one``), so its peak resident memory
(``ru_maxrss`` of the process, and of its loader workers through ``RUSAGE_CHILDREN``,
which reports the largest child, not the sum) belongs to that measurement alone.

Training (Brains built from the recipe yamls exactly as ``train.py`` builds them):

* ``model``: the pure model step: one batch read once, kept in memory, no
  augmentation; ``brain.fit_batch(batch)`` timed in a loop after warm-up;
* ``model+aug``: the same with the on-device augmentation (noise + reverb banks of the
  corpus) switched on, to separate augmentation from loading;
* ``pipeline``: SpeechBrain's real train dataloader (``brain.make_dataloader``, crop
  reading from the wav files) feeding ``fit_batch`` with augmentation on, with
  ``num_workers`` 0 and 2; a step is timed from the end of the previous step, so it
  includes any wait for data;
* ``loader``: the dataloader alone (no model), i.e. what the input side can deliver.

The data overhead is ``pipeline / model`` (steady-state medians). Evaluation: embedding
extraction (utterances/s on the variable-length test utterances, sorted-by-length
batching vs one utterance at a time), cosine scoring (trials/s) and EER/minDCF on 10^6
trials (``tools/benchmark_metrics.py``).

The measurements live in :mod:`sslsv_sb.recipe.tools.benchmark`.
"""

from sslsv_sb.recipe.cli import run_cli
from sslsv_sb.recipe.tools.benchmark import main

if __name__ == "__main__":
    run_cli(main)
