#!/usr/bin/env python
"""Prepare LibriSpeech: librispeech_train.csv, held-out speaker trials, noise / RIRs.

Examples::

    # the 251 train-clean-100 excerpts: train on 200 speakers, hold 51 out
    python tools/prepare_data/prepare_librispeech.py --data_folder data/librispeech \
        --librispeech ../shared/data/librispeech_excerpts/train-clean-100 \
        --held_out_speakers 51 --noise ../shared/data/noise --n_rirs 40
    # full subsets from OpenSLR (resumable, sha256-verified)
    python tools/prepare_data/prepare_librispeech.py --data_folder data/librispeech \
        --download --subsets train-clean-100 test-clean --n_rirs 40
"""

from sslsv_sb.data.prepare.librispeech import main
from sslsv_sb.recipe.cli import run_cli

if __name__ == "__main__":
    run_cli(main)
