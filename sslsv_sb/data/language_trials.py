"""Language-verification trials: same / different language pairs of held-out speakers.

A language-verification trial asks whether two utterances are in the same language;
it is scored with the speaker-verification code (cosine, EER, minDCF) by writing the
usual ``label enrol test`` trial list (1 = same language). Two rules keep the task
about language, not speaker:

- **no same-speaker pair**: a same-language pair of one speaker would be solved by
  speaker identity (rows without a speaker column count as distinct speakers);
- **held-out speakers**: the trials use a list whose speakers are not in the training
  list (e.g. the embedded corpus's ``test.csv``); :func:`split_speakers` splits one
  list by speakers when there is no such list.

Counts are exact (``n_target`` same-language and ``n_nontarget`` different-language
pairs, no duplicate pair, an :class:`SSLSVError` when fewer exist) and the output is
deterministic by ``seed`` and independent of the row order. Pairs are uniform over the
valid pairs: rejection sampling for large lists, enumeration when the request is
close to all available pairs.

Example
-------
>>> rows = [(f"{l}{s}_{u}.wav", l, f"{l}{s}") for l in "ab" for s in "12" for u in "xy"]
>>> trials = make_language_trials(rows, n_target=4, n_nontarget=6, seed=0)
>>> sum(t[0] for t in trials), len(trials)
(4, 10)
"""

import itertools
import os
from collections import Counter

import numpy as np

from sslsv_sb.data.lists import read_csv_list
from sslsv_sb.errors import SSLSVError


def _pairs(n):
    return n * (n - 1) // 2


def count_pairs(languages, speakers):
    """Numbers of valid same- and different-language pairs.

    Arguments
    ---------
    languages, speakers : list of str
        Per-utterance language and speaker.

    Returns
    -------
    (int, int)
        Same-language / different-language pairs of two different speakers.
    """
    n = len(languages)
    by_lang = Counter(languages)
    by_spk = Counter(speakers)
    by_both = Counter(zip(languages, speakers, strict=True))
    same_lang = sum(_pairs(c) for c in by_lang.values())
    same_spk = sum(_pairs(c) for c in by_spk.values())
    same_both = sum(_pairs(c) for c in by_both.values())
    target = same_lang - same_both
    nontarget = _pairs(n) - same_lang - (same_spk - same_both)
    return target, nontarget


def _sample(rng, want, available, valid, draw, enumerate_all):
    """``want`` distinct unordered pairs (i < j) passing ``valid``."""
    if want > available // 2:
        pairs = enumerate_all()
        pick = rng.choice(len(pairs), size=want, replace=False)
        return [pairs[k] for k in np.sort(pick)]
    chosen, order = set(), []
    while len(order) < want:
        i, j = draw()
        if i == j or not valid(i, j):
            continue
        key = (min(i, j), max(i, j))
        if key not in chosen:
            chosen.add(key)
            order.append(key)
    return order


def make_language_trials(rows, n_target, n_nontarget, seed=0):
    """Build same-language (target) and different-language (non-target) trials.

    Arguments
    ---------
    rows : list of tuple
        ``(file, language, speaker)`` per utterance (speaker may be None: then every
        utterance is its own speaker).
    n_target : int
        Same-language trials (two different speakers).
    n_nontarget : int
        Different-language trials.
    seed : int
        Seed (same rows and seed -> same trials, whatever the row order).

    Returns
    -------
    list of tuple
        ``(label, enrol, test)``, label 1 for same language; shuffled.
    """
    rows = sorted(
        (str(f), str(lang), str(f) if s is None or s == "" else str(s))
        for f, lang, s in rows
    )
    files = [r[0] for r in rows]
    if len(set(files)) != len(files):
        dup = next(f for f, c in Counter(files).items() if c > 1)
        raise SSLSVError(f"language trials: duplicate file {dup}")
    langs = [r[1] for r in rows]
    spks = [r[2] for r in rows]
    if int(n_target) < 0 or int(n_nontarget) < 0:
        raise SSLSVError("language trials: n_target and n_nontarget must be >= 0")
    avail_t, avail_n = count_pairs(langs, spks)
    if n_target > avail_t or n_nontarget > avail_n:
        raise SSLSVError(
            f"language trials: asked for {n_target} same-language and {n_nontarget} "
            f"different-language pairs, but only {avail_t} and {avail_n} exist "
            f"({len(files)} files, {len(set(langs))} languages, {len(set(spks))} "
            "speakers)"
        )
    rng = np.random.default_rng([int(seed), 17])
    lang_arr, spk_arr = np.array(langs), np.array(spks)
    groups = {}
    for i, lang in enumerate(langs):
        groups.setdefault(lang, []).append(i)
    names = sorted(groups)
    weights = np.array([_pairs(len(groups[g])) for g in names], dtype=float)

    def draw_same():
        g = groups[names[rng.choice(len(names), p=weights / weights.sum())]]
        i, j = rng.choice(len(g), size=2, replace=False)
        return g[i], g[j]

    def draw_any():
        i, j = rng.integers(len(files), size=2)
        return int(i), int(j)

    def all_same():
        return [
            (i, j)
            for g in names
            for i, j in itertools.combinations(groups[g], 2)
            if spk_arr[i] != spk_arr[j]
        ]

    def all_diff():
        return [
            (i, j)
            for i, j in itertools.combinations(range(len(files)), 2)
            if lang_arr[i] != lang_arr[j] and spk_arr[i] != spk_arr[j]
        ]

    target = _sample(
        rng,
        int(n_target),
        avail_t,
        lambda i, j: spk_arr[i] != spk_arr[j],
        draw_same,
        all_same,
    )
    nontarget = _sample(
        rng,
        int(n_nontarget),
        avail_n,
        lambda i, j: lang_arr[i] != lang_arr[j] and spk_arr[i] != spk_arr[j],
        draw_any,
        all_diff,
    )
    trials = [(1, i, j) for i, j in target] + [(0, i, j) for i, j in nontarget]
    flip = rng.random(len(trials)) < 0.5
    out = [
        (lab, files[j], files[i]) if f else (lab, files[i], files[j])
        for (lab, i, j), f in zip(trials, flip, strict=True)
    ]
    return [out[k] for k in rng.permutation(len(out))]


def read_language_rows(path, language_key="Language", speaker_key="Speaker"):
    """``(file, language, speaker)`` rows of a ``File,Language[,Speaker]`` CSV.

    Arguments
    ---------
    path : str
        The CSV (``Set`` column ignored).
    language_key, speaker_key : str
        Column names; a missing speaker column gives speaker None.

    Returns
    -------
    list of tuple
    """
    df = read_csv_list(path, ("File", language_key), what="language list")
    spk = df[speaker_key] if speaker_key in df.columns else [None] * len(df)
    return list(zip(df["File"], df[language_key], spk, strict=True))


def split_speakers(rows, test_fraction=0.25, seed=0):
    """Split rows into train / held-out by speaker (seeded, order-independent).

    Arguments
    ---------
    rows : list of tuple
        ``(file, language, speaker)``.
    test_fraction : float
        Fraction of the speakers held out.
    seed : int

    Returns
    -------
    (list, list)
        Train rows and held-out rows; no speaker is in both.
    """
    if not 0.0 < float(test_fraction) < 1.0:
        raise SSLSVError(f"test_fraction must be in (0, 1), got {test_fraction}")
    speakers = sorted({r[2] if r[2] else r[0] for r in rows})
    if len(speakers) < 2:
        raise SSLSVError("split_speakers: need at least 2 speakers")
    rng = np.random.default_rng([int(seed), 23])
    n_test = min(len(speakers) - 1, max(1, round(test_fraction * len(speakers))))
    held = {speakers[k] for k in rng.permutation(len(speakers))[:n_test]}
    test = [r for r in rows if (r[2] if r[2] else r[0]) in held]
    train = [r for r in rows if (r[2] if r[2] else r[0]) not in held]
    return train, test


def write_trials(trials, path):
    """Write ``label enrol test`` lines atomically; return ``path``."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(f"{lab} {a} {b}\n" for lab, a, b in trials)
    os.replace(tmp, path)
    return path
