"""Speaker-verification trials for held-out speakers of a read-speech corpus.

Given the utterances of speakers kept out of training, as ``(file, speaker, session)``
rows (for LibriSpeech the session is the chapter: one book chapter is one recording
session), :func:`build_speaker_trials` writes a ``label enrol test`` trial list:

- **targets**, per speaker, of the hardest kind its data allows:

  * ``cross_session``: two utterances from different sessions (chapters), when the
    speaker has at least two;
  * ``same_session``: two different utterances of the one session the speaker has;
  * ``split_half``: when the speaker has a single utterance, pairs of its parts: the
    utterance is cut into ``split_parts`` equal parts (two halves by default), written
    as separate files ``<halves_dir>/<speaker>/<utterance>_<i>of<k>.wav`` so the
    scoring code sees ``k`` files and ``k (k - 1) / 2`` target pairs. Such targets
    share the session and the recording conditions, so their EER is optimistic (the
    report counts each kind). More parts give more (shorter, correlated) targets: on
    a corpus with one utterance per speaker, two halves give one target per speaker,
    too few for a stable EER.

  At most ``max_targets_per_speaker`` pairs per speaker, uniform over its valid pairs.
- **non-targets**: ``round(nontarget_ratio * targets)`` distinct pairs of files of two
  different held-out speakers. A speaker pair is drawn uniformly, then one file of each
  (speakers with many utterances do not dominate); split-half speakers take part
  through their halves, the others through their utterances.

The output depends only on the rows (not their order) and ``seed``: the same seed gives
the same list, another seed another one. Each trial's enrol / test order is drawn at
random and the list is sorted by (enrol, test).

Example
-------
>>> rows = [(f"s{s}/c{c}/u{u}.flac", f"s{s}", f"c{c}")
...         for s in range(3) for c in range(2) for u in range(2)]
>>> trials, items, counts = plan_speaker_trials(
...     rows, nontarget_ratio=2, max_targets_per_speaker=3)
>>> counts["cross_session"], counts["nontarget"], len(trials)
(9, 18, 27)
"""

import os
from collections import defaultdict

import numpy as np
import soundfile as sf

from sslsv_sb.errors import SSLSVError

KINDS = ("cross_session", "same_session", "split_half")


def split_speakers(speakers, n_held_out, seed=0):
    """Split speakers into train / held-out, seeded and independent of their order.

    Arguments
    ---------
    speakers : iterable of str
        Speaker ids (duplicates are ignored).
    n_held_out : int
        Number of speakers held out (at least 2, at most all but one).
    seed : int
        Seed of the draw.

    Returns
    -------
    (list of str, list of str)
        Sorted train speakers and sorted held-out speakers (disjoint).

    Example
    -------
    >>> train, held = split_speakers([f"s{i}" for i in range(10)], 3, seed=0)
    >>> len(train), len(held), set(train) & set(held)
    (7, 3, set())
    """
    pool = sorted({str(s) for s in speakers})
    n = int(n_held_out)
    if not 2 <= n < len(pool):
        raise SSLSVError(
            f"held-out speakers: asked for {n} of {len(pool)} speakers; need at least "
            "2 held out (non-targets pair two speakers) and 1 left for training"
        )
    rng = np.random.default_rng([int(seed), 31])
    held = {pool[k] for k in rng.permutation(len(pool))[:n]}
    return [s for s in pool if s not in held], sorted(held)


def _n_pairs(n):
    return n * (n - 1) // 2


def _sample_pairs(rng, n, want, valid, available):
    """``want`` distinct index pairs ``(i, j)``, ``i < j < n``, passing ``valid``.

    Uniform over the ``available`` valid pairs: enumeration when ``want`` is more
    than half of them, rejection sampling otherwise.
    """
    if want >= available:
        return [(i, j) for i in range(n) for j in range(i + 1, n) if valid(i, j)]
    if 2 * want > available:
        pairs = [(i, j) for i in range(n) for j in range(i + 1, n) if valid(i, j)]
        return [pairs[k] for k in np.sort(rng.choice(len(pairs), want, replace=False))]
    chosen, order = set(), []
    while len(order) < want:
        i, j = (int(x) for x in rng.integers(n, size=2))
        key = (min(i, j), max(i, j))
        if i != j and valid(*key) and key not in chosen:
            chosen.add(key)
            order.append(key)
    return order


def _group(rows):
    """Sorted unique rows grouped ``{speaker: [(file, session), ...]}``."""
    rows = sorted({(str(f), str(s), str(c)) for f, s, c in rows})
    files = [r[0] for r in rows]
    if len(set(files)) != len(files):
        dup = next(f for k, f in enumerate(files[1:]) if f == files[k])
        raise SSLSVError(f"speaker trials: file {dup} listed for two speakers/sessions")
    groups = defaultdict(list)
    for f, s, c in rows:
        groups[s].append((f, c))
    return dict(sorted(groups.items()))


def part_paths(file, speaker, halves_dir, parts=2):
    """Paths (relative like ``halves_dir``) of the ``parts`` equal parts of ``file``.

    Example
    -------
    >>> part_paths("x/19-198-0001.flac", "19", "h", 3)[1:]
    ['h/19/19-198-0001_2of3.wav', 'h/19/19-198-0001_3of3.wav']
    """
    stem = os.path.splitext(os.path.basename(file))[0]
    base = f"{halves_dir}/{speaker}/{stem}"
    return [f"{base}_{i}of{parts}.wav" for i in range(1, int(parts) + 1)]


def plan_speaker_trials(
    rows,
    seed=0,
    nontarget_ratio=10.0,
    max_targets_per_speaker=50,
    halves_dir="halves",
    exclude_speakers=(),
    split_parts=2,
):
    """Choose the target and non-target pairs (no file is read or written).

    Arguments
    ---------
    rows : list of tuple
        ``(file, speaker, session)`` of every held-out utterance.
    seed : int
        Seed (same rows and seed -> same plan, whatever the row order).
    nontarget_ratio : float
        Non-target trials per target trial.
    max_targets_per_speaker : int or None
        Cap on the target pairs of one speaker (None: every valid pair).
    halves_dir : str
        Folder of the split-utterance files (see :func:`part_paths`).
    exclude_speakers : collection of str
        Speakers left out entirely (e.g. an utterance too short to halve).
    split_parts : int or dict
        Parts a single utterance is cut into (>= 2), or ``{speaker: parts}`` for the
        single-utterance speakers (missing speakers: 2).

    Returns
    -------
    (list of tuple, list of tuple, dict)
        Trials ``(label, enrol, test)`` sorted by (enrol, test); the trial files as
        ``(file, speaker, session, source file, kind)`` (``source file`` is the
        utterance a half comes from); counts per target kind plus ``target``,
        ``nontarget`` and ``speakers``.
    """
    groups = {
        s: u for s, u in _group(rows).items() if s not in set(exclude_speakers)
    }
    if len(groups) < 2:
        raise SSLSVError(
            f"speaker trials: {len(groups)} usable held-out speaker(s); non-target "
            "trials need at least 2"
        )
    if float(nontarget_ratio) < 0:
        raise SSLSVError(f"nontarget_ratio must be >= 0, got {nontarget_ratio}")
    cap = None if max_targets_per_speaker is None else int(max_targets_per_speaker)
    if cap is not None and cap < 1:
        raise SSLSVError(
            f"max_targets_per_speaker must be >= 1, got {max_targets_per_speaker}"
        )
    if isinstance(split_parts, dict):
        parts_of = {str(k): int(v) for k, v in split_parts.items()}
        default_parts = 2
    else:
        parts_of, default_parts = {}, int(split_parts)
    bad = [(s, k) for s, k in [("*", default_parts), *parts_of.items()] if k < 2]
    if bad:
        raise SSLSVError(f"split_parts must be >= 2, got {bad[0][1]} ({bad[0][0]})")
    rng = np.random.default_rng([int(seed), 37])
    counts = dict.fromkeys(KINDS, 0)
    targets, items, spk_items = [], [], []
    for spk, utts in groups.items():
        sessions = [c for _, c in utts]
        n = len(utts)
        first = len(items)
        if n == 1:
            f, c = utts[0]
            paths = part_paths(f, spk, halves_dir, parts_of.get(spk, default_parts))
            k = len(paths)
            items += [(p, spk, c, f, "split_half") for p in paths]
            want = _n_pairs(k) if cap is None else min(cap, _n_pairs(k))
            for i, j in _sample_pairs(rng, k, want, lambda i, j: True, _n_pairs(k)):
                targets.append((paths[i], paths[j]))
            counts["split_half"] += want
            spk_items.append(list(range(first, first + k)))
            continue
        n_cross = _n_pairs(n) - sum(
            _n_pairs(sessions.count(c)) for c in sorted(set(sessions))
        )
        if n_cross > 0:
            kind, available = "cross_session", n_cross

            def valid(i, j, sessions=sessions):
                return sessions[i] != sessions[j]

        else:
            kind, available = "same_session", _n_pairs(n)

            def valid(i, j):
                return True

        want = available if cap is None else min(cap, available)
        for i, j in _sample_pairs(rng, n, want, valid, available):
            targets.append((utts[i][0], utts[j][0]))
        counts[kind] += want
        items += [(f, spk, c, f, kind) for f, c in utts]
        spk_items.append(list(range(first, first + n)))

    want_nt = int(round(float(nontarget_ratio) * len(targets)))
    sizes = np.array([len(g) for g in spk_items])
    available = (int(sizes.sum()) ** 2 - int((sizes**2).sum())) // 2
    if want_nt > available:
        raise SSLSVError(
            f"speaker trials: asked for {want_nt} non-target pairs "
            f"(nontarget_ratio {nontarget_ratio} x {len(targets)} targets) but only "
            f"{available} exist ({len(items)} files of {len(groups)} speakers); lower "
            "nontarget_ratio"
        )
    owner = np.repeat(np.arange(len(spk_items)), sizes)
    if 2 * want_nt > available:
        nontargets = _sample_pairs(
            rng, len(items), want_nt, lambda i, j: owner[i] != owner[j], available
        )
    else:
        chosen, nontargets = set(), []
        n_spk = len(spk_items)
        while len(nontargets) < want_nt:
            k = 2 * (want_nt - len(nontargets))
            s1 = rng.integers(n_spk, size=k)
            s2 = rng.integers(n_spk - 1, size=k)
            s2 = s2 + (s2 >= s1)  # a different speaker, uniform
            u1 = rng.random(k)
            u2 = rng.random(k)
            for a, b, x, y in zip(s1, s2, u1, u2, strict=True):
                i = spk_items[a][int(x * sizes[a])]
                j = spk_items[b][int(y * sizes[b])]
                key = (min(i, j), max(i, j))
                if key not in chosen:
                    chosen.add(key)
                    nontargets.append(key)
                    if len(nontargets) == want_nt:
                        break
    nontargets = [(items[i][0], items[j][0]) for i, j in nontargets]
    pairs = [(1, a, b) for a, b in targets] + [(0, a, b) for a, b in nontargets]
    flip = rng.random(len(pairs)) < 0.5
    trials = sorted(
        (lab, b, a) if f else (lab, a, b)
        for (lab, a, b), f in zip(pairs, flip, strict=True)
    )
    counts.update(target=len(targets), nontarget=len(nontargets), speakers=len(groups))
    return trials, items, counts


def write_parts(src, dsts, sample_rate=16000):
    """Write ``len(dsts)`` consecutive equal parts of ``src`` as PCM16 wav files.

    Part ``i`` of ``k`` is samples ``[i n // k, (i + 1) n // k)``; 16-bit sources are
    copied sample-exactly. Existing outputs are kept (they are written atomically, so
    they are complete, and their names carry ``k``).

    Arguments
    ---------
    src : str
        Source audio file.
    dsts : list of str
        Output wav files, in order.
    sample_rate : int
        Expected sample rate of ``src``.

    Returns
    -------
    list of int
        Samples in each part.
    """
    try:
        wav, sr = sf.read(src, dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError, OSError) as err:
        raise SSLSVError(f"{src}: unreadable or corrupt audio ({err})") from None
    if sr != sample_rate:
        raise SSLSVError(f"{src}: sample rate {sr} Hz, expected {sample_rate} Hz")
    wav = wav.mean(axis=1)
    k = len(dsts)
    bounds = [i * wav.shape[0] // k for i in range(k + 1)]
    for dst, a, b in zip(dsts, bounds[:-1], bounds[1:], strict=True):
        if os.path.isfile(dst):
            continue
        os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
        tmp = f"{dst}.tmp"
        sf.write(tmp, wav[a:b], sr, subtype="PCM_16", format="WAV")
        os.replace(tmp, dst)
    return [b - a for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def build_speaker_trials(
    rows,
    data_folder,
    halves_dir="halves",
    seed=0,
    nontarget_ratio=10.0,
    max_targets_per_speaker=50,
    min_part_seconds=1.0,
    sample_rate=16000,
    report=None,
    split_parts=2,
):
    """Plan the trials and write the split-utterance files they need.

    Arguments
    ---------
    rows : list of tuple
        ``(file, speaker, session)`` of every held-out utterance; ``file`` relative to
        ``data_folder`` (or absolute).
    data_folder : str
        Data folder (the parts are written under ``data_folder/halves_dir``).
    halves_dir : str
        Folder of the split-utterance files, relative to ``data_folder``.
    seed, nontarget_ratio, max_targets_per_speaker
        See :func:`plan_speaker_trials`.
    min_part_seconds : float
        Shortest part: a single utterance is cut into as many of ``split_parts``
        parts as are at least this long; a speaker whose utterance cannot give two
        is left out (counted in ``skipped_speakers``).
    sample_rate : int
        Expected sample rate.
    report : sslsv_sb.data.prepare.common.Report or None
        Log of the counts.
    split_parts : int
        Parts of a single utterance (2: halves).

    Returns
    -------
    (list of tuple, list of tuple, dict)
        As :func:`plan_speaker_trials`, plus ``skipped_speakers`` (sorted list) in
        the counts.
    """
    if int(split_parts) < 2:
        raise SSLSVError(f"split_parts must be >= 2, got {split_parts}")
    if float(min_part_seconds) <= 0:
        raise SSLSVError(f"min_part_seconds must be > 0, got {min_part_seconds}")
    per_spk = defaultdict(list)
    for f, s, _ in rows:
        per_spk[str(s)].append(str(f))
    short, parts = [], {}
    for spk, files in sorted(per_spk.items()):
        if len(set(files)) != 1:
            continue
        path = os.path.join(data_folder, files[0])
        try:
            frames = sf.info(path).frames
        except (RuntimeError, sf.LibsndfileError, OSError) as err:
            raise SSLSVError(f"{path}: unreadable or corrupt audio ({err})") from None
        fit = int(frames // (float(min_part_seconds) * sample_rate))
        if fit < 2:
            short.append(spk)
        parts[spk] = max(2, min(int(split_parts), fit))
    trials, items, counts = plan_speaker_trials(
        rows, seed, nontarget_ratio, max_targets_per_speaker, halves_dir, short, parts
    )
    by_source = defaultdict(list)
    for f, _, _, src, kind in items:
        if kind == "split_half":
            by_source[src].append(os.path.join(data_folder, f))
    for src, dsts in by_source.items():
        write_parts(os.path.join(data_folder, src), dsts, sample_rate)
    counts["skipped_speakers"] = short
    if report is not None:
        kinds = ", ".join(f"{counts[k]} {k.replace('_', '-')}" for k in KINDS)
        msg = (
            f"{counts['speakers']} held-out speakers: {counts['target']} targets "
            f"({kinds}), {counts['nontarget']} non-targets"
        )
        if short:
            msg += (
                f"; {len(short)} single-utterance speakers left out (two parts "
                f"shorter than {min_part_seconds} s: {', '.join(short[:5])}"
                f"{' ...' if len(short) > 5 else ''})"
            )
        report.log(msg)
    return trials, items, counts
