"""LibriSpeech preparation: train list, held-out speaker trials, augmentation banks.

Input layouts:

- LibriSpeech as distributed (OpenSLR resource 12, ``<subset>.tar.gz``):
  ``LibriSpeech/<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac`` plus
  ``<speaker>-<chapter>.trans.txt``, and ``LibriSpeech/SPEAKERS.TXT``; subsets
  ``train-clean-100``, ``train-clean-360``, ``train-other-500``, ``dev-clean``,
  ``dev-other``, ``test-clean``, ``test-other``;
- flat excerpt folders, ``<folder>/<speaker>-<chapter>-<utt>.flac`` (speaker and
  chapter are in the file name; ``SPEAKERS.TXT`` may sit in the folder).

A source folder may be the extracted ``LibriSpeech/`` folder, one subset folder or a
folder above them; each folder holding utterances (directly or as
``<speaker>/<chapter>/``) is one subset, named after the folder.

Outputs in the data folder:

- ``LibriSpeech/<subset>``: the subset (a symlink by default, ``--mode copy|move``);
- ``librispeech_train.csv``: ``File,Speaker,Chapter,Subset,Gender`` of the train
  subsets (every subset but ``dev-*`` / ``test-*`` unless chosen), without the
  speakers held out by ``held_out_speakers``; ``Gender`` (``M``/``F``) comes from
  ``SPEAKERS.TXT`` (empty when unknown);
- trial lists (``label enrol test``, :mod:`sslsv_sb.data.speaker_trials`):
  ``librispeech_<subset>.txt`` for each test subset (all its speakers) and
  ``librispeech_heldout.txt`` for ``held_out_speakers`` speakers drawn (seeded) from
  the train subsets; next to each, ``librispeech_<name>.csv`` lists its trial files
  (``File,Speaker,Chapter,Subset,Gender,Source``);
- ``librispeech_halves/<speaker>/<utt>_<i>of<k>.wav``: the ``k`` parts (halves by
  default, ``split_parts``) of the single-utterance held-out speakers (split-utterance
  targets);
- augmentation without MUSAN: ``noise/noise/<stem>_<k>.wav`` (``noise``: chunks of a
  folder of background recordings) and ``rirs/rir-NNNN.wav`` (``n_rirs`` rooms
  simulated by the embedded corpus generator), the layout
  :class:`sslsv_sb.data.augment.ViewAugment` reads (``noise_folder: noise``,
  ``rir_folder: rirs``).

Downloads (``download=True``) fetch ``<subset>.tar.gz`` from OpenSLR (or
``base_url``), resumably, and verify the published sha256 before extracting into the
data folder.
"""

import argparse
import csv
import hashlib
import json
import os
import re
from pathlib import Path

import soundfile as sf

from sslsv_sb.data.prepare.common import (
    SAMPLE_RATE,
    Report,
    audio_info,
    check_audio_files,
    download,
    extract,
    link_into,
    read_url_list,
    run_step,
    write_train_csv,
    write_trials,
)
from sslsv_sb.data.prepare.musan_rir import chunk_bounds
from sslsv_sb.data.speaker_trials import build_speaker_trials, split_speakers
from sslsv_sb.errors import SSLSVError, where

SUBSETS = (
    "train-clean-100",
    "train-clean-360",
    "train-other-500",
    "dev-clean",
    "dev-other",
    "test-clean",
    "test-other",
)
DEFAULT_DOWNLOAD = ("train-clean-100", "dev-clean", "test-clean")
OPENSLR_URL = "https://www.openslr.org/resources/12"

#: sha256 of the OpenSLR archives, as pinned by torchaudio's LIBRISPEECH dataset
#: (``torchaudio/datasets/librispeech.py``, ``_CHECKSUMS``, read in torchaudio 2.11.0).
CHECKSUMS = {
    "dev-clean": "76f87d090650617fca0cac8f88b9416e0ebf80350acb97b343a85fa903728ab3",
    "dev-other": "12661c48e8c3fe1de2c1caa4c3e135193bfb1811584f11f569dd12645aa84365",
    "test-clean": "39fde525e59672dc6d1551919b1478f724438a95aa55f874b576be21967e6c23",
    "test-other": "d09c181bba5cf717b3dee7d4d592af11a3ee3a09e08ae025c5506f6ebe961c29",
    "train-clean-100": (
        "d4ddd1d5a6ab303066f14971d768ee43278a5f2a0aa43dc716b0e64ecbbbf6e2"
    ),
    "train-clean-360": (
        "146a56496217e96c14334a160df97fffedd6e0a04e66b9c5af0d40be3c792ecf"
    ),
    "train-other-500": (
        "ddb22f27f96ec163645d53215559df6aa36515f26e01dd70798188350adcb6d2"
    ),
}

AUDIO_EXTS = (".flac", ".wav")
UTT_RE = re.compile(r"^(\d+)-(\d+)-(\d+)\.(flac|wav)$")
TRAIN_COLUMNS = ("File", "Speaker", "Chapter", "Subset", "Gender")
HALVES_DIR = "librispeech_halves"
HELDOUT = "heldout"


def is_test_subset(name):
    """True for ``dev-*`` / ``test-*`` subsets (held out for trials by default)."""
    return name.startswith(("dev-", "test-"))


# --------------------------------------------------------------------------------------
# Finding and reading the corpus
# --------------------------------------------------------------------------------------
def find_subsets(path, max_depth=3):
    """Subset folders under ``path`` (or ``path`` itself).

    A subset folder holds utterance files directly (flat excerpts) or numeric
    ``<speaker>/`` folders; it is not searched further.

    Arguments
    ---------
    path : str
        Source folder.
    max_depth : int
        How deep to search.

    Returns
    -------
    list of (str, str)
        ``(subset name, folder)``, sorted by folder.
    """
    if not os.path.isdir(path):
        raise SSLSVError(f"{path}: folder not found")
    roots = []

    def _walk(d, depth):
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError as err:
            raise SSLSVError(f"{d}: cannot list ({err.strerror})") from None
        audio = [e for e in entries if e.is_file() and e.name.endswith(AUDIO_EXTS)]
        dirs = [e for e in entries if e.is_dir() and not e.name.startswith(".")]
        if audio or any(e.name.isdigit() for e in dirs):
            roots.append((os.path.basename(os.path.normpath(d)), d))
            return
        if depth < max_depth:
            for e in dirs:
                _walk(e.path, depth + 1)

    _walk(path, 0)
    if not roots:
        raise SSLSVError(
            f"{path}: no LibriSpeech utterances found (expected <subset>/<speaker>/"
            "<chapter>/<speaker>-<chapter>-<utt>.flac, or a folder of "
            "<speaker>-<chapter>-<utt>.flac files)"
        )
    return roots


def list_utterances(root, skip_invalid=False, report=None):
    """Utterances of one subset folder (nested or flat layout).

    Arguments
    ---------
    root : str
        Subset folder (symlinks are followed).
    skip_invalid : bool
        Skip (and count in ``report``) files whose name or place is not LibriSpeech's
        instead of raising.
    report : Report or None
        Where skipped files are recorded.

    Returns
    -------
    list of (str, str, str)
        ``(path relative to root, speaker, chapter)``, sorted.
    """
    out = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel_dir = os.path.relpath(dirpath, root)
        parts = [] if rel_dir == "." else rel_dir.split(os.sep)
        for fn in sorted(filenames):
            if not fn.endswith(AUDIO_EXTS) or fn.startswith("."):
                continue
            path = os.path.join(dirpath, fn)
            m = UTT_RE.match(fn)
            err = None
            if m is None:
                err = (
                    f"{path}: not a LibriSpeech utterance name (expected "
                    "<speaker>-<chapter>-<utt>.flac)"
                )
            elif parts and parts != [m.group(1), m.group(2)]:
                err = (
                    f"{path}: found in {'/'.join(parts)}/ but named for speaker "
                    f"{m.group(1)}, chapter {m.group(2)} (expected <subset>/"
                    f"{m.group(1)}/{m.group(2)}/ or directly in the subset folder)"
                )
            if err is not None:
                if not skip_invalid or report is None:
                    raise SSLSVError(err)
                report.skip(err)
                continue
            rel = os.path.relpath(path, root).replace(os.sep, "/")
            out.append((rel, m.group(1), m.group(2)))
    if not out:
        raise SSLSVError(
            f"{root}: no LibriSpeech utterances (<speaker>-<chapter>-<utt>.flac)"
        )
    return out


def read_speakers_txt(path):
    """``{speaker: gender}`` from a LibriSpeech ``SPEAKERS.TXT``.

    Lines ``ID | SEX | SUBSET | MINUTES | NAME`` (the name may contain ``|``); lines
    starting with ``;`` and blank lines are ignored.
    """
    genders = {}
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise SSLSVError(f"{path}: cannot read ({err})") from None
    for lineno, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith(";"):
            continue
        fields = [x.strip() for x in line.split("|", 4)]
        if len(fields) < 4 or not fields[0].isdigit() or fields[1] not in ("M", "F"):
            raise SSLSVError(
                f"{where(path, lineno)}: expected 'ID | SEX (M/F) | SUBSET | MINUTES"
                f" | NAME', got {line.strip()!r}"
            )
        genders[fields[0]] = fields[1]
    return genders


def _speakers_files(folders):
    found = []
    for d in folders:
        for name in ("SPEAKERS.TXT", "speakers.txt"):
            p = os.path.join(d, name)
            if os.path.isfile(p) and os.path.realpath(p) not in found:
                found.append(os.path.realpath(p))
    return found


# --------------------------------------------------------------------------------------
# Steps
# --------------------------------------------------------------------------------------
def download_entries(subsets=DEFAULT_DOWNLOAD, base_url=OPENSLR_URL, urls=None,
                     verify=True):
    """``(file name, url, checksum)`` of the archives to download.

    Arguments
    ---------
    subsets : sequence of str
        Subsets (ignored with ``urls``).
    base_url : str
        Folder URL holding ``<subset>.tar.gz`` (OpenSLR or a mirror).
    urls : str or None
        URL list (``<file name> <url> [checksum]`` per line) replacing the subsets;
        a line without a checksum gets the published one of its file name.
    verify : bool
        False: an archive without a known checksum is downloaded unverified (a known
        checksum is still checked); True: such an archive is an error.

    Returns
    -------
    list of tuple
    """
    known = {f"{s}.tar.gz": f"sha256:{c}" for s, c in CHECKSUMS.items()}
    if urls:
        entries = [(n, u, c or known.get(n), line)
                   for n, u, c, line in read_url_list(urls)]
    else:
        bad = [s for s in subsets if s not in SUBSETS]
        if bad:
            raise SSLSVError(
                f"--subsets: unknown LibriSpeech subset(s) {bad}; choose from "
                f"{list(SUBSETS)}"
            )
        entries = [(f"{s}.tar.gz", f"{base_url.rstrip('/')}/{s}.tar.gz", known[
            f"{s}.tar.gz"], None) for s in subsets]
    if verify:
        for name, url, checksum, line in entries:
            if checksum is None:
                src = where(urls, line) if urls else url
                raise SSLSVError(
                    f"{src}: no checksum known for {name}; add one to the URL list "
                    "or pass --no-verify"
                )
    return [(n, u, c) for n, u, c, _ in entries]


def prepare_noise(noise, data_folder, category="noise", chunk_length=8.0,
                  min_length=1.0, mode="symlink", report=None):
    """Lay out background recordings as ``<data_folder>/noise/<category>/``.

    With ``chunk_length > 0`` each recording is cut into chunks of that length (a
    tail of at least ``min_length`` seconds is kept): the augmentation bank reads at
    most ``max_seconds`` (8 s) of each file, so long recordings would otherwise be
    mostly unused. With ``chunk_length == 0`` the files are linked (``mode``).

    Arguments
    ---------
    noise : str
        Folder of 16 kHz recordings (``*.wav`` / ``*.flac``, searched recursively).
    data_folder : str
        Data folder.
    category : str
        ``noise``, ``music`` or ``speech`` (the augmentation's SNR ranges).
    chunk_length, min_length : float
        Seconds.
    mode : str
        ``symlink``, ``copy`` or ``move`` (``chunk_length == 0`` only).
    report : Report or None
        Log.

    Returns
    -------
    int
        Files in the output folder.
    """
    if category not in ("noise", "music", "speech"):
        raise SSLSVError(f"noise category {category!r} not in noise, music, speech")
    if not os.path.isdir(noise):
        raise SSLSVError(f"{noise}: noise folder not found")
    files = sorted(
        os.path.join(d, f)
        for d, _, fs in os.walk(noise, followlinks=True)
        for f in fs
        if f.endswith(AUDIO_EXTS) and not f.startswith(".")
    )
    if not files:
        raise SSLSVError(f"{noise}: no .wav or .flac recordings")
    out = os.path.join(data_folder, "noise", category)
    os.makedirs(out, exist_ok=True)
    settings = {"source": os.path.abspath(noise), "chunk_length": chunk_length,
                "min_length": min_length}
    settings_file = os.path.join(out, ".settings")
    if os.path.isfile(settings_file):
        with open(settings_file) as f:
            old = json.load(f)
        if old != settings:
            raise SSLSVError(
                f"{out}: made with other settings {old}; delete the folder to redo it"
                f" with {settings}"
            )
    for path in files:
        audio_info(path, SAMPLE_RATE)
        stem = os.path.splitext(os.path.basename(path))[0]
        if chunk_length <= 0:
            link_into(path, os.path.join(out, os.path.basename(path)), mode)
            continue
        sr = SAMPLE_RATE
        wav = None
        bounds = chunk_bounds(sf.info(path).frames, int(chunk_length * sr),
                              int(chunk_length * sr), int(min_length * sr))
        for k, (s, e) in enumerate(bounds):
            dst = os.path.join(out, f"{stem}_{k}.wav")
            if os.path.isfile(dst):
                continue
            if wav is None:
                wav = sf.read(path, dtype="float32", always_2d=True)[0].mean(axis=1)
            tmp = f"{dst}.tmp"
            sf.write(tmp, wav[s:e], sr, subtype="PCM_16", format="WAV")
            os.replace(tmp, dst)
    with open(settings_file, "w") as f:
        json.dump(settings, f)
    n = len([f for f in os.listdir(out) if f.endswith(AUDIO_EXTS)])
    if report:
        report.log(f"noise: {n} files in {out} from {len(files)} recordings")
    return n


def render_rirs(data_folder, n_rirs=40, seed=0, report=None):
    """Simulate ``n_rirs`` room responses into ``<data_folder>/rirs/rir-NNNN.wav``.

    The rooms are the embedded corpus's augmentation rooms (large rooms, RT60
    0.55-1.2 s; :func:`sslsv_sb.data.corpus.banks.render_bank_files`), so reverb
    augmentation works without RIRS_NOISES. Earlier ``rir-*.wav`` files are replaced.

    Returns
    -------
    int
        Number of RIR files.
    """
    from sslsv_sb.data.corpus.banks import render_bank_files

    if int(n_rirs) < 1:
        raise SSLSVError(f"n_rirs must be >= 1, got {n_rirs}")
    out = os.path.join(data_folder, "rirs")
    if os.path.isdir(out):
        for f in os.listdir(out):
            if re.match(r"^rir-\d{4}\.wav$", f):
                os.remove(os.path.join(out, f))
    cfg = {"sample_rate": SAMPLE_RATE, "n_noise_files": 0, "seed": int(seed),
           "n_rirs": int(n_rirs)}
    rows = render_bank_files(("rirs", cfg, Path(data_folder)))
    if report:
        report.log(f"rirs: {len(rows)} simulated room responses in {out}")
    return len(rows)


def _install(subsets, data_folder, mode, report):
    """Place each ``{name: folder}`` subset as ``data_folder/LibriSpeech/<name>``."""
    root = os.path.join(data_folder, "LibriSpeech")
    for name, folder in sorted(subsets.items()):
        dst = os.path.join(root, name)
        if os.path.realpath(dst) == os.path.realpath(folder):
            continue
        if os.path.islink(dst):
            raise SSLSVError(f"{dst} links to {os.path.realpath(dst)}, not to "
                             f"{folder}: delete the link to place {folder}")
        if os.path.lexists(dst):
            report.log(f"{dst} already present (kept; delete it to place {folder} "
                       "again)")
            continue
        link_into(folder, dst, mode)


def _write_csv(path, columns, rows):
    tmp = f"{path}.tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns)
        w.writerows(rows)
    os.replace(tmp, path)


def prepare_librispeech(data_folder, librispeech=None, download_subsets=None,
                        base_url=OPENSLR_URL, urls=None, verify=True,
                        train_subsets=None, test_subsets=None, held_out_speakers=0,
                        seed=0, nontarget_ratio=10.0, max_targets_per_speaker=50,
                        min_part_seconds=1.0, noise=None, noise_chunk=8.0, n_rirs=0,
                        mode="symlink", check_audio=True, skip_invalid=False,
                        force=False, verbose=True, split_parts=2):
    """Prepare LibriSpeech train and trial lists (and augmentation banks).

    Steps with a ``.done_<step>`` marker (re-runs skip them): ``download_<archive>``,
    extraction, ``librispeech_audio_<subset>`` (the audio check), ``noise_*`` and
    ``rirs_*``. The lists are rebuilt on every run (deterministic; a new seed or
    split takes effect without ``force``).

    Arguments
    ---------
    data_folder : str
        Output folder (lists are relative to it).
    librispeech : list of str or None
        Source folders (``LibriSpeech/``, subset folders or flat excerpt folders).
    download_subsets : list of str or None
        Subsets to download and extract into ``data_folder`` (e.g.
        ``["train-clean-100", "test-clean"]``); ``urls`` replaces them.
    base_url : str
        Where ``<subset>.tar.gz`` are (OpenSLR by default; a mirror).
    urls : str or None
        URL list (``<file name> <url> [checksum]``) to download instead.
    verify : bool
        False: download archives that have no known checksum (``--no-verify``).
    train_subsets, test_subsets : list of str or None
        Subset names for training and for trial lists (default: ``dev-*`` and
        ``test-*`` for trials, the others for training).
    held_out_speakers : int
        Speakers of the train subsets held out (seeded) for ``librispeech_heldout``
        trials; 0 for none.
    seed : int
        Seed of the held-out draw and of the trials.
    nontarget_ratio, max_targets_per_speaker, min_part_seconds, split_parts
        Trial options (:func:`sslsv_sb.data.speaker_trials.build_speaker_trials`):
        a single-utterance speaker gives ``split_parts`` parts of at least
        ``min_part_seconds`` (as many as fit, at least two).
    noise : str or None
        Folder of background recordings laid out as ``noise/noise`` (chunks of
        ``noise_chunk`` seconds; 0 links the files).
    noise_chunk : float
        Chunk length in seconds.
    n_rirs : int
        Simulated room responses written to ``rirs/`` (0: none).
    mode : str
        How sources are placed: ``symlink``, ``copy`` or ``move``.
    check_audio : bool
        Check every utterance (readable, not empty, 16 kHz).
    skip_invalid : bool
        Leave invalid files out (counted) instead of raising.
    force : bool
        Redo finished steps.
    verbose : bool
        Print progress.

    Returns
    -------
    Report
        What was done; ``report.stats`` maps each list name to its counts.
    """
    if int(split_parts) < 2:
        raise SSLSVError(f"--split_parts: must be >= 2, got {split_parts}")
    if float(min_part_seconds) <= 0:
        raise SSLSVError(f"--min_part_seconds: must be > 0, got {min_part_seconds}")
    report = Report("librispeech", verbose)
    report.stats = {}
    os.makedirs(data_folder, exist_ok=True)
    sources = list(librispeech or [])

    if download_subsets or urls:
        entries = download_entries(download_subsets or DEFAULT_DOWNLOAD, base_url,
                                   urls, verify)
        downloads = os.path.join(data_folder, "downloads")
        for name, url, checksum in entries:
            dest = os.path.join(downloads, name)
            if checksum is None:
                report.log(f"{name}: no known checksum, downloading unverified "
                           "(--no-verify)")
            run_step(data_folder, f"download_{name}",
                     lambda u=url, d=dest, c=checksum: download(u, d, c,
                                                                report=report),
                     report, force, outputs=[dest])
            extract(dest, data_folder, report)
        extracted = os.path.join(data_folder, "LibriSpeech")
        if os.path.isdir(extracted) and os.path.realpath(extracted) not in [
                os.path.realpath(s) for s in sources]:
            sources.append(extracted)
    if not sources:
        raise SSLSVError("nothing to prepare: give --librispeech FOLDER (or "
                         "--download [--subsets ...])")

    subsets = {}
    for name, folder in (s for src in sources for s in find_subsets(src)):
        real = os.path.realpath(folder)
        if name in subsets and subsets[name] != real:
            raise SSLSVError(f"subset {name} found twice: {subsets[name]} and {real} "
                             "(give one)")
        subsets[name] = real
    names = sorted(subsets)
    if train_subsets is None:
        train_subsets = [n for n in names if not is_test_subset(n)]
    if test_subsets is None:
        test_subsets = [n for n in names if is_test_subset(n)]
    for flag, chosen in (("--train_subsets", train_subsets),
                         ("--test_subsets", test_subsets)):
        bad = [n for n in chosen if n not in subsets]
        if bad:
            raise SSLSVError(f"{flag}: subset(s) {bad} not found; found {names}")
    both = set(train_subsets) & set(test_subsets)
    if both:
        raise SSLSVError(f"subset(s) {sorted(both)} chosen for training and for "
                         "trials")
    selected = sorted(set(train_subsets) | set(test_subsets))
    genders = {}  # SPEAKERS.TXT in a subset folder, above it, or in LibriSpeech/
    folders = [d for n in selected for d in (subsets[n], os.path.dirname(subsets[n]))]
    for p in _speakers_files([*folders, os.path.join(data_folder, "LibriSpeech")]):
        for spk, g in read_speakers_txt(p).items():
            genders.setdefault(spk, g)

    # utterances of each subset, validated in the source before anything is placed
    utts, where_utt = {}, {}
    for name in selected:
        folder = subsets[name]
        listed = list_utterances(folder, skip_invalid, report)
        report.summarize_skips(f"files in {folder}")
        report.skipped.clear()
        for rel, _, _ in listed:
            uid = os.path.splitext(os.path.basename(rel))[0]
            path = os.path.join(folder, rel)
            if uid in where_utt:
                raise SSLSVError(f"utterance {uid} found twice: {where_utt[uid]} and "
                                 f"{path}")
            where_utt[uid] = path
        bad = set()
        if check_audio:
            tag = hashlib.sha1(folder.encode()).hexdigest()[:8]
            invalid = os.path.join(data_folder, f".invalid_{name}_{tag}")

            def _check(listed=listed, folder=folder, name=name, invalid=invalid):
                items = [(os.path.join(folder, r[0]), None) for r in listed]
                valid = set(check_audio_files(items, SAMPLE_RATE, skip_invalid, report))
                report.summarize_skips(f"audio files ({name})")
                report.skipped.clear()
                with open(invalid, "w") as fo:
                    fo.writelines(f"{r[0]}\n" for i, r in enumerate(listed)
                                  if i not in valid)

            run_step(data_folder, f"librispeech_audio_{name}_{tag}", _check, report,
                     force, outputs=[folder, invalid])
            with open(invalid) as fi:
                bad = {line.strip() for line in fi if line.strip()}
        utts[name] = [(f"LibriSpeech/{name}/{rel}", spk, ch)
                      for rel, spk, ch in listed if rel not in bad]
    _install({n: subsets[n] for n in selected}, data_folder, mode, report)
    train_owner = {spk: n for n in train_subsets for _, spk, _ in utts[n]}
    for name in test_subsets:
        for _, spk, _ in utts[name]:
            if spk in train_owner:
                raise SSLSVError(f"speaker {spk} is in {train_owner[spk]} (train) and "
                                 f"in {name} (trials): the speakers must differ")

    train_rows = [r + (name,) for name in train_subsets for r in utts[name]]
    trial_sets = [(n, [r + (n,) for r in utts[n]]) for n in test_subsets]
    if int(held_out_speakers) > 0:
        if not train_rows:
            raise SSLSVError("--held_out_speakers: no train subset to hold speakers "
                             "out of")
        _, held = split_speakers({r[1] for r in train_rows}, held_out_speakers, seed)
        held = set(held)
        trial_sets.append((HELDOUT, [r for r in train_rows if r[1] in held]))
        train_rows = [r for r in train_rows if r[1] not in held]

    if train_rows:
        out = os.path.join(data_folder, "librispeech_train.csv")
        rows = sorted((f, spk, ch, sub, genders.get(spk, ""))
                      for f, spk, ch, sub in train_rows)
        write_train_csv(out, rows, TRAIN_COLUMNS)
        n_spk = len({r[1] for r in rows})
        report.stats["train"] = {"files": len(rows), "speakers": n_spk}
        report.log(f"{os.path.basename(out)}: {len(rows)} files, {n_spk} speakers "
                   f"({', '.join(train_subsets)})")
    for name, rows in trial_sets:
        subset_of = {f: sub for f, _, _, sub in rows}
        trials, items, counts = build_speaker_trials(
            [(f, spk, ch) for f, spk, ch, _ in rows], data_folder, HALVES_DIR, seed,
            nontarget_ratio, max_targets_per_speaker, min_part_seconds, SAMPLE_RATE,
            report, split_parts)
        out = os.path.join(data_folder, f"librispeech_{name}.txt")
        write_trials(out, trials)
        _write_csv(os.path.join(data_folder, f"librispeech_{name}.csv"),
                   (*TRAIN_COLUMNS, "Source"),
                   [(f, spk, ch, subset_of[src], genders.get(spk, ""), src)
                    for f, spk, ch, src, _ in items])
        report.stats[name] = counts
        report.log(f"{os.path.basename(out)}: {len(trials)} trials")

    if noise:
        step = f"noise_{os.path.basename(os.path.normpath(noise))}_{noise_chunk}"
        run_step(data_folder, step,
                 lambda: prepare_noise(noise, data_folder, "noise", noise_chunk,
                                       mode=mode, report=report),
                 report, force, outputs=[os.path.join(data_folder, "noise", "noise")])
    if int(n_rirs) > 0:
        run_step(data_folder, f"rirs_{int(n_rirs)}_{int(seed)}",
                 lambda: render_rirs(data_folder, n_rirs, seed, report), report,
                 force, outputs=[os.path.join(data_folder, "rirs")])
    return report


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------
DESCRIPTION = ("Prepare LibriSpeech: librispeech_train.csv, held-out speaker trial "
               "lists, and noise / RIR banks for augmentation.")


def main(argv=None):
    """``tools/prepare_data/prepare_librispeech.py``: run :func:`prepare_librispeech`.

    Arguments
    ---------
    argv : list of str or None
        Command-line arguments (``--help`` lists them).

    Returns
    -------
    Report
    """
    p = argparse.ArgumentParser(description=DESCRIPTION)
    p.add_argument("--data_folder", required=True)
    p.add_argument("--librispeech", nargs="+",
                   help="LibriSpeech/, subset or flat excerpt folder(s)")
    p.add_argument("--download", action="store_true",
                   help="download and extract --subsets from OpenSLR first")
    p.add_argument("--subsets", nargs="+", default=list(DEFAULT_DOWNLOAD),
                   help=f"subsets to download (default {' '.join(DEFAULT_DOWNLOAD)})")
    p.add_argument("--base_url", default=OPENSLR_URL,
                   help="folder URL holding <subset>.tar.gz (a mirror)")
    p.add_argument("--urls", help="URL list '<file name> <url> [checksum]' to "
                   "download instead of --subsets (implies --download)")
    p.add_argument("--no-verify", "--no_verify", dest="verify", action="store_false",
                   help="download archives that have no known checksum")
    p.add_argument("--train_subsets", nargs="*",
                   help="default: every subset except dev-* / test-*")
    p.add_argument("--test_subsets", nargs="*",
                   help="subsets turned into trial lists (default: dev-* / test-*)")
    p.add_argument("--held_out_speakers", type=int, default=0,
                   help="speakers of the train subsets held out for "
                   "librispeech_heldout.txt (seeded)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--nontarget_ratio", type=float, default=10.0,
                   help="non-target trials per target trial")
    p.add_argument("--max_targets_per_speaker", type=int, default=50)
    p.add_argument("--split_parts", type=int, default=2,
                   help="parts a single-utterance speaker's utterance is cut into "
                   "for its targets (2: halves, one target; k: k(k-1)/2 targets)")
    p.add_argument("--min_part_seconds", "--min_half_seconds", type=float,
                   default=1.0, help="shortest part (fewer parts if the utterance "
                   "is short; a speaker without two parts is left out)")
    p.add_argument("--noise", help="folder of 16 kHz background recordings -> "
                   "noise/noise/")
    p.add_argument("--noise_chunk", type=float, default=8.0,
                   help="chunk length in seconds (0: link the files)")
    p.add_argument("--n_rirs", type=int, default=0,
                   help="simulated room responses written to rirs/")
    p.add_argument("--mode", default="symlink", choices=["symlink", "copy", "move"])
    p.add_argument("--no_check_audio", action="store_true")
    p.add_argument("--skip_invalid", action="store_true")
    p.add_argument("--force", action="store_true", help="redo finished steps")
    a = p.parse_args(argv)
    return prepare_librispeech(
        a.data_folder, a.librispeech, a.subsets if a.download else None, a.base_url,
        a.urls, a.verify, a.train_subsets, a.test_subsets,
        a.held_out_speakers, a.seed, a.nontarget_ratio, a.max_targets_per_speaker,
        a.min_part_seconds, a.noise, a.noise_chunk, a.n_rirs, a.mode,
        not a.no_check_audio, a.skip_invalid, a.force, split_parts=a.split_parts)


__all__ = [
    "CHECKSUMS",
    "SUBSETS",
    "download_entries",
    "find_subsets",
    "list_utterances",
    "main",
    "prepare_librispeech",
    "prepare_noise",
    "read_speakers_txt",
    "render_rirs",
]
