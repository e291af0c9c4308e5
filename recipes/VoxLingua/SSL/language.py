#!/usr/bin/env python3
"""Language recognition with a self-supervised encoder: pre-train, probe, verify.

One command runs the language-ID family on VoxLingua107 or on the embedded corpus
in multilingual mode (offline)::

    python recipes/VoxLingua/SSL/language.py hparams/simclr_ecapa.yaml \
        --output_folder=results/voxlingua/simclr_ecapa [--data_folder=DATA] \
        [--stages=[pretrain,probe,verify,finetune]] [--probes=[linear,mlp]] \
        [--finetune_lr_factor=0.1] [--channels=[...] --emb_dim=... ...]

Stages (each skipped when its output exists, so the command resumes):

1. ``pretrain``: ``train.py`` with the SSL yaml on the unlabelled train list;
2. ``probe``: ``downstream.py`` linear / MLP probes of the frozen embeddings for
   ``language_key`` (accuracy, macro / weighted F1), trained on
   ``language_train_list`` and tested on ``language_test_list`` (embedded corpus:
   ``test.csv``, held-out speakers) -> ``<output_folder>/downstream.json``;
3. ``verify``: language-verification trials (same / different language, different
   speakers, exact counts; :mod:`sslsv_sb.data.language_trials`) scored by
   ``evaluate.py`` (cosine EER / minDCF) -> ``<output_folder>/language_verification/``;
4. ``finetune`` (optional): ``supervised_ecapa.yaml`` (AAM, ``label_key: Language``)
   initialised from the SSL encoder with encoder LR x ``finetune_lr_factor``, in
   ``<output_folder>/finetune``, then probed and verified like the SSL model.

Without ``--data_folder`` the embedded corpus is generated with the yaml's
``corpus:`` languages in ``<embedded data folder>/<preset>-<languages>`` (its own
folder, so it never clashes with the English corpus) and the yaml's ``embedded:``
values apply. Results: ``<output_folder>/language.json`` and ``language.md``.

The flow lives in :mod:`sslsv_sb.recipe.language`.

Authors: the sslsv-sb developers.
"""

from sslsv_sb.recipe.cli import run_cli
from sslsv_sb.recipe.language import main

if __name__ == "__main__":
    run_cli(main)
