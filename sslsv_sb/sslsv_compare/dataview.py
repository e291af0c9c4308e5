"""The data folder as sslsv expects it, made of links in the comparison's work folder.

sslsv resolves everything against one ``dataset.base_path``: the train list, the
trial lists, the audio they name, and two augmentation banks with a fixed layout
(``sslsv/datasets/DataAugmentation.py``)::

    <base>/musan_split/<category>/<folder>/<file>.wav   category = noise|music|speech
    <base>/simulated_rirs/<folder>/<folder>/<file>.wav

The project instead takes any ``noise_folder`` with ``noise/``, ``music/`` and
``speech/`` sub-folders (searched recursively) and any ``rir_folder`` (searched
recursively), e.g. the embedded corpus's flat ``noise/<category>/*.wav`` and
``rirs/*.wav``. :func:`build_view` makes a folder that sslsv can read without
touching the data folder:

- one symbolic link per top-level entry of the data folder (so the list paths,
  relative to the data folder, resolve the same way);
- ``sslsv_train.csv``: the rows our recipe trains on (``File,Speaker``, after the
  ``Set`` filter of :func:`sslsv_sb.data.lists.read_train_list`);
- ``sslsv_trials.txt``: the trial list with single spaces (sslsv splits on " ");
- ``musan_split/<category>/bank/`` and ``simulated_rirs/bank/rirs/``: one link per
  bank file our augmentation finds, so both toolkits draw from the same files.
"""

import csv
import glob
import os

from sslsv_sb.errors import SSLSVError
from sslsv_sb.sslsv_compare.mapping import VIEW_TRAIN_LIST, VIEW_TRIAL_LIST

CATEGORIES = ("noise", "music", "speech")
_RESERVED = {"musan_split", "simulated_rirs", VIEW_TRAIN_LIST, VIEW_TRIAL_LIST}


def list_wavs(folder):
    """Sorted ``*.wav`` files under ``folder`` (recursive), as our augmentation."""
    return sorted(glob.glob(os.path.join(folder, "**", "*.wav"), recursive=True))


def bank_files(data_folder, noise_folder, rir_folder):
    """The augmentation files our recipe would use.

    Arguments
    ---------
    data_folder : str
        Folder that relative bank folders are relative to.
    noise_folder, rir_folder : str or None
        Our ``noise_folder`` / ``rir_folder`` settings.

    Returns
    -------
    dict
        ``{"noise": [...], "music": [...], "speech": [...], "rir": [...]}``
        (absolute paths; empty lists for a missing category or a None folder).

    Raises
    ------
    SSLSVError
        If a folder is given but does not exist.
    """
    out = {key: [] for key in (*CATEGORIES, "rir")}
    for key, folder in (("noise_folder", noise_folder), ("rir_folder", rir_folder)):
        if folder is None:
            continue
        path = folder if os.path.isabs(folder) else os.path.join(data_folder, folder)
        if not os.path.isdir(path):
            raise SSLSVError(f"{key}: folder not found: {path}")
        if key == "rir_folder":
            out["rir"] = list_wavs(path)
        else:
            for category in CATEGORIES:
                out[category] = list_wavs(os.path.join(path, category))
    return out


def check_banks(bank, strategy, aug_prob):
    """Refuse settings sslsv cannot run with these banks.

    sslsv draws the noise category uniformly among noise / music / speech and a
    room response from its RIR list whenever the strategy asks for them, with no
    fallback for an empty bank.

    Raises
    ------
    SSLSVError
        Naming the missing bank.
    """
    if aug_prob <= 0:
        return
    needs_noise = strategy in ("reverb+noise", "noise", "reverb|noise", "all")
    needs_rir = strategy in ("reverb+noise", "reverb", "reverb|noise", "all")
    missing = [c for c in CATEGORIES if needs_noise and not bank[c]]
    if needs_rir and not bank["rir"]:
        missing.append("rir")
    if missing:
        raise SSLSVError(
            f"strategy {strategy}: sslsv needs wav files in every bank it draws "
            f"from; empty: {', '.join(missing)} (noise_folder / rir_folder)"
        )


def _flat_name(path, root):
    rel = os.path.relpath(path, root)
    return rel.replace(os.sep, "__")


def build_view(view_dir, data_folder, files, speakers, trial_path, bank):
    """Create sslsv's view of the data folder (see the module docstring).

    Arguments
    ---------
    view_dir : str
        Folder to create (must not exist).
    data_folder : str
        The data folder (absolute).
    files, speakers : list of str
        Train list rows as listed (relative to the data folder or absolute) and
        their speaker labels.
    trial_path : str
        The trial list file.
    bank : dict
        :func:`bank_files` output.

    Returns
    -------
    dict
        File counts: ``train``, ``trials``, ``noise``, ``music``, ``speech``, ``rir``.
    """
    data_folder = os.path.abspath(data_folder)
    os.makedirs(view_dir)
    for entry in sorted(os.listdir(data_folder)):
        if entry not in _RESERVED:
            os.symlink(os.path.join(data_folder, entry), os.path.join(view_dir, entry))
    with open(
        os.path.join(view_dir, VIEW_TRAIN_LIST), "w", newline="", encoding="utf-8"
    ) as f:
        writer = csv.writer(f)
        writer.writerow(["File", "Speaker"])
        writer.writerows(zip(files, speakers))
    n_trials = 0
    with (
        open(trial_path, encoding="utf-8") as fin,
        open(os.path.join(view_dir, VIEW_TRIAL_LIST), "w", encoding="utf-8") as fout,
    ):
        for line in fin:
            if line.strip():
                fout.write(" ".join(line.split()) + "\n")
                n_trials += 1
    counts = {"train": len(files), "trials": n_trials}
    for category in CATEGORIES:
        folder = os.path.join(view_dir, "musan_split", category, "bank")
        _link_all(bank[category], folder)
        counts[category] = len(bank[category])
    _link_all(bank["rir"], os.path.join(view_dir, "simulated_rirs", "bank", "rirs"))
    counts["rir"] = len(bank["rir"])
    return counts


def _link_all(paths, folder):
    if not paths:
        return
    os.makedirs(folder)
    root = os.path.commonpath([os.path.dirname(p) for p in paths])
    for path in paths:
        os.symlink(path, os.path.join(folder, _flat_name(path, root)))
