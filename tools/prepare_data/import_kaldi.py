#!/usr/bin/env python
"""Import a Kaldi data directory (wav.scp [+ utt2spk] [+ trials]) as project lists.

Example::

    python tools/prepare_data/import_kaldi.py --data_folder data \
        --wav_scp kaldi/data/train --out_csv kaldi_train.csv \
        --trials kaldi/data/test/trials --out_trials kaldi_test
"""

from sslsv_sb.recipe.cli import run_cli
from sslsv_sb.recipe.tools.prepare_data import import_kaldi_main

if __name__ == "__main__":
    run_cli(import_kaldi_main)
