"""Reproducible, nested label fractions of a train list (label-efficient protocol).

sslsv's ``evaluate_label_efficient`` trains the supervised model on a random
``p`` % of the labelled utterances. Here the subsets are *nested by construction*:
one fixed random permutation (by ``seed``) of the utterances or of the speakers is
drawn once, and fraction ``f`` keeps its first ``ceil(f * N)`` items, so the 5 % set
always contains the 2 % set and every fraction is the same whatever the other
fractions of the run.

- ``unit="utterances"``: permutation of the rows; the prefix is extended (still a
  prefix, so still nested) until it holds ``min_classes`` distinct labels;
- ``unit="speakers"``: permutation of the distinct labels; the first
  ``max(min_classes, ceil(f * S))`` labels are kept with *all* their utterances.

The permutation does not depend on the row order of the list: rows are ordered by
``File`` (speakers by name) before permuting.

Example
-------
>>> labels = ["a", "a", "b", "b", "c", "c", "d", "d"]
>>> files = [f"{x}{i}.wav" for i, x in enumerate(labels)]
>>> small = select_fraction(files, labels, 0.25, unit="speakers", seed=0)
>>> large = select_fraction(files, labels, 0.75, unit="speakers", seed=0)
>>> set(small) <= set(large), len(small), len(large)
(True, 4, 6)
"""

import math
import os

import numpy as np

from sslsv_sb.data.lists import read_csv_list
from sslsv_sb.errors import SSLSVError

UNITS = ("utterances", "speakers")


def check_fraction(fraction):
    """Return ``fraction`` as a float, raising :class:`SSLSVError` if not in (0, 1]."""
    try:
        value = float(fraction)
    except (TypeError, ValueError) as err:
        raise SSLSVError(f"label fraction {fraction!r} is not a number") from err
    if not 0.0 < value <= 1.0:
        raise SSLSVError(
            f"label fraction {fraction!r} must be in (0, 1] (e.g. 0.05 for 5 %)"
        )
    return value


def fraction_order(files, labels, unit="speakers", seed=0):
    """The fixed permutation every fraction takes a prefix of.

    Arguments
    ---------
    files : list of str
        ``File`` of each row (used to make the order independent of the row order).
    labels : list of str
        Class label of each row (e.g. the ``Speaker`` column).
    unit : str
        ``"utterances"`` (permute rows) or ``"speakers"`` (permute distinct labels).
    seed : int
        Seed of the permutation.

    Returns
    -------
    list
        Row indices (``unit="utterances"``) or labels (``unit="speakers"``) in
        selection order.
    """
    if unit not in UNITS:
        raise SSLSVError(f"fraction unit must be one of {UNITS}, got {unit!r}")
    if len(files) != len(labels):
        raise ValueError(f"{len(files)} files but {len(labels)} labels")
    rng = np.random.default_rng(int(seed))
    if unit == "speakers":
        uniq = sorted(set(labels))
        return [uniq[i] for i in rng.permutation(len(uniq))]
    by_file = sorted(range(len(files)), key=lambda i: files[i])
    return [by_file[i] for i in rng.permutation(len(files))]


def select_fraction(files, labels, fraction, unit="speakers", seed=0, min_classes=2):
    """Row indices of the ``fraction`` subset (sorted).

    Arguments
    ---------
    files : list of str
        ``File`` of each row.
    labels : list of str
        Class label of each row.
    fraction : float
        In (0, 1]; 1 keeps everything.
    unit : str
        ``"utterances"`` or ``"speakers"`` (see the module docstring).
    seed : int
        Seed of the permutation (same seed -> same, nested subsets).
    min_classes : int
        Minimum number of distinct labels in the subset (a classifier needs 2).

    Returns
    -------
    np.ndarray
        Sorted row indices into ``files`` / ``labels``.
    """
    fraction = check_fraction(fraction)
    labels = [str(x) for x in labels]
    n_classes = len(set(labels))
    if n_classes < min_classes:
        raise SSLSVError(
            f"the train list has {n_classes} class(es), fewer than the "
            f"{min_classes} a label-efficient subset needs"
        )
    order = fraction_order(files, labels, unit, seed)
    if unit == "speakers":
        k = max(int(min_classes), math.ceil(fraction * len(order) - 1e-9))
        keep = set(order[:k])
        return np.flatnonzero([lab in keep for lab in labels])
    k = math.ceil(fraction * len(order) - 1e-9)
    seen = set()
    for pos, row in enumerate(order):
        seen.add(labels[row])
        if pos + 1 >= k and len(seen) >= min_classes:
            k = pos + 1
            break
    return np.sort(np.asarray(order[:k], dtype=int))


def read_list_for_fractions(path, label_key="Speaker"):
    """Read a ``File,<label_key>[,...][,Set]`` train list (``Set == train`` rows).

    Arguments
    ---------
    path : str
        The CSV.
    label_key : str
        Column holding the class labels.

    Returns
    -------
    pandas.DataFrame
        The list's own columns (strings), without the ``Set`` column.
    """
    df = read_csv_list(path, ("File", label_key), what="train list")
    if "Set" in df.columns:
        df = df[df["Set"] == "train"].drop(columns=["Set"]).reset_index(drop=True)
    if len(df) == 0:
        raise SSLSVError(f"{path}: no training rows")
    return df


def write_fraction_list(df, rows, path):
    """Write the subset ``df.iloc[rows]`` as a CSV list (same columns); return path."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp"
    df.iloc[np.asarray(rows, dtype=int)].to_csv(tmp, index=False)
    os.replace(tmp, path)
    return path
