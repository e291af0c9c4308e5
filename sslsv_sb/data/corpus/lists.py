"""Train / test lists, trials and the manifest of a rendered corpus."""

import hashlib
import itertools

import numpy as np

from sslsv_sb.data.corpus.config import GENERATOR_VERSION
from sslsv_sb.data.corpus.files import csv_text, write_text_atomic

_LIST_HEADER = ["File", "Speaker", "Session", "Language", "Gender"]


def make_trials(test_rows, nontarget_ratio, seed):
    """Build cross-session target and sampled non-target trials.

    Arguments
    ---------
    test_rows : list of tuple
        ``(file, speaker, session)`` of every test utterance.
    nontarget_ratio : float
        Non-target trials per target trial (capped by the available pairs).
    seed : int

    Returns
    -------
    list of tuple
        ``(label, enrol, test)`` with label 1 (target) or 0; no duplicate pairs.
    """
    rng = np.random.default_rng([seed, 6])
    files = [r[0] for r in test_rows]
    spk = np.array([r[1] for r in test_rows])
    sess = np.array([f"{r[1]}/{r[2]}" for r in test_rows])
    targets = [
        (1, files[i], files[j])
        for i, j in itertools.combinations(range(len(files)), 2)
        if spk[i] == spk[j] and sess[i] != sess[j]
    ]
    n = len(files)
    same_spk = sum(
        int(c) * (int(c) - 1) // 2 for c in np.unique(spk, return_counts=True)[1]
    )
    available = n * (n - 1) // 2 - same_spk
    want = min(int(round(len(targets) * nontarget_ratio)), available)
    chosen = set()
    if want > available // 2:
        pairs = [
            (i, j) for i, j in itertools.combinations(range(n), 2) if spk[i] != spk[j]
        ]
        idx = rng.choice(len(pairs), size=want, replace=False)
        chosen = [pairs[k] for k in sorted(idx)]
    else:
        order = []
        while len(order) < want:
            i, j = rng.integers(n, size=2)
            if spk[i] == spk[j]:
                continue
            key = (min(i, j), max(i, j))
            if key not in chosen:
                chosen.add(key)
                order.append(key if rng.random() < 0.5 else (key[1], key[0]))
        chosen = order
    nontargets = [(0, files[i], files[j]) for i, j in chosen]
    trials = targets + nontargets
    perm = rng.permutation(len(trials))
    return [trials[k] for k in perm]


def write_lists(out, cfg, speakers, lengths):
    """Write train/test lists, the SpeechBrain CSV and trials; return the manifest."""
    sr = cfg.sample_rate
    train_rows, test_rows, sb_rows = [], [], []
    for spk in speakers:
        for sess in spk["sessions"]:
            for k in range(1, len(sess["utts"]) + 1):
                rel = f"wav/{spk['id']}/{sess['id']}/{k:05d}.wav"
                row = [rel, spk["id"], sess["id"], spk["voice"]["language"]]
                row.append(spk["voice"]["gender"])
                if spk["set"] == "train":
                    train_rows.append(row)
                    n = lengths[rel]
                    uid = f"{spk['id']}_{sess['id']}_{k:05d}"
                    sb_rows.append([uid, f"{n / sr:.4f}", rel, 0, n, spk["id"]])
                else:
                    test_rows.append(row)
    trials = make_trials(
        [(r[0], r[1], r[2]) for r in test_rows], cfg.nontarget_ratio, cfg.seed
    )
    write_text_atomic(out / "train.csv", csv_text(_LIST_HEADER, train_rows))
    write_text_atomic(out / "test.csv", csv_text(_LIST_HEADER, test_rows))
    write_text_atomic(
        out / "train_sb.csv",
        csv_text(["ID", "duration", "wav", "start", "stop", "spk_id"], sb_rows),
    )
    write_text_atomic(
        out / "trials.txt", "".join(f"{lab} {a} {b}\n" for lab, a, b in trials)
    )
    utt_samples = [lengths[r[0]] for r in train_rows + test_rows]
    n_target = sum(t[0] for t in trials)
    digest = hashlib.sha256()
    for rel in sorted(lengths):
        digest.update(f"{rel}:{lengths[rel]}\n".encode())
    return {
        "generator_version": GENERATOR_VERSION,
        "config": cfg.to_dict(),
        "counts": {
            "train_speakers": cfg.n_train_speakers,
            "test_speakers": cfg.n_test_speakers,
            "train_utterances": len(train_rows),
            "test_utterances": len(test_rows),
            "utterances": len(utt_samples),
            "sessions": sum(len(s["sessions"]) for s in speakers),
            "target_trials": n_target,
            "nontarget_trials": len(trials) - n_target,
            "noise_files": sum(1 for r in lengths if r.startswith("noise/")),
            "rirs": sum(1 for r in lengths if r.startswith("rirs/")),
        },
        "total_duration_hours": round(sum(utt_samples) / sr / 3600, 4),
        "files": {
            "train": "train.csv",
            "train_sb": "train_sb.csv",
            "test": "test.csv",
            "trials": "trials.txt",
            "noise": "noise",
            "rirs": "rirs",
        },
        "layout_digest": digest.hexdigest()[:16],
    }
