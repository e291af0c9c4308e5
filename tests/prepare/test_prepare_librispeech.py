"""LibriSpeech preparation and held-out speaker trials on fake trees.

Fake corpora are generated in ``tmp_path`` in the real layout
(``LibriSpeech/<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac``) and the
flat excerpt layout; downloads come from a local HTTP server. The two slow tests train
the LibriSpeech recipe for one epoch / one step: on a fake tree, and on the shared
excerpts (skipped when ``../shared/data`` is absent).
"""

import hashlib
import http.server
import io
import json
import math
import os
import subprocess
import sys
import tarfile
import threading

import numpy as np
import pytest
import soundfile as sf
import torch

from sslsv_sb.data.augment import ViewAugment
from sslsv_sb.data.lists import read_train_list, read_trials
from sslsv_sb.data.prepare.librispeech import (
    CHECKSUMS,
    download_entries,
    prepare_librispeech,
)
from sslsv_sb.data.speaker_trials import plan_speaker_trials, split_speakers
from sslsv_sb.errors import SSLSVError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOL = os.path.join(REPO, "tools", "prepare_data", "prepare_librispeech.py")
TRAIN = os.path.join(REPO, "recipes", "LibriSpeech", "SSL", "train.py")
SHELF = os.path.join(os.path.dirname(REPO), "shared", "data")

# speaker: (gender, subset, {chapter: utterances})
CORPUS = {
    "19": ("F", "train-clean-100", {"198": 2, "227": 1}),
    "26": ("M", "train-clean-100", {"495": 2}),
    "27": ("M", "train-clean-100", {"123349": 1}),
    "32": ("F", "train-clean-100", {"21625": 1, "21631": 1}),
    "1272": ("M", "dev-clean", {"128104": 2, "135031": 1}),
    "1462": ("F", "dev-clean", {"170138": 2}),
    "1673": ("F", "dev-clean", {"143396": 1}),
    "1089": ("M", "test-clean", {"134686": 2, "134691": 2}),
    "1188": ("M", "test-clean", {"133604": 3}),
    "121": ("F", "test-clean", {"121726": 1, "123852": 1}),
}


def write_audio(path, seconds=2.5, seed=0, sr=16000):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    x = np.random.default_rng(seed).standard_normal(int(seconds * sr)) * 0.1
    sf.write(path, x.astype(np.float32), sr, subtype="PCM_16")
    return path


def speakers_txt(genders):
    lines = [
        "; Some pipe(|) separated metadata about all LibriVox readers",
        ";ID  |SEX| SUBSET           |MINUTES| NAME",
    ]
    for spk, (g, subset) in sorted(genders.items(), key=lambda x: int(x[0])):
        lines.append(f"{spk:<5}| {g} | {subset:<16} | 25.03 | Reader {spk}")
    lines.append("60   | M | train-clean-100  | 20.18 | |CBW|Simon")  # '|' in a name
    return "\n".join(lines) + "\n"


def make_tree(root, corpus=CORPUS):
    """``root/LibriSpeech/<subset>/<spk>/<chapter>/...`` + SPEAKERS.TXT."""
    base = root / "LibriSpeech"
    seed = 0
    for spk, (_, subset, chapters) in corpus.items():
        for ch, n in chapters.items():
            folder = base / subset / spk / ch
            for u in range(n):
                seed += 1
                write_audio(str(folder / f"{spk}-{ch}-{u:04d}.flac"), seed=seed)
            (folder / f"{spk}-{ch}.trans.txt").write_text(
                "".join(f"{spk}-{ch}-{u:04d} SOME WORDS\n" for u in range(n))
            )
    (base / "SPEAKERS.TXT").write_text(
        speakers_txt({s: (g, sub) for s, (g, sub, _) in corpus.items()})
    )
    return base


def make_flat(root, n_speakers=12, seconds=2.5):
    """Flat excerpts: ``root/train-clean-100/<spk>-<chapter>-0000.flac``."""
    folder = root / "train-clean-100"
    genders = {}
    for i in range(n_speakers):
        spk, ch = str(100 + 7 * i), str(5000 + i)
        write_audio(str(folder / f"{spk}-{ch}-0000.flac"), seconds, seed=i)
        genders[spk] = ("MF"[i % 2], "train-clean-100")
    (folder / "SPEAKERS.TXT").write_text(speakers_txt(genders))
    return folder


def read_lines(path):
    with open(path) as f:
        return [line.split() for line in f if line.strip()]


def speaker(path):
    return os.path.basename(path).split("-")[0]


def chapter(path):
    return os.path.basename(path).split("-")[1]


# ----------------------------------------------------------------- real layout
def test_real_layout_lists_and_trials(tmp_path):
    src = make_tree(tmp_path)
    data = tmp_path / "data"
    rep = prepare_librispeech(
        str(data),
        [str(src)],
        nontarget_ratio=1.0,
        max_targets_per_speaker=2,
        verbose=False,
    )
    train = (data / "librispeech_train.csv").read_text().splitlines()
    assert train[0] == "File,Speaker,Chapter,Subset,Gender"
    expected = sorted(
        f"LibriSpeech/train-clean-100/{s}/{c}/{s}-{c}-{u:04d}.flac,{s},{c},"
        f"train-clean-100,{g}"
        for s, (g, sub, chs) in CORPUS.items()
        if sub == "train-clean-100"
        for c, n in chs.items()
        for u in range(n)
    )
    assert train[1:] == expected
    df = read_train_list(str(data / "librispeech_train.csv"), str(data))
    assert len(df) == 8 and df["label"].nunique() == 4

    # dev-clean: 1272 cross-chapter (2 pairs), 1462 same-chapter (1), 1673 split-half
    # test-clean: 1089 cross (4 pairs, capped at 2), 1188 same (3, capped at 2), 121
    # cross (1)
    dev, test = rep.stats["dev-clean"], rep.stats["test-clean"]
    assert (dev["cross_session"], dev["same_session"], dev["split_half"]) == (2, 1, 1)
    assert (test["cross_session"], test["same_session"], test["split_half"]) == (
        3,
        2,
        0,
    )
    train_speakers = set(df["Speaker"])
    for name, n_t in (("dev-clean", 4), ("test-clean", 5)):
        trials = read_lines(data / f"librispeech_{name}.txt")
        assert sum(t[0] == "1" for t in trials) == n_t
        assert sum(t[0] == "0" for t in trials) == n_t  # ratio 1
        read_trials(str(data / f"librispeech_{name}.txt"), str(data))
        for lab, a, b in trials:
            assert speaker(a) not in train_speakers and speaker(b) not in train_speakers
            assert (speaker(a) == speaker(b)) == (lab == "1")
            if lab == "1" and speaker(a) in ("1272", "1089", "121"):
                assert chapter(a) != chapter(b)  # cross-chapter targets
        assert len({(min(a, b), max(a, b)) for _, a, b in trials}) == len(trials)
    # the split-half speaker's halves: two files, together the utterance
    a = data / "librispeech_halves" / "1673" / "1673-143396-0000_1of2.wav"
    b = a.with_name("1673-143396-0000_2of2.wav")
    orig, _ = sf.read(data / "LibriSpeech/dev-clean/1673/143396/1673-143396-0000.flac")
    np.testing.assert_array_equal(np.concatenate([sf.read(a)[0], sf.read(b)[0]]), orig)
    pair = {f"librispeech_halves/1673/{a.name}", f"librispeech_halves/1673/{b.name}"}
    assert [
        t[0]
        for t in read_lines(data / "librispeech_dev-clean.txt")
        if set(t[1:]) == pair
    ] == ["1"]
    csv_rows = (data / "librispeech_dev-clean.csv").read_text().splitlines()
    assert csv_rows[0] == "File,Speaker,Chapter,Subset,Gender,Source"
    assert len(csv_rows) == 1 + 3 + 2 + 2  # 1272: 3 utts, 1462: 2, 1673: 2 halves

    # re-run: same lists, the audio check is skipped
    before = {
        n: (data / n).read_text()
        for n in (
            "librispeech_train.csv",
            "librispeech_dev-clean.txt",
            "librispeech_test-clean.txt",
        )
    }
    rep2 = prepare_librispeech(
        str(data),
        [str(src)],
        nontarget_ratio=1.0,
        max_targets_per_speaker=2,
        verbose=False,
    )
    assert {n: (data / n).read_text() for n in before} == before
    assert sum("already done" in line for line in rep2.lines) == 3


def test_subset_choice_and_speaker_overlap(tmp_path):
    src = make_tree(tmp_path)
    data = tmp_path / "data"
    rep = prepare_librispeech(
        str(data),
        [str(src / "train-clean-100"), str(src / "test-clean")],
        test_subsets=["test-clean"],
        nontarget_ratio=1.0,
        verbose=False,
    )
    assert set(rep.stats) == {"train", "test-clean"}
    assert not (data / "librispeech_dev-clean.txt").exists()
    with pytest.raises(
        SSLSVError,
        match=r"--test_subsets: subset\(s\) \['dev-other'\] "
        "not found",
    ):
        prepare_librispeech(
            str(data), [str(src)], test_subsets=["dev-other"], verbose=False
        )
    # a train speaker inside a trial subset
    write_audio(str(src / "test-clean" / "19" / "777" / "19-777-0000.flac"))
    with pytest.raises(
        SSLSVError, match="speaker 19 is in train-clean-100 .train. and in test-clean"
    ):
        prepare_librispeech(str(tmp_path / "d2"), [str(src)], verbose=False)


# ------------------------------------------------------------ flat + held out
def test_flat_excerpts_held_out_split(tmp_path):
    src = make_flat(tmp_path / "shelf", n_speakers=12)
    args = {"held_out_speakers": 4, "nontarget_ratio": 2.0, "verbose": False}

    def run(name, seed):
        data = tmp_path / name
        rep = prepare_librispeech(str(data), [str(src)], seed=seed, **args)
        return data, rep

    data, rep = run("a", 0)
    train = read_train_list(str(data / "librispeech_train.csv"), str(data))
    assert len(train) == 8 and train["Speaker"].nunique() == 8
    assert (
        train["File"]
        .str.match(r"LibriSpeech/train-clean-100/\d+-\d+-0000\.flac$")
        .all()
    )
    assert set(train["Gender"]) == {"M", "F"}
    held = rep.stats["heldout"]
    assert (
        held["speakers"],
        held["split_half"],
        held["target"],
        held["nontarget"],
    ) == (4, 4, 4, 8)
    trials = read_lines(data / "librispeech_heldout.txt")
    assert [t[0] for t in trials].count("1") == 4 and len(trials) == 12
    halves = sorted(p.name for p in (data / "librispeech_halves").rglob("*.wav"))
    assert len(halves) == 8
    held_spk = {speaker(p) for t in trials for p in t[1:]}
    assert len(held_spk) == 4 and not held_spk & set(train["Speaker"])
    for p in (data / "librispeech_halves").rglob("*.wav"):  # 2.5 s -> 2 x 1.25 s
        assert sf.info(str(p)).frames == 20000
    read_trials(str(data / "librispeech_heldout.txt"), str(data))

    # reproducible with the seed, different with another seed
    data_b, _ = run("b", 0)
    for n in ("librispeech_train.csv", "librispeech_heldout.txt"):
        assert (data / n).read_text() == (data_b / n).read_text()
    data_c, _ = run("c", 1)
    held_c = {
        speaker(p)
        for t in read_lines(data_c / "librispeech_heldout.txt")
        for p in t[1:]
    }
    assert held_c != held_spk
    assert (data / "librispeech_heldout.txt").read_text() != (
        data_c / "librispeech_heldout.txt"
    ).read_text()


def test_split_parts_more_targets_per_single_utterance(tmp_path):
    """``split_parts=4``: 6 targets per speaker from 4 equal parts; a short utterance
    gives as many parts of ``min_part_seconds`` as fit; the parts rebuild the file."""
    src = make_flat(tmp_path / "shelf", n_speakers=5, seconds=4.0)
    write_audio(str(src / "999-1-0000.flac"), seconds=2.5, seed=9)  # 2 parts of 1 s
    data = tmp_path / "data"
    rep = prepare_librispeech(
        str(data),
        [str(src)],
        train_subsets=[],
        test_subsets=["train-clean-100"],
        nontarget_ratio=2.0,
        split_parts=4,
        verbose=False,
    )
    counts = rep.stats["train-clean-100"]
    assert counts["skipped_speakers"] == []
    assert (counts["speakers"], counts["split_half"]) == (6, 5 * 6 + 1)
    assert counts["nontarget"] == 2 * 31
    trials = read_lines(data / "librispeech_train-clean-100.txt")
    targets = [t for t in trials if t[0] == "1"]
    assert len(targets) == 31 and len(trials) == 93
    assert all(speaker(a) == speaker(b) and a != b for _, a, b in targets)
    parts = sorted((data / "librispeech_halves" / "100").glob("*.wav"))
    assert [p.name for p in parts] == [
        f"100-5000-0000_{i}of4.wav" for i in (1, 2, 3, 4)
    ]
    orig, _ = sf.read(src / "100-5000-0000.flac")
    np.testing.assert_array_equal(np.concatenate([sf.read(p)[0] for p in parts]), orig)
    assert sorted(p.name for p in (data / "librispeech_halves" / "999").glob("*")) == [
        "999-1-0000_1of2.wav",
        "999-1-0000_2of2.wav",
    ]
    read_trials(str(data / "librispeech_train-clean-100.txt"), str(data))
    with pytest.raises(SSLSVError, match="--split_parts: must be >= 2, got 1"):
        prepare_librispeech(
            str(tmp_path / "d1"), [str(src)], split_parts=1, verbose=False
        )
    assert not (tmp_path / "d1").exists()  # checked before any work


def test_short_single_utterance_speaker_left_out(tmp_path):
    src = make_flat(tmp_path / "shelf", n_speakers=5)
    write_audio(str(src / "999-1-0000.flac"), seconds=1.5)  # halves < 1 s
    data = tmp_path / "data"
    rep = prepare_librispeech(
        str(data),
        [str(src)],
        train_subsets=[],
        test_subsets=["train-clean-100"],
        nontarget_ratio=1.0,
        verbose=False,
    )
    assert rep.stats["train-clean-100"]["skipped_speakers"] == ["999"]
    assert rep.stats["train-clean-100"]["target"] == 5
    assert any("1 single-utterance speakers left out" in line for line in rep.lines)
    assert "999-" not in (data / "librispeech_train-clean-100.txt").read_text()


# --------------------------------------------------------------- trial builder
def rows_mixed():
    rows = [(f"A/{c}/A-{c}-{u}.flac", "A", c) for c in "123" for u in range(4)]
    rows += [(f"B/1/B-1-{u}.flac", "B", "1") for u in range(5)]
    rows += [("C/1/C-1-0.flac", "C", "1")]
    rows += [(f"D/{c}/D-{c}-0.flac", "D", c) for c in "12"]
    return rows


def test_trial_builder_counts():
    rows = rows_mixed()
    trials, items, counts = plan_speaker_trials(
        rows, seed=3, nontarget_ratio=3.0, max_targets_per_speaker=10, halves_dir="h"
    )
    # A: 48 cross-chapter pairs, capped at 10; B: 10 same-chapter pairs; C: 1 split
    # half; D: 1 cross-chapter pair
    assert counts == {
        "cross_session": 11,
        "same_session": 10,
        "split_half": 1,
        "target": 22,
        "nontarget": 66,
        "speakers": 4,
    }
    labels = [t[0] for t in trials]
    assert labels.count(1) == 22 and labels.count(0) == 66
    spk = {f: s for f, s, *_ in items}
    sess = {f: c for f, _, c, *_ in items}
    assert spk["h/C/C-1-0_1of2.wav"] == "C" and "C/1/C-1-0.flac" not in spk
    assert len({(min(a, b), max(a, b)) for _, a, b in trials}) == len(trials)
    for lab, a, b in trials:
        assert (spk[a] == spk[b]) == (lab == 1)
        if lab == 1 and spk[a] in "AD":
            assert sess[a] != sess[b]
    assert sorted(trials) == trials
    # every valid pair without a cap
    _, _, full = plan_speaker_trials(
        rows, nontarget_ratio=1.0, max_targets_per_speaker=None
    )
    assert (full["cross_session"], full["same_session"]) == (48 + 1, 10)
    # reproducible, independent of the row order, seed-dependent
    again, _, _ = plan_speaker_trials(
        rows[::-1],
        seed=3,
        nontarget_ratio=3.0,
        max_targets_per_speaker=10,
        halves_dir="h",
    )
    assert again == trials
    other, _, _ = plan_speaker_trials(
        rows, seed=4, nontarget_ratio=3.0, max_targets_per_speaker=10, halves_dir="h"
    )
    assert other != trials and len(other) == len(trials)


def test_trial_builder_errors():
    rows = rows_mixed()
    with pytest.raises(SSLSVError, match="lower nontarget_ratio"):
        plan_speaker_trials(rows, nontarget_ratio=1000.0)
    with pytest.raises(SSLSVError, match="non-target trials need at least 2"):
        plan_speaker_trials([r for r in rows if r[1] == "A"])
    with pytest.raises(SSLSVError, match="listed for two speakers"):
        plan_speaker_trials([*rows, ("C/1/C-1-0.flac", "Z", "1")])
    with pytest.raises(SSLSVError, match="asked for 5 of 5 speakers"):
        split_speakers("abcde", 5)
    train, held = split_speakers([f"s{i}" for i in range(20)], 5, seed=2)
    assert (len(train), len(held)) == (15, 5) and not set(train) & set(held)
    assert split_speakers([f"s{i}" for i in range(20)][::-1], 5, seed=2)[1] == held


# -------------------------------------------------------------------- errors
def test_empty_and_malformed_trees(tmp_path):
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    with pytest.raises(SSLSVError, match=f"{empty}: no LibriSpeech utterances found"):
        prepare_librispeech(str(tmp_path / "d"), [str(empty)], verbose=False)
    with pytest.raises(SSLSVError, match="nothing to prepare"):
        prepare_librispeech(str(tmp_path / "d"), verbose=False)

    src = make_tree(tmp_path / "c")
    bad = src / "train-clean-100" / "19" / "198" / "notes.flac"
    write_audio(str(bad))
    with pytest.raises(SSLSVError, match=f"{bad}: not a LibriSpeech utterance name"):
        prepare_librispeech(str(tmp_path / "d1"), [str(src)], verbose=False)
    rep = prepare_librispeech(
        str(tmp_path / "d1"),
        [str(src)],
        skip_invalid=True,
        nontarget_ratio=1.0,
        verbose=False,
    )
    assert any("skipped 1 invalid files" in line for line in rep.lines)
    os.remove(bad)

    misplaced = src / "train-clean-100" / "19" / "198" / "26-495-0009.flac"
    write_audio(str(misplaced))
    with pytest.raises(
        SSLSVError,
        match=f"{misplaced}: found in 19/198/ but named for speaker 26, chapter 495",
    ):
        prepare_librispeech(str(tmp_path / "d2"), [str(src)], verbose=False)
    os.remove(misplaced)

    empty_audio = src / "test-clean" / "121" / "121726" / "121-121726-0001.flac"
    empty_audio.write_bytes(b"")
    with pytest.raises(SSLSVError, match=f"{empty_audio}: zero-length file"):
        prepare_librispeech(str(tmp_path / "d3"), [str(src)], verbose=False)
    rep = prepare_librispeech(
        str(tmp_path / "d3"),
        [str(src)],
        skip_invalid=True,
        nontarget_ratio=1.0,
        verbose=False,
    )
    assert (
        "121-121726-0001"
        not in (tmp_path / "d3" / "librispeech_test-clean.csv").read_text()
    )
    os.remove(empty_audio)

    spk_txt = src / "SPEAKERS.TXT"
    spk_txt.write_text(spk_txt.read_text() + "oops | X | nowhere\n")
    n = len(spk_txt.read_text().splitlines())
    with pytest.raises(SSLSVError, match=f"{spk_txt}:{n}: expected 'ID | SEX"):
        prepare_librispeech(str(tmp_path / "d4"), [str(src)], verbose=False)

    flat = make_flat(tmp_path / "f", n_speakers=3)
    with pytest.raises(SSLSVError, match="asked for 3 of 3 speakers"):
        prepare_librispeech(
            str(tmp_path / "d5"), [str(flat)], held_out_speakers=3, verbose=False
        )


def test_cli_error_is_one_line(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            TOOL,
            "--data_folder",
            str(tmp_path / "d"),
            "--librispeech",
            str(tmp_path / "nowhere"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'nowhere'}: folder not found"
    ]


# ------------------------------------------------------------------ downloads
class _Handler(http.server.BaseHTTPRequestHandler):
    files = {}
    log = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        rng = self.headers.get("Range")
        type(self).log.append((self.path, rng))
        data = self.files.get(self.path.rsplit("/", 1)[-1])
        if data is None:
            self.send_response(404)
            self.end_headers()
            return
        start = int(rng.split("=")[1].split("-")[0]) if rng else 0
        body = data[start:]
        self.send_response(206 if rng else 200)
        if rng:
            self.send_header(
                "Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}"
            )
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def server():
    _Handler.files, _Handler.log = {}, []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/resources/12", _Handler
    httpd.shutdown()
    httpd.server_close()


def fake_archive(tmp_path):
    """``dev-clean.tar.gz`` holding ``LibriSpeech/dev-clean/...`` + SPEAKERS.TXT."""
    dev = {s: v for s, v in CORPUS.items() if v[1] == "dev-clean"}
    base = make_tree(tmp_path / "archive_src", dev)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(str(base), arcname="LibriSpeech")
    return buf.getvalue()


def test_download_resume_and_checksum(server, tmp_path):
    url, handler = server
    archive = fake_archive(tmp_path)
    handler.files["dev-clean.tar.gz"] = archive
    data = tmp_path / "data"
    # the published sha256 rejects the fake archive; the partial file is removed
    with pytest.raises(
        SSLSVError,
        match=f"sha256 checksum mismatch .*expected {CHECKSUMS['dev-clean']}",
    ):
        prepare_librispeech(
            str(data), download_subsets=["dev-clean"], base_url=url, verbose=False
        )
    assert handler.log == [("/resources/12/dev-clean.tar.gz", None)]
    assert not list((data / "downloads").iterdir())
    # a URL list with the archive's checksum; an interrupted download resumes
    sha = hashlib.sha256(archive).hexdigest()
    urls = tmp_path / "urls.txt"
    urls.write_text(f"dev-clean.tar.gz {url}/dev-clean.tar.gz sha256:{sha}\n")
    part = data / "downloads" / "dev-clean.tar.gz.part"
    part.write_bytes(archive[:1000])
    rep = prepare_librispeech(
        str(data), urls=str(urls), nontarget_ratio=1.0, verbose=False
    )
    assert handler.log[-1] == ("/resources/12/dev-clean.tar.gz", "bytes=1000-")
    assert (data / "downloads" / "dev-clean.tar.gz").read_bytes() == archive
    assert not part.exists()
    assert (data / "LibriSpeech" / "dev-clean" / "1272").is_dir()
    assert rep.stats["dev-clean"]["target"] == 4  # 2 cross + 1 same + 1 split-half
    # re-run: neither downloaded nor extracted again
    n = len(handler.log)
    rep = prepare_librispeech(
        str(data), urls=str(urls), nontarget_ratio=1.0, verbose=False
    )
    assert len(handler.log) == n
    assert any("already extracted" in line for line in rep.lines)


def test_download_entries(tmp_path):
    entries = download_entries(["train-clean-100", "test-other"], "http://m/x/")
    assert entries == [
        (
            "train-clean-100.tar.gz",
            "http://m/x/train-clean-100.tar.gz",
            f"sha256:{CHECKSUMS['train-clean-100']}",
        ),
        (
            "test-other.tar.gz",
            "http://m/x/test-other.tar.gz",
            f"sha256:{CHECKSUMS['test-other']}",
        ),
    ]
    with pytest.raises(
        SSLSVError,
        match=r"unknown LibriSpeech subset\(s\) "
        r"\['test-noisy'\]",
    ):
        download_entries(["test-noisy"])
    urls = tmp_path / "urls.txt"
    urls.write_text(
        "dev-clean.tar.gz http://m/dev-clean.tar.gz\n"
        "extra.tar.gz http://m/extra.tar.gz\n"
    )
    with pytest.raises(
        SSLSVError,
        match=f"{urls}:2: no checksum known for "
        "extra.tar.gz; add one to the URL list or pass --no-verify",
    ):
        download_entries(urls=str(urls))
    entries = download_entries(urls=str(urls), verify=False)
    assert entries[0][2] == f"sha256:{CHECKSUMS['dev-clean']}"  # known: still checked
    assert entries[1][2] is None


# ------------------------------------------------------- augmentation banks
def test_noise_chunks_and_rirs_feed_the_augmentation(tmp_path):
    src = make_flat(tmp_path / "shelf", n_speakers=4)
    noise = tmp_path / "noise_src"
    write_audio(str(noise / "tap.wav"), seconds=20.0, seed=1)
    write_audio(str(noise / "short.wav"), seconds=3.0, seed=2)
    data = tmp_path / "data"
    prepare_librispeech(
        str(data),
        [str(src)],
        held_out_speakers=2,
        nontarget_ratio=1.0,
        noise=str(noise),
        n_rirs=2,
        verbose=False,
    )
    chunks = sorted(p.name for p in (data / "noise" / "noise").glob("*.wav"))
    assert chunks == ["short_0.wav", "tap_0.wav", "tap_1.wav", "tap_2.wav"]
    assert sf.info(str(data / "noise" / "noise" / "tap_2.wav")).frames == 4 * 16000
    assert sorted(p.name for p in (data / "rirs").glob("*.wav")) == [
        "rir-0001.wav",
        "rir-0002.wav",
    ]
    aug = ViewAugment(noise_folder="noise", rir_folder="rirs").load(str(data))
    assert aug.categories == ["noise"] and aug.has_rir
    x = torch.randn(3, 16000) * 0.1
    y = aug(x, generator=torch.Generator().manual_seed(0))
    assert y.shape == x.shape and torch.isfinite(y).all() and not torch.equal(x, y)
    with pytest.raises(SSLSVError, match="made with other settings"):
        prepare_librispeech(
            str(data),
            [str(src)],
            held_out_speakers=2,
            nontarget_ratio=1.0,
            noise=str(noise),
            noise_chunk=4.0,
            verbose=False,
        )


# ------------------------------------------------------------- recipe runs
def train(args, timeout=900):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, TRAIN, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=env,
    )


TINY = [
    "--channels=[16,16,16,16,48]",
    "--emb_dim=16",
    "--number_of_epochs=1",
    "--num_workers=0",
    "--noprogressbar",
]


def check_verification(out):
    with open(os.path.join(out, "verification.json")) as f:
        ver = json.load(f)
    lst = ver["lists"]["librispeech_heldout"]
    assert set(lst) == {"cosine", "whiten", "mfcc_stats"}  # the recipe's back-ends
    for m in lst.values():
        assert 0.0 <= m["eer"] <= 100.0 and math.isfinite(m["mindcf_0.01"])
    return ver


def test_train_requires_data_folder(tmp_path):
    proc = train(["hparams/simclr_ecapa.yaml", f"--output_folder={tmp_path}"])
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: --data_folder is required (a folder prepared by "
        "tools/prepare_data/prepare_librispeech.py)"
    )


@pytest.mark.slow
def test_recipe_on_fake_excerpts(tmp_path):
    src = make_flat(tmp_path / "shelf", n_speakers=12, seconds=3.0)
    noise = tmp_path / "noise_src"
    write_audio(str(noise / "hum.wav"), seconds=10.0)
    data = tmp_path / "data"
    prepare_librispeech(
        str(data),
        [str(src)],
        held_out_speakers=4,
        nontarget_ratio=2.0,
        noise=str(noise),
        n_rirs=2,
        verbose=False,
    )
    out = tmp_path / "out"
    proc = train(
        [
            "hparams/simclr_ecapa.yaml",
            f"--data_folder={data}",
            f"--output_folder={out}",
            "--batch_size=4",
            "--frame_length=8000",
            *TINY,
        ]
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    check_verification(str(out))
    assert os.path.isfile(out / "hyperparams.yaml")


@pytest.mark.slow
@pytest.mark.skipif(
    not os.path.isdir(os.path.join(SHELF, "librispeech_excerpts", "train-clean-100")),
    reason="the shared LibriSpeech excerpts (../shared/data) are absent",
)
def test_recipe_on_shared_excerpts(tmp_path):
    data = tmp_path / "data"
    rep = prepare_librispeech(
        str(data),
        [os.path.join(SHELF, "librispeech_excerpts", "train-clean-100")],
        held_out_speakers=51,
        noise=os.path.join(SHELF, "noise"),
        n_rirs=4,
        verbose=False,
    )
    assert rep.stats["train"] == {"files": 200, "speakers": 200}
    held = rep.stats["heldout"]
    assert held["split_half"] + len(held["skipped_speakers"]) == 51
    assert held["nontarget"] == 10 * held["target"]
    assert os.path.islink(data / "LibriSpeech" / "train-clean-100")  # not copied
    out = tmp_path / "out"
    # 200 train files, batch 128, drop_last: one optimiser step (SpeechBrain 1.1.2
    # reads --optimizer_step_limit from the command line as a string)
    proc = train(
        [
            "hparams/simclr_ecapa.yaml",
            f"--data_folder={data}",
            f"--output_folder={out}",
            "--batch_size=128",
            *TINY,
        ]
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    check_verification(str(out))
    (brain,) = (out / "save").glob("CKPT+*/brain.ckpt")
    assert "optimizer_step: 1\n" in brain.read_text()
