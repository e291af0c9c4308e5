"""VOiCES from a Distance Challenge 2019: development trial list.

Input layout (``Development_Data/Speaker_Recognition/`` of the challenge release):
``sid_dev/<spNNNN>/Lab41-SRI-VOiCES-<room>-<distractor>-sp<NNNN>-ch<...>-sg<...>-mc<..>-
<...>.wav`` and ``sid_dev_lists_and_keys/`` with ``dev-enroll.lst`` (lines
``<model id> <audio path>``) and ``dev-trial-keys.lst`` (lines
``<model id> sid_dev/<spNNNN>/<file>.wav <tgt|imp>``).

Outputs in the data folder: ``voices/`` (symlink to that folder by default) and the
trial list ``voices2019_dev`` with paths ``voices/sid_dev/...``.
"""

import os
import re
from functools import partial

from sslsv_sb.data.prepare.common import key_trial_lists
from sslsv_sb.errors import SSLSVError, where

KEYS_DIR = "sid_dev_lists_and_keys"


def find_voices_root(path):
    """Folder holding ``sid_dev_lists_and_keys/dev-trial-keys.lst`` under ``path``."""
    for dirpath, dirnames, _ in os.walk(path):
        if KEYS_DIR in dirnames and os.path.isfile(
                os.path.join(dirpath, KEYS_DIR, "dev-trial-keys.lst")):
            return dirpath
        if dirpath.count(os.sep) - path.count(os.sep) >= 3:
            dirnames[:] = []
    raise SSLSVError(f"{path}: no VOiCES dev release found (expected "
                     f"{KEYS_DIR}/dev-trial-keys.lst and sid_dev/)")


def read_voices_enroll(path, root):
    """``{model id: path relative to root}`` from ``dev-enroll.lst``.

    Paths are accepted relative to the release root (``sid_dev/...``) or as bare
    file names (then looked up as ``sid_dev/sp<NNNN>/<name>``).
    """
    out = {}
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2:
                raise SSLSVError(f"{where(path, lineno)}: expected '<model id> <audio "
                                 f"path>', got '{line.strip()}'")
            model, p = parts
            if model in out:
                raise SSLSVError(f"{where(path, lineno)}: duplicate model id '{model}'")
            if "/" not in p:
                p = model_to_path(os.path.splitext(p)[0]) or p
            out[model] = p
    return out


def model_to_path(model):
    """``sid_dev/sp<NNNN>/<model>.wav`` from a VOiCES file id (None if no speaker)."""
    m = re.search(r"-sp(\d+)-", model)
    return f"sid_dev/sp{m.group(1)}/{model}.wav" if m else None


def voices_paths(root):
    """``(enrol_path, test_path)`` of the VOiCES key for :func:`key_to_trials`.

    Enrolment files come from ``dev-enroll.lst`` when present, otherwise from the
    model id (VOiCES model ids are the enrolment file names); paths are
    ``voices/sid_dev/...``.
    """
    enroll_file = os.path.join(root, KEYS_DIR, "dev-enroll.lst")
    enroll = read_voices_enroll(enroll_file, root) if os.path.isfile(
        enroll_file) else None

    def enrol_path(m):
        p = enroll.get(m) if enroll is not None else model_to_path(m)
        return f"voices/{p}" if p else None

    def test_path(t):
        return f"voices/{t}"

    return enrol_path, test_path


def prepare_voices(data_folder, voices, mode="symlink", skip_missing=False,
                   check_audio=True, force=False, verbose=True):
    """Create ``voices2019_dev`` in ``data_folder``.

    Enrolment files as in :func:`voices_paths`.

    Arguments
    ---------
    data_folder : str
        Output folder.
    voices : str
        VOiCES 2019 development release (any folder above
        ``sid_dev_lists_and_keys``).
    mode : str
        ``symlink``, ``copy`` or ``move`` for ``data_folder/voices``.
    skip_missing, check_audio, force, verbose : bool
        As in :func:`~sslsv_sb.data.prepare.common.key_trial_lists`.

    Returns
    -------
    Report
    """
    root = find_voices_root(voices)
    key = os.path.join(root, KEYS_DIR, "dev-trial-keys.lst")
    return key_trial_lists(data_folder, root, "voices",
                           [(key, partial(voices_paths, root), "voices2019_dev")],
                           mode, skip_missing, check_audio, force, verbose)
