#!/usr/bin/env python3
"""Score trial lists with a trained run (any method, any back-end).

Uses the training yaml (it names the Brain class), loads the run's checkpoint and
writes ``verification.json``, ``verification.md``, ``scores_trained.npz`` and
``plots/`` into the run folder (or ``--eval_folder``)::

    python recipes/VoxCeleb/SSL/evaluate.py hparams/simclr_ecapa.yaml \
        --data_folder=DATA --output_folder=results/simclr_ecapa/1717 \
        [--trial_lists=[voxceleb1_test_O.txt,voxceleb1_test_H.txt]] \
        [--backends=[cosine,plda]] [--score_norm=as-norm] [--n_cohort=2000] \
        [--cohort_top_k=300] [--calibration_list=voxsrc2021_val.txt] \
        [--checkpoint=auto|last|best|save/CKPT+...] [--average_last=K] \
        [--eval_folder=DIR] [--no_plots]

``--checkpoint=auto`` (default) gives the model ``train.py`` scored: the last
checkpoint, then the best-validation checkpoint / average of the last
``average_last_k`` checkpoints when the yaml asks for it. Other values are explicit:
``last``, ``best`` (by ``--best_key``/``--best_mode`` in the checkpoint meta, default
``valid_eer``/``min``) or one checkpoint folder; ``--average_last=K`` averages the
weights of the first K checkpoints of that order.

Flags above are evaluation flags; every other ``--key=value`` overrides the yaml as
in ``train.py``. Errors (no checkpoint, unknown list, bad back-end) print one line and
exit with status 2.

The flow lives in :mod:`sslsv_sb.recipe.evaluate`.

Authors: the sslsv-sb developers.
"""

from sslsv_sb.recipe.cli import run_cli
from sslsv_sb.recipe.evaluate import main

if __name__ == "__main__":
    run_cli(main)
