"""Generate the embedded VoxCeleb-shaped synthetic corpus.

The command of ``tools/generate_corpus.py`` (usage there): a preset of
:data:`sslsv_sb.data.corpus.PRESETS` with any :class:`CorpusConfig` field
overridden, rendered by :func:`sslsv_sb.data.corpus.generate_corpus`. A user error
prints one line and the command exits with status 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from sslsv_sb.data.corpus import (
    PRESETS,
    CorpusConfig,
    default_data_folder,
    generate_corpus,
)
from sslsv_sb.errors import SSLSVError


def _parser():
    """Command-line options (one per :class:`CorpusConfig` field, plus the run's)."""
    parser = argparse.ArgumentParser(
        description="Generate the embedded synthetic speaker-verification corpus."
    )
    parser.add_argument(
        "--out",
        default=None,
        help="corpus folder (default: $SSLSV_SB_DATA or <repo>/data/embedded)",
    )
    parser.add_argument("--preset", default="demo", choices=sorted(PRESETS))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a corpus generated with another configuration",
    )
    parser.add_argument("--quiet", action="store_true")
    for field in dataclasses.fields(CorpusConfig):
        if field.name == "languages":
            parser.add_argument(
                "--languages",
                default=None,
                help="comma-separated espeak voices, e.g. en-us,fr,de",
            )
            continue
        kind = {"int": int, "float": float, "str": str}[
            field.type if isinstance(field.type, str) else field.type.__name__
        ]
        parser.add_argument(f"--{field.name}", type=kind, default=None)
    return parser


def main(argv=None):
    """Parse ``argv``, generate the corpus and print a summary; return exit code."""
    args = _parser().parse_args(argv)
    overrides = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(CorpusConfig)
        if getattr(args, f.name) is not None
    }
    if "languages" in overrides:
        overrides["languages"] = tuple(
            x.strip() for x in overrides["languages"].split(",") if x.strip()
        )
    out = args.out or default_data_folder()
    try:
        cfg = dataclasses.replace(PRESETS[args.preset], **overrides)
        manifest = generate_corpus(
            out,
            cfg,
            workers=args.workers,
            overwrite=args.overwrite,
            verbose=not args.quiet,
        )
    except SSLSVError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    counts = manifest["counts"]
    print(
        f"corpus: {out}\n"
        f"  backend {manifest['backend_used']}, generated in "
        f"{manifest['seconds_taken']:.1f} s with {manifest['workers']} workers\n"
        f"  train: {counts['train_speakers']} speakers, "
        f"{counts['train_utterances']} utterances (train.csv, train_sb.csv)\n"
        f"  test:  {counts['test_speakers']} speakers, "
        f"{counts['test_utterances']} utterances (test.csv)\n"
        f"  trials: {counts['target_trials']} target + "
        f"{counts['nontarget_trials']} non-target (trials.txt)\n"
        f"  banks: {counts['noise_files']} noise/music/speech files, "
        f"{counts['rirs']} room responses\n"
        f"  audio: {manifest['total_duration_hours'] * 60:.1f} min"
    )
    return 0
