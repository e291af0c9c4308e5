"""MUSAN and RIRS_NOISES preparation for augmentation.

Input layouts (as distributed on OpenSLR):

- MUSAN (``musan.tar.gz``, OpenSLR 17): ``musan/{noise,music,speech}/<source>/*.wav``,
  e.g. ``musan/noise/free-sound/noise-free-sound-0000.wav``, 16 kHz mono.
- RIRS_NOISES (``rirs_noises.zip``, OpenSLR 28):
  ``RIRS_NOISES/simulated_rirs/{smallroom,mediumroom,largeroom}/RoomNNN/*.wav``.

Outputs in the data folder:

- ``musan_split/<category>/<source>/<stem>_<k>.wav``: fixed-length chunks (default
  8 s, stride 8 s; a tail shorter than a chunk is kept if it is at least
  ``min_length`` seconds). **The original MUSAN files are never modified or
  deleted** (unlike SpeechBrain's ``prepare_csv(max_length=...)``).
- ``simulated_rirs/`` (RIRS_NOISES layout kept; a symlink by default).
- SpeechBrain CSVs (``ID,duration,wav,wav_format,wav_opts``) for ``AddNoise`` /
  ``AddReverb``: ``musan_noise.csv``, ``musan_music.csv``, ``musan_speech.csv``,
  ``musan.csv`` (all categories) and ``rirs.csv``.
"""

import os
import re

import numpy as np
import soundfile as sf

from sslsv_sb.data.prepare.common import (
    SAMPLE_RATE,
    Report,
    audio_info,
    download_all,
    extract,
    link_into,
    read_url_list,
    run_step,
    write_sb_noise_csv,
)
from sslsv_sb.errors import SSLSVError

MUSAN_CATEGORIES = ("noise", "music", "speech")
RIR_ROOMS = ("smallroom", "mediumroom", "largeroom")

#: Published md5 of the OpenSLR archives, by file name. Both are the values that
#: WeSpeaker's VoxCeleb recipe checks after downloading (wenet-e2e/wespeaker,
#: ``examples/voxceleb/v2/local/download_data.sh``, commit
#: 7aeaeb1931727d0db9bb5c348cd13f82e5862d6e). PaddlePaddle/PaddleSpeech pins the
#: same values for the same URLs (``examples/dataset/musan/musan.py`` for MUSAN,
#: ``paddlespeech/audio/datasets/rirs_noises.py`` for RIRS_NOISES). They also apply
#: to a mirror listed in ``--urls`` under the same file name without a checksum.
KNOWN_CHECKSUMS = {
    "musan.tar.gz": "md5:0c472d4fc0c5141eca47ad1ffeb2a7df",
    "rirs_noises.zip": "md5:e6f48e257286e05de56413b4779d8ffb",
}

#: Public OpenSLR archives (no registration needed); used only with ``--download``.
DEFAULT_URLS = [
    ("musan.tar.gz", "https://www.openslr.org/resources/17/musan.tar.gz",
     KNOWN_CHECKSUMS["musan.tar.gz"]),
    ("rirs_noises.zip", "https://www.openslr.org/resources/28/rirs_noises.zip",
     KNOWN_CHECKSUMS["rirs_noises.zip"]),
]


def chunk_bounds(n_frames, chunk, stride, min_len):
    """Start/end frames of the chunks of a signal.

    Chunks of ``chunk`` frames every ``stride`` frames; the last (tail) chunk may be
    shorter and is kept only if it has at least ``min_len`` frames. A signal shorter
    than ``chunk`` gives one chunk (the whole signal) if it has ``min_len`` frames.

    Example
    -------
    >>> chunk_bounds(20, 8, 8, 3)
    [(0, 8), (8, 16), (16, 20)]
    >>> chunk_bounds(17, 8, 8, 3)
    [(0, 8), (8, 16)]
    """
    if chunk <= 0 or stride <= 0:
        raise SSLSVError(f"chunk ({chunk}) and stride ({stride}) must be positive")
    out = []
    for start in range(0, n_frames, stride):
        end = min(start + chunk, n_frames)
        if end - start >= min_len:
            out.append((start, end))
        if end == n_frames:
            break
    return out


def find_musan_root(path):
    """Folder holding ``noise/``, ``music/``, ``speech/`` under ``path`` (or itself)."""
    for cand in (path, os.path.join(path, "musan")):
        if all(os.path.isdir(os.path.join(cand, c)) for c in MUSAN_CATEGORIES):
            return cand
    for dirpath, dirnames, _ in os.walk(path):
        if all(c in dirnames for c in MUSAN_CATEGORIES):
            return dirpath
        if dirpath.count(os.sep) - path.count(os.sep) >= 3:
            dirnames[:] = []
    raise SSLSVError(f"{path}: no MUSAN tree found (expected "
                     "musan/{noise,music,speech}/<source>/*.wav)")


def split_musan(musan, data_folder, out_name="musan_split", chunk_length=8.0,
                stride=8.0, min_length=1.0, categories=MUSAN_CATEGORIES,
                skip_invalid=False, csv_prefix=None, report=None):
    """Split MUSAN into fixed-length chunks and write SpeechBrain CSVs.

    Originals are only read. A source file whose chunks all exist is not re-read, so
    an interrupted run resumes where it stopped.

    Arguments
    ---------
    musan : str
        MUSAN folder (or a folder containing ``musan/``).
    data_folder : str
        Output data folder.
    out_name : str
        Chunk folder name inside ``data_folder``.
    chunk_length, stride, min_length : float
        Chunk length, hop and minimum tail length in seconds.
    categories : sequence of str
        MUSAN categories to process.
    skip_invalid : bool
        Skip (and count) unreadable / empty / non-16 kHz files instead of raising.
    csv_prefix : str or None
        Write CSV paths as ``<csv_prefix>/<path relative to data_folder>`` (e.g.
        ``$data_folder`` with SpeechBrain ``replacements``); default absolute paths.
    report : Report or None
        Log.

    Returns
    -------
    dict
        ``{category: number of chunks}``; also ``"too_short"`` and ``"skipped"``
        (files left out, reported).
    """
    report = report or Report("musan", verbose=False)
    root = find_musan_root(musan)
    out_root = os.path.join(data_folder, out_name)
    sr = SAMPLE_RATE
    chunk, hop, min_len = (int(round(x * sr)) for x in (chunk_length, stride,
                                                        min_length))
    if min_len <= 0 or min_len > chunk:
        raise SSLSVError(f"min_length must be in (0, chunk_length], got {min_length}")
    settings = f"chunk={chunk} stride={hop} min={min_len} sr={sr}\n"
    settings_file = os.path.join(out_root, ".settings")
    if os.path.isfile(settings_file):
        with open(settings_file) as f:
            previous = f.read()
        if previous != settings:
            raise SSLSVError(f"{settings_file}: {out_root} was made with different "
                             f"settings ({previous.strip()}); delete {out_root} or "
                             "choose another output folder")
    os.makedirs(out_root, exist_ok=True)
    with open(settings_file, "w") as f:
        f.write(settings)
    counts = {"too_short": 0, "skipped": 0}
    all_entries = []
    for cat in categories:
        cat_dir = os.path.join(root, cat)
        if not os.path.isdir(cat_dir):
            raise SSLSVError(f"{cat_dir}: MUSAN category folder not found")
        entries = []
        for dirpath, dirnames, filenames in os.walk(cat_dir):
            dirnames.sort()
            for fn in sorted(filenames):
                if not fn.lower().endswith(".wav"):
                    continue
                src = os.path.join(dirpath, fn)
                rel_dir = os.path.relpath(dirpath, root)
                try:
                    n = audio_info(src, sr)
                except SSLSVError as e:
                    if not skip_invalid:
                        raise
                    report.skip(str(e))
                    counts["skipped"] += 1
                    continue
                bounds = chunk_bounds(n, chunk, hop, min_len)
                if not bounds:
                    counts["too_short"] += 1
                    continue
                stem = os.path.splitext(fn)[0]
                dst_dir = os.path.join(out_root, rel_dir)
                dsts = [os.path.join(dst_dir, f"{stem}_{k}.wav")
                        for k in range(len(bounds))]
                if not all(os.path.isfile(d) for d in dsts):
                    os.makedirs(dst_dir, exist_ok=True)
                    x, _ = sf.read(src, dtype="int16", always_2d=True)
                    x = x.mean(axis=1).astype(np.int16) if x.shape[1] > 1 else x[:, 0]
                    for (s, e), d in zip(bounds, dsts):
                        tmp = d[:-4] + ".tmp.wav"
                        sf.write(tmp, x[s:e], sr, subtype="PCM_16")
                        os.replace(tmp, d)
                uid_base = re.sub(r"[^A-Za-z0-9_-]", "_", f"{rel_dir}/{stem}")
                entries += [(f"{uid_base}_{k}", (e - s) / sr, d)
                            for k, ((s, e), d) in enumerate(zip(bounds, dsts))]
        if not entries:
            raise SSLSVError(f"{cat_dir}: no usable .wav file")
        write_sb_noise_csv(os.path.join(data_folder, f"musan_{cat}.csv"), entries,
                           data_folder, csv_prefix)
        counts[cat] = len(entries)
        all_entries += entries
        report.log(f"musan {cat}: {len(entries)} chunks in {out_root}/{cat}, "
                   f"musan_{cat}.csv")
    write_sb_noise_csv(os.path.join(data_folder, "musan.csv"), all_entries, data_folder,
                       csv_prefix)
    if counts["too_short"]:
        report.log(f"musan: {counts['too_short']} files shorter than min_length="
                   f"{min_length}s produced no chunk")
    report.summarize_skips("MUSAN files")
    report.skipped.clear()
    return counts


def find_rirs_root(path):
    """``simulated_rirs`` folder under ``path`` (or ``path`` itself)."""
    if os.path.basename(os.path.normpath(path)) == "simulated_rirs":
        return path
    for dirpath, dirnames, _ in os.walk(path):
        if "simulated_rirs" in dirnames:
            return os.path.join(dirpath, "simulated_rirs")
        if dirpath.count(os.sep) - path.count(os.sep) >= 2:
            dirnames[:] = []
    raise SSLSVError(f"{path}: no RIRS_NOISES simulated_rirs/ folder found (expected "
                     "RIRS_NOISES/simulated_rirs/{smallroom,mediumroom,largeroom}/"
                     "RoomNNN/*.wav)")


def prepare_rirs(rirs, data_folder, mode="symlink", skip_invalid=False,
                 csv_prefix=None, report=None):
    """Place ``simulated_rirs/`` in the data folder and write ``rirs.csv``.

    Returns
    -------
    int
        Number of RIR files listed.
    """
    report = report or Report("rirs", verbose=False)
    src = find_rirs_root(rirs)
    dst = os.path.join(data_folder, "simulated_rirs")
    link_into(src, dst, mode)
    entries = []
    for room in RIR_ROOMS:
        room_dir = os.path.join(dst, room)
        if not os.path.isdir(room_dir):
            raise SSLSVError(f"{os.path.join(src, room)}: folder not found")
        for dirpath, dirnames, filenames in os.walk(room_dir, followlinks=True):
            dirnames.sort()
            for fn in sorted(filenames):
                if not fn.lower().endswith(".wav"):
                    continue
                p = os.path.join(dirpath, fn)
                try:
                    n = audio_info(p, SAMPLE_RATE)
                except SSLSVError as e:
                    if not skip_invalid:
                        raise
                    report.skip(str(e))
                    continue
                rel = os.path.relpath(p, dst)
                uid = re.sub(r"[^A-Za-z0-9_-]", "_", os.path.splitext(rel)[0])
                entries.append((uid, n / SAMPLE_RATE, p))
    if not entries:
        raise SSLSVError(f"{src}: no RIR .wav file found")
    write_sb_noise_csv(os.path.join(data_folder, "rirs.csv"), entries, data_folder,
                       csv_prefix)
    report.log(f"rirs: {len(entries)} simulated RIRs in {dst}, rirs.csv")
    report.summarize_skips("RIR files")
    report.skipped.clear()
    return len(entries)


def prepare_augmentation(data_folder, musan=None, rirs=None, download=False, urls=None,
                         chunk_length=8.0, stride=8.0, min_length=1.0, mode="symlink",
                         skip_invalid=False, csv_prefix=None, force=False,
                         verbose=True, verify=True):
    """Prepare MUSAN chunks and RIRs (with step markers: re-runs skip done steps).

    Arguments
    ---------
    data_folder : str
        Output folder.
    musan, rirs : str or None
        Extracted MUSAN / RIRS_NOISES folders (default with ``download``: the
        extracted archives).
    download : bool
        Download ``musan.tar.gz`` and ``rirs_noises.zip`` (OpenSLR 17 and 28, or the
        entries of ``urls``) into ``data_folder/downloads`` and extract them.
    urls : str or None
        URL list replacing the OpenSLR defaults (e.g. a mirror). An entry without a
        checksum gets the published one of its file name (:data:`KNOWN_CHECKSUMS`).
    chunk_length, stride, min_length : float
        MUSAN chunking, in seconds.
    mode : str
        How ``simulated_rirs`` is placed: ``symlink``, ``copy`` or ``move``.
    skip_invalid : bool
        Skip and count invalid audio instead of raising.
    csv_prefix : str or None
        See :func:`split_musan`.
    force : bool
        Redo finished steps.
    verbose : bool
        Print progress.
    verify : bool
        False (``--no-verify``) downloads entries that have no known checksum, with
        a warning; a known checksum is still checked.

    Returns
    -------
    Report
    """
    report = Report("augmentation", verbose)
    os.makedirs(data_folder, exist_ok=True)
    downloads = os.path.join(data_folder, "downloads")
    if download:
        if urls:
            entries = [(n, u, c or KNOWN_CHECKSUMS.get(n), line)
                       for n, u, c, line in read_url_list(urls)]
        else:
            entries = [(n, u, c, 0) for n, u, c in DEFAULT_URLS]

        def _dl():
            for p in download_all(entries, downloads, report=report, verify=verify,
                                  source=urls or "default URLs"):
                extract(p, os.path.join(downloads, "extracted"), report)

        run_step(data_folder, "augmentation_download", _dl, report, force)
        ext = os.path.join(downloads, "extracted")
        musan = musan or ext
        rirs = rirs or ext
    if musan is None and rirs is None:
        raise SSLSVError("nothing to do: give --musan and/or --rirs (or --download)")
    if musan is not None:
        tag = f"musan_split_{chunk_length:g}_{stride:g}_{min_length:g}"
        run_step(data_folder, tag,
                 lambda: split_musan(musan, data_folder, "musan_split", chunk_length,
                                     stride, min_length, MUSAN_CATEGORIES,
                                     skip_invalid, csv_prefix, report),
                 report, force, [os.path.join(data_folder, "musan.csv")])
    if rirs is not None:
        run_step(data_folder, "rirs",
                 lambda: prepare_rirs(rirs, data_folder, mode, skip_invalid,
                                      csv_prefix, report),
                 report, force, [os.path.join(data_folder, "rirs.csv")])
    return report
