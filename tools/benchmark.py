#!/usr/bin/env python
"""Training and evaluation benchmarks of sslsv-sb (issues 9 and 17).

Usage::

    python tools/benchmark.py --configs simclr_ecapa512 dino_ecapa512 \
        --out benchmarks/results/cpu.json --render docs/benchmarks.md
    python tools/benchmark.py --yaml hparams/byol_ecapa.yaml --data_folder DATA \
        --batch_size=64 --suite train --modes pipeline   # any yaml, any overrides
    python tools/benchmark.py --configs simclr_ecapa512 --sslsv SSLSV_DIR \
        --sslsv-python SSLSV_VENV/bin/python --precisions fp32 bf16  # side by side
    python tools/benchmark.py --quick --data_folder /tmp/tiny   # smoke run

Without ``--data_folder`` the embedded corpus is used, as by ``train.py``; other
``--key=value`` arguments are yaml overrides (checked before any measurement). Every
measurement runs in its own subprocess (``--one``), so its peak resident memory belongs
to that measurement alone; each training row also records user/kernel CPU time and
minor page faults per step.

Training (Brains built from the recipe yamls exactly as ``train.py`` builds them):

* ``model``: the pure model step: one batch read once, kept in memory, no
  augmentation; ``brain.fit_batch(batch)`` timed in a loop after warm-up;
* ``model+aug``: the same with the on-device augmentation (noise + reverb banks of the
  corpus) switched on, to separate augmentation from loading;
* ``pipeline``: SpeechBrain's real train dataloader (``brain.make_dataloader``, crop
  reading from the wav files) feeding ``fit_batch`` with augmentation on, with
  ``num_workers`` 0 and 2; a step is timed from the end of the previous step, so it
  includes any wait for data; a short list wraps around;
* ``loader``: the dataloader alone (no model), i.e. what the input side can deliver.

With ``--sslsv``, sslsv's own trainer runs the same shapes through the comparison
tool's runner, interleaved with our ``pipeline`` runs (A,B,A,B), and the ratios
``sslsv s/step / our s/step`` are printed.

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
