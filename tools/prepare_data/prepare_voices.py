#!/usr/bin/env python
"""Build the VOiCES 2019 development trial list voices2019_dev.

Example::

    python tools/prepare_data/prepare_voices.py --data_folder data \
        --voices /corpora/VOiCES/Development_Data/Speaker_Recognition
"""

import argparse

from sslsv_sb.data.prepare.common import run_cli
from sslsv_sb.data.prepare.voices import prepare_voices


def main(argv=None):
    """Parse arguments and run :func:`prepare_voices`."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data_folder", required=True)
    p.add_argument("--voices", required=True,
                   help="folder containing sid_dev/ and sid_dev_lists_and_keys/")
    p.add_argument("--mode", default="symlink", choices=["symlink", "copy", "move"])
    p.add_argument("--skip_missing", action="store_true")
    p.add_argument("--no_check_audio", action="store_true")
    p.add_argument("--force", action="store_true")
    a = p.parse_args(argv)
    prepare_voices(a.data_folder, a.voices, a.mode, a.skip_missing,
                   not a.no_check_audio, a.force)


if __name__ == "__main__":
    run_cli(main)
