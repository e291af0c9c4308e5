"""Train lists and trial lists: reading and validation.

Formats (see ``docs/architecture.md``):

- sslsv train list: CSV with header ``File,Speaker[,label columns][,Set]``;
- SpeechBrain CSV: ``ID,duration,wav,start,stop,spk_id`` (``wav`` is the path);
- trial list: ``label enrol test`` per line (VoxCeleb1-O format).

Paths are relative to the data folder (absolute paths are accepted). Every problem
raises :class:`~sslsv_sb.errors.SSLSVError` naming the list file and line.

Audio policy (``sample_rate`` given: every listed file's header is read, see
:func:`scan_audio`): a file that cannot be opened as audio, or whose sample rate is
not ``sample_rate``, is an error naming the list line and the file (no silent
resampling); multi-channel files are accepted and averaged to mono when read (the
readers in :mod:`sslsv_sb.data.sampling`), their number is reported. In a train list a
file shorter than ``min_duration`` seconds is dropped (:func:`read_train_list` keeps
the dropped rows in ``df.attrs["dropped"]``; :func:`audio_policy_notes` words it for
the log); files between ``min_duration`` and the crop length are wrap-padded when
read. In a trial list every file is kept (a zero-length file is an error).
"""

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd

from sslsv_sb.data.sampling import audio_info
from sslsv_sb.errors import SSLSVError, where

_LAST_TRAIN_LIST = {}  # {key: DataFrame}: last list scanned, kept for one more read


def resolve(path, data_folder):
    """Absolute path of a list entry (entries may be relative to ``data_folder``)."""
    return path if os.path.isabs(path) else os.path.join(data_folder, path)


def read_csv_list(path, required=(), what="list"):
    """Read a CSV list as strings (empty cells stay ``""``), checking its header.

    Arguments
    ---------
    path : str
        The CSV file.
    required : sequence of str
        Columns the header must contain.
    what : str
        Name of the list in the "not found" message (e.g. ``"train list"``).

    Returns
    -------
    pandas.DataFrame
        Every column as ``str``.

    Example
    -------
    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False) as f:
    ...     _ = f.write("File,Speaker\\na.wav,s1\\n")
    >>> read_csv_list(f.name, ["File", "Speaker"]).to_dict("records")
    [{'File': 'a.wav', 'Speaker': 's1'}]
    >>> os.remove(f.name)
    """
    if not os.path.isfile(path):
        raise SSLSVError(f"{what} not found: {path}")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError as err:  # zero bytes, or blank lines only
        raise SSLSVError(f"{path}: the {what} is empty (no header line)") from err
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        msg = " ".join(str(err).split())
        raise SSLSVError(f"{path}: cannot parse CSV ({msg})") from err
    for col in required:
        if col not in df.columns:
            raise SSLSVError(
                f"{where(path, 1)}: column {col!r} not in the header {list(df.columns)}"
            )
    return df


def _info_or_error(path):
    try:
        return audio_info(path)
    except SSLSVError as err:
        return err


def scan_audio(paths, list_path, lines, sample_rate, workers=None):
    """Read the header of every file; stop at the first bad one, in list order.

    Headers are read by a thread pool (libsndfile releases the GIL): about 0.1 ms per
    file on a local disk, twice as fast with 2 cores.

    Arguments
    ---------
    paths : sequence of str
        Audio files (absolute, or relative to the working directory).
    list_path : str
        The list naming them (for the error message).
    lines : sequence of int
        Line of each file in ``list_path``.
    sample_rate : int
        The only accepted sample rate.
    workers : int or None
        Threads (default: ``min(8, 2 * cpu_count)``).

    Returns
    -------
    (np.ndarray, np.ndarray)
        ``frames (n,)`` and ``channels (n,)``, int64.

    Raises
    ------
    SSLSVError
        ``<list>:<line>: <file>: cannot read audio (...)`` or ``... sample rate ...``
        for the first bad file, with the number of bad files when there are several.

    Example
    -------
    >>> import tempfile, soundfile as sf
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     a, b = os.path.join(tmp, "a.wav"), os.path.join(tmp, "b.wav")
    ...     sf.write(a, np.zeros(1600, dtype="float32"), 16000)
    ...     sf.write(b, np.zeros((800, 2), dtype="float32"), 16000)
    ...     frames, channels = scan_audio([a, b], "list.csv", [2, 3], 16000)
    >>> frames.tolist(), channels.tolist()
    ([1600, 800], [1, 2])
    """
    paths = list(paths)
    unique = list(dict.fromkeys(paths))
    n_workers = workers or min(8, 2 * (os.cpu_count() or 1))
    if len(unique) < 64:
        n_workers = 1
    with ThreadPoolExecutor(max_workers=n_workers) as pool:
        infos = dict(zip(unique, pool.map(_info_or_error, unique)))
    frames = np.zeros(len(paths), dtype=np.int64)
    channels = np.zeros(len(paths), dtype=np.int64)
    first, n_bad = None, 0
    for i, (p, line) in enumerate(zip(paths, lines)):
        info = infos[p]
        if isinstance(info, SSLSVError):
            problem = str(info)
        elif info[1] != sample_rate:
            problem = (
                f"{p}: sample rate {info[1]} Hz, expected {sample_rate} Hz (resample "
                "the corpus first, e.g. sox in.wav -r 16000 out.wav)"
            )
        else:
            frames[i], channels[i] = info[0], info[2]
            continue
        n_bad += 1
        if first is None:
            first = f"{where(list_path, int(line))}: {problem}"
    if first is not None:
        more = f" ({n_bad} bad files in this list)" if n_bad > 1 else ""
        raise SSLSVError(first + more)
    return frames, channels


def _drop_short(df, path, sample_rate, min_duration):
    """``(kept rows, dropped rows)`` of ``df`` by ``min_duration`` (seconds).

    A zero-length file is an error when ``min_duration`` is 0 (nothing to wrap-pad).
    """
    frames = df["frames"].to_numpy()
    if min_duration <= 0:
        empty = frames == 0
        if empty.any():
            row = df[empty].iloc[0]
            raise SSLSVError(
                f"{where(path, int(row['line']))}: {row['path']}: zero-length audio "
                "file (remove it, or set --min_duration above 0 to drop such files)"
            )
    short = frames < min_duration * sample_rate
    dropped = df.loc[short, ["line", "File", "frames"]].reset_index(drop=True)
    df = df.loc[~short].reset_index(drop=True)
    if len(df) == 0:
        raise SSLSVError(
            f"{path}: every file is shorter than min_duration {min_duration} s "
            f"(longest {frames.max() / sample_rate:.2f} s): lower --min_duration"
        )
    return df, dropped


def audio_policy_notes(df, list_path, sample_rate):
    """Log lines saying what the audio policy did to a train list.

    Arguments
    ---------
    df : pandas.DataFrame
        :func:`read_train_list` output read with ``sample_rate`` (``channels``
        column, ``attrs["dropped"]``).
    list_path : str
    sample_rate : int

    Returns
    -------
    list of str
        One line for the dropped short files, one for the multi-channel files
        (none when nothing was done).
    """
    notes = []
    dropped = df.attrs.get("dropped")
    if dropped is not None and len(dropped):
        first = dropped.iloc[0]
        notes.append(
            f"{list_path}: dropped {len(dropped)} of {len(df) + len(dropped)} files "
            f"shorter than min_duration {df.attrs['min_duration']} s (first: line "
            f"{first['line']}, {first['File']}, {first['frames'] / sample_rate:.2f} s)"
        )
    if "channels" in df.columns:
        multi = df["channels"] > 1
        if multi.any():
            first = df[multi].iloc[0]
            notes.append(
                f"{list_path}: {multichannel_text(int(multi.sum()))} (first: line "
                f"{first['line']}, {first['File']}, {first['channels']} channels)"
            )
    return notes


def multichannel_text(n):
    """``"3 multi-channel files are averaged to mono"`` (singular for 1)."""
    if n == 1:
        return "1 multi-channel file is averaged to mono"
    return f"{n} multi-channel files are averaged to mono"


def read_train_list(
    path,
    data_folder,
    label_key="Speaker",
    set_name="train",
    check_files=True,
    sample_rate=None,
    min_duration=0.0,
    keep=False,
):
    """Read and validate a train list.

    Arguments
    ---------
    path : str
        sslsv CSV (``File,Speaker,...``) or SpeechBrain CSV (``ID,...,wav,...,spk_id``).
    data_folder : str
        Folder the relative paths are relative to.
    label_key : str or None
        Label column to expose as ``label`` (None: unlabelled SSL list; the column may
        then be absent). For SpeechBrain CSVs ``Speaker`` maps to ``spk_id``.
    set_name : str or None
        If the list has a ``Set`` column, keep the rows with this value.
    check_files : bool
        Check that every listed file exists.
    sample_rate : int or None
        Read every file's header (:func:`scan_audio`: unreadable file or other rate
        -> error naming the line) and apply the audio policy; None: no audio check.
    min_duration : float
        With ``sample_rate``: files shorter than this (seconds) are dropped (listed
        in ``df.attrs["dropped"]``: ``line``, ``File``, ``frames``); an error if
        every file is. 0 keeps every file but one of zero length (an error).
    keep : bool
        With ``sample_rate``: keep the table for the next read with the same
        arguments (see Returns).

    Returns
    -------
    pandas.DataFrame
        Columns ``path`` (absolute), ``File`` (as listed), ``line`` (1-based line in
        the list file), ``label`` (if ``label_key``), plus the list's own columns;
        with ``sample_rate`` also ``frames`` and ``channels``, ``attrs["dropped"]``
        and ``attrs["min_duration"]``. A list read with ``sample_rate`` and
        ``keep`` is kept for the next read with the same arguments (list file
        unchanged), which gets it without reading the files again and releases it:
        validating a run and building its train set scan the audio once, and no
        second copy of a large list stays in memory.
    """
    key = None
    if sample_rate is not None:
        st = os.stat(path) if os.path.isfile(path) else None
        key = (
            os.path.abspath(path),
            st and (st.st_mtime_ns, st.st_size),
            os.path.abspath(data_folder),
            label_key,
            set_name,
            check_files,
            int(sample_rate),
            float(min_duration),
        )
        if st is not None and key in _LAST_TRAIN_LIST:
            return _LAST_TRAIN_LIST.pop(key)
    df = read_csv_list(path, what="train list")
    columns = list(df.columns)
    df["line"] = np.arange(len(df)) + 2  # header is line 1
    if "File" not in df.columns:
        if "wav" in df.columns:  # SpeechBrain CSV
            df = df.rename(columns={"wav": "File"})
            if "spk_id" in df.columns and "Speaker" not in df.columns:
                df = df.rename(columns={"spk_id": "Speaker"})
        else:
            raise SSLSVError(
                f"{where(path, 1)}: header must contain 'File' (sslsv list) or 'wav' "
                f"(SpeechBrain CSV); found {columns}"
            )
    if set_name is not None and "Set" in df.columns:
        df = df[df["Set"] == set_name].reset_index(drop=True)
    if len(df) == 0:
        raise SSLSVError(f"{path}: the train list is empty")
    empty = df["File"].str.strip() == ""
    if empty.any():
        raise SSLSVError(f"{where(path, int(df['line'][empty].iloc[0]))}: empty File")
    dup = df["File"].duplicated()
    if dup.any():
        first = df[dup].iloc[0]
        raise SSLSVError(
            f"{where(path, int(first['line']))}: duplicate entry {first['File']}"
        )
    if label_key is not None:
        if label_key not in df.columns:
            raise SSLSVError(
                f"{where(path, 1)}: label column '{label_key}' not in "
                f"{list(df.columns)}"
            )
        df["label"] = df[label_key]
    df["path"] = [resolve(f, data_folder) for f in df["File"]]
    if check_files:
        missing = ~df["path"].map(os.path.isfile)
        if missing.any():
            row = df[missing].iloc[0]
            raise SSLSVError(
                f"{where(path, int(row['line']))}: audio file not found: {row['path']}"
                f" ({int(missing.sum())} missing in total)"
            )
    if sample_rate is None:
        return df
    frames, channels = scan_audio(df["path"], path, df["line"], int(sample_rate))
    df["frames"], df["channels"] = frames, channels
    df, dropped = _drop_short(df, path, int(sample_rate), float(min_duration))
    df.attrs["dropped"] = dropped
    df.attrs["min_duration"] = float(min_duration)
    _LAST_TRAIN_LIST.clear()
    if not keep:
        return df
    _LAST_TRAIN_LIST[key] = df
    return _copy(df)


def _copy(df):
    """Deep copy of a list table, its ``attrs`` included."""
    out = df.copy(deep=True)
    out.attrs = {k: v.copy() if hasattr(v, "copy") else v for k, v in df.attrs.items()}
    return out


@dataclass
class Trials:
    """A parsed trial list.

    Attributes
    ----------
    name : str
        List name (file name without extension).
    labels : np.ndarray
        ``(n,)`` int, 1 for target trials.
    enrol, test : list of str
        Paths as listed (relative to the data folder or absolute).
    """

    name: str
    labels: np.ndarray
    enrol: list
    test: list
    multichannel: int = 0  # files with several channels (known after an audio scan)

    def files(self):
        """Sorted unique files used by the list."""
        return sorted(set(self.enrol) | set(self.test))


def read_trials(path, data_folder=None, check_files=True, sample_rate=None):
    """Read a ``label enrol test`` trial list, validating every line.

    Arguments
    ---------
    path : str
        Trial list file.
    data_folder : str or None
        Folder for relative paths (needed when ``check_files``).
    check_files : bool
        Check that every referenced file exists (error names the trial line).
    sample_rate : int or None
        Also read every file's header (:func:`scan_audio`): an unreadable or
        zero-length file or another sample rate is an error naming the first trial
        line using it; ``Trials.multichannel`` counts the multi-channel files.

    Returns
    -------
    Trials

    Example
    -------
    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
    ...     _ = f.write("1 a.wav b.wav\\n2 a.wav c.wav\\n")
    >>> try:
    ...     read_trials(f.name, check_files=False)
    ... except SSLSVError as err:
    ...     print(str(err).rsplit(": ", 1)[1])
    label '2' is neither 1 (target) nor 0 (non-target)
    >>> os.remove(f.name)
    """
    if not os.path.isfile(path):
        raise SSLSVError(f"trial list not found: {path}")
    labels, enrol, test = [], [], []
    first_line = {}  # file as listed -> first line using it
    try:
        with open(path, encoding="utf-8") as f:
            lines = list(f)
    except UnicodeDecodeError as err:
        raise SSLSVError(f"{path}: not a UTF-8 text file ({err.reason})") from err
    for i, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 3:
            raise SSLSVError(
                f"{where(path, i)}: malformed trial line {line!r}; expected "
                "'<1|0> <enrol path> <test path>'"
            )
        if parts[0] not in ("0", "1"):
            raise SSLSVError(
                f"{where(path, i)}: malformed trial line {line!r}: label "
                f"{parts[0]!r} is neither 1 (target) nor 0 (non-target)"
            )
        for p in parts[1:]:
            if p in first_line:
                continue
            if check_files and not os.path.isfile(resolve(p, data_folder or "")):
                raise SSLSVError(
                    f"{where(path, i)}: unknown file {p} (not found under "
                    f"{data_folder})"
                )
            first_line[p] = i
        labels.append(int(parts[0]))
        enrol.append(parts[1])
        test.append(parts[2])
    if not labels:
        raise SSLSVError(f"{path}: the trial list is empty")
    arr = np.asarray(labels, dtype=np.int64)
    if arr.min() == arr.max():
        raise SSLSVError(f"{path}: needs both target (1) and non-target (0) trials")
    multichannel = 0
    if sample_rate is not None:
        files = list(first_line)
        paths = [resolve(p, data_folder or "") for p in files]
        frames, channels = scan_audio(
            paths, path, [first_line[p] for p in files], int(sample_rate)
        )
        if (frames == 0).any():
            k = int(np.argmax(frames == 0))
            raise SSLSVError(
                f"{where(path, first_line[files[k]])}: {paths[k]}: zero-length "
                "audio file"
            )
        multichannel = int((channels > 1).sum())
    name = os.path.splitext(os.path.basename(path))[0]
    return Trials(
        name=name, labels=arr, enrol=enrol, test=test, multichannel=multichannel
    )
