"""evaluate.py on a run trained once by train.py (tiny encoder, 1 epoch)."""

import glob
import json
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RECIPE = os.path.join(ROOT, "recipes", "VoxCeleb", "SSL")
YAML = os.path.join(RECIPE, "hparams", "simclr_ecapa.yaml")
MODEL = ["--channels=[16,16,16,16,48]", "--emb_dim=16"]
DATA = ["--train_list=train.csv", "--noise_folder=noise", "--rir_folder=rirs"]


def get_trained_run(tmp_path_factory, corpus):
    """Train once per pytest session (shared by the eval/export/downstream tests)."""
    out = tmp_path_factory.getbasetemp() / "sslsv_eval_trained_run"
    if not glob.glob(str(out / "save" / "CKPT+*" / "embedding_model.ckpt")):
        shutil.rmtree(out, ignore_errors=True)
        run_script(
            "train.py",
            f"--data_folder={corpus}",
            f"--output_folder={out}",
            *MODEL,
            *DATA,
            "--batch_size=4",
            "--frame_length=4000",
            "--number_of_epochs=1",
            "--num_workers=0",
            "--trial_lists=[trials.txt]",
            "--noprogressbar",
        )
    return out


def run_script(script, *args, ok=True):
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    proc = subprocess.run(
        [sys.executable, os.path.join(RECIPE, script), YAML, *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    if ok:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tiny_corpus):
    return get_trained_run(tmp_path_factory, tiny_corpus)


def _eval(corpus, run, *extra, ok=True):
    return run_script(
        "evaluate.py",
        f"--data_folder={corpus}",
        f"--output_folder={run}",
        *MODEL,
        *DATA,
        "--noprogressbar",
        *extra,
        ok=ok,
    )


@pytest.mark.slow
def test_reproduces_train_eer_and_hits_cache(trained_run, tiny_corpus, tmp_path):
    trained = json.loads((trained_run / "verification.json").read_text())
    out = tmp_path / "eval"
    _eval(
        tiny_corpus, trained_run, "--trial_lists=[trials.txt]", f"--eval_folder={out}"
    )
    ver = json.loads((out / "verification.json").read_text())
    assert ver["lists"]["trials"]["cosine"]["eer"] == pytest.approx(
        trained["lists"]["trials"]["cosine"]["eer"], abs=1e-9
    )
    assert ver["meta"]["cache"]["misses"] == ["list_trials"]
    again = _eval(
        tiny_corpus,
        trained_run,
        "--trial_lists=[trials.txt]",
        f"--eval_folder={out}",
        "--no_plots",
    )
    assert "trials" in again.stdout
    ver2 = json.loads((out / "verification.json").read_text())
    assert ver2["meta"]["cache"]["hits"] == ["list_trials"]
    assert ver2["lists"] == ver["lists"]


@pytest.mark.slow
def test_plda_asnorm_two_lists_and_plots(trained_run, tiny_corpus, tmp_path):
    lines = (tiny_corpus / "trials.txt").read_text().splitlines()
    second = tmp_path / "second.txt"
    second.write_text("\n".join(lines[1::2]) + "\n")
    out = tmp_path / "eval"
    _eval(
        tiny_corpus,
        trained_run,
        f"--trial_lists=[trials.txt,{second}]",
        "--backends=[cosine,plda]",
        "--score_norm=as-norm",
        "--n_cohort=20",
        "--cohort_top_k=5",
        f"--eval_folder={out}",
    )
    ver = json.loads((out / "verification.json").read_text())
    for name in ("trials", "second"):
        assert set(ver["lists"][name]) == {"cosine", "cosine_as-norm", "plda"}
        assert "cosine" in ver["untrained"]["lists"][name]
        png = out / "plots" / f"det_{name}.png"
        assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 1000
    assert (out / "plots" / "tsne.png").stat().st_size > 1000
    assert (out / "plots" / "scores_second_plda.png").stat().st_size > 1000
    assert "## second" in (out / "verification.md").read_text()


@pytest.mark.slow
def test_errors(trained_run, tiny_corpus, tmp_path):
    proc = _eval(
        tiny_corpus, tmp_path / "empty_run", "--trial_lists=[trials.txt]", ok=False
    )
    assert proc.returncode == 2 and "no such run folder" in proc.stderr
    assert not (tmp_path / "empty_run").exists()  # an error, never created
    proc = _eval(
        tiny_corpus,
        trained_run,
        "--trial_lists=[missing.txt]",
        f"--eval_folder={tmp_path / 'x'}",
        ok=False,
    )
    assert proc.returncode == 2 and "missing.txt" in proc.stderr
