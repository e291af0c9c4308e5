#!/usr/bin/env python
"""Prepare VoxCeleb1/2: voxceleb{1,2}_train.csv and Vox1-O/E/H + VoxSRC-2021 trials.

Example::

    python tools/prepare_data/prepare_voxceleb.py --data_folder data \
        --vox1 /corpora/vox1_dev_wav /corpora/vox1_test_wav \
        --vox2 /corpora/vox2_dev_aac --trials_dir /corpora/voxceleb_meta
"""

import argparse

from sslsv_sb.data.prepare.common import run_cli
from sslsv_sb.data.prepare.voxceleb import prepare_voxceleb


def main(argv=None):
    """Parse arguments and run :func:`prepare_voxceleb`."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data_folder", required=True)
    p.add_argument("--vox1", nargs="+", help="extracted VoxCeleb1 dev/test folders")
    p.add_argument("--vox2", nargs="+", help="extracted VoxCeleb2 dev folder(s)")
    p.add_argument("--trials_dir", help="folder with veri_test2.txt, "
                   "list_test_all2.txt, list_test_hard2.txt, voxsrc2021_val.txt")
    p.add_argument("--download", action="store_true",
                   help="download the archives listed in --urls first")
    p.add_argument("--urls", help="URL list: '<file name> <url> [checksum]' per line")
    p.add_argument("--user")
    p.add_argument("--password")
    p.add_argument("--mode", default="symlink", choices=["symlink", "copy", "move"])
    p.add_argument("--num_workers", type=int, default=4)
    p.add_argument("--no_check_audio", action="store_true")
    p.add_argument("--skip_invalid", action="store_true",
                   help="leave invalid audio out of the train lists (counted)")
    p.add_argument("--skip_missing", action="store_true",
                   help="leave trials with missing files out (counted)")
    p.add_argument("--force", action="store_true", help="redo finished steps")
    a = p.parse_args(argv)
    prepare_voxceleb(a.data_folder, a.vox1, a.vox2, a.trials_dir, a.urls, a.download,
                     a.user, a.password, a.mode, a.num_workers, not a.no_check_audio,
                     a.skip_invalid, a.skip_missing, a.force)


if __name__ == "__main__":
    run_cli(main)
