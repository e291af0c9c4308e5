"""The run folder's lifecycle: lock, write-once yaml, resume check, signals, export.

Fast tests stop before any training (the lock and the resume check come first);
the slow ones train the tiny corpus once (shared run of ``test_evaluate``, copied)
or stop a training with SIGTERM.
"""

import errno
import fcntl
import glob
import hashlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
import torch

from sslsv_sb.errors import SSLSVError
from sslsv_sb.recipe import runfolder
from sslsv_sb.recipe.cli import run_cli
from sslsv_sb.recipe.evaluate import main as evaluate_main
from sslsv_sb.recipe.runfolder import (
    LOCK_NAME,
    RUN_HPARAMS,
    FolderLock,
    GracefulStop,
    StopRequested,
    TrainingRunFolder,
    ignore_stop_signals_in_workers,
    read_lock_info,
)
from sslsv_sb.recipe.tools.export_model import main as export_main
from sslsv_sb.recipe.train import main as train_main
from tests.tiny_run import BUDGET_ARGS, CORPUS_ARGS, MODEL_ARGS, with_overrides

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN = os.path.join(ROOT, "recipes", "VoxCeleb", "SSL", "train.py")
YAML = os.path.join(ROOT, "recipes", "VoxCeleb", "SSL", "hparams", "simclr_ecapa.yaml")


def args(corpus, out, *extra):
    """Tiny SimCLR run on the tiny corpus (the model of ``get_trained_run``)."""
    base = [YAML, f"--data_folder={corpus}", f"--output_folder={out}"]
    return with_overrides(base + CORPUS_ARGS + MODEL_ARGS + BUDGET_ARGS, *extra)


def snapshot(folder):
    """{relative path: sha1} of every file under ``folder`` (None if missing)."""
    if not os.path.exists(folder):
        return None
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = hashlib.sha1(f.read()).hexdigest()
    return out


def cli(main, argv, capsys):
    """Run ``main`` as its script would: (exit status, stderr lines)."""
    with pytest.raises(SystemExit) as exit_:
        run_cli(main, argv)
    return exit_.value.code, capsys.readouterr().err.strip().splitlines()


def dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def restore_logging():
    """train.main configures logging and sys.excepthook of this process."""
    root = logging.getLogger()
    handlers, level, hook = root.handlers[:], root.level, sys.excepthook
    yield
    for h in root.handlers:
        if h not in handlers:
            h.close()
    root.handlers[:], sys.excepthook = handlers, hook
    root.setLevel(level)


@pytest.fixture
def trained_copy(tmp_path_factory, tiny_corpus, tmp_path):
    """A copy of the session's tiny trained run (test_evaluate.get_trained_run)."""
    from tests.recipes.test_evaluate import get_trained_run

    run = tmp_path / "run"
    shutil.copytree(get_trained_run(tmp_path_factory, tiny_corpus), run)
    return run


# ------------------------------------------------------------------------ the lock
def test_lock_records_holder_and_refuses_a_second_holder(tmp_path):
    with FolderLock(tmp_path, command="train.py x.yaml"):
        info = read_lock_info(tmp_path)
        assert info["pid"] == os.getpid() and info["command"] == "train.py x.yaml"
        with pytest.raises(SSLSVError) as err:
            FolderLock(tmp_path, hint="kill {pid}").acquire()
        msg = str(err.value)
        assert msg.startswith(f"{tmp_path} is in use by pid {os.getpid()} on ")
        assert f"since {info['since']} (train.py x.yaml); kill {os.getpid()}" in msg
        with pytest.raises(SSLSVError, match="is in use by pid"):  # readers too
            FolderLock(tmp_path, shared=True).acquire()
    assert not os.path.exists(tmp_path / LOCK_NAME)
    with FolderLock(tmp_path, shared=True), FolderLock(tmp_path, shared=True):
        with pytest.raises(SSLSVError, match="a reader such as evaluate.py"):
            FolderLock(tmp_path).acquire()
    assert os.listdir(tmp_path) == []  # the readers' lock file is removed


def test_stale_lock_is_taken_over_with_a_log_line(tmp_path, caplog):
    pid = dead_pid()
    (tmp_path / LOCK_NAME).write_text(
        f'{{"pid": {pid}, "host": "h0", "since": "then", "command": "old"}}\n'
    )
    with caplog.at_level(logging.WARNING), FolderLock(tmp_path):
        assert read_lock_info(tmp_path)["pid"] == os.getpid()
    assert f"taking over the stale lock of pid {pid} on h0 since then (old)" in (
        caplog.text
    )


def test_lock_without_flock_checks_the_pid(tmp_path, monkeypatch, caplog):
    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    host = runfolder.socket.gethostname()
    try:
        (tmp_path / LOCK_NAME).write_text(f'{{"pid": {alive.pid}, "host": "{host}"}}')
        with pytest.raises(SSLSVError, match=f"in use by pid {alive.pid}"):
            FolderLock(tmp_path).acquire()
    finally:
        alive.kill()
        alive.wait()
    (tmp_path / LOCK_NAME).write_text(f'{{"pid": {dead_pid()}, "host": "{host}"}}')
    with caplog.at_level(logging.WARNING), FolderLock(tmp_path) as lock:
        assert not lock.flock and read_lock_info(tmp_path)["pid"] == os.getpid()
    assert "taking over the stale lock" in caplog.text
    assert not os.path.exists(tmp_path / LOCK_NAME)


# ------------------------------------------------------------------ train.py, fast
def test_train_on_a_locked_folder_stops_at_once_and_touches_nothing(
    tiny_corpus, tmp_path, capsys
):
    out = tmp_path / "run"
    out.mkdir()
    (out / RUN_HPARAMS).write_text("seed: 1\n")
    (out / "train_log.txt").write_text("epoch: 1\n")
    before = snapshot(out)
    with FolderLock(out, command="train.py other.yaml"):
        before_lock = snapshot(out)
        code, err = cli(train_main, args(tiny_corpus, out), capsys)
        assert snapshot(out) == before_lock
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"error: {out} is in use by pid {os.getpid()} on ")
    assert "(train.py other.yaml)" in err[0]
    assert snapshot(out) == before  # no save/ made by the yaml's Checkpointer


def test_unwritable_output_folder_is_one_line(tiny_corpus, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    out = tmp_path / "file" / "run"
    code, err = cli(train_main, args(tiny_corpus, out), capsys)
    assert code == 2 and err == [
        f"error: --output_folder={out}: cannot create the folder (Not a directory)"
    ]


def test_failed_validation_leaves_no_folder_and_no_yaml(tiny_corpus, tmp_path):
    out = tmp_path / "new" / "run"
    with pytest.raises(SSLSVError):
        train_main(args(tiny_corpus, out, "--train_list=missing.csv"))
    assert not (tmp_path / "new").exists()  # made for the run, removed when empty


def _record(corpus, out, *extra):
    """Record a run's hyperparams.yaml as train.py does (no training)."""
    from sslsv_sb.recipe.hparams import load_hparams

    run = TrainingRunFolder(command="test")
    try:
        hp_file, _, overrides, hparams = load_hparams(
            args(corpus, out, *extra), before_load=run.claim
        )
        return run.check(hp_file, overrides, hparams), hp_file, overrides, hparams, run
    finally:
        run.close()


def test_resume_changing_the_model_is_refused_and_yaml_kept(
    tiny_corpus, tmp_path, capsys
):
    out = tmp_path / "run"
    out.mkdir()
    _, hp_file, overrides, _, run = _record(tiny_corpus, out)
    record = out / RUN_HPARAMS
    record.write_text(run._record_text(hp_file, overrides))
    before = snapshot(out)
    code, err = cli(
        train_main,
        args(tiny_corpus, out, "--channels=[8,8,8,8,24]", "--seed=3"),
        capsys,
    )
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"error: {record}: this command changes the recorded run")
    # the keys the user changed, both values; not the keys derived from them
    assert (
        "seed: 1717 -> 3; channels: [16, 16, 16, 16, 48] -> [8, 8, 8, 8, 24])"
        in (err[0])
    )
    assert "encoder" not in err[0] and "checkpointer" not in err[0]
    assert snapshot(out) == before


def test_resume_changing_allowed_keys_is_accepted_and_yaml_kept(tiny_corpus, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    _, hp_file, overrides, _, run = _record(tiny_corpus, out)
    (out / RUN_HPARAMS).write_text(run._record_text(hp_file, overrides))
    before = snapshot(out)
    allowed, *_ = _record(
        tiny_corpus,
        out,
        "--number_of_epochs=3",
        "--num_workers=1",
        f"--output_folder={out}/../run",  # same folder, spelled otherwise
    )
    assert ("number_of_epochs", 1, 3) in allowed and ("num_workers", 0, 1) in allowed
    assert not [k for k, *_ in allowed if k in ("save_folder", "epoch_counter")]
    assert snapshot(out) == before


def test_checkpoints_without_record_are_refused(tiny_corpus, tmp_path):
    out = tmp_path / "run"
    (out / "save" / "CKPT+old").mkdir(parents=True)
    with pytest.raises(SSLSVError, match="holds checkpoints but .* is missing"):
        _record(tiny_corpus, out)


# --------------------------------------------------------------------- the signals
class _FakeBrain:
    """SpeechBrain's _fit_train loop, reduced to the two hooks GracefulStop wraps."""

    def __init__(self, gaf=1):
        self.step, self.grad_accumulation_factor, self.saved = 0, gaf, []
        self.checkpointer = SimpleNamespace(recoverables={})
        self.hparams = SimpleNamespace(epoch_counter=SimpleNamespace(current=1))

    def _should_save_intra_epoch_ckpt(self, last_time, steps):
        return False

    def _save_intra_epoch_ckpt(self):
        self.saved.append(self.step)

    def fit(self, signal_at):
        for _ in range(10):
            self.step += 1
            if self.step == signal_at:
                signal.raise_signal(signal.SIGTERM)
            if self._should_save_intra_epoch_ckpt(0, 0):
                self._save_intra_epoch_ckpt()


@pytest.mark.parametrize("gaf, signal_at, stop_at", [(1, 3, 3), (2, 3, 4)])
def test_sigterm_stops_at_an_optimiser_step_with_a_checkpoint(gaf, signal_at, stop_at):
    brain, stop = _FakeBrain(gaf), GracefulStop()
    stop.attach(brain)
    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(StopRequested) as err, stop.installed(), stop.deferred():
        brain.fit(signal_at)
    assert brain.saved == [stop_at] and brain.step == stop_at
    assert err.value.exit_code == 143 and err.value.message() == (
        "stopped by SIGTERM (checkpoint saved): re-run the same command to resume"
    )
    assert signal.getsignal(signal.SIGTERM) is previous  # handlers restored


def test_a_second_signal_stops_at_once():
    # raise_signal runs the Python handler before it returns; os.kill to our own
    # pid may be delivered to another thread and handled later, after the SIGINT
    # (pending handlers run by signal number: SIGINT first).
    stop, reached = GracefulStop(), []
    with pytest.raises(StopRequested) as err, stop.installed(), stop.deferred():
        signal.raise_signal(signal.SIGTERM)  # noted: waits for a step boundary
        reached.append("after the first")
        signal.raise_signal(signal.SIGINT)  # raises here
        reached.append("after the second")
    assert reached == ["after the first"]
    assert err.value.exit_code == 130 and not err.value.saved  # the one that stopped


def test_a_signal_outside_training_stops_at_once():
    stop, reached = GracefulStop(), []
    with pytest.raises(StopRequested) as err, stop.installed():
        signal.raise_signal(signal.SIGINT)  # the handler raises here
        reached.append("after the signal")
    assert not reached and err.value.exit_code == 130 and not err.value.saved


class _Probe(torch.utils.data.Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, i):
        return signal.getsignal(signal.SIGTERM) == signal.SIG_IGN


def test_loader_workers_ignore_stop_signals():
    kwargs = {"num_workers": 1, "batch_size": 2}
    ignore_stop_signals_in_workers(kwargs)
    (batch,) = list(torch.utils.data.DataLoader(_Probe(), **kwargs))
    assert batch.tolist() == [True, True]


@pytest.mark.slow
def test_sigterm_mid_training_leaves_a_checkpoint_a_resume_finishes(
    tiny_corpus, tmp_path
):
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        TRAIN,
        *args(
            tiny_corpus,
            out,
            "--number_of_epochs=3",
            "--trial_lists=[]",
            "--eval_untrained=False",
        ),
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env
    )
    deadline = time.time() + 300
    log = out / "train_log.txt"
    while time.time() < deadline and proc.poll() is None:
        if log.exists() and "epoch: 1" in log.read_text():
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before the signal"
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr[-2000:]
    assert stderr.strip().splitlines()[-1] == (
        "stopped by SIGTERM (checkpoint saved): re-run the same command to resume"
    )
    assert not (out / LOCK_NAME).exists()
    intra = [
        os.path.dirname(m)
        for m in glob.glob(str(out / "save" / "CKPT+*" / "CKPT.yaml"))
        if "end-of-epoch: false" in open(m).read()
    ]
    assert len(intra) == 1 and os.path.isfile(os.path.join(intra[0], "COMPLETE"))
    record = (out / RUN_HPARAMS).read_bytes()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    epochs = [line.split(",")[0] for line in log.read_text().splitlines()]
    assert epochs == ["epoch: 1", "epoch: 2", "epoch: 3"]
    assert (out / RUN_HPARAMS).read_bytes() == record


# ---------------------------------------------------------------------- export tool
def test_export_refuses_a_run_folder_and_a_non_empty_folder(tmp_path, capsys):
    run = tmp_path / "run"
    (run / "save" / "CKPT+x").mkdir(parents=True)
    (run / RUN_HPARAMS).write_text("brain_class: !name:x.Y\n")
    other = tmp_path / "other_run"
    other.mkdir()
    (other / RUN_HPARAMS).write_text("seed: 1\nbrain_class: !name:x.Y\n")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    before = {p: snapshot(p) for p in (run, other, busy)}
    for target, extra in [(run, []), (run, ["--force"]), (other, ["--force"])]:
        code, err = cli(export_main, [str(run), str(target), *extra], capsys)
        assert code == 2 and len(err) == 1, err
        assert err[0].startswith(f"error: {target} is a training run folder")
    code, err = cli(export_main, [str(run), str(busy)], capsys)
    assert code == 2 and err == [
        f"error: {busy} is not empty: give an empty or new OUT_FOLDER, or --force to "
        "replace the files of an earlier export there"
    ]
    code, err = cli(export_main, [str(run)], capsys)  # argparse: one line too
    assert code == 2 and len(err) == 1 and "out_folder" in err[0], err
    assert {p: snapshot(p) for p in (run, other, busy)} == before


def test_export_reads_a_moved_run_from_where_it_is(tmp_path):
    from sslsv_sb.recipe.tools.export_model import moved_run_overrides

    run = tmp_path / "copy"
    run.mkdir()
    (run / RUN_HPARAMS).write_text(
        "output_folder: /old/run\nsave_folder: /old/run/save\n"
        "checkpointer: !new:speechbrain.utils.checkpoints.Checkpointer\n"
        "    checkpoints_dir: /old/run/save\nnoise_folder: /data/noise\n"
    )
    assert moved_run_overrides(str(run)) == {
        "output_folder": str(run),
        "save_folder": str(run / "save"),
        "checkpointer": {"checkpoints_dir": str(run / "save")},
    }
    (run / RUN_HPARAMS).write_text(f"output_folder: {run}\nsave_folder: /x\n")
    assert moved_run_overrides(str(run)) == {}  # not moved


@pytest.mark.slow
def test_export_with_force_over_an_earlier_export_is_atomic(
    trained_copy, tmp_path, monkeypatch
):
    import sslsv_sb.export as export

    out = tmp_path / "bundle"
    export_main([str(trained_copy), str(out), "--formats=bundle"])
    names = set(snapshot(out))
    assert {"hyperparams.yaml", "embedding_model.ckpt", "export.json"} <= names
    assert not [n for n in names if ".tmp" in n]
    for name in names:  # an earlier export, whose files differ from the next one's
        with open(out / name, "ab") as f:
            f.write(b"\n# earlier export\n")
    first = snapshot(out)

    def mismatch(name, ref, got, atol=1e-4):
        raise SSLSVError(f"{name} export differs from the eager model; not kept")

    monkeypatch.setattr(export, "_check", mismatch)
    with pytest.raises(SSLSVError, match="differs"):  # --force: past the folder check
        export_main([str(trained_copy), str(out), "--formats=bundle", "--force"])
    assert snapshot(out) == first  # nothing half-written, no temporary file left


# ------------------------------------------------------------------- evaluate.py
def _eval_args(corpus, run, *extra):
    return [
        a
        for a in args(corpus, run, *extra)
        if not a.startswith(("--number_of_epochs", "--num_workers"))
    ]


def test_evaluate_a_missing_run_folder_creates_nothing(tiny_corpus, tmp_path, capsys):
    run = tmp_path / "nowhere"
    code, err = cli(evaluate_main, _eval_args(tiny_corpus, run), capsys)
    assert code == 2 and err == [
        f"error: --output_folder={run}: no such run folder (evaluate.py scores a "
        "trained run and creates nothing)"
    ]
    assert not run.exists()


def test_evaluate_refuses_a_run_being_trained_and_a_bad_eval_folder(
    tiny_corpus, tmp_path, capsys
):
    run = tmp_path / "run"
    (run / "save").mkdir(parents=True)
    before = snapshot(run)
    with FolderLock(run, command="train.py x.yaml"):
        for extra in [[], [f"--eval_folder={tmp_path / 'ev'}"]]:
            code, err = cli(evaluate_main, _eval_args(tiny_corpus, run, *extra), capsys)
            assert code == 2 and len(err) == 1, err
            assert f"{run} is in use by pid {os.getpid()}" in err[0]
            assert "(train.py x.yaml)" in err[0]
    assert not (tmp_path / "ev").exists()
    (tmp_path / "file").write_text("x")
    bad = tmp_path / "file" / "ev"
    code, err = cli(
        evaluate_main, _eval_args(tiny_corpus, run, f"--eval_folder={bad}"), capsys
    )
    assert code == 2 and err == [
        f"error: --eval_folder={bad}: cannot create the folder (Not a directory)"
    ]
    assert snapshot(run) == before


@pytest.mark.slow
def test_evaluate_corrupt_or_mismatched_checkpoint_is_one_line(
    trained_copy, tiny_corpus, tmp_path, capsys
):
    ev = tmp_path / "ev"
    argv = _eval_args(tiny_corpus, trained_copy, f"--eval_folder={ev}")
    code, err = cli(
        evaluate_main,
        [a for a in argv if not a.startswith("--channels")]
        + ["--channels=[8,8,8,8,24]"],
        capsys,
    )
    assert code == 2 and len(err) == 1, err
    assert "embedding_model.ckpt: does not fit the embedding_model" in err[0]
    assert "is (16, " in err[0] and "in the checkpoint, (8, " in err[0]
    assert "channels: [16, 16, 16, 16, 48] -> [8, 8, 8, 8, 24]" in err[0]
    (ckpt,) = glob.glob(str(trained_copy / "save" / "CKPT+*" / "embedding_model.ckpt"))
    with open(ckpt, "r+b") as f:
        f.truncate(100)
    code, err = cli(evaluate_main, argv, capsys)
    assert (
        code == 2
        and err == [err[0]]
        and err[0].startswith(f"error: {ckpt}: unreadable checkpoint file (")
    )
    assert not glob.glob(str(ev / "*.json"))  # nothing scored
