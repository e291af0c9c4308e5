#!/usr/bin/env python
"""Prepare MUSAN chunks (musan_split/) and RIRS_NOISES (simulated_rirs/) + CSVs.

Example::

    python tools/prepare_data/prepare_augmentation.py --data_folder data \
        --musan /corpora/musan --rirs /corpora/RIRS_NOISES
"""

import argparse

from sslsv_sb.data.prepare.common import run_cli
from sslsv_sb.data.prepare.musan_rir import prepare_augmentation


def main(argv=None):
    """Parse arguments and run :func:`prepare_augmentation`."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data_folder", required=True)
    p.add_argument("--musan", help="extracted MUSAN folder")
    p.add_argument("--rirs", help="extracted RIRS_NOISES folder")
    p.add_argument("--download", action="store_true",
                   help="download musan.tar.gz and rirs_noises.zip (OpenSLR 17/28)")
    p.add_argument("--urls", help="URL list replacing the OpenSLR defaults")
    p.add_argument("--chunk_length", type=float, default=8.0, help="seconds")
    p.add_argument("--stride", type=float, default=8.0, help="seconds")
    p.add_argument("--min_length", type=float, default=1.0,
                   help="shortest tail chunk kept, seconds")
    p.add_argument("--mode", default="symlink", choices=["symlink", "copy", "move"])
    p.add_argument("--csv_prefix", help="write CSV paths as PREFIX/<relative path> "
                   "(e.g. '$data_folder') instead of absolute paths")
    p.add_argument("--skip_invalid", action="store_true")
    p.add_argument("--force", action="store_true")
    a = p.parse_args(argv)
    prepare_augmentation(a.data_folder, a.musan, a.rirs, a.download, a.urls,
                         a.chunk_length, a.stride, a.min_length, a.mode,
                         a.skip_invalid, a.csv_prefix, a.force)


if __name__ == "__main__":
    run_cli(main)
