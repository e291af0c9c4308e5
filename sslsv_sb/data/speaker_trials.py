"""Speaker-verification trials for held-out speakers of a read-speech corpus.

Given the utterances of speakers kept out of training, as ``(file, speaker, session)``
rows (for LibriSpeech the session is the chapter: one book chapter is one recording
session), :func:`build_speaker_trials` writes a ``label enrol test`` trial list:

- **targets**, per speaker, of the hardest kind its data allows:

  * ``cross_session``: two utterances from different sessions (chapters), when the
    speaker has at least two;
  * ``same_session``: two different utterances of the one session the speaker has;
  * ``split_half``: when the speaker has a single utterance, its two halves, written
    as separate files ``<halves_dir>/<speaker>/<utterance>_a.wav`` / ``_b.wav`` so the
    scoring code sees two files. Such targets share the session and the recording
    conditions, so their EER is optimistic (the report counts each kind).

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


def half_paths(file, speaker, halves_dir):
    """Paths (relative like ``halves_dir``) of the two halves of ``file``."""
    stem = os.path.splitext(os.path.basename(file))[0]
    base = f"{halves_dir}/{speaker}/{stem}"
    return f"{base}_a.wav", f"{base}_b.wav"


def plan_speaker_trials(
    rows,
    seed=0,
    nontarget_ratio=10.0,
    max_targets_per_speaker=50,
    halves_dir="halves",
    exclude_speakers=(),
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
        Folder of the split-half files (see :func:`half_paths`).
    exclude_speakers : collection of str
        Speakers left out entirely (e.g. an utterance too short to halve).

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
    rng = np.random.default_rng([int(seed), 37])
    counts = dict.fromkeys(KINDS, 0)
    targets, items, spk_items = [], [], []
    for spk, utts in groups.items():
        sessions = [c for _, c in utts]
        n = len(utts)
        if n == 1:
            f, c = utts[0]
            a, b = half_paths(f, spk, halves_dir)
            first = len(items)
            items += [(a, spk, c, f, "split_half"), (b, spk, c, f, "split_half")]
            targets.append((a, b))
            counts["split_half"] += 1
            spk_items.append([first, first + 1])
            continue
        first = len(items)
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


def write_halves(src, dst_a, dst_b, sample_rate=16000):
    """Write the first and second half of ``src`` as two PCM16 wav files.

    The split is at sample ``n // 2``; 16-bit sources are copied sample-exactly.
    Existing outputs are kept (they are written atomically, so they are complete).

    Arguments
    ---------
    src, dst_a, dst_b : str
        Source audio file and the two output wav files.
    sample_rate : int
        Expected sample rate of ``src``.

    Returns
    -------
    (int, int)
        Samples in each half.
    """
    try:
        wav, sr = sf.read(src, dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError, OSError) as err:
        raise SSLSVError(f"{src}: unreadable or corrupt audio ({err})") from None
    if sr != sample_rate:
        raise SSLSVError(f"{src}: sample rate {sr} Hz, expected {sample_rate} Hz")
    wav = wav.mean(axis=1)
    mid = wav.shape[0] // 2
    for dst, part in ((dst_a, wav[:mid]), (dst_b, wav[mid:])):
        if os.path.isfile(dst):
            continue
        os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
        tmp = f"{dst}.tmp"
        sf.write(tmp, part, sr, subtype="PCM_16", format="WAV")
        os.replace(tmp, dst)
    return mid, wav.shape[0] - mid


def build_speaker_trials(
    rows,
    data_folder,
    halves_dir="halves",
    seed=0,
    nontarget_ratio=10.0,
    max_targets_per_speaker=50,
    min_half_seconds=1.0,
    sample_rate=16000,
    report=None,
):
    """Plan the trials and write the split-half files they need.

    Arguments
    ---------
    rows : list of tuple
        ``(file, speaker, session)`` of every held-out utterance; ``file`` relative to
        ``data_folder`` (or absolute).
    data_folder : str
        Data folder (the halves are written under ``data_folder/halves_dir``).
    halves_dir : str
        Folder of the split-half files, relative to ``data_folder``.
    seed, nontarget_ratio, max_targets_per_speaker
        See :func:`plan_speaker_trials`.
    min_half_seconds : float
        A single-utterance speaker whose halves would be shorter is left out
        (counted in ``skipped_speakers``).
    sample_rate : int
        Expected sample rate.
    report : sslsv_sb.data.prepare.common.Report or None
        Log of the counts.

    Returns
    -------
    (list of tuple, list of tuple, dict)
        As :func:`plan_speaker_trials`, plus ``skipped_speakers`` (sorted list) in
        the counts.
    """
    per_spk = defaultdict(list)
    for f, s, _ in rows:
        per_spk[str(s)].append(str(f))
    short = []
    for spk, files in sorted(per_spk.items()):
        if len(set(files)) != 1:
            continue
        path = os.path.join(data_folder, files[0])
        try:
            frames = sf.info(path).frames
        except (RuntimeError, sf.LibsndfileError, OSError) as err:
            raise SSLSVError(f"{path}: unreadable or corrupt audio ({err})") from None
        if frames < 2 * min_half_seconds * sample_rate:
            short.append(spk)
    trials, items, counts = plan_speaker_trials(
        rows, seed, nontarget_ratio, max_targets_per_speaker, halves_dir, short
    )
    for f, _, _, src, kind in items:
        if kind == "split_half" and f.endswith("_a.wav"):
            a, b = f, f[: -len("_a.wav")] + "_b.wav"
            write_halves(
                os.path.join(data_folder, src),
                os.path.join(data_folder, a),
                os.path.join(data_folder, b),
                sample_rate,
            )
    counts["skipped_speakers"] = short
    if report is not None:
        kinds = ", ".join(f"{counts[k]} {k.replace('_', '-')}" for k in KINDS)
        msg = (
            f"{counts['speakers']} held-out speakers: {counts['target']} targets "
            f"({kinds}), {counts['nontarget']} non-targets"
        )
        if short:
            msg += (
                f"; {len(short)} single-utterance speakers left out (halves shorter "
                f"than {min_half_seconds} s: {', '.join(short[:5])}"
                f"{' ...' if len(short) > 5 else ''})"
            )
        report.log(msg)
    return trials, items, counts
