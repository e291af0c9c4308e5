"""``recipes/VoxCeleb/SSL/pseudo_labels.py``: pseudo-speaker labels from an SSL run.

Stage 2 of the two-stage training (``docs/ssps_and_two_stage.md``): :func:`main`
embeds the train list with a trained run's encoder, clusters the embeddings into
pseudo-speakers (:func:`cluster`: k-means, then optional agglomerative merging) and
writes ``pseudo_labels.csv`` (the train list of stage 3), ``ssl_encoder.ckpt`` and
``pseudo_labels.json`` (cluster sizes, :func:`label_metrics` against the true
speakers when the list has them, :func:`ssl_eers` of the SSL run).

The folders are checked and locked before the yaml builds anything, as by
``evaluate.py --eval_folder`` (:class:`sslsv_sb.recipe.runfolder.EvaluationFolders`):
a missing run folder is an error and is never created; the run is read under a
shared lock (refused while it is trained) and the results folder
(``--pseudo_folder``, default ``<run>/pseudo_labels``) is locked exclusively, so a
second ``pseudo_labels.py`` writing there is refused with one line naming the holder.
Every results file is written under a temporary name and renamed.
"""

import json
import logging
import os

import numpy as np
import torch

from sslsv_sb.clustering import spherical_kmeans
from sslsv_sb.data.lists import read_train_list, resolve
from sslsv_sb.errors import SSLSVError
from sslsv_sb.evaluation.embeddings import extract_embeddings
from sslsv_sb.export import atomic_path
from sslsv_sb.recipe.cli import split_flags
from sslsv_sb.recipe.hparams import load_hparams
from sslsv_sb.recipe.models import build_run_brain, load_trained
from sslsv_sb.recipe.paths import VOXCELEB_SSL
from sslsv_sb.recipe.runfolder import EvaluationFolders, run_in_folders

logger = logging.getLogger(__name__)

FLAGS = {
    "n_clusters": None,
    "merge_threshold": None,
    "n_merged": None,
    "pseudo_folder": None,
    "crop_seconds": None,
    "n_crops": 1,
    "checkpoint": "auto",
    "kmeans_n_init": 3,
    "kmeans_max_iter": 100,
    "label_column": "Speaker",
    "cluster_seed": 0,
}


def cluster(
    embeddings,
    n_clusters,
    merge_threshold=None,
    n_merged=None,
    seed=0,
    n_init=3,
    max_iter=100,
):
    """k-means into pseudo-speakers, then optional agglomerative merging.

    Arguments
    ---------
    embeddings : np.ndarray
        ``(N, D)`` embeddings (L2-normalised here: spherical geometry).
    n_clusters : int
        K of the k-means (over-clustering is fine when merging follows).
    merge_threshold : float, optional
        Merge clusters whose centroids' cosine distance (average linkage) is below
        this value.
    n_merged : int, optional
        Merge down to this many clusters instead (exclusive with the threshold).
    seed : int
        k-means seed.
    n_init, max_iter : int
        k-means restarts and iterations.

    Returns
    -------
    np.ndarray
        ``(N,)`` int labels in ``0..K'-1`` (sorted by first appearance).
    """
    from sklearn.cluster import AgglomerativeClustering

    if merge_threshold is not None and n_merged is not None:
        raise SSLSVError("give --merge_threshold or --n_merged, not both")
    x = embeddings / np.maximum(
        np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12
    )
    n_clusters = int(n_clusters)
    if not 2 <= n_clusters <= len(x):
        raise SSLSVError(
            f"--n_clusters={n_clusters} must be in [2, {len(x)}] (utterances)"
        )
    centroids, labels = spherical_kmeans(
        torch.as_tensor(x, dtype=torch.float32),
        n_clusters,
        n_iters=int(max_iter),
        generator=torch.Generator().manual_seed(int(seed)),
        n_init=int(n_init),
    )
    centroids, labels = centroids.numpy(), labels.numpy()
    if merge_threshold is not None or n_merged is not None:
        if n_merged is not None and not 1 <= int(n_merged) <= n_clusters:
            raise SSLSVError(f"--n_merged must be in [1, {n_clusters}]")
        agg = AgglomerativeClustering(
            n_clusters=None if n_merged is None else int(n_merged),
            distance_threshold=None
            if merge_threshold is None
            else float(merge_threshold),
            metric="cosine",
            linkage="average",
        )
        labels = agg.fit_predict(centroids)[labels]
    _, first = np.unique(labels, return_index=True)
    remap = {lab: i for i, lab in enumerate(labels[np.sort(first)])}
    return np.array([remap[lab] for lab in labels], dtype=np.int64)


def label_metrics(pseudo, true):
    """NMI / ARI / purity of pseudo-labels against true speakers.

    Arguments
    ---------
    pseudo : np.ndarray
        ``(N,)`` pseudo-speaker ids.
    true : sequence
        ``(N,)`` true speaker names.

    Returns
    -------
    dict
        ``nmi``, ``ari``, ``purity`` (fraction of utterances whose pseudo-speaker's
        majority speaker is theirs), ``n_true_speakers``.
    """
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    _, t = np.unique(np.asarray(true), return_inverse=True)
    table = np.zeros((pseudo.max() + 1, t.max() + 1), dtype=np.int64)
    np.add.at(table, (pseudo, t), 1)
    return {
        "nmi": float(normalized_mutual_info_score(t, pseudo)),
        "ari": float(adjusted_rand_score(t, pseudo)),
        "purity": float(table.max(axis=1).sum() / len(t)),
        "n_true_speakers": int(t.max() + 1),
    }


def ssl_eers(folder):
    """``{list: EER %}`` from the SSL run's verification.json, if present."""
    path = os.path.join(folder, "verification.json")
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        ver = json.load(f)
    return {
        name: float(res["cosine"]["eer"])
        for name, res in ver.get("lists", {}).items()
        if "cosine" in res
    }


def write_pseudo_list(path, df, labels):
    """Write the ``File,Speaker`` train list of stage 3 (atomically).

    Arguments
    ---------
    path : str
        Output CSV.
    df : pandas.DataFrame
        The train list (``File`` as written there), in the embedding order.
    labels : np.ndarray
        ``(N,)`` pseudo-speaker ids; speaker ``pseudo_<id, 5 digits>``.

    Returns
    -------
    str
        ``path``.
    """
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write("File,Speaker\n")
        for name, lab in zip(df["File"], labels):
            f.write(f"{name},pseudo_{lab:05d}\n")
    return path


def summary(payload):
    """One line: pseudo-speakers and, when known, NMI / ARI / purity."""
    line = f"{payload['n_pseudo_speakers']} pseudo-speakers"
    if "vs_true_speakers" in payload:
        m = payload["vs_true_speakers"]
        line += (
            f" for {m['n_true_speakers']} true speakers: NMI {m['nmi']:.3f}, "
            f"ARI {m['ari']:.3f}, purity {m['purity']:.3f}"
        )
    return line


def main(argv):
    """Stage 2: embed, cluster, write the pseudo-label list and the SSL encoder.

    Arguments
    ---------
    argv : list of str
        ``[hparams file, --key=value, ...]``: the flags of :data:`FLAGS`
        (``--n_clusters`` is required), yaml overrides (the SSL run's) and
        SpeechBrain run options.

    Returns
    -------
    dict or int
        The ``pseudo_labels.json`` payload; the exit status (143 / 130) after a
        SIGTERM / SIGINT.
    """
    opts, rest = split_flags(argv, FLAGS)
    if opts["n_clusters"] is None:
        raise SSLSVError("--n_clusters is required (k-means K)")
    folders = EvaluationFolders(
        opts["pseudo_folder"],
        role="pseudo_labels.py",
        purpose="clusters a trained run's embeddings",
        flag="--pseudo_folder",
        subfolder="pseudo_labels",
    )
    # SIGTERM / SIGINT: release the locks, exit 143 / 130
    return run_in_folders(folders, _pseudo_labels, opts, rest, folders)


def _pseudo_labels(opts, rest, folders):
    """:func:`main` with its folders checked and locked."""
    _, run_opts, _, hparams = load_hparams(
        rest, recipe_dir=str(VOXCELEB_SSL), before_load=folders.claim
    )
    data_folder = hparams["data_folder"]
    out = folders.ensure(hparams)
    run_folder = folders.run
    brain = build_run_brain(hparams, run_opts, opts["checkpoint"])
    info = load_trained(brain, hparams, opts["checkpoint"])

    list_path = resolve(hparams["train_list"], data_folder)
    key = opts["label_column"]
    df = read_train_list(list_path, data_folder, label_key=None)
    # rows in train.py's dataset order (Set filtering included)
    logger.info("embedding %d utterances of %s", len(df), list_path)
    emb = extract_embeddings(
        brain.encode,
        list(df["path"]),
        crop_seconds=opts["crop_seconds"],
        n_crops=int(opts["n_crops"]),
        sample_rate=int(hparams.get("sample_rate", 16000)),
        progress=not run_opts.get("noprogressbar", False),
    )
    labels = cluster(
        emb,
        opts["n_clusters"],
        merge_threshold=opts["merge_threshold"],
        n_merged=opts["n_merged"],
        seed=opts["cluster_seed"],
        n_init=opts["kmeans_n_init"],
        max_iter=opts["kmeans_max_iter"],
    )
    csv_path = write_pseudo_list(os.path.join(out, "pseudo_labels.csv"), df, labels)
    model = brain.inference_modules()[2]
    with atomic_path(os.path.join(out, "ssl_encoder.ckpt")) as tmp:
        torch.save(model.state_dict(), tmp)

    sizes = np.bincount(labels)
    payload = {
        "run": os.path.abspath(run_folder),
        "checkpoint": info.get("checkpoints"),
        "train_list": list_path,
        "n_utterances": int(len(labels)),
        "kmeans_clusters": int(opts["n_clusters"]),
        "merge_threshold": opts["merge_threshold"],
        "n_merged": opts["n_merged"],
        "n_pseudo_speakers": int(len(sizes)),
        "cluster_size": {
            "min": int(sizes.min()),
            "median": float(np.median(sizes)),
            "max": int(sizes.max()),
            "singletons": int((sizes == 1).sum()),
        },
        "ssl_eer": ssl_eers(run_folder),
    }
    if key and key in df.columns:
        payload["vs_true_speakers"] = label_metrics(labels, df[key].to_numpy())
    with (
        atomic_path(os.path.join(out, "pseudo_labels.json")) as tmp,
        open(tmp, "w", encoding="utf-8") as f,
    ):
        json.dump(payload, f, indent=2)
    print(summary(payload))
    print(f"pseudo-label list: {csv_path}")
    print(
        "stage 3: python recipes/VoxCeleb/SSL/train.py "
        "hparams/supervised_pseudo_ecapa.yaml "
        f"--pseudo_folder={out} --n_classes={payload['n_pseudo_speakers']} "
        f"--data_folder={data_folder}"
    )
    return payload
