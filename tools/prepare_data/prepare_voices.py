#!/usr/bin/env python
"""Build the VOiCES 2019 development trial list voices2019_dev.

Example::

    python tools/prepare_data/prepare_voices.py --data_folder data \
        --voices /corpora/VOiCES/Development_Data/Speaker_Recognition
"""

from sslsv_sb.recipe.cli import run_cli
from sslsv_sb.recipe.tools.prepare_data import voices_main

if __name__ == "__main__":
    run_cli(voices_main)
