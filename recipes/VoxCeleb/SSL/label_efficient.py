#!/usr/bin/env python3
"""Label-efficient evaluation: EER versus label fraction, SSL-initialised vs scratch.

For every label fraction, the supervised AAM recipe (``train.py`` with a
``supervised_*.yaml``) is trained on a reproducible, nested subset of the labelled
train list (:mod:`sslsv_sb.data.fractions`), once per mode:

- ``finetune``: encoder initialised from the SSL model, fine-tuned with a reduced
  encoder LR (``--finetune_lr_factor``, sslsv: LR / 10);
- ``frozen``: encoder initialised from the SSL model and frozen (classifier only);
- ``scratch``: random initialisation (the supervised baseline).

Each (mode, fraction) is an ordinary ``train.py`` run in its own folder
``<output_folder>/<mode>_<pct>pct`` (same checkpoints, ``verification.json``), run
as a subprocess. Runs whose ``verification.json`` exists are skipped, and an
interrupted run resumes from its checkpoint: the command is resumable. Results go to
``label_efficient.json``, ``label_efficient.md`` and ``label_efficient.png`` in
``<output_folder>``::

    python recipes/VoxCeleb/SSL/label_efficient.py hparams/supervised_ecapa.yaml \
        --ssl_run=results/simclr_ecapa/1717 \
        --output_folder=results/label_efficient/simclr_ecapa \
        [--fractions=[0.01,0.02,0.05,0.1,0.2,0.5,1.0]] [--fraction_unit=speakers] \
        [--subset_seed=0] [--modes=[finetune,scratch]] [--finetune_lr_factor=0.1] \
        [--ssl_encoder=embedding_model.ckpt] [--data_folder=DATA] [--number_of_epochs=N]

``--ssl_run`` is a trained run folder (its ``hyperparams.yaml`` and checkpoints): the
encoder ``train.py`` scored is extracted (``evaluate.py --checkpoint=auto``: last,
best-validation or averaged) to ``<output_folder>/ssl_encoder.ckpt``;
``--ssl_encoder`` gives an ``embedding_model`` state dict directly instead. The
architecture overrides (``--channels``, ``--emb_dim``, ``--n_mels``) must match the
SSL run's. Every other ``--key=value`` overrides the supervised yaml as in
``train.py`` and is passed to every run.

The flow lives in :mod:`sslsv_sb.recipe.label_efficient`.

Authors: the sslsv-sb developers.
"""

from sslsv_sb.recipe.cli import run_cli
from sslsv_sb.recipe.label_efficient import main

if __name__ == "__main__":
    run_cli(main)
