"""Shared helpers for data preparation.

Everything here is restartable: downloads resume from ``.part`` files with HTTP
``Range`` requests and are checksum-verified, archives are extracted once (a done
marker records it) and every preparation step leaves a ``.done_<step>`` marker so
that re-running a command skips what is already finished.

Downloads and archives are untrusted input: a download without a known checksum is
refused unless the caller passes ``verify=False`` (the tools' ``--no-verify``), and
an archive holding links, device files, absolute paths or ``..`` components is
refused before anything is extracted.

Every problem a user can cause raises :class:`~sslsv_sb.errors.SSLSVError` naming the
file (and line). Functions that can tolerate bad inputs take ``skip_invalid``; they
then *count and report* what was skipped (never a silent drop).
"""

import base64
import csv
import gzip
import hashlib
import logging
import os
import shutil
import stat
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor

import soundfile as sf

from sslsv_sb.errors import SSLSVError, where

SAMPLE_RATE = 16000
NO_CHECKSUM_HINT = ("add md5:<hex> or sha256:<hex> as the third field of its URL-list "
                    "line, or pass --no-verify to download it unverified")

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------
class Report:
    """Collects what a preparation run did, and what it skipped (with reasons).

    Arguments
    ---------
    name : str
        Name printed in front of every line.
    verbose : bool
        Print lines as they are logged.

    Example
    -------
    >>> r = Report("demo", verbose=False)
    >>> r.skip("a.wav: zero-length audio")
    >>> r.skipped_count
    1
    """

    def __init__(self, name="prepare", verbose=True):
        self.name = name
        self.verbose = verbose
        self.lines = []
        self.skipped = []

    def log(self, msg):
        """Record (and print) one line."""
        self.lines.append(msg)
        if self.verbose:
            print(f"[{self.name}] {msg}", flush=True)

    def skip(self, reason):
        """Record one skipped item with its reason."""
        self.skipped.append(reason)

    @property
    def skipped_count(self):
        """Number of skipped items."""
        return len(self.skipped)

    def summarize_skips(self, what, max_examples=5):
        """Log how many items were skipped since the last call, with examples."""
        if not self.skipped:
            return
        self.log(f"skipped {len(self.skipped)} invalid {what}:")
        for reason in self.skipped[:max_examples]:
            self.log(f"  - {reason}")
        if len(self.skipped) > max_examples:
            self.log(f"  ... and {len(self.skipped) - max_examples} more")


# --------------------------------------------------------------------------------------
# Step markers
# --------------------------------------------------------------------------------------
def marker_path(folder, step):
    """Path of the ``.done_<step>`` marker of ``step`` in ``folder``."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in step)
    return os.path.join(folder, f".done_{safe}")


def is_done(folder, step):
    """True if ``step`` has a done marker in ``folder``."""
    return os.path.isfile(marker_path(folder, step))


def mark_done(folder, step, info=""):
    """Write the done marker of ``step`` (with optional info text)."""
    os.makedirs(folder, exist_ok=True)
    with open(marker_path(folder, step), "w") as f:
        f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {info}\n")


def run_step(folder, step, fn, report=None, force=False, outputs=()):
    """Run ``fn()`` unless ``step`` is already done.

    A step counts as done if its marker exists *and* all ``outputs`` exist (a
    deleted output re-runs the step).

    Arguments
    ---------
    folder : str
        Folder holding the markers (the data folder).
    step : str
        Step name (marker ``.done_<step>``).
    fn : callable
        Work to do; its return value is returned (``None`` when skipped).
    report : Report or None
        Where to log "skipped (done)" lines.
    force : bool
        Run even if done.
    outputs : sequence of str
        Files or folders the step produces.

    Returns
    -------
    tuple
        ``(ran, result)``.
    """
    if not force and is_done(folder, step) and all(os.path.exists(o) for o in outputs):
        if report is not None:
            report.log(f"step '{step}' already done, skipping "
                       f"(delete {marker_path(folder, step)} to redo)")
        return False, None
    result = fn()
    mark_done(folder, step)
    return True, result


# --------------------------------------------------------------------------------------
# Checksums and downloads
# --------------------------------------------------------------------------------------
def parse_checksum(text):
    """Parse ``md5:<hex>``, ``sha256:<hex>`` or a bare hex digest.

    A bare digest of 32 hex digits is md5, 64 is sha256.

    Returns
    -------
    tuple or None
        ``(algorithm, hexdigest)``; None for empty input.

    Example
    -------
    >>> parse_checksum("d41d8cd98f00b204e9800998ecf8427e")
    ('md5', 'd41d8cd98f00b204e9800998ecf8427e')
    """
    if not text:
        return None
    text = text.strip()
    if ":" in text:
        algo, digest = text.split(":", 1)
        algo = algo.lower()
    else:
        digest = text
        algo = {32: "md5", 64: "sha256"}.get(len(text))
    digest = digest.lower()
    if algo not in ("md5", "sha256") or any(c not in "0123456789abcdef"
                                             for c in digest):
        raise SSLSVError(f"unrecognised checksum '{text}' (use md5:<hex> or "
                         "sha256:<hex>)")
    return algo, digest


def file_checksum(path, algo="md5", chunk_size=1 << 20):
    """Hex digest of a file."""
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk_size), b""):
            h.update(block)
    return h.hexdigest()


def checksum_ok(path, checksum):
    """True if ``path`` matches ``checksum`` (anything accepted by parse_checksum).

    A missing checksum is not a match: ``checksum=None`` raises :class:`SSLSVError`
    (callers that accept unverified files decide so explicitly, see :func:`download`).
    """
    parsed = parse_checksum(checksum)
    if parsed is None:
        raise SSLSVError(f"{path}: no checksum to verify it against")
    algo, digest = parsed
    return file_checksum(path, algo) == digest


def read_url_list(path):
    """Read a URL list file.

    One download per line: ``<file name> <url> [checksum]`` (checksum as in
    :func:`parse_checksum`); blank lines and ``#`` comments are ignored.

    Returns
    -------
    list of tuple
        ``(name, url, checksum or None, line number)``.
    """
    if not os.path.isfile(path):
        raise SSLSVError(f"{path}: URL list not found")
    entries, seen = [], {}
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split()
            if len(parts) not in (2, 3):
                raise SSLSVError(f"{where(path, lineno)}: expected '<file name> <url> "
                                 f"[checksum]', got '{line}'")
            name, url = parts[0], parts[1]
            if os.path.basename(name) != name:
                raise SSLSVError(f"{where(path, lineno)}: file name '{name}' must not "
                                 "contain a folder")
            if "://" not in url:
                raise SSLSVError(f"{where(path, lineno)}: '{url}' is not a URL")
            if name in seen:
                raise SSLSVError(f"{where(path, lineno)}: file name '{name}' already "
                                 f"listed on line {seen[name]}")
            seen[name] = lineno
            checksum = parts[2] if len(parts) == 3 else None
            try:
                parse_checksum(checksum)
            except SSLSVError as e:
                raise SSLSVError(f"{where(path, lineno)}: {e}") from None
            entries.append((name, url, checksum, lineno))
    return entries


def download(url, dest, checksum=None, user=None, password=None, timeout=60,
             retries=3, chunk_size=1 << 20, report=None, verify=True):
    """Resumable, checksum-verified download.

    - Without a checksum the download is refused (:class:`SSLSVError`, before any
      network access) unless ``verify=False``, which downloads it unverified and
      logs a warning. A given checksum is always checked.
    - If ``dest`` exists and matches ``checksum`` (or has none, with
      ``verify=False``) nothing is downloaded.
    - Data goes to ``dest + ".part"``; an existing ``.part`` file is resumed with an
      HTTP ``Range`` request (a server that ignores ``Range`` restarts it).
    - After the download the checksum is verified; on mismatch the ``.part`` file is
      removed and :class:`SSLSVError` is raised.

    Arguments
    ---------
    url : str
        http(s) URL (``file://`` also works, without resume).
    dest : str
        Final path.
    checksum : str or None
        ``md5:<hex>``, ``sha256:<hex>`` or bare hex.
    user, password : str or None
        HTTP basic-auth credentials (some corpora hand these out on registration).
    timeout : float
        Socket timeout in seconds.
    retries : int
        Attempts on network errors (each resumes from the ``.part`` file).
    chunk_size : int
        Read size in bytes.
    report : Report or None
        Progress log.
    verify : bool
        False accepts a missing checksum (``--no-verify``).

    Returns
    -------
    str
        ``dest``.
    """
    unverified = parse_checksum(checksum) is None
    if unverified:
        if verify:
            raise SSLSVError(f"{os.path.basename(dest)} ({url}): no known checksum; "
                             f"{NO_CHECKSUM_HINT}")
        logger.warning("%s: no known checksum, %s is accepted unverified "
                       "(--no-verify)", url, dest)
    if os.path.isfile(dest):
        if unverified or checksum_ok(dest, checksum):
            if report:
                report.log(f"{dest}: already downloaded")
            return dest
        raise SSLSVError(f"{dest}: exists but its checksum does not match {checksum}; "
                         "delete it to download again")
    os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
    part = dest + ".part"
    last_error = None
    for _attempt in range(max(1, retries)):
        try:
            _download_once(url, part, user, password, timeout, chunk_size, report)
            last_error = None
            break
        except SSLSVError:
            raise
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            last_error = e
            if report:
                report.log(f"{url}: {e}; retrying (resume from "
                           f"{os.path.getsize(part) if os.path.exists(part) else 0} B)")
            time.sleep(0.2)
    if last_error is not None:
        raise SSLSVError(f"{url}: download failed after {retries} attempts: "
                         f"{last_error} (partial data kept in {part}; re-run to "
                         "resume)")
    if not unverified and not checksum_ok(part, checksum):
        algo, expected = parse_checksum(checksum)
        got = file_checksum(part, algo)
        os.remove(part)
        raise SSLSVError(f"{dest}: {algo} checksum mismatch (expected {expected}, got "
                         f"{got}) for {url}; the partial file was removed")
    os.replace(part, dest)
    if report:
        report.log(f"downloaded {url} -> {dest}")
    return dest


def _download_once(url, part, user, password, timeout, chunk_size, report):
    start = os.path.getsize(part) if os.path.exists(part) else 0
    req = urllib.request.Request(url)
    if user is not None:
        token = base64.b64encode(f"{user}:{password or ''}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    if start > 0 and url.startswith(("http://", "https://")):
        req.add_header("Range", f"bytes={start}-")
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and start > 0:  # nothing left: the part is complete
            return
        if e.code in (401, 403):
            raise SSLSVError(f"{url}: HTTP {e.code} {e.reason} (check --user/"
                             "--password or that the URL is still valid)") from None
        if e.code == 404:
            raise SSLSVError(f"{url}: HTTP 404 not found") from None
        raise
    with resp:
        status = getattr(resp, "status", 200)
        mode = "ab" if (start > 0 and status == 206) else "wb"
        if start > 0 and mode == "wb" and report:
            report.log(f"{url}: server ignored the Range request, restarting")
        with open(part, mode) as f:
            while True:
                block = resp.read(chunk_size)
                if not block:
                    break
                f.write(block)


def download_all(entries, folder, user=None, password=None, report=None, verify=True,
                 source="URL list"):
    """Download every ``(name, url, checksum, line)`` of :func:`read_url_list`.

    With ``verify`` (the default), entries without a checksum are refused up front,
    before anything is downloaded: one :class:`SSLSVError` names them with their
    lines in ``source``.

    Returns
    -------
    list of str
        Downloaded paths.
    """
    if verify:
        missing = [f"{name} (line {line})" if line else name
                   for name, _, checksum, line in entries
                   if parse_checksum(checksum) is None]
        if missing:
            raise SSLSVError(f"{source}: no known checksum for {', '.join(missing)}; "
                             f"{NO_CHECKSUM_HINT}")
    return [download(url, os.path.join(folder, name), checksum, user, password,
                     report=report, verify=verify)
            for name, url, checksum, _ in entries]


# --------------------------------------------------------------------------------------
# Archives
# --------------------------------------------------------------------------------------
def concat_files(parts, out, report=None):
    """Concatenate split archive parts (``vox1_dev_wav_partaa``...) into ``out``."""
    if os.path.isfile(out):
        return out
    tmp = out + ".part"
    with open(tmp, "wb") as fo:
        for p in parts:
            with open(p, "rb") as fi:
                shutil.copyfileobj(fi, fo, 1 << 22)
    os.replace(tmp, out)
    if report:
        report.log(f"concatenated {len(parts)} parts -> {out}")
    return out


def _unsafe_member_path(name):
    """Why an archive member name is refused (absolute or ``..``), else None."""
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or os.path.isabs(name) or (
            len(parts[0]) == 2 and parts[0][1] == ":"):
        return "has an absolute path"
    if ".." in parts:
        return "has a '..' path component"
    return None


def _unsafe_tar_member(member):
    """Why a tar member is refused (link, device, FIFO, unsafe path), else None."""
    if member.issym():
        return f"is a symbolic link (to '{member.linkname}')"
    if member.islnk():
        return f"is a hard link (to '{member.linkname}')"
    if member.isdev():
        return "is a device or FIFO special file"
    if not (member.isfile() or member.isdir()):
        return f"has an unsupported tar type {member.type!r}"
    return _unsafe_member_path(member.name)


def _unsafe_zip_member(info):
    """Why a zip member is refused (Unix symlink, unsafe path), else None."""
    if stat.S_ISLNK(info.external_attr >> 16):
        return "is a symbolic link"
    return _unsafe_member_path(info.filename)


def extract(archive, dest, report=None):
    """Extract a zip or tar archive into ``dest`` once (done marker in ``dest``).

    Every member is checked before anything is written. A symbolic or hard link, a
    device or FIFO, an absolute path, a ``..`` component or a member that would
    land outside ``dest`` refuses the whole archive with one :class:`SSLSVError`
    naming the archive and the member. A corrupt or truncated archive is an
    :class:`SSLSVError` too (no done marker is written, so a re-run retries).

    Arguments
    ---------
    archive : str
        ``.zip`` or tar (any compression ``tarfile`` reads) file.
    dest : str
        Output folder (created).
    report : Report or None
        Log.

    Returns
    -------
    str
        ``dest``.
    """
    step = "extract_" + os.path.basename(archive)
    if is_done(dest, step):
        if report:
            report.log(f"{archive}: already extracted")
        return dest
    if not os.path.isfile(archive):
        raise SSLSVError(f"{archive}: archive not found")
    os.makedirs(dest, exist_ok=True)
    root = os.path.realpath(dest)

    def _check(name, why):
        if why is not None:
            raise SSLSVError(f"{archive}: member '{name}' {why}; the archive was not "
                             "extracted (only plain files and folders are accepted)")
        target = os.path.realpath(os.path.join(dest, name))
        if target != root and not target.startswith(root + os.sep):
            raise SSLSVError(f"{archive}: member '{name}' would be extracted outside "
                             f"{dest}")

    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                for info in z.infolist():
                    _check(info.filename, _unsafe_zip_member(info))
                z.extractall(dest)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as t:
                for m in t.getmembers():
                    _check(m.name, _unsafe_tar_member(m))
                if hasattr(tarfile, "data_filter"):
                    t.extractall(dest, filter="data")
                else:
                    t.extractall(dest)
        else:
            raise SSLSVError(f"{archive}: not a zip or tar archive (corrupt or "
                             "incomplete download?)")
    except (tarfile.TarError, zipfile.BadZipFile, gzip.BadGzipFile, EOFError,
            zlib.error) as e:
        raise SSLSVError(f"{archive}: corrupt or truncated archive ({e}); delete it "
                         "and download it again") from None
    mark_done(dest, step)
    if report:
        report.log(f"extracted {archive} -> {dest}")
    return dest


# --------------------------------------------------------------------------------------
# Audio
# --------------------------------------------------------------------------------------
def audio_info(path, sample_rate=SAMPLE_RATE, line_ref=None):
    """Check one audio file and return its number of frames.

    Raises
    ------
    SSLSVError
        Missing, unreadable/corrupt, zero-length, or wrong sample rate. The message
        names the audio file and, if given, ``line_ref`` (the list file and line that
        referenced it).
    """
    ctx = f" (listed at {line_ref})" if line_ref else ""
    if not os.path.exists(path):
        raise SSLSVError(f"{path}: file not found{ctx}")
    if os.path.getsize(path) == 0:
        raise SSLSVError(f"{path}: zero-length file{ctx}")
    try:
        info = sf.info(path)
    except Exception as e:  # soundfile raises several types
        raise SSLSVError(f"{path}: unreadable or corrupt audio ({e}){ctx}") from None
    if info.frames <= 0:
        raise SSLSVError(f"{path}: zero-length audio (no samples){ctx}")
    if sample_rate is not None and info.samplerate != sample_rate:
        raise SSLSVError(f"{path}: sample rate {info.samplerate} Hz, expected "
                         f"{sample_rate} Hz{ctx}")
    return info.frames


def check_audio_files(items, sample_rate=SAMPLE_RATE, skip_invalid=False, report=None,
                      num_workers=4):
    """Validate many audio files (in threads: ``soundfile.info`` reads headers only).

    Arguments
    ---------
    items : list
        Entries ``(path, line_ref)``; ``line_ref`` may be None.
    sample_rate : int or None
        Expected rate (None: any).
    skip_invalid : bool
        False: raise on the first invalid file (in input order). True: record every
        invalid file in ``report`` and return only the valid indices.
    report : Report or None
        Where skipped files are recorded (required if ``skip_invalid``).
    num_workers : int
        Threads.

    Returns
    -------
    list of int
        Indices of the valid items.
    """

    def _one(item):
        try:
            audio_info(item[0], sample_rate, item[1])
            return None
        except SSLSVError as e:
            return str(e)

    if num_workers > 1 and len(items) > 64:
        with ThreadPoolExecutor(num_workers) as ex:
            errors = list(ex.map(_one, items, chunksize=64))
    else:
        errors = [_one(it) for it in items]
    valid = []
    for i, err in enumerate(errors):
        if err is None:
            valid.append(i)
        elif not skip_invalid:
            raise SSLSVError(err)
        else:
            if report is None:
                raise SSLSVError(err)
            report.skip(err)
    return valid


def require_ffmpeg():
    """Path of ``ffmpeg``, or :class:`SSLSVError` explaining how to get it."""
    path = shutil.which("ffmpeg")
    if path is None:
        raise SSLSVError(
            "ffmpeg not found on PATH: it is needed to convert VoxCeleb2 .m4a to .wav "
            "(install it, e.g. 'apt-get install ffmpeg' or 'conda install ffmpeg', or "
            "pass already-converted wav folders)")
    return path


def convert_to_wav(jobs, num_workers=4, skip_invalid=False, report=None,
                   sample_rate=SAMPLE_RATE):
    """Convert audio files (e.g. ``.m4a``) to 16 kHz mono PCM16 wav with ffmpeg.

    Runs ``ffmpeg`` processes in parallel (``concurrent.futures``); each output is
    written to a temporary name then renamed, so an interrupted run never leaves a
    truncated wav and existing outputs are skipped on re-run.

    Arguments
    ---------
    jobs : list of tuple
        ``(src, dst)`` pairs.
    num_workers : int
        Parallel ffmpeg processes.
    skip_invalid : bool
        Record failed conversions in ``report`` instead of raising.
    report : Report or None
        Log.
    sample_rate : int
        Output rate.

    Returns
    -------
    tuple
        ``(converted, already_present, failed)`` counts.
    """
    ffmpeg = require_ffmpeg()
    todo = [(s, d) for s, d in jobs if not os.path.isfile(d)]
    present = len(jobs) - len(todo)

    def _one(job):
        src, dst = job
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        tmp = dst[:-4] + ".tmp.wav"
        cmd = [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-i",
               src, "-ac", "1", "-ar", str(sample_rate), "-c:a", "pcm_s16le", tmp]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or not os.path.isfile(tmp):
            if os.path.exists(tmp):
                os.remove(tmp)
            msg = (proc.stderr or "").strip().splitlines()
            return f"{src}: ffmpeg failed ({msg[-1] if msg else proc.returncode})"
        os.replace(tmp, dst)
        return None

    failed = 0
    with ThreadPoolExecutor(max(1, num_workers)) as ex:
        for i, err in enumerate(ex.map(_one, todo)):
            if err is None:
                if report and (i + 1) % 10000 == 0:
                    report.log(f"converted {i + 1}/{len(todo)}")
                continue
            failed += 1
            if not skip_invalid or report is None:
                ex.shutdown(wait=True, cancel_futures=True)
                raise SSLSVError(err)
            report.skip(err)
    return len(todo) - failed, present, failed


# --------------------------------------------------------------------------------------
# Lists
# --------------------------------------------------------------------------------------
def rel_to(path, data_folder):
    """``path`` relative to ``data_folder`` (POSIX separators)."""
    return os.path.relpath(path, data_folder).replace(os.sep, "/")


def write_train_csv(path, rows, columns=("File", "Speaker")):
    """Write an sslsv train list (``File,Speaker[,...][,Set]``).

    Duplicate ``File`` entries raise :class:`SSLSVError` (they would silently
    double-weight utterances).
    """
    seen = set()
    for r in rows:
        if r[0] in seen:
            raise SSLSVError(f"{path}: duplicate file '{r[0]}' in the generated list")
        seen.add(r[0])
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns)
        w.writerows(rows)
    os.replace(tmp, path)
    return path


def write_trials(path, trials):
    """Write a trial list: one ``label enrol test`` line per trial."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        for label, a, b in trials:
            f.write(f"{label} {a} {b}\n")
    os.replace(tmp, path)
    return path


def write_sb_noise_csv(path, entries, data_folder=None, prefix=None):
    """Write a SpeechBrain noise/RIR CSV (``ID,duration,wav,wav_format,wav_opts``).

    Arguments
    ---------
    path : str
        Output CSV.
    entries : list of tuple
        ``(id, duration_seconds, absolute_wav_path)``.
    data_folder : str or None
        With ``prefix``: paths are written as ``prefix/<path relative to
        data_folder>`` (e.g. ``$data_folder/...`` for SpeechBrain ``replacements``).
    prefix : str or None
        See ``data_folder``. Without it, absolute paths are written.
    """
    ids = set()
    tmp = path + ".tmp"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ID", "duration", "wav", "wav_format", "wav_opts"])
        for uid, dur, wav in entries:
            if uid in ids:
                raise SSLSVError(f"{path}: duplicate ID '{uid}'")
            ids.add(uid)
            if prefix is not None and data_folder is not None:
                wav = f"{prefix}/{rel_to(wav, data_folder)}"
            else:
                wav = os.path.abspath(wav)
            fmt = os.path.splitext(wav)[1].lstrip(".").lower() or "wav"
            w.writerow([uid, f"{dur:.3f}", wav, fmt, ""])
    os.replace(tmp, path)
    return path


def parse_trial_file(path, n_fields=3):
    """Yield ``(line number, fields)`` of a whitespace-separated list file.

    Lines with a different number of fields raise :class:`SSLSVError`.
    """
    if not os.path.isfile(path):
        raise SSLSVError(f"{path}: file not found")
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != n_fields:
                raise SSLSVError(f"{where(path, lineno)}: expected {n_fields} fields, "
                                 f"got {len(parts)}: '{line.strip()}'")
            yield lineno, parts


def link_into(src, dst, mode="symlink"):
    """Make ``dst`` point to ``src`` (``symlink``, ``copy`` or ``move``).

    Nothing happens if ``dst`` already exists (it is assumed to be the same data) or
    ``src`` and ``dst`` are the same folder.
    """
    if os.path.lexists(dst):
        return False
    if os.path.realpath(src) == os.path.realpath(dst):
        return False
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    if mode == "symlink":
        os.symlink(os.path.abspath(src), dst)
    elif mode == "copy":
        (shutil.copytree if os.path.isdir(src) else shutil.copy2)(src, dst)
    elif mode == "move":
        shutil.move(src, dst)
    else:
        raise SSLSVError(f"unknown link mode '{mode}' (symlink, copy or move)")
    return True


#: Labels accepted in key files (SITW/VOiCES ``tgt``/``imp``, Kaldi
#: ``target``/``nontarget``, or already ``1``/``0``).
KEY_LABELS = {"tgt": "1", "target": "1", "1": "1", "imp": "0", "nontarget": "0",
              "0": "0"}


def key_to_trials(key_file, enrol_path, test_path, data_folder, out,
                  skip_missing=False, check_audio=False, report=None):
    """Convert a key file ``<enrol id> <test> <label>`` into a project trial list.

    Arguments
    ---------
    key_file : str
        Key file (3 whitespace-separated fields per line).
    enrol_path : callable
        ``enrol_path(enrol_id)`` -> path relative to ``data_folder``, or None if the
        id is unknown.
    test_path : callable
        ``test_path(test_field)`` -> path relative to ``data_folder``, or None.
    data_folder : str
        Data folder.
    out : str
        Output trial list.
    skip_missing : bool
        Drop (and count) trials with unknown ids / missing or invalid files instead
        of raising.
    check_audio : bool
        Validate the audio of each distinct file.
    report : Report or None
        Log.

    Returns
    -------
    tuple
        ``(written, skipped)``.
    """
    report = report or Report("trials", verbose=False)
    trials, first_ref, bad = [], {}, set()
    skipped = 0
    for lineno, (e, t, lab) in parse_trial_file(key_file):
        if lab.lower() not in KEY_LABELS:
            raise SSLSVError(f"{where(key_file, lineno)}: unknown label '{lab}' "
                             "(expected tgt/imp, target/nontarget or 1/0)")
        pe, pt = enrol_path(e), test_path(t)
        unknown = [x for x, p in ((e, pe), (t, pt)) if p is None]
        if unknown:
            if not skip_missing:
                raise SSLSVError(f"{where(key_file, lineno)}: unknown id "
                                 f"'{unknown[0]}'")
            skipped += 1
            continue
        for p in (pe, pt):
            if p in first_ref:
                continue
            first_ref[p] = lineno
            if not os.path.isfile(os.path.join(data_folder, p)):
                if not skip_missing:
                    raise SSLSVError(f"{where(key_file, lineno)}: unknown file '{p}' "
                                     f"(not found in {data_folder})")
                bad.add(p)
        trials.append((KEY_LABELS[lab.lower()], pe, pt))
    if check_audio:
        files = [p for p in first_ref if p not in bad]
        items = [(os.path.join(data_folder, p), where(key_file, first_ref[p]))
                 for p in files]
        valid = set(check_audio_files(items, SAMPLE_RATE, skip_missing, report))
        bad |= {p for i, p in enumerate(files) if i not in valid}
        report.skipped.clear()
    kept = [x for x in trials if x[1] not in bad and x[2] not in bad]
    skipped += len(trials) - len(kept)
    if not kept:
        raise SSLSVError(f"{key_file}: no usable trial")
    write_trials(out, kept)
    msg = f"{os.path.basename(out)}: {len(kept)} trials from {key_file}"
    if skipped:
        msg += f" (skipped {skipped} trials with unknown ids or missing/invalid files)"
    report.log(msg)
    return len(kept), skipped


def key_trial_lists(data_folder, root, name, lists, mode="symlink", skip_missing=False,
                    check_audio=True, force=False, verbose=True):
    """Place a corpus distributed with trial keys and convert its keys to trial lists.

    The flow of SITW and VOiCES: ``root`` is placed as ``data_folder/<name>``
    (:func:`link_into`); a key file of ``lists`` that does not exist is logged and
    left out (none left raises :class:`SSLSVError`); then, as the restartable step
    ``<name>_trials``, every key file goes through :func:`key_to_trials`.

    Arguments
    ---------
    data_folder : str
        Output folder.
    root : str
        Corpus folder (already located).
    name : str
        Its name in ``data_folder``; also the report's name and the step's prefix.
    lists : sequence of tuple
        ``(key_file, paths, out)``: ``paths()`` returns the ``(enrol_path,
        test_path)`` functions of :func:`key_to_trials` and is called only when the
        step runs (it may read an enrolment list); ``out`` is the trial list's file
        name in ``data_folder``.
    mode : str
        ``symlink``, ``copy`` or ``move`` for ``data_folder/<name>``.
    skip_missing : bool
        Drop and count trials with unknown ids or missing/invalid files.
    check_audio : bool
        Validate each trial file's audio.
    force : bool
        Redo even if done.
    verbose : bool
        Print progress.

    Returns
    -------
    Report
    """
    report = Report(name, verbose)
    os.makedirs(data_folder, exist_ok=True)
    link_into(root, os.path.join(data_folder, name), mode)
    todo = []
    for key, paths, out in lists:
        if os.path.isfile(key):
            todo.append((key, paths, os.path.join(data_folder, out)))
        else:
            report.log(f"{key} not found, skipped")
    if not todo:
        raise SSLSVError(f"{root}: no {name.upper()} key file found")

    def _run():
        for key, paths, out in todo:
            enrol_path, test_path = paths()
            key_to_trials(key, enrol_path, test_path, data_folder, out, skip_missing,
                          check_audio, report)

    run_step(data_folder, f"{name}_trials", _run, report, force,
             [out for _, _, out in todo])
    return report
