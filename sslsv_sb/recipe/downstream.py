"""``recipes/VoxCeleb/SSL/downstream.py``: classification probes on frozen embeddings.

:func:`main` embeds the files of a ``File,<label>[,Set]`` CSV with a trained run's
encoder, splits the rows (:func:`split_rows`), trains the requested probes
(:data:`PROBES`) and merges accuracy / F1 into ``<output_folder>/downstream.json``
under ``"<csv stem>:<key>"``.

The run folder is checked and locked before the yaml builds anything, as by
``evaluate.py`` (:class:`sslsv_sb.recipe.runfolder.EvaluationFolders`): a missing
run folder is an error and is never created; the run is locked exclusively, so a
run being trained, an evaluation writing into it or another ``downstream.py`` /
``pseudo_labels.py`` on it is refused with one line naming the holder.
``downstream.json`` is written under a temporary name and renamed.
"""

import json
import os

import numpy as np
import pandas as pd

from sslsv_sb.data.lists import resolve
from sslsv_sb.errors import SSLSVError
from sslsv_sb.evaluation.cache import EmbeddingCache, model_fingerprint
from sslsv_sb.evaluation.classification import (
    linear_probe,
    mlp_probe,
    read_label_csv,
)
from sslsv_sb.evaluation.verification import EvalConfig, embed_sets, write_json
from sslsv_sb.export import build_brain
from sslsv_sb.recipe.cli import split_flags
from sslsv_sb.recipe.hparams import load_hparams
from sslsv_sb.recipe.models import load_trained, run_meta
from sslsv_sb.recipe.paths import VOXCELEB_SSL
from sslsv_sb.recipe.runfolder import EvaluationFolders, run_in_folders

FLAGS = {
    "task_csv": None,
    "task_key": None,
    "task_test_csv": None,
    "probes": ["linear", "mlp"],
    "test_fraction": 0.25,
    "checkpoint": "auto",
    "average_last": 1,
    "best_key": "valid_eer",
    "best_mode": "min",
}
PROBES = {"linear": linear_probe, "mlp": mlp_probe}


def split_rows(csv_path, rows, test_fraction, seed):
    """Train / test indices of ``rows``.

    The CSV's ``Set`` column (``train`` / ``test`` rows) if every row has one; else
    held-out speakers (``Speaker`` column, a seeded ``test_fraction`` of the
    speakers) so no speaker is in both sides; else a seeded random row split.

    Arguments
    ---------
    csv_path : str
        The CSV (read again for its ``Speaker`` column).
    rows : list of LabelRow
    test_fraction : float
    seed : int

    Returns
    -------
    (np.ndarray, np.ndarray, str)
        Train indices, test indices, split description.
    """
    sets = [r.set for r in rows]
    if all(s is not None for s in sets):
        tr = np.flatnonzero([s == "train" for s in sets])
        te = np.flatnonzero([s == "test" for s in sets])
        if len(tr) and len(te):
            return tr, te, "Set column"
        raise SSLSVError(f"{csv_path}: column Set needs 'train' and 'test' rows")
    if not 0.0 < float(test_fraction) < 1.0:
        raise SSLSVError(f"--test_fraction must be in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    df = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    if "Speaker" in df.columns and len(df) == len(rows):
        spk = df["Speaker"].to_numpy()
        uniq = np.unique(spk)
        if len(uniq) >= 2:
            n_test = max(1, int(round(test_fraction * len(uniq))))
            test_spk = set(rng.permutation(uniq)[:n_test])
            is_test = np.array([s in test_spk for s in spk])
            return (
                np.flatnonzero(~is_test),
                np.flatnonzero(is_test),
                f"held-out speakers ({n_test}/{len(uniq)}, seed {seed})",
            )
    perm = rng.permutation(len(rows))
    n_test = max(1, int(round(test_fraction * len(rows))))
    return np.sort(perm[n_test:]), np.sort(perm[:n_test]), f"random rows (seed {seed})"


def _probe_names(value):
    """``--probes`` as a list of known probe names."""
    probes = [value] if isinstance(value, str) else list(value)
    bad = [p for p in probes if p not in PROBES]
    if bad:
        raise SSLSVError(f"--probes: unknown {bad}; choose from {list(PROBES)}")
    return probes


def _task_rows(opts, data_folder, seed):
    """Rows of the task CSV(s), train / test indices and the split description."""
    csv_path = resolve(str(opts["task_csv"]), data_folder)
    rows = read_label_csv(csv_path, opts["task_key"], data_folder)
    if opts["task_test_csv"]:
        test_path = resolve(str(opts["task_test_csv"]), data_folder)
        test_rows = read_label_csv(test_path, opts["task_key"], data_folder)
        tr = np.arange(len(rows))
        te = np.arange(len(rows), len(rows) + len(test_rows))
        split = f"test CSV {opts['task_test_csv']}"
        return csv_path, rows + test_rows, tr, te, split
    tr, te, split = split_rows(csv_path, rows, opts["test_fraction"], seed)
    return csv_path, rows, tr, te, split


def _embed_rows(brain, hparams, rows, name):
    """``(len(rows), D)`` embeddings of the rows' files (each file embedded once).

    Returns
    -------
    (np.ndarray, EmbeddingCache)
    """
    cfg = EvalConfig.from_hparams(hparams)
    settings = {
        "crop_seconds": cfg.crop_seconds,
        "n_crops": int(cfg.n_crops) if cfg.crop_seconds else 1,
        "sample_rate": int(cfg.sample_rate),
        "normalize": True,
    }
    cache = EmbeddingCache(
        os.path.join(hparams["output_folder"], "embeddings_cache"),
        model_fingerprint(brain.inference_modules()) if cfg.cache else None,
        settings,
    )
    files = sorted({r.file for r in rows})
    emb = embed_sets(brain.encode, {name: files}, cfg, cache, False)
    row_of = {f: i for i, f in enumerate(files)}
    return emb[name][[row_of[r.file] for r in rows]], cache


def main(argv):
    """Embed the CSV files with the trained encoder and run the probes.

    Arguments
    ---------
    argv : list of str
        ``[hparams file, --key=value, ...]``: the flags of :data:`FLAGS`, yaml
        overrides and SpeechBrain run options.

    Returns
    -------
    dict or int
        The ``downstream.json`` payload; the exit status (143 / 130) after a
        SIGTERM / SIGINT (the embedding cache keeps what was embedded).
    """
    opts, rest = split_flags(argv, FLAGS)
    if not opts["task_csv"] or not opts["task_key"]:
        raise SSLSVError("--task_csv and --task_key are required")
    probes = _probe_names(opts["probes"])
    folders = EvaluationFolders(
        role="downstream.py", purpose="probes a trained run", flag=None
    )
    # SIGTERM / SIGINT: release the locks, exit 143 / 130
    return run_in_folders(folders, _downstream, opts, rest, probes, folders)


def _downstream(opts, rest, probes, folders):
    """:func:`main` with the run folder checked and locked."""
    _, run_opts, _, hparams = load_hparams(
        rest, recipe_dir=str(VOXCELEB_SSL), before_load=folders.claim
    )
    data_folder = hparams["data_folder"]
    out = folders.ensure(hparams)
    seed = int(hparams.get("seed", 0))
    csv_path, all_rows, tr, te, split = _task_rows(opts, data_folder, seed)

    brain = build_brain(hparams, run_opts)
    info = load_trained(
        brain,
        hparams,
        opts["checkpoint"],
        opts["average_last"],
        best_key=opts["best_key"],
        best_mode=opts["best_mode"],
    )
    stem = os.path.splitext(os.path.basename(csv_path))[0]
    x, cache = _embed_rows(brain, hparams, all_rows, f"task_{stem}")
    y = np.array([r.label for r in all_rows])
    if len(np.unique(y[tr])) < 2:
        raise SSLSVError(
            f"{csv_path}: the training split has one class of {opts['task_key']!r}"
        )
    task = {"split": split, "n_classes": int(len(np.unique(y)))}
    for p in probes:
        task[p] = PROBES[p](x[tr], y[tr], x[te], y[te])
    path = os.path.join(out, "downstream.json")
    payload = {"tasks": {}, "meta": {}}
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            payload = json.load(f)
    payload["tasks"][f"{stem}:{opts['task_key']}"] = task
    meta = run_meta(brain, hparams)
    meta.update(info)
    meta["cache"] = {"hits": cache.hits, "misses": cache.misses}
    payload["meta"] = meta
    write_json(path, payload)
    for p in probes:
        m = task[p]
        print(
            f"{stem}:{opts['task_key']} {p:<6} acc {m['accuracy']:.3f} "
            f"F1-macro {m['f1_macro']:.3f} F1-weighted {m['f1_weighted']:.3f}"
        )
    print(f"results written to {path}")
    return payload
