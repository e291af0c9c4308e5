#!/usr/bin/env python
"""Build SITW trial lists sitw_{dev,eval}_core-{core,multi}.

Example::

    python tools/prepare_data/prepare_sitw.py --data_folder data --sitw /corpora/sitw
"""

import argparse

from sslsv_sb.data.prepare.common import run_cli
from sslsv_sb.data.prepare.sitw import prepare_sitw


def main(argv=None):
    """Parse arguments and run :func:`prepare_sitw`."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data_folder", required=True)
    p.add_argument("--sitw", required=True, help="SITW folder with dev/ and eval/")
    p.add_argument("--mode", default="symlink", choices=["symlink", "copy", "move"])
    p.add_argument("--skip_missing", action="store_true")
    p.add_argument("--no_check_audio", action="store_true")
    p.add_argument("--force", action="store_true")
    a = p.parse_args(argv)
    prepare_sitw(a.data_folder, a.sitw, a.mode, skip_missing=a.skip_missing,
                 check_audio=not a.no_check_audio, force=a.force)


if __name__ == "__main__":
    run_cli(main)
