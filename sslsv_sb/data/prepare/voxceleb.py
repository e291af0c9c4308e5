"""VoxCeleb1 / VoxCeleb2 preparation.

Input layouts (as distributed):

- VoxCeleb1 (``vox1_dev_wav.zip``, ``vox1_test_wav.zip``) extracts to
  ``wav/<speaker>/<youtube id>/<nnnnn>.wav``, e.g. ``wav/id10270/5r0dWxy17C8/00001.wav``
  (speakers ``id10001``-``id11251``; the 40 test speakers ``id10270``-``id10309``).
- VoxCeleb2 dev (``vox2_dev_aac.zip``) extracts to ``dev/aac/<speaker>/<yt>/<n>.m4a``
  (speakers ``id00012``-``id09272``, AAC audio that must be converted to wav).
- Cleaned trial lists ``veri_test2.txt`` (Vox1-O), ``list_test_all2.txt`` (Vox1-E),
  ``list_test_hard2.txt`` (Vox1-H), ``voxsrc2021_val.txt``: lines
  ``<1|0> id10270/5r0dWxy17C8/00001.wav id10273/0OCW1HUxZyg/00001.wav``.

Outputs in the data folder:

- ``voxceleb1/<speaker>/<yt>/<n>.wav`` (symlinks to the speaker folders by default);
- ``voxceleb2/<speaker>/<yt>/<n>.wav`` (16 kHz mono PCM16, converted with ffmpeg);
- ``voxceleb1_train.csv``: all VoxCeleb1 (dev + test) utterances except those of the
  speakers appearing in Vox1-O (``veri_test2.txt``), ``File,Speaker``;
- ``voxceleb2_train.csv``: VoxCeleb2 dev, ``File,Speaker``;
- trial lists ``voxceleb1_test_O``, ``voxceleb1_test_E``, ``voxceleb1_test_H``,
  ``voxsrc2021_val`` with paths prefixed by ``voxceleb1/``.
"""

import os
import re
from collections import defaultdict

from sslsv_sb.data.prepare.common import (
    Report,
    check_audio_files,
    concat_files,
    convert_to_wav,
    download_all,
    extract,
    link_into,
    parse_trial_file,
    read_url_list,
    require_ffmpeg,
    run_step,
    write_train_csv,
    write_trials,
)
from sslsv_sb.errors import SSLSVError, where

SPEAKER_RE = re.compile(r"^id\d{5}$")

#: Source trial list name -> output trial list name.
TRIAL_LISTS = {
    "veri_test2.txt": "voxceleb1_test_O",
    "list_test_all2.txt": "voxceleb1_test_E",
    "list_test_hard2.txt": "voxceleb1_test_H",
    "voxsrc2021_val.txt": "voxsrc2021_val",
}


def find_speaker_roots(path, max_depth=4):
    """Folders under ``path`` that directly contain ``idNNNNN`` speaker folders.

    Arguments
    ---------
    path : str
        Extracted corpus (e.g. the folder holding ``wav/`` or ``dev/aac/``), or the
        speaker root itself.
    max_depth : int
        How deep to search.

    Returns
    -------
    list of str
        Sorted roots (speaker folders are not descended into).
    """
    if not os.path.isdir(path):
        raise SSLSVError(f"{path}: folder not found")
    roots = []

    def _walk(d, depth):
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError:
            return
        subdirs = [e for e in entries if e.is_dir()]
        if any(SPEAKER_RE.match(e.name) for e in subdirs):
            roots.append(d)
            return
        if depth < max_depth:
            for e in subdirs:
                if not e.name.startswith("."):
                    _walk(e.path, depth + 1)

    _walk(path, 0)
    return roots


def speaker_dirs(roots, prefix=None):
    """``{speaker: folder}`` over ``roots`` (duplicated speakers raise)."""
    spk = {}
    for root in roots:
        for name in sorted(os.listdir(root)):
            d = os.path.join(root, name)
            if not (SPEAKER_RE.match(name) and os.path.isdir(d)):
                continue
            if prefix is not None and not name.startswith(prefix):
                continue
            if name in spk and os.path.realpath(spk[name]) != os.path.realpath(d):
                raise SSLSVError(f"speaker {name} found twice: {spk[name]} and {d}")
            spk[name] = d
    return spk


def speaker_files(spk_dir, ext=".wav"):
    """Sorted paths (relative to ``spk_dir``) of the ``*<ext>`` files of one speaker."""
    out = []
    for dirpath, dirnames, filenames in os.walk(spk_dir, followlinks=True):
        dirnames.sort()
        for fn in sorted(filenames):
            if fn.endswith(ext) and not fn.endswith(".tmp.wav"):
                rel = os.path.relpath(os.path.join(dirpath, fn), spk_dir)
                out.append(rel.replace(os.sep, "/"))
    return out


def list_utterances(root, ext=".wav"):
    """Sorted ``(speaker, relative path)`` of ``root/<spk>/<yt>/*<ext>`` files."""
    out = []
    if not os.path.isdir(root):
        return out
    for spk in sorted(os.listdir(root)):
        spk_dir = os.path.join(root, spk)
        if SPEAKER_RE.match(spk) and os.path.isdir(spk_dir):
            out += [(spk, f"{spk}/{rel}") for rel in speaker_files(spk_dir, ext)]
    return out


def install_voxceleb1(sources, data_folder, mode="symlink", report=None):
    """Place VoxCeleb1 speaker folders under ``data_folder/voxceleb1``.

    Arguments
    ---------
    sources : list of str
        Extracted VoxCeleb1 trees (dev and/or test; any depth above ``idNNNNN``).
    data_folder : str
        Data folder.
    mode : str
        ``symlink`` (default, no copy), ``copy`` or ``move``.
    report : Report or None
        Log.

    Returns
    -------
    int
        Number of speakers available in ``data_folder/voxceleb1``.
    """
    dst = os.path.join(data_folder, "voxceleb1")
    roots = [r for s in sources for r in find_speaker_roots(s)]
    if not roots:
        raise SSLSVError(f"no VoxCeleb1 speaker folders (idNNNNN) found under "
                         f"{', '.join(sources)}")
    os.makedirs(dst, exist_ok=True)
    new = 0
    for name, d in speaker_dirs(roots).items():
        new += link_into(d, os.path.join(dst, name), mode)
    n = len([x for x in os.listdir(dst) if SPEAKER_RE.match(x)])
    if report:
        report.log(f"voxceleb1: {n} speakers in {dst} ({new} newly {mode}ed)")
    return n


def install_voxceleb2(sources, data_folder, mode="symlink", num_workers=4,
                      skip_invalid=False, report=None):
    """Place VoxCeleb2 under ``data_folder/voxceleb2`` as 16 kHz wav.

    Speaker folders holding ``.m4a`` are converted with ffmpeg (parallel, resumable);
    speaker folders already holding ``.wav`` are linked (``mode``).

    Returns
    -------
    int
        Number of speakers available in ``data_folder/voxceleb2``.
    """
    report = report or Report("voxceleb2", verbose=False)
    dst = os.path.join(data_folder, "voxceleb2")
    roots = [r for s in sources for r in find_speaker_roots(s)]
    if not roots:
        raise SSLSVError(f"no VoxCeleb2 speaker folders (idNNNNN) found under "
                         f"{', '.join(sources)}")
    os.makedirs(dst, exist_ok=True)
    jobs, linked = [], 0
    for name, d in speaker_dirs(roots).items():
        m4a = speaker_files(d, ".m4a")
        if m4a:
            jobs += [(os.path.join(d, r), os.path.join(dst, name, r[:-4] + ".wav"))
                     for r in m4a]
        else:
            linked += link_into(d, os.path.join(dst, name), mode)
    if jobs:
        require_ffmpeg()
        report.log(f"voxceleb2: converting {len(jobs)} m4a files with {num_workers} "
                   "ffmpeg workers (existing wavs are kept)")
        done, present, failed = convert_to_wav(jobs, num_workers, skip_invalid, report)
        report.log(f"voxceleb2: {done} converted, {present} already present, "
                   f"{failed} failed")
        report.summarize_skips("m4a files")
        report.skipped.clear()
    n = len([x for x in os.listdir(dst) if SPEAKER_RE.match(x)])
    report.log(f"voxceleb2: {n} speakers in {dst} ({linked} wav speaker folders "
               f"{mode}ed)")
    return n


def read_vox1_o_speakers(trial_file):
    """Speakers appearing in a VoxCeleb trial list (e.g. ``veri_test2.txt``)."""
    spk = set()
    for lineno, (_, a, b) in parse_trial_file(trial_file):
        for p in (a, b):
            s = p.split("/")[-3] if p.count("/") >= 2 else None
            if s is None or not SPEAKER_RE.match(s):
                raise SSLSVError(f"{where(trial_file, lineno)}: '{p}' is not a "
                                 "VoxCeleb path <speaker>/<yt>/<n>.wav")
            spk.add(s)
    return spk


def convert_trials(src, dst, data_folder, prefix="voxceleb1", skip_missing=False,
                   check_audio=False, report=None):
    """Convert a trial list to the project format, checking every file exists.

    Arguments
    ---------
    src : str
        Source list (``<1|0> <enrol> <test>`` with paths relative to ``prefix``).
    dst : str
        Output trial list (paths ``prefix/<path>``, relative to ``data_folder``).
    data_folder : str
        Data folder.
    prefix : str
        Folder (relative to the data folder) the source paths are relative to.
    skip_missing : bool
        Drop trials whose files are missing (or invalid with ``check_audio``) and
        report the count, instead of raising.
    check_audio : bool
        Also validate each distinct file's audio (readable, non-empty, 16 kHz).
    report : Report or None
        Log.

    Returns
    -------
    tuple
        ``(written, skipped)`` trial counts.
    """
    report = report or Report("trials", verbose=False)
    trials, first_ref, missing = [], {}, set()
    for lineno, (label, a, b) in parse_trial_file(src):
        if label not in ("0", "1"):
            raise SSLSVError(f"{where(src, lineno)}: label must be 1 or 0, got "
                             f"'{label}'")
        pa, pb = f"{prefix}/{a}" if prefix else a, f"{prefix}/{b}" if prefix else b
        for p in (pa, pb):
            if p in first_ref:
                continue
            first_ref[p] = lineno
            if not os.path.isfile(os.path.join(data_folder, p)):
                if not skip_missing:
                    raise SSLSVError(f"{where(src, lineno)}: unknown file '{p}' (not "
                                     f"found in {data_folder})")
                missing.add(p)
        trials.append((label, pa, pb))
    if check_audio:
        files = [p for p in first_ref if p not in missing]
        items = [(os.path.join(data_folder, p), where(src, first_ref[p]))
                 for p in files]
        valid = set(check_audio_files(items, skip_invalid=skip_missing, report=report))
        missing |= {p for i, p in enumerate(files) if i not in valid}
    kept = [t for t in trials if t[1] not in missing and t[2] not in missing]
    skipped = len(trials) - len(kept)
    if not kept:
        raise SSLSVError(f"{src}: no usable trial (all {len(trials)} reference missing "
                         "files)")
    write_trials(dst, kept)
    msg = f"{os.path.basename(dst)}: {len(kept)} trials from {src}"
    if skipped:
        msg += (f"; skipped {skipped} trials referencing {len(missing)} "
                "missing/invalid files")
    report.log(msg)
    report.skipped.clear()
    return len(kept), skipped


def create_train_csv(data_folder, subdir, out_csv, exclude_speakers=(),
                     check_audio=True, skip_invalid=False, num_workers=4, report=None):
    """Write a ``File,Speaker`` list of ``data_folder/subdir/<spk>/<yt>/*.wav``.

    Arguments
    ---------
    data_folder : str
        Data folder (``File`` is relative to it).
    subdir : str
        ``voxceleb1`` or ``voxceleb2``.
    out_csv : str
        Output CSV.
    exclude_speakers : set of str
        Speakers left out (Vox1-O speakers for ``voxceleb1_train.csv``).
    check_audio : bool
        Validate each file (readable, non-empty, 16 kHz).
    skip_invalid : bool
        Drop invalid files and report the count instead of raising.
    num_workers : int
        Threads for the audio check.
    report : Report or None
        Log.

    Returns
    -------
    tuple
        ``(files, speakers, skipped)``.
    """
    report = report or Report("train_csv", verbose=False)
    root = os.path.join(data_folder, subdir)
    utts = list_utterances(root)
    if not utts:
        raise SSLSVError(f"{root}: no <speaker>/<video>/*.wav files found")
    excluded = [u for u in utts if u[0] in exclude_speakers]
    utts = [u for u in utts if u[0] not in exclude_speakers]
    rows = [(f"{subdir}/{rel}", spk) for spk, rel in utts]
    skipped = 0
    if check_audio:
        items = [(os.path.join(data_folder, r[0]), None) for r in rows]
        valid = check_audio_files(items, skip_invalid=skip_invalid, report=report,
                                  num_workers=num_workers)
        skipped = len(rows) - len(valid)
        report.summarize_skips(f"audio files ({subdir})")
        report.skipped.clear()
        rows = [rows[i] for i in valid]
    write_train_csv(out_csv, rows)
    n_spk = len({r[1] for r in rows})
    msg = f"{os.path.basename(out_csv)}: {len(rows)} files, {n_spk} speakers"
    if exclude_speakers:
        msg += (f" ({len(excluded)} files of {len({u[0] for u in excluded})} "
                "test speakers excluded)")
    report.log(msg)
    return len(rows), n_spk, skipped


def _find_trial_source(name, search_dirs):
    for d in search_dirs:
        if d is None:
            continue
        p = os.path.join(d, name)
        if os.path.isfile(p):
            return p
    return None


def _concat_parts(folder, report):
    """``x_partaa, x_partab...`` -> ``x.zip`` (VoxCeleb split archives)."""
    groups = defaultdict(list)
    for fn in sorted(os.listdir(folder)):
        m = re.match(r"^(.*)_part[a-z]{2}$", fn)
        if m:
            groups[m.group(1)].append(os.path.join(folder, fn))
    return [concat_files(parts, os.path.join(folder, stem + ".zip"), report)
            for stem, parts in groups.items()]


def prepare_voxceleb(data_folder, vox1=None, vox2=None, trials_dir=None, urls=None,
                     download=False, user=None, password=None, mode="symlink",
                     num_workers=4, check_audio=True, skip_invalid=False,
                     skip_missing=False, force=False, verbose=True, verify=True):
    """Prepare VoxCeleb1/2 train lists and trial lists in ``data_folder``.

    Steps (each leaves a ``.done_<step>`` marker; re-running skips finished steps):
    ``download`` -> ``extract`` -> ``voxceleb1_install`` -> ``voxceleb2_install`` ->
    ``trials`` -> ``voxceleb1_train_csv`` -> ``voxceleb2_train_csv``.

    Arguments
    ---------
    data_folder : str
        Output folder (train/trial lists are relative to it).
    vox1, vox2 : list of str or None
        Extracted VoxCeleb1 / VoxCeleb2 (dev) trees. With ``download`` they default
        to what was extracted from the downloaded archives.
    trials_dir : str or None
        Folder holding ``veri_test2.txt``, ``list_test_all2.txt``,
        ``list_test_hard2.txt``, ``voxsrc2021_val.txt`` (any subset; also searched:
        ``data_folder/downloads``, the VoxCeleb1 folders and ``data_folder``).
    urls : str or None
        URL list (``<file name> <url> [checksum]`` per line) used by ``download``.
        No VoxCeleb checksum is built in: each line needs its checksum unless
        ``verify`` is False.
    download : bool
        Download and extract the archives of ``urls`` into ``data_folder/downloads``
        (split ``*_partaa`` archives are concatenated first).
    user, password : str or None
        HTTP basic-auth credentials for the downloads.
    mode : str
        How existing wav trees are placed in the data folder: ``symlink``, ``copy``
        or ``move``.
    num_workers : int
        Parallel ffmpeg conversions / audio checks.
    check_audio : bool
        Validate every listed audio file (readable, non-empty, 16 kHz).
    skip_invalid : bool
        Leave invalid audio files out of the train lists (counted) instead of raising.
    skip_missing : bool
        Leave trials referencing missing files out (counted) instead of raising.
    force : bool
        Redo steps even if their marker exists.
    verbose : bool
        Print progress.
    verify : bool
        False (``--no-verify``) downloads URL-list entries without a checksum, with
        a warning; a listed checksum is still checked.

    Returns
    -------
    Report
        What was done.
    """
    report = Report("voxceleb", verbose)
    os.makedirs(data_folder, exist_ok=True)
    vox1 = list(vox1 or [])
    vox2 = list(vox2 or [])
    downloads = os.path.join(data_folder, "downloads")
    extracted = os.path.join(downloads, "extracted")

    if download:
        if urls is None:
            raise SSLSVError("--download needs --urls FILE (lines '<file name> <url> "
                             "[checksum]'; see docs/data_preparation.md)")
        entries = read_url_list(urls)

        def _download():
            download_all(entries, downloads, user, password, report, verify, urls)
            for zp in _concat_parts(downloads, report):
                report.log(f"archive ready: {zp}")

        run_step(data_folder, "download", _download, report, force)

        def _extract():
            for fn in sorted(os.listdir(downloads)):
                p = os.path.join(downloads, fn)
                if re.search(r"\.(zip|tar|tar\.gz|tgz)$", fn) and os.path.isfile(p):
                    extract(p, os.path.join(extracted, re.sub(
                        r"\.(zip|tar|tar\.gz|tgz)$", "", fn)), report)

        run_step(data_folder, "extract", _extract, report, force)
        if not vox1 and not vox2 and os.path.isdir(extracted):
            roots = find_speaker_roots(extracted)
            spk = speaker_dirs(roots)
            if any(s.startswith("id1") for s in spk):
                vox1 = [r for r in roots if any(
                    n.startswith("id1") for n in os.listdir(r))]
            if any(s.startswith("id0") for s in spk):
                vox2 = [r for r in roots if any(
                    n.startswith("id0") for n in os.listdir(r))]

    v1_dir = os.path.join(data_folder, "voxceleb1")
    v2_dir = os.path.join(data_folder, "voxceleb2")
    if vox1:
        run_step(data_folder, "voxceleb1_install",
                 lambda: install_voxceleb1(vox1, data_folder, mode, report), report,
                 force, outputs=[v1_dir])
    if vox2:
        run_step(data_folder, "voxceleb2_install",
                 lambda: install_voxceleb2(vox2, data_folder, mode, num_workers,
                                           skip_invalid, report), report, force,
                 outputs=[v2_dir])
    if not os.path.isdir(v1_dir) and not os.path.isdir(v2_dir):
        raise SSLSVError(f"nothing to prepare: give --vox1 and/or --vox2 (or "
                         f"--download --urls FILE); {v1_dir} does not exist")

    search = [trials_dir, downloads, *vox1, data_folder]
    found = {src: _find_trial_source(src, search) for src in TRIAL_LISTS}
    if trials_dir is not None and not any(found.values()):
        raise SSLSVError(f"{trials_dir}: none of {', '.join(TRIAL_LISTS)} found")
    if os.path.isdir(v1_dir):
        outputs = [os.path.join(data_folder, TRIAL_LISTS[s]) for s, p in found.items()
                   if p]

        def _trials():
            for src, path in found.items():
                if path is not None:
                    convert_trials(path, os.path.join(data_folder, TRIAL_LISTS[src]),
                                   data_folder, "voxceleb1", skip_missing, check_audio,
                                   report)
            missing = [s for s, p in found.items() if p is None]
            if missing:
                report.log(f"trial lists not found (skipped): {', '.join(missing)}")

        if outputs:
            run_step(data_folder, "trials", _trials, report, force, outputs)
        else:
            report.log("no VoxCeleb trial list found (give --trials_dir)")

        vox1_o = found["veri_test2.txt"]
        if vox1_o is None:
            raise SSLSVError("veri_test2.txt (Vox1-O) is needed to leave its speakers "
                             "out of voxceleb1_train.csv: put it in --trials_dir")
        out = os.path.join(data_folder, "voxceleb1_train.csv")
        run_step(data_folder, "voxceleb1_train_csv",
                 lambda: create_train_csv(data_folder, "voxceleb1", out,
                                          read_vox1_o_speakers(vox1_o), check_audio,
                                          skip_invalid, num_workers, report),
                 report, force, [out])
    if os.path.isdir(v2_dir):
        out = os.path.join(data_folder, "voxceleb2_train.csv")
        run_step(data_folder, "voxceleb2_train_csv",
                 lambda: create_train_csv(data_folder, "voxceleb2", out, (),
                                          check_audio, skip_invalid, num_workers,
                                          report),
                 report, force, [out])
    return report
