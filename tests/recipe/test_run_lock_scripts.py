"""The run-folder lock of the scripts that write into a trained run, and of the
scripts that run several trainings under one folder.

``downstream.py`` and ``pseudo_labels.py`` check and lock the run folder as
``evaluate.py`` does (:class:`sslsv_sb.recipe.runfolder.EvaluationFolders`);
``label_efficient.py`` and ``language.py`` lock their output folder for the whole
command. Every test stops before any model is built (no training, no subprocess).
"""

import os

import numpy as np
import pandas as pd
import pytest

from sslsv_sb.errors import SSLSVError
from sslsv_sb.recipe import downstream, label_efficient, language, pseudo_labels
from sslsv_sb.recipe.evaluate import main as evaluate_main
from sslsv_sb.recipe.runfolder import LOCK_NAME, FolderLock
from tests.recipe.test_runfolder import ROOT, _eval_args, cli, snapshot

VOXLINGUA_YAML = os.path.join(
    ROOT, "recipes", "VoxLingua", "SSL", "hparams", "simclr_ecapa.yaml"
)
SUPERVISED_YAML = os.path.join(
    ROOT, "recipes", "VoxCeleb", "SSL", "hparams", "supervised_ecapa.yaml"
)


def downstream_args(corpus, run, *extra):
    return [
        *_eval_args(corpus, run),
        "--task_csv=train.csv",
        "--task_key=Gender",
        *extra,
    ]


def pseudo_args(corpus, run, *extra):
    return [*_eval_args(corpus, run), "--n_clusters=4", *extra]


SCRIPTS = {
    "downstream.py": (downstream.main, downstream_args, "probes a trained run"),
    "pseudo_labels.py": (
        pseudo_labels.main,
        pseudo_args,
        "clusters a trained run's embeddings",
    ),
}


@pytest.fixture
def run(tmp_path):
    """A run folder as the claim sees it (``save/``; nothing is loaded)."""
    folder = tmp_path / "run"
    (folder / "save").mkdir(parents=True)
    (folder / "verification.json").write_text("{}\n")
    return folder


# ------------------------------------------------- downstream.py, pseudo_labels.py
@pytest.mark.parametrize("script", list(SCRIPTS))
def test_missing_run_folder_is_one_line_and_creates_nothing(
    script, tiny_corpus, tmp_path, capsys
):
    main, make_args, purpose = SCRIPTS[script]
    missing = tmp_path / "nowhere"
    code, err = cli(main, make_args(tiny_corpus, missing), capsys)
    assert code == 2 and err == [
        f"error: --output_folder={missing}: no such run folder ({script} {purpose} "
        "and creates nothing)"
    ]
    assert not missing.exists()


@pytest.mark.parametrize("script", list(SCRIPTS))
def test_a_run_being_trained_is_refused_naming_the_holder(
    script, tiny_corpus, run, tmp_path, capsys
):
    main, make_args, _ = SCRIPTS[script]
    before = snapshot(run)
    extras = [[]]
    if script == "pseudo_labels.py":  # the run is read: refused wherever results go
        extras.append([f"--pseudo_folder={tmp_path / 'pl'}"])
    with FolderLock(run, command="train.py x.yaml"):
        locked = snapshot(run)
        for extra in extras:
            code, err = cli(main, make_args(tiny_corpus, run, *extra), capsys)
            assert code == 2 and len(err) == 1, err
            assert err[0].startswith(f"error: {run} is in use by pid {os.getpid()}")
            assert "(train.py x.yaml)" in err[0]
            assert snapshot(run) == locked  # no pseudo_labels/, no lock taken over
    assert snapshot(run) == before
    assert not (tmp_path / "pl").exists()


def test_two_scripts_on_one_run_are_refused(tiny_corpus, run, tmp_path, monkeypatch):
    """Each script, paused once its folders are locked, while the others start."""
    before = snapshot(run)
    here = f"is in use by pid {os.getpid()}"
    seen = {}

    def refused(main, argv):
        with pytest.raises(SSLSVError) as err:
            main(argv)
        return str(err.value)

    def during_downstream(hparams, run_opts):  # downstream.py holds the run
        seen["downstream"] = [
            refused(downstream.main, downstream_args(tiny_corpus, run)),
            refused(pseudo_labels.main, pseudo_args(tiny_corpus, run)),
            refused(evaluate_main, _eval_args(tiny_corpus, run)),
        ]
        raise SSLSVError("paused")

    monkeypatch.setattr(downstream, "build_brain", during_downstream)
    with pytest.raises(SSLSVError, match="^paused$"):
        downstream.main(downstream_args(tiny_corpus, run))
    assert all(msg.startswith(f"{run} {here}") for msg in seen["downstream"])

    depth = []
    other = tmp_path / "other_pseudo"

    def during_pseudo(hparams, run_opts, checkpoint):  # pseudo_labels.py reads it
        if depth:
            raise SSLSVError("claimed")
        depth.append(1)
        assert os.path.isfile(run / "pseudo_labels" / LOCK_NAME)
        seen["pseudo"] = [
            refused(downstream.main, downstream_args(tiny_corpus, run)),
            refused(pseudo_labels.main, pseudo_args(tiny_corpus, run)),
            # another results folder: both read the run at once
            refused(
                pseudo_labels.main,
                pseudo_args(tiny_corpus, run, f"--pseudo_folder={other}"),
            ),
        ]
        raise SSLSVError("paused")

    monkeypatch.setattr(pseudo_labels, "build_run_brain", during_pseudo)
    with pytest.raises(SSLSVError, match="^paused$"):
        pseudo_labels.main(pseudo_args(tiny_corpus, run))
    reader, writer, beside = seen["pseudo"]
    assert reader.startswith(f"{run} is in use by another process (a reader such as")
    assert "pseudo_labels.py" in reader
    assert writer.startswith(f"{run / 'pseudo_labels'} {here}")
    assert "use another --pseudo_folder" in writer
    assert beside == "claimed"
    assert not other.exists()  # made for the claim, removed again (empty)
    assert snapshot(run) == before  # locks released, empty pseudo_labels/ removed


def test_pseudo_label_list_is_written_atomically(tmp_path):
    path = tmp_path / "pseudo_labels.csv"
    df = pd.DataFrame({"File": ["a.wav", "b.wav"]})
    pseudo_labels.write_pseudo_list(str(path), df, np.array([0, 1]))
    first = path.read_text()
    assert first == "File,Speaker\na.wav,pseudo_00000\nb.wav,pseudo_00001\n"
    with pytest.raises(ValueError):  # fails after the first row was written
        pseudo_labels.write_pseudo_list(str(path), df, np.array([3, "x"], dtype=object))
    assert path.read_text() == first and os.listdir(tmp_path) == [path.name]


# ---------------------------------------------- label_efficient.py, language.py
def test_label_efficient_locks_its_output_folder(tiny_corpus, tmp_path, capsys):
    out = tmp_path / "le"
    out.mkdir()
    argv = [
        SUPERVISED_YAML,
        f"--data_folder={tiny_corpus}",
        f"--output_folder={out}",
        "--modes=[scratch]",
    ]
    with FolderLock(out, role="label_efficient.py", command="label_efficient.py x"):
        code, err = cli(label_efficient.main, argv, capsys)
        assert os.listdir(out) == [LOCK_NAME]  # no config, no lists, no save/
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"error: {out} is in use by pid {os.getpid()}")
    assert "(label_efficient.py x); wait for it to end" in err[0]


def test_language_locks_its_output_folder_beside_the_run_lock(
    tiny_corpus, tmp_path, capsys
):
    out = tmp_path / "lang"
    out.mkdir()
    argv = [VOXLINGUA_YAML, f"--data_folder={tiny_corpus}", f"--output_folder={out}"]
    # the stages' scripts lock the same folder as a run: not the command's lock
    with FolderLock(out, role="train.py"), FolderLock(out, name=language.LOCK_NAME):
        pass
    with FolderLock(out, name=language.LOCK_NAME, command="language.py x"):
        code, err = cli(language.main, argv, capsys)
        assert os.listdir(out) == [language.LOCK_NAME]  # no trials, no stage ran
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"error: {out} is in use by pid {os.getpid()}")
    assert "(language.py x); wait for it to end" in err[0]
