#!/usr/bin/env python
"""Build SITW trial lists sitw_{dev,eval}_core-{core,multi}.

Example::

    python tools/prepare_data/prepare_sitw.py --data_folder data --sitw /corpora/sitw
"""

from sslsv_sb.recipe.cli import run_cli
from sslsv_sb.recipe.tools.prepare_data import sitw_main

if __name__ == "__main__":
    run_cli(sitw_main)
