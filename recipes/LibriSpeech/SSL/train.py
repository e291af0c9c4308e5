#!/usr/bin/env python3
"""Train a self-supervised speaker encoder on LibriSpeech, then score the trials.

The VoxCeleb recipe's flow (:func:`sslsv_sb.recipe.train.main`) with this recipe's
yamls; a relative yaml path is looked up in ``recipes/LibriSpeech/SSL`` too::

    python recipes/LibriSpeech/SSL/train.py hparams/simclr_ecapa.yaml \
        --data_folder=data/librispeech

``--data_folder`` (prepared by ``tools/prepare_data/prepare_librispeech.py``) is
required: there is no embedded LibriSpeech corpus.

Authors: the sslsv-sb developers.
"""

import os

from sslsv_sb.errors import SSLSVError
from sslsv_sb.recipe.cli import run_cli
from sslsv_sb.recipe.train import main as train_main

HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv):
    """Resolve the yaml against this folder, require ``--data_folder``, train.

    Arguments
    ---------
    argv : list of str
        ``[hparams file, --key=value, ...]``.

    Returns
    -------
    dict or None
        What :func:`sslsv_sb.recipe.train.main` returns.
    """
    argv = list(argv)
    if argv and not os.path.isfile(argv[0]):
        local = os.path.join(HERE, argv[0])
        if os.path.isfile(local):
            argv[0] = local
    if not any(a == "--data_folder" or a.startswith("--data_folder=") for a in argv):
        raise SSLSVError(
            "--data_folder is required (a folder prepared by "
            "tools/prepare_data/prepare_librispeech.py)"
        )
    return train_main(argv)


if __name__ == "__main__":
    run_cli(main)
