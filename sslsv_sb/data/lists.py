"""Train lists and trial lists: reading and validation.

Formats (see ``docs/architecture.md``):

- sslsv train list: CSV with header ``File,Speaker[,label columns][,Set]``;
- SpeechBrain CSV: ``ID,duration,wav,start,stop,spk_id`` (``wav`` is the path);
- trial list: ``label enrol test`` per line (VoxCeleb1-O format).

Paths are relative to the data folder (absolute paths are accepted). Every problem
raises :class:`~sslsv_sb.errors.SSLSVError` naming the list file and line.
"""

import os
from dataclasses import dataclass

import numpy as np
import pandas as pd

from sslsv_sb.errors import SSLSVError, where


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
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise SSLSVError(f"{path}: cannot parse CSV ({err})") from err
    for col in required:
        if col not in df.columns:
            raise SSLSVError(
                f"{where(path, 1)}: column {col!r} not in the header {list(df.columns)}"
            )
    return df


def read_train_list(
    path, data_folder, label_key="Speaker", set_name="train", check_files=True
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

    Returns
    -------
    pandas.DataFrame
        Columns ``path`` (absolute), ``File`` (as listed), ``line`` (1-based line in
        the list file), ``label`` (if ``label_key``), plus the list's own columns.
    """
    df = read_csv_list(path, what="train list")
    df["line"] = np.arange(len(df)) + 2  # header is line 1
    if "File" not in df.columns:
        if "wav" in df.columns:  # SpeechBrain CSV
            df = df.rename(columns={"wav": "File"})
            if "spk_id" in df.columns and "Speaker" not in df.columns:
                df = df.rename(columns={"spk_id": "Speaker"})
        else:
            raise SSLSVError(
                f"{where(path, 1)}: header must contain 'File' (sslsv list) or 'wav' "
                f"(SpeechBrain CSV); found {list(df.columns)}"
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
    return df


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

    def files(self):
        """Sorted unique files used by the list."""
        return sorted(set(self.enrol) | set(self.test))


def read_trials(path, data_folder=None, check_files=True):
    """Read a ``label enrol test`` trial list, validating every line.

    Arguments
    ---------
    path : str
        Trial list file.
    data_folder : str or None
        Folder for relative paths (needed when ``check_files``).
    check_files : bool
        Check that every referenced file exists (error names the trial line).

    Returns
    -------
    Trials
    """
    if not os.path.isfile(path):
        raise SSLSVError(f"trial list not found: {path}")
    labels, enrol, test = [], [], []
    seen_ok = set()
    with open(path, encoding="utf-8") as f:
        for i, raw in enumerate(f, start=1):
            line = raw.strip()
            if not line:
                continue
            parts = line.split()
            if len(parts) != 3 or parts[0] not in ("0", "1"):
                raise SSLSVError(
                    f"{where(path, i)}: malformed trial line {line!r}; expected "
                    "'<1|0> <enrol path> <test path>'"
                )
            if check_files:
                for p in parts[1:]:
                    if p in seen_ok:
                        continue
                    if not os.path.isfile(resolve(p, data_folder or "")):
                        raise SSLSVError(
                            f"{where(path, i)}: unknown file {p} (not found under "
                            f"{data_folder})"
                        )
                    seen_ok.add(p)
            labels.append(int(parts[0]))
            enrol.append(parts[1])
            test.append(parts[2])
    if not labels:
        raise SSLSVError(f"{path}: the trial list is empty")
    arr = np.asarray(labels, dtype=np.int64)
    if arr.min() == arr.max():
        raise SSLSVError(f"{path}: needs both target (1) and non-target (0) trials")
    name = os.path.splitext(os.path.basename(path))[0]
    return Trials(name=name, labels=arr, enrol=enrol, test=test)
