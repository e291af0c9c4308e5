"""Tests of the embedded synthetic corpus (sslsv_sb.data.corpus, tools CLI)."""

import csv
import dataclasses
import hashlib
import pathlib
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf

from sslsv_sb.data.corpus import (
    PRESETS,
    CorpusConfig,
    default_data_folder,
    ensure_corpus,
    generate_corpus,
    make_trials,
)
from sslsv_sb.errors import SSLSVError

REPO = pathlib.Path(__file__).resolve().parents[2]
TINY = dataclasses.replace(PRESETS["tiny"], backend="numpy")
# smaller still, for the tests that generate several corpora
MINI = dataclasses.replace(
    TINY, n_train_speakers=2, n_test_speakers=2, n_noise_files=1, n_rirs=1
)


def _read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _hashes(folder):
    folder = pathlib.Path(folder)
    return {
        str(p.relative_to(folder)): hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*.wav"))
    }


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    manifest = generate_corpus(out, TINY, workers=2, verbose=False)
    return out, manifest


def test_structure(tiny):
    out, manifest = tiny
    cfg = TINY
    train = _read_csv(out / "train.csv")
    test = _read_csv(out / "test.csv")
    assert list(train[0]) == ["File", "Speaker", "Session", "Language", "Gender"]
    train_spk = {r["Speaker"] for r in train}
    test_spk = {r["Speaker"] for r in test}
    assert len(train_spk) == cfg.n_train_speakers
    assert len(test_spk) == cfg.n_test_speakers
    assert not train_spk & test_spk
    assert len(train) == (
        cfg.n_train_speakers * cfg.train_sessions * cfg.train_utts_per_session
    )
    assert (
        len(test) == cfg.n_test_speakers * cfg.test_sessions * cfg.test_utts_per_session
    )
    for rows, n_sess in ((train, cfg.train_sessions), (test, cfg.test_sessions)):
        sessions = {}
        for r in rows:
            assert r["Speaker"].startswith("id") and len(r["Speaker"]) == 7
            assert len(r["Session"]) == 11
            assert (
                r["File"]
                == f"wav/{r['Speaker']}/{r['Session']}/" + (r["File"].rsplit("/", 1)[1])
            )
            assert r["Language"] in cfg.languages and r["Gender"] in ("m", "f")
            sessions.setdefault(r["Speaker"], set()).add(r["Session"])
        assert all(len(s) == n_sess for s in sessions.values())
    # session ids are unique (no two speakers share one)
    pairs = {(r["Speaker"], r["Session"]) for r in train + test}
    assert len({s for _, s in pairs}) == len(pairs) == manifest["counts"]["sessions"]
    for r in train + test:
        info = sf.info(out / r["File"])
        assert info.samplerate == 16000 and info.channels == 1
        assert info.subtype == "PCM_16"
        assert cfg.min_duration - 1e-3 <= info.duration <= cfg.max_duration + 1e-3
    assert manifest["counts"]["utterances"] == len(train) + len(test)
    assert (out / "corpus.json").is_file() and not (out / ".incomplete").exists()


def test_speechbrain_csv(tiny):
    out, _ = tiny
    rows = _read_csv(out / "train_sb.csv")
    assert list(rows[0]) == ["ID", "duration", "wav", "start", "stop", "spk_id"]
    assert len({r["ID"] for r in rows}) == len(rows)
    for r in rows[:10]:
        data, sr = sf.read(out / r["wav"])
        assert int(r["start"]) == 0 and int(r["stop"]) == data.size
        assert abs(float(r["duration"]) - data.size / sr) < 1e-3


def test_trials(tiny):
    out, manifest = tiny
    test = {r["File"]: r for r in _read_csv(out / "test.csv")}
    lines = (out / "trials.txt").read_text().splitlines()
    pairs = set()
    n_target = 0
    for line in lines:
        label, enrol, probe = line.split(" ")
        assert label in ("0", "1") and enrol in test and probe in test
        assert (out / enrol).is_file()
        key = tuple(sorted((enrol, probe)))
        assert key not in pairs
        pairs.add(key)
        a, b = test[enrol], test[probe]
        if label == "1":
            n_target += 1
            assert a["Speaker"] == b["Speaker"] and a["Session"] != b["Session"]
        else:
            assert a["Speaker"] != b["Speaker"]
    cfg = TINY
    per_spk = cfg.test_sessions * cfg.test_utts_per_session
    expected = cfg.n_test_speakers * (
        per_spk * (per_spk - 1) // 2
        - cfg.test_sessions
        * (cfg.test_utts_per_session * (cfg.test_utts_per_session - 1) // 2)
    )
    assert n_target == expected == manifest["counts"]["target_trials"]
    assert len(lines) - n_target == round(cfg.nontarget_ratio * n_target)


def test_make_trials_caps_nontargets():
    rows = [(f"f{s}{k}", f"s{s}", f"x{k}") for s in range(2) for k in range(2)]
    trials = make_trials(rows, nontarget_ratio=100, seed=0)
    assert sum(t[0] for t in trials) == 2
    assert len(trials) == 2 + 4  # all 4 cross-speaker pairs, no duplicates


def test_no_digital_silence_and_level(tiny):
    out, _ = tiny
    for path in sorted((out / "wav").rglob("*.wav"))[:12]:
        data, _ = sf.read(path, dtype="int16")
        assert np.mean(data == 0) < 0.01, path
        assert np.abs(data).max() < 32767


def test_banks(tiny):
    out, manifest = tiny
    for cat in ("noise", "music", "speech"):
        files = sorted((out / "noise" / cat).glob("*.wav"))
        assert len(files) == TINY.n_noise_files
        for path in files:
            info = sf.info(path)
            assert info.samplerate == 16000 and info.channels == 1
            assert 5.0 - 1e-3 <= info.duration <= 8.0 + 1e-3
    rirs = sorted((out / "rirs").glob("*.wav"))
    assert len(rirs) == TINY.n_rirs == manifest["counts"]["rirs"]
    data, _ = sf.read(rirs[0])
    assert data.ndim == 1 and np.argmax(np.abs(data)) < data.size // 2


def test_cache_does_not_rewrite(tiny):
    out, manifest = tiny
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    start = time.time()
    again = generate_corpus(out, dataclasses.replace(TINY), verbose=False)
    assert time.time() - start < 1.0
    assert again == manifest
    assert mtimes == {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}


@pytest.mark.slow  # renders corpora in worker pools
def test_determinism_and_seed(tmp_path):
    a = generate_corpus(tmp_path / "a", MINI, workers=1, verbose=False)
    generate_corpus(tmp_path / "b", MINI, workers=2, verbose=False)
    generate_corpus(
        tmp_path / "c", dataclasses.replace(MINI, seed=7), workers=2, verbose=False
    )
    ha, hb, hc = (_hashes(tmp_path / k) for k in "abc")
    assert ha == hb and len(ha) == a["counts"]["utterances"] + 3 + 1
    assert (tmp_path / "a" / "trials.txt").read_text() == (
        tmp_path / "b" / "trials.txt"
    ).read_text()
    assert set(ha.values()).isdisjoint(hc.values())


@pytest.mark.slow  # renders corpora in worker pools
def test_config_mismatch_and_overwrite(tmp_path):
    out = tmp_path / "c"
    generate_corpus(out, MINI, verbose=False)
    other = dataclasses.replace(MINI, seed=99)
    with pytest.raises(SSLSVError, match=str(out)):
        generate_corpus(out, other, verbose=False)
    manifest = generate_corpus(out, other, overwrite=True, verbose=False)
    assert manifest["config"]["seed"] == 99
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(SSLSVError, match="not empty"):
        generate_corpus(foreign, MINI, verbose=False)


@pytest.mark.slow  # renders corpora in worker pools
def test_interrupted_run_is_regenerated(tmp_path):
    out = tmp_path / "c"
    (out / "wav" / "id10001").mkdir(parents=True)
    (out / "wav" / "id10001" / "half.wav").write_bytes(b"")
    (out / ".incomplete").write_text("")
    generate_corpus(out, MINI, verbose=False)
    assert not (out / "wav" / "id10001" / "half.wav").exists()
    assert (out / "corpus.json").is_file()


def test_config_validation_and_presets(tmp_path, monkeypatch):
    with pytest.raises(SSLSVError, match="test_sessions"):
        CorpusConfig(test_sessions=1)
    with pytest.raises(SSLSVError, match="backend"):
        CorpusConfig(backend="festival")
    with pytest.raises(SSLSVError, match="unknown corpus config"):
        ensure_corpus(tmp_path, preset="tiny", n_speakers=3)
    with pytest.raises(SSLSVError, match="preset"):
        ensure_corpus(tmp_path, preset="huge")
    monkeypatch.setenv("SSLSV_SB_DATA", str(tmp_path / "x"))
    assert default_data_folder() == tmp_path / "x"
    monkeypatch.delenv("SSLSV_SB_DATA")
    assert default_data_folder() == REPO / "data" / "embedded"
    assert CorpusConfig(languages="en-us,fr").languages == ("en-us", "fr")


def test_cli_error_is_one_line(tmp_path):
    out = tmp_path / "c"
    out.mkdir()
    (out / "x.txt").write_text("")
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "generate_corpus.py"), "--out", str(out)]
        + ["--preset", "tiny", "--backend", "numpy", "--quiet"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0
    assert str(out) in proc.stderr


def _espeak_loads():
    code = "from sslsv_sb.data.espeak import espeak_available as a; print(a())"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return proc.stdout.strip() == "True"


@pytest.mark.slow  # renders two espeak corpora in worker pools
@pytest.mark.skipif(not _espeak_loads(), reason="espeak-ng cannot be loaded")
def test_espeak_backend(tmp_path):
    cfg = dataclasses.replace(MINI, backend="espeak", languages=("en-us", "fr"))
    manifest = generate_corpus(tmp_path / "e", cfg, workers=2, verbose=False)
    assert manifest["backend_used"] == "espeak"
    rows = _read_csv(tmp_path / "e" / "train.csv")
    assert {r["Language"] for r in rows} == {"en-us", "fr"}
    data, sr = sf.read(tmp_path / "e" / rows[0]["File"], dtype="int16")
    assert sr == 16000 and np.mean(data == 0) < 0.01
    again = generate_corpus(tmp_path / "f", cfg, workers=1, verbose=False)
    assert again["layout_digest"] == manifest["layout_digest"]
    assert _hashes(tmp_path / "e") == _hashes(tmp_path / "f")
    # the temporary espeak-ng data folder is removed
    assert not (tmp_path / "e" / ".cache").exists()
