#!/usr/bin/env python
"""Write cremad_train.csv (File,Emotion,Set) from CREMA-D AudioWAV/.

Example::

    python tools/prepare_data/prepare_cremad.py --data_folder data \
        --cremad /corpora/CREMA-D --split speaker --test_ratio 0.1 --seed 0
"""

from sslsv_sb.recipe.cli import run_cli
from sslsv_sb.recipe.tools.prepare_data import cremad_main

if __name__ == "__main__":
    run_cli(cremad_main)
