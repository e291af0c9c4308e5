"""Speakers in the Wild (SITW) trial lists.

Input layout (as distributed by SRI): ``sitw/{dev,eval}/`` each with
``audio/*.flac``, ``keys/core-core.lst``, ``keys/core-multi.lst`` (lines
``<model id> audio/<test>.flac <tgt|imp>``) and ``lists/enroll-core.lst`` (lines
``<model id> audio/<enrol>.flac``).

Outputs in the data folder: ``sitw/`` (symlink to the corpus by default) and trial
lists ``sitw_{dev,eval}_core-{core,multi}`` with paths ``sitw/<set>/audio/<x>.flac``
(FLAC is read directly by soundfile; no conversion needed).
"""

import os
from functools import partial

from sslsv_sb.data.prepare.common import key_trial_lists
from sslsv_sb.errors import SSLSVError, where

SITW_SETS = ("dev", "eval")
SITW_CONDITIONS = ("core-core", "core-multi")


def find_sitw_root(path):
    """Folder holding ``dev/keys`` and/or ``eval/keys`` (``path`` or ``path/sitw``)."""
    for cand in (path, os.path.join(path, "sitw")):
        if any(os.path.isdir(os.path.join(cand, s, "keys")) for s in SITW_SETS):
            return cand
    raise SSLSVError(f"{path}: no SITW tree found (expected sitw/{{dev,eval}}/keys/"
                     "core-core.lst and lists/enroll-core.lst)")


def read_enroll_list(path):
    """``{model id: audio path}`` from ``lists/enroll-core.lst``."""
    if not os.path.isfile(path):
        raise SSLSVError(f"{path}: enrolment list not found")
    out, first = {}, {}
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) < 2:
                raise SSLSVError(f"{where(path, lineno)}: expected '<model id> "
                                 f"<audio path>', got '{line.strip()}'")
            if parts[0] in out:
                raise SSLSVError(f"{where(path, lineno)}: duplicate model id "
                                 f"'{parts[0]}' (first on line {first[parts[0]]})")
            out[parts[0]] = parts[1]
            first[parts[0]] = lineno
    return out


def sitw_paths(root, s):
    """``(enrol_path, test_path)`` of SITW set ``s`` for :func:`key_to_trials`.

    ``enrol_path(model id)`` is the model's enrolment file from
    ``lists/enroll-core.lst`` (None for an unknown model) and ``test_path(field)``
    the key's audio field, both as ``sitw/<s>/audio/<x>.flac``.
    """
    enroll = read_enroll_list(os.path.join(root, s, "lists", "enroll-core.lst"))

    def enrol_path(m):
        return f"sitw/{s}/{enroll[m]}" if m in enroll else None

    def test_path(t):
        return f"sitw/{s}/{t}"

    return enrol_path, test_path


def prepare_sitw(data_folder, sitw, mode="symlink", sets=SITW_SETS,
                 conditions=SITW_CONDITIONS, skip_missing=False, check_audio=True,
                 force=False, verbose=True):
    """Create SITW trial lists ``sitw_<set>_<condition>`` in ``data_folder``.

    A missing key file is logged and skipped (none found raises).

    Arguments
    ---------
    data_folder : str
        Output folder.
    sitw : str
        SITW folder (containing ``dev/`` and ``eval/``).
    mode : str
        How the corpus is placed as ``data_folder/sitw``: ``symlink``, ``copy``,
        ``move``.
    sets, conditions : sequence of str
        Which lists to build.
    skip_missing, check_audio, force, verbose : bool
        As in :func:`~sslsv_sb.data.prepare.common.key_trial_lists`.

    Returns
    -------
    Report
    """
    root = find_sitw_root(sitw)
    lists = [(os.path.join(root, s, "keys", f"{c}.lst"), partial(sitw_paths, root, s),
              f"sitw_{s}_{c}") for s in sets for c in conditions]
    return key_trial_lists(data_folder, root, "sitw", lists, mode, skip_missing,
                           check_audio, force, verbose)
