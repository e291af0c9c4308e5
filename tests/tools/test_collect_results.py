"""tools/collect_results.py builds the expected comparison table."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from sslsv_sb.recipe.tools import collect_results

TOOL = Path(__file__).resolve().parents[2] / "tools" / "collect_results.py"


@pytest.fixture(scope="module")
def cr():
    return collect_results


def _write(folder, payload):
    folder.mkdir(parents=True)
    (folder / "verification.json").write_text(json.dumps(payload))


def _runs(tmp_path):
    _write(
        tmp_path / "res" / "simclr",
        {
            "lists": {
                "vox1_O": {
                    "cosine": {"eer": 10.5, "mindcf_0.01": 0.7, "mindcf_0.05": 0.5},
                    "plda": {"eer": 9.25, "mindcf_0.01": 0.6, "mindcf_0.05": 0.4},
                }
            },
            "untrained": {"lists": {"vox1_O": {"cosine": {"eer": 40.0}}}},
            "meta": {"method": "simclr"},
        },
    )
    # Flat schema, one extra list, no PLDA.
    _write(
        tmp_path / "res" / "moco",
        {
            "vox1_O": {"cosine": {"eer": 8.0, "mindcf_0.01": 0.65, "n_target": 5}},
            "vox1_H": {"cosine": {"eer": 12.0}},
            "meta": {"method": "moco"},
        },
    )
    (tmp_path / "res" / "empty").mkdir()


def test_collect_table(tmp_path, cr):
    _runs(tmp_path)
    paths = cr.find_runs([str(tmp_path / "res" / "*")])
    assert len(paths) == 2
    cols, rows = cr.collect(paths, metrics=("eer", "mindcf_0.01"))
    assert cols == [
        "run",
        "vox1_H/cosine/eer",
        "vox1_O/cosine/eer",
        "vox1_O/cosine/mindcf_0.01",
        "vox1_O/plda/eer",
        "vox1_O/plda/mindcf_0.01",
    ]
    by = {r["run"]: r for r in rows}
    assert set(by) == {"moco", "simclr"}
    assert by["simclr"]["vox1_O/plda/eer"] == 9.25
    assert "vox1_H/cosine/eer" not in by["simclr"]
    md = cr.to_markdown(cols, rows)
    lines = md.strip().splitlines()
    assert lines[0].startswith("| run | vox1_H/cosine/eer |")
    assert "| moco | 12.00 | 8.00 | 0.6500 |  |  |" in lines
    assert "| simclr |  | 10.50 | 0.7000 | 9.25 | 0.6000 |" in lines


def test_cli_untrained_and_csv(tmp_path, cr, capsys):
    _runs(tmp_path)
    out_csv, out_md = tmp_path / "t.csv", tmp_path / "t.md"
    rc = cr.main(
        [
            str(tmp_path / "res" / "*"),
            "--csv",
            str(out_csv),
            "--md",
            str(out_md),
            "--untrained",
            "--metrics",
            "eer",
        ]
    )
    assert rc == 0
    rows = list(csv.DictReader(out_csv.open()))
    assert [r["run"] for r in rows] == ["moco", "simclr", "simclr [untrained]"]
    assert rows[2]["vox1_O/cosine/eer"] == "40.0" and rows[2]["vox1_O/plda/eer"] == ""
    assert out_md.read_text() == capsys.readouterr().out


def test_errors(tmp_path, cr, capsys):
    assert cr.main([str(tmp_path / "nothing*")]) == 1
    assert "no verification.json" in capsys.readouterr().err
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "verification.json").write_text("{oops")
    with pytest.raises(cr.ResultsError, match="verification.json:1: invalid JSON"):
        cr.collect([bad / "verification.json"])


def test_script_entry_point(tmp_path):
    """``tools/collect_results.py``: table on stdout (status 0), errors status 1."""
    _runs(tmp_path)
    ok = subprocess.run(
        [sys.executable, str(TOOL), str(tmp_path / "res" / "*"), "--metrics", "eer"],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0 and "| simclr |  | 10.50 | 9.25 |" in ok.stdout
    bad = subprocess.run(
        [sys.executable, str(TOOL), str(tmp_path / "nothing*")],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1 and bad.stderr.startswith("error: no verification")
