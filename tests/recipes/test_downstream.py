"""downstream.py: frozen-embedding probes write downstream.json.

The train / test split is tested in ``tests/recipe/test_downstream_split.py``.
"""

import json

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
