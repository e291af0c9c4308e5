"""CREMA-D emotion-label list.

Input layout: ``AudioWAV/<actor>_<sentence>_<emotion>_<level>.wav``, e.g.
``AudioWAV/1001_DFA_ANG_XX.wav``: actor ``1001``-``1091``, sentence code (``DFA``,
``IEO``, ...), emotion ``ANG`` anger, ``DIS`` disgust, ``FEA`` fear, ``HAP`` happy,
``NEU`` neutral, ``SAD`` sad, intensity ``LO``/``MD``/``HI``/``XX`` (unspecified).

Output in the data folder: ``cremad/`` (symlink to the folder holding ``AudioWAV``)
and ``cremad_train.csv`` with columns ``File,Emotion,Set``; ``Emotion`` is the
three-letter code from the file name, ``Set`` is ``train``/``test``.

Split (reproducible with ``seed``): ``split="speaker"`` (default) puts
``round(test_ratio * n_actors)`` randomly chosen actors entirely in ``test`` (no
speaker overlap); ``split="random"`` marks ``round(test_ratio * n_files)`` random
files as ``test`` (sslsv's 90/10 random split).
"""

import os
import re

import numpy as np

from sslsv_sb.data.prepare.common import (
    Report,
    check_audio_files,
    link_into,
    run_step,
    write_train_csv,
)
from sslsv_sb.errors import SSLSVError

EMOTIONS = ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")
NAME_RE = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{1,2})\.wav$")


def parse_name(name):
    """``(actor, sentence, emotion, level)`` of a CREMA-D file name (None if not)."""
    m = NAME_RE.match(name)
    if m is None or m.group(3) not in EMOTIONS:
        return None
    return m.groups()


def find_audiowav(path):
    """The ``AudioWAV`` folder (``path`` itself or ``path/AudioWAV``)."""
    for cand in (os.path.join(path, "AudioWAV"), path):
        if os.path.isdir(cand) and any(f.endswith(".wav") for f in os.listdir(cand)):
            return cand
    raise SSLSVError(f"{path}: no CREMA-D AudioWAV/*.wav found")


def prepare_cremad(data_folder, cremad, split="speaker", test_ratio=0.1, seed=0,
                   drop_emotions=(), mode="symlink", check_audio=True,
                   skip_invalid=False, out_name="cremad_train.csv", force=False,
                   verbose=True):
    """Write ``cremad_train.csv`` (``File,Emotion,Set``).

    Arguments
    ---------
    data_folder : str
        Output folder.
    cremad : str
        CREMA-D folder (holding ``AudioWAV/``) or ``AudioWAV`` itself.
    split : str
        ``speaker`` (actor-disjoint) or ``random`` (per file).
    test_ratio : float
        Fraction of actors (``speaker``) or files (``random``) in ``Set=test``.
    seed : int
        Random seed.
    drop_emotions : sequence of str
        Emotion codes to leave out (sslsv dropped ``DIS``).
    mode : str
        ``symlink``, ``copy`` or ``move`` for ``data_folder/cremad``.
    check_audio : bool
        Validate each file (readable, non-empty, 16 kHz).
    skip_invalid : bool
        Drop and count invalid files / unexpected names instead of raising.
    out_name : str
        Output CSV name.
    force : bool
        Redo even if done.
    verbose : bool
        Print progress.

    Returns
    -------
    Report
    """
    report = Report("cremad", verbose)
    if split not in ("speaker", "random"):
        raise SSLSVError(f"split must be 'speaker' or 'random', got '{split}'")
    if not 0.0 < test_ratio < 1.0:
        raise SSLSVError(f"test_ratio must be in (0, 1), got {test_ratio}")
    bad_codes = [e for e in drop_emotions if e not in EMOTIONS]
    if bad_codes:
        raise SSLSVError(f"unknown emotion code(s) {bad_codes}; use {EMOTIONS}")
    audio = find_audiowav(cremad)
    os.makedirs(data_folder, exist_ok=True)
    out = os.path.join(data_folder, out_name)

    def _run():
        link_into(os.path.dirname(os.path.abspath(audio)),
                  os.path.join(data_folder, "cremad"), mode)
        rows, dropped = [], 0
        for fn in sorted(os.listdir(audio)):
            if not fn.endswith(".wav"):
                continue
            parsed = parse_name(fn)
            if parsed is None:
                msg = (f"{os.path.join(audio, fn)}: file name does not match "
                       "<actor>_<sentence>_<emotion>_<level>.wav")
                if not skip_invalid:
                    raise SSLSVError(msg)
                report.skip(msg)
                continue
            if parsed[2] in drop_emotions:
                dropped += 1
                continue
            rows.append([f"cremad/AudioWAV/{fn}", parsed[2], parsed[0]])
        if check_audio:
            items = [(os.path.join(data_folder, r[0]), None) for r in rows]
            valid = check_audio_files(items, skip_invalid=skip_invalid, report=report)
            rows = [rows[i] for i in valid]
        report.summarize_skips("files")
        if not rows:
            raise SSLSVError(f"{audio}: no usable file")
        rng = np.random.default_rng(seed)
        if split == "speaker":
            actors = sorted({r[2] for r in rows})
            n_test = max(1, int(round(test_ratio * len(actors))))
            test = {actors[i] for i in rng.permutation(len(actors))[:n_test]}
            sets = ["test" if r[2] in test else "train" for r in rows]
        else:
            n_test = max(1, int(round(test_ratio * len(rows))))
            test = set(rng.permutation(len(rows))[:n_test].tolist())
            sets = ["test" if i in test else "train" for i in range(len(rows))]
        write_train_csv(out, [(r[0], r[1], s) for r, s in zip(rows, sets)],
                        ("File", "Emotion", "Set"))
        report.log(f"{out_name}: {len(rows)} files ({sets.count('test')} test, "
                   f"split by {split}, seed {seed})"
                   + (f"; {dropped} files of {list(drop_emotions)} left out"
                      if drop_emotions else ""))

    run_step(data_folder, "cremad_csv", _run, report, force, [out])
    return report
