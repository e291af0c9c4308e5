"""downstream.py: frozen-embedding probes write downstream.json."""

import json

import numpy as np
import pytest

from tests.recipes.test_evaluate import DATA, MODEL, get_trained_run, run_script


@pytest.mark.slow
def test_probes_write_json(tmp_path_factory, tiny_corpus):
    run = get_trained_run(tmp_path_factory, tiny_corpus)
    args = [f"--data_folder={tiny_corpus}", f"--output_folder={run}", *MODEL, *DATA]
    run_script("downstream.py", *args, "--task_csv=train.csv", "--task_key=Gender")
    run_script(
        "downstream.py",
        *args,
        "--task_csv=train.csv",
        "--task_test_csv=test.csv",
        "--task_key=Language",
        "--probes=[linear]",
    )
    out = json.loads((run / "downstream.json").read_text())
    gender = out["tasks"]["train:Gender"]
    assert gender["split"].startswith("held-out speakers")
    for probe in ("linear", "mlp"):
        for key in ("accuracy", "f1_macro", "f1_weighted"):
            assert 0.0 <= gender[probe][key] <= 1.0
    lang = out["tasks"]["train:Language"]
    assert "mlp" not in lang and 0.0 <= lang["linear"]["accuracy"] <= 1.0


@pytest.fixture(autouse=True, scope="module")
def _import_downstream():
    import importlib.util
    import os
    import sys

    path = os.path.join(
        os.path.dirname(__file__),
        "..",
        "..",
        "recipes",
        "VoxCeleb",
        "SSL",
        "downstream.py",
    )
    sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
    spec = importlib.util.spec_from_file_location("recipes_downstream", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    sys.modules["recipes_downstream"] = mod
    yield


def test_split_rows_reproducible(tmp_path):
    from recipes_downstream import split_rows

    from sslsv_sb.evaluation.classification import LabelRow

    csv = tmp_path / "l.csv"
    lines = ["File,Speaker,Gender"]
    rows = []
    for s in range(8):
        for u in range(3):
            lines.append(f"s{s}/{u}.wav,s{s},{'fm'[s % 2]}")
            rows.append(LabelRow(f"s{s}/{u}.wav", "fm"[s % 2], None))
    csv.write_text("\n".join(lines) + "\n")
    tr, te, desc = split_rows(str(csv), rows, 0.25, seed=1)
    tr2, te2, _ = split_rows(str(csv), rows, 0.25, seed=1)
    assert np.array_equal(te, te2) and np.array_equal(tr, tr2)
    spk_tr = {rows[i].file.split("/")[0] for i in tr}
    spk_te = {rows[i].file.split("/")[0] for i in te}
    assert len(spk_te) == 2 and not spk_tr & spk_te and "held-out" in desc
