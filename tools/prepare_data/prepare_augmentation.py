#!/usr/bin/env python
"""Prepare MUSAN chunks (musan_split/) and RIRS_NOISES (simulated_rirs/) + CSVs.

Example::

    python tools/prepare_data/prepare_augmentation.py --data_folder data \
        --musan /corpora/musan --rirs /corpora/RIRS_NOISES
"""

from sslsv_sb.recipe.cli import run_cli
from sslsv_sb.recipe.tools.prepare_data import augmentation_main

if __name__ == "__main__":
    run_cli(augmentation_main)
