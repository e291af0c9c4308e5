"""Language-verification trials: exact counts, deterministic, no same-speaker pair."""

import itertools

import pytest

from sslsv_sb.data.language_trials import (
    count_pairs,
    make_language_trials,
    read_language_rows,
    split_speakers,
    write_trials,
)
from sslsv_sb.errors import SSLSVError


def make_rows(langs="abc", spk_per_lang=3, utts=4):
    return [
        (f"wav/{lang}{s}/{u}.wav", lang, f"{lang}{s}")
        for lang in langs
        for s in range(spk_per_lang)
        for u in range(utts)
    ]


def brute_force(rows):
    same = diff = 0
    for (_, la, sa), (_, lb, sb) in itertools.combinations(rows, 2):
        if sa == sb:
            continue
        same += la == lb
        diff += la != lb
    return same, diff


@pytest.mark.parametrize(
    "rows", [make_rows(), make_rows("ab", 2, 5), make_rows("abcd", 1, 3)]
)
def test_count_pairs_matches_brute_force(rows):
    assert count_pairs([r[1] for r in rows], [r[2] for r in rows]) == brute_force(rows)


@pytest.mark.parametrize("n_t,n_n", [(10, 30), (100, 50), (144, 288)])
def test_exact_counts_and_validity(n_t, n_n):
    rows = make_rows()  # 36 files, 3 languages: 144 same / 432 different available
    lang = {f: lg for f, lg, _ in rows}
    spk = {f: s for f, _, s in rows}
    trials = make_language_trials(rows, n_t, n_n, seed=1)
    assert sum(t[0] for t in trials) == n_t
    assert len(trials) == n_t + n_n
    pairs = {frozenset((a, b)) for _, a, b in trials}
    assert len(pairs) == len(trials)  # no duplicate pair, no self pair
    for lab, a, b in trials:
        assert spk[a] != spk[b]
        assert lab == int(lang[a] == lang[b])


def test_deterministic_and_order_independent():
    rows = make_rows()
    a = make_language_trials(rows, 20, 20, seed=5)
    assert a == make_language_trials(list(reversed(rows)), 20, 20, seed=5)
    assert a != make_language_trials(rows, 20, 20, seed=6)


def test_too_many_trials_and_duplicates():
    rows = make_rows()
    with pytest.raises(SSLSVError, match="only 144 and 432"):
        make_language_trials(rows, 145, 10)
    with pytest.raises(SSLSVError, match="duplicate"):
        make_language_trials(rows + rows[:1], 1, 1)


def test_no_speaker_column(tmp_path):
    path = tmp_path / "l.csv"
    path.write_text("File,Language\na.wav,en\nb.wav,en\nc.wav,fr\n")
    rows = read_language_rows(str(path))
    assert rows[0] == ("a.wav", "en", None)
    trials = make_language_trials(rows, 1, 2, seed=0)
    assert sorted(t[0] for t in trials) == [0, 0, 1]
    write_trials(trials, str(tmp_path / "t.txt"))
    assert len(open(tmp_path / "t.txt").read().splitlines()) == 3
    with pytest.raises(SSLSVError, match="'Lang'"):
        read_language_rows(str(path), "Lang")


def test_split_speakers_disjoint():
    rows = make_rows("ab", 4, 2)
    train, test = split_speakers(rows, 0.25, seed=0)
    assert len(train) + len(test) == len(rows)
    assert not {r[2] for r in train} & {r[2] for r in test}
    assert len({r[2] for r in test}) == 2
    assert split_speakers(rows, 0.25, seed=0) == (train, test)
