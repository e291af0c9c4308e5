"""Score trial lists and write ``verification.json``.

Schema of ``verification.json``::

    {
      "lists": {"<trial list name>": {"<backend>": {"eer": %, "mindcf_0.01": ..,
                                                     "mindcf_0.05": .., ...}}},
      "untrained": {"lists": {...}},          # same metrics for the untrained encoder
      "meta": {"method": .., "encoder": .., "n_params": .., ...}
    }
"""

import json
import os

import numpy as np

from sslsv_sb.data.lists import read_trials, resolve
from sslsv_sb.evaluation.embeddings import extract_embeddings
from sslsv_sb.evaluation.metrics import verification_metrics


def cosine_trial_scores(emb, index, trials):
    """Cosine scores of a trial list from L2-normalised embeddings.

    Arguments
    ---------
    emb : np.ndarray
        ``(n_files, D)`` L2-normalised embeddings.
    index : dict
        Listed path -> row of ``emb``.
    trials : Trials
        Parsed trial list.

    Returns
    -------
    np.ndarray
        ``(n_trials,)`` scores (vectorised row-wise dot products).
    """
    e = np.fromiter((index[p] for p in trials.enrol), dtype=np.int64)
    t = np.fromiter((index[p] for p in trials.test), dtype=np.int64)
    return np.einsum("ij,ij->i", emb[e], emb[t])


def score_trial_lists(
    encode,
    trial_files,
    data_folder,
    crop_seconds=None,
    n_crops=1,
    num_workers=0,
    progress=False,
):
    """Embed every file of the trial lists once and score each list (cosine).

    Returns
    -------
    dict
        ``{list name: {"cosine": metrics}}``.
    """
    lists = [read_trials(path, data_folder) for path in trial_files]
    files = sorted({f for t in lists for f in t.files()})
    emb = extract_embeddings(
        encode,
        [resolve(f, data_folder) for f in files],
        crop_seconds=crop_seconds,
        n_crops=n_crops,
        num_workers=num_workers,
        progress=progress,
    )
    index = {f: i for i, f in enumerate(files)}
    results = {}
    for t in lists:
        scores = cosine_trial_scores(emb, index, t)
        results[t.name] = {"cosine": verification_metrics(scores, t.labels)}
    return results


def write_json(path, payload):
    """Write JSON atomically (never a half-written file)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=2, sort_keys=True)
    os.replace(tmp, path)


def format_table(results, untrained=None):
    """Plain-text table of EER / minDCF per list (and the untrained baseline)."""
    rows = [
        "list                 backend  system      EER(%)  minDCF(0.01)  minDCF(0.05)"
    ]
    for name, backends in results.items():
        for backend, m in backends.items():
            systems = [("trained", m)]
            if untrained and name in untrained and backend in untrained[name]:
                systems.insert(0, ("untrained", untrained[name][backend]))
            for label, mm in systems:
                rows.append(
                    f"{name:<20} {backend:<8} {label:<10} {mm['eer']:7.2f}"
                    f"  {mm['mindcf_0.01']:12.4f}  {mm['mindcf_0.05']:12.4f}"
                )
    return "\n".join(rows)
