"""VoxLingua107 language-label list.

Input layout: one folder per language (ISO 639 code), as extracted from the
per-language zips ``<lang>.zip``: ``<root>/<lang>/<clip>.wav``, e.g.
``en/-4kBT8p1D8w__U__S100---0427.140-0437.960.wav``; the official dev set
(``dev.zip``) has the same layout.

Output in the data folder: ``voxlingua107/`` (symlink by default) and
``voxlingua107_train.csv`` with columns ``File,Language`` plus ``Set``
(``train``/``test``) when a validation split or the dev set is requested.
"""

import os

import numpy as np

from sslsv_sb.data.prepare.common import (
    Report,
    check_audio_files,
    link_into,
    run_step,
    write_train_csv,
)
from sslsv_sb.errors import SSLSVError


def list_languages(root):
    """``{language: sorted wav names}`` for the sub-folders of ``root`` with wavs."""
    if not os.path.isdir(root):
        raise SSLSVError(f"{root}: folder not found")
    out = {}
    for lang in sorted(os.listdir(root)):
        d = os.path.join(root, lang)
        if lang.startswith(".") or not os.path.isdir(d):
            continue
        wavs = sorted(f for f in os.listdir(d) if f.lower().endswith(".wav"))
        if wavs:
            out[lang] = wavs
    if not out:
        raise SSLSVError(f"{root}: no <language>/*.wav folders found")
    return out


def prepare_voxlingua107(data_folder, voxlingua, dev=None, val_ratio=0.0,
                         subsample=1.0, seed=0, mode="symlink", check_audio=True,
                         skip_invalid=False, out_name="voxlingua107_train.csv",
                         force=False, verbose=True):
    """Write ``voxlingua107_train.csv`` (``File,Language[,Set]``).

    Arguments
    ---------
    data_folder : str
        Output folder.
    voxlingua : str
        Folder holding the ``<lang>/`` folders.
    dev : str or None
        Official dev folder (same layout); its files get ``Set=test`` and are placed
        as ``data_folder/voxlingua107_dev``.
    val_ratio : float
        Fraction of each language's training files marked ``Set=test`` (random with
        ``seed``, stratified per language). 0 and no ``dev``: no ``Set`` column.
    subsample : float
        Keep this fraction of each language's training files (random with ``seed``),
        e.g. 0.1 as in sslsv's smaller configuration.
    seed : int
        Random seed (the split is reproducible).
    mode : str
        ``symlink``, ``copy`` or ``move`` for placing the corpus.
    check_audio : bool
        Validate each file (readable, non-empty, 16 kHz).
    skip_invalid : bool
        Drop and count invalid files instead of raising.
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
    report = Report("voxlingua107", verbose)
    if not 0.0 <= val_ratio < 1.0 or not 0.0 < subsample <= 1.0:
        raise SSLSVError(f"val_ratio must be in [0, 1) and subsample in (0, 1], got "
                         f"{val_ratio} and {subsample}")
    os.makedirs(data_folder, exist_ok=True)
    out = os.path.join(data_folder, out_name)

    def _run():
        langs = list_languages(voxlingua)
        link_into(voxlingua, os.path.join(data_folder, "voxlingua107"), mode)
        rng = np.random.default_rng(seed)
        rows = []
        for lang, wavs in langs.items():
            idx = rng.permutation(len(wavs))
            if subsample < 1.0:
                idx = idx[:max(1, int(round(subsample * len(wavs))))]
            n_val = int(round(val_ratio * len(idx)))
            val = set(idx[:n_val].tolist())
            for i in sorted(idx.tolist()):
                rows.append([f"voxlingua107/{lang}/{wavs[i]}", lang,
                             "test" if i in val else "train"])
        if dev is not None:
            link_into(dev, os.path.join(data_folder, "voxlingua107_dev"), mode)
            for lang, wavs in list_languages(dev).items():
                rows += [[f"voxlingua107_dev/{lang}/{w}", lang, "test"] for w in wavs]
        if check_audio:
            items = [(os.path.join(data_folder, r[0]), None) for r in rows]
            valid = check_audio_files(items, skip_invalid=skip_invalid, report=report)
            report.summarize_skips("audio files")
            rows = [rows[i] for i in valid]
        with_set = val_ratio > 0 or dev is not None
        cols = ("File", "Language", "Set") if with_set else ("File", "Language")
        write_train_csv(out, [r if with_set else r[:2] for r in rows], cols)
        n_test = sum(r[2] == "test" for r in rows)
        report.log(f"{out_name}: {len(rows)} files, {len({r[1] for r in rows})} "
                   f"languages" + (f" ({n_test} in Set=test)" if with_set else ""))

    run_step(data_folder, "voxlingua107_csv", _run, report, force, [out])
    return report
