#!/usr/bin/env python3
"""Two-stage training, stage 2: pseudo-speaker labels from a self-supervised model.

Embeds every utterance of the train list with a trained run (the encoder the method
evaluates with: the DINO teacher, the CPC aggregator...), clusters the L2-normalised
embeddings into pseudo-speakers with spherical k-means (sslsv_sb.clustering),
optionally merges clusters whose centroids are close (agglomerative clustering,
cosine distance, average linkage) and writes, into ``--pseudo_folder`` (default
``<output_folder>/pseudo_labels``):

* ``pseudo_labels.csv``: ``File,Speaker`` train list (``File`` as in the original
  list, ``Speaker`` = ``pseudo_<id>``), the train list of stage 3;
* ``ssl_encoder.ckpt``: the state dict of the run's inference encoder, loaded by
  ``hparams/supervised_pseudo_ecapa.yaml`` (``encoder_checkpoint``);
* ``pseudo_labels.json``: number of pseudo-speakers, cluster sizes, and, when the
  list has a ``Speaker`` column, the NMI / ARI / purity of the pseudo-labels
  against the true speakers (monitoring only), plus the SSL run's EERs.

Usage (one command per stage, see ``docs/ssps_and_two_stage.md``)::

    python recipes/VoxCeleb/SSL/pseudo_labels.py hparams/simclr_ecapa.yaml \
        --data_folder=DATA --output_folder=results/simclr_ecapa/1717 \
        --n_clusters=7500 [--merge_threshold=0.5 | --n_merged=6000] \
        [--pseudo_folder=DIR] [--crop_seconds=6] [--checkpoint=auto]

Every other ``--key=value`` overrides the yaml as in ``train.py`` (use the same
overrides as the SSL run). Errors print one line and exit with status 2.

The flow lives in :mod:`sslsv_sb.recipe.pseudo_labels`.

Authors: the sslsv-sb developers.
"""

from sslsv_sb.recipe.cli import run_cli
from sslsv_sb.recipe.pseudo_labels import main

if __name__ == "__main__":
    run_cli(main)
