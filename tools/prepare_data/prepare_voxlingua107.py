#!/usr/bin/env python
"""Write voxlingua107_train.csv (File,Language[,Set]).

Example::

    python tools/prepare_data/prepare_voxlingua107.py --data_folder data \
        --voxlingua /corpora/voxlingua107 --val_ratio 0.1 --seed 0
"""

import argparse

from sslsv_sb.data.prepare.common import run_cli
from sslsv_sb.data.prepare.voxlingua import prepare_voxlingua107


def main(argv=None):
    """Parse arguments and run :func:`prepare_voxlingua107`."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data_folder", required=True)
    p.add_argument("--voxlingua", required=True, help="folder with <lang>/*.wav")
    p.add_argument("--dev", help="official dev folder (<lang>/*.wav) -> Set=test")
    p.add_argument("--val_ratio", type=float, default=0.0)
    p.add_argument("--subsample", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mode", default="symlink", choices=["symlink", "copy", "move"])
    p.add_argument("--no_check_audio", action="store_true")
    p.add_argument("--skip_invalid", action="store_true")
    p.add_argument("--force", action="store_true")
    a = p.parse_args(argv)
    prepare_voxlingua107(a.data_folder, a.voxlingua, a.dev, a.val_ratio, a.subsample,
                         a.seed, a.mode, not a.no_check_audio, a.skip_invalid,
                         force=a.force)


if __name__ == "__main__":
    run_cli(main)
