#!/usr/bin/env python
"""Prepare VoxCeleb1/2: voxceleb{1,2}_train.csv and Vox1-O/E/H + VoxSRC-2021 trials.

Example::

    python tools/prepare_data/prepare_voxceleb.py --data_folder data \
        --vox1 /corpora/vox1_dev_wav /corpora/vox1_test_wav \
        --vox2 /corpora/vox2_dev_aac --trials_dir /corpora/voxceleb_meta
"""

from sslsv_sb.recipe.cli import run_cli
from sslsv_sb.recipe.tools.prepare_data import voxceleb_main

if __name__ == "__main__":
    run_cli(voxceleb_main)
