#!/usr/bin/env python
"""Import a Kaldi data directory (wav.scp [+ utt2spk] [+ trials]) as project lists.

Example::

    python tools/prepare_data/import_kaldi.py --data_folder data \
        --wav_scp kaldi/data/train --out_csv kaldi_train.csv \
        --trials kaldi/data/test/trials --out_trials kaldi_test
"""

import argparse

from sslsv_sb.data.prepare.common import run_cli
from sslsv_sb.data.prepare.kaldi import import_kaldi


def main(argv=None):
    """Parse arguments and run :func:`import_kaldi`."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data_folder", required=True)
    p.add_argument("--wav_scp", required=True,
                   help="wav.scp or a Kaldi data directory")
    p.add_argument("--utt2spk")
    p.add_argument("--out_csv", default="kaldi_train.csv",
                   help="train list name ('none' for no train list)")
    p.add_argument("--trials", nargs="*", default=[])
    p.add_argument("--out_trials", nargs="*")
    p.add_argument("--trials_wav_scp", nargs="*", default=[],
                   help="extra wav.scp files for trial utterance ids")
    p.add_argument("--skip_commands", action="store_true",
                   help="skip (and count) piped-command / ark wav.scp entries")
    p.add_argument("--no_check_audio", action="store_true")
    p.add_argument("--skip_invalid", action="store_true")
    a = p.parse_args(argv)
    import_kaldi(a.data_folder, a.wav_scp, a.utt2spk,
                 None if a.out_csv == "none" else a.out_csv, a.trials, a.out_trials,
                 a.trials_wav_scp, "skip" if a.skip_commands else "error",
                 not a.no_check_audio, a.skip_invalid)


if __name__ == "__main__":
    run_cli(main)
