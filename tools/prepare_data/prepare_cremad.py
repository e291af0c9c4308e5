#!/usr/bin/env python
"""Write cremad_train.csv (File,Emotion,Set) from CREMA-D AudioWAV/.

Example::

    python tools/prepare_data/prepare_cremad.py --data_folder data \
        --cremad /corpora/CREMA-D --split speaker --test_ratio 0.1 --seed 0
"""

import argparse

from sslsv_sb.data.prepare.common import run_cli
from sslsv_sb.data.prepare.cremad import prepare_cremad


def main(argv=None):
    """Parse arguments and run :func:`prepare_cremad`."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data_folder", required=True)
    p.add_argument("--cremad", required=True, help="folder holding AudioWAV/")
    p.add_argument("--split", default="speaker", choices=["speaker", "random"])
    p.add_argument("--test_ratio", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--drop_emotions", nargs="*", default=[],
                   help="emotion codes to leave out (sslsv dropped DIS)")
    p.add_argument("--mode", default="symlink", choices=["symlink", "copy", "move"])
    p.add_argument("--no_check_audio", action="store_true")
    p.add_argument("--skip_invalid", action="store_true")
    p.add_argument("--force", action="store_true")
    a = p.parse_args(argv)
    prepare_cremad(a.data_folder, a.cremad, a.split, a.test_ratio, a.seed,
                   a.drop_emotions, a.mode, not a.no_check_audio, a.skip_invalid,
                   force=a.force)


if __name__ == "__main__":
    run_cli(main)
