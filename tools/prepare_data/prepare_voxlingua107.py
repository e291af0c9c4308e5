#!/usr/bin/env python
"""Write voxlingua107_train.csv (File,Language[,Set]).

Example::

    python tools/prepare_data/prepare_voxlingua107.py --data_folder data \
        --voxlingua /corpora/voxlingua107 --val_ratio 0.1 --seed 0
"""

from sslsv_sb.recipe.cli import run_cli
from sslsv_sb.recipe.tools.prepare_data import voxlingua107_main

if __name__ == "__main__":
    run_cli(voxlingua107_main)
