"""Bad input to the real entry points: one ``error:`` line, exit 2, run folder intact.

One table (:data:`CASES`) drives ``recipes/VoxCeleb/SSL/train.py``,
``recipes/VoxCeleb/SSL/evaluate.py`` and ``tools/export_model.py`` on a tiny data
folder and a tiny trained run (module fixtures, shared by the cases). Every case gets
its own copy of the data folder (changed by the case's ``setup``) and of the run
folder, then asserts:

- the exit status (2 for a user error);
- exactly one ``error: ...`` line on stderr, matching the case's pattern (the file
  and line, or the key, it names), and no traceback on stderr or stdout;
- the run folder (and any other folder the case names) byte-identical afterwards:
  every file's SHA-256, hidden files included, and no file added or removed.

``train.py`` cases run on a copy of a finished run with the command that trained it
(a resume: ``data_folder`` and ``output_folder`` may change on a resume), so data
problems must be found by the checks before the first step, not by the resume check.

Speed: each case runs the script as ``__main__`` in a process of its own, forked from
a warm interpreter that has already imported torch, SpeechBrain and ``sslsv_sb``
(:func:`_serve`): a case costs its own work (~0.3-2 s) instead of ~4 s of imports.
:func:`test_cold_process_stderr` runs one case in a fresh interpreter as well, and
checks that stderr then holds the error line alone (no SpeechBrain warning).
"""

import atexit
import fcntl
import hashlib
import json
import os
import re
import runpy
import shutil
import signal
import subprocess
import sys
import time
import traceback

import numpy as np
import pytest
import soundfile as sf

from tests.tiny_run import BUDGET_ARGS, CORPUS_ARGS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE = os.path.join(ROOT, "recipes", "VoxCeleb", "SSL")
TRAIN = os.path.join(RECIPE, "train.py")
EVALUATE = os.path.join(RECIPE, "evaluate.py")
EXPORT = os.path.join(ROOT, "tools", "export_model.py")
YAML = os.path.join(RECIPE, "hparams", "simclr_ecapa.yaml")
SR = 16000

# The tiny run every case starts from (train.py resumes it; evaluate.py and the
# export tool read it).
MODEL_ARGS = ["--channels=[8,8,8,8,24]", "--emb_dim=8"]
TRAIN_ARGS = [*CORPUS_ARGS, *MODEL_ARGS, *BUDGET_ARGS]
TRAIN_FILES = [f"wav/u{i}.wav" for i in range(4)]  # one batch of 4
TEST_FILES = [f"wav/t{i}.wav" for i in range(4)]
TRIALS = (
    "1 wav/t0.wav wav/t1.wav\n0 wav/t0.wav wav/t2.wav\n"
    "1 wav/t2.wav wav/t3.wav\n0 wav/t1.wav wav/t3.wav\n"
)


# --------------------------------------------------------------- the warm runner
def _run_child(req):
    """In the forked child: run ``req["script"]`` as ``__main__``, then exit."""
    os.chdir(req["cwd"])
    for fd, path in ((1, req["stdout"]), (2, req["stderr"])):
        out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(out, fd)
        os.close(out)
    sys.argv = [req["script"], *req["argv"]]
    code = 0
    try:
        runpy.run_path(req["script"], run_name="__main__")
    except SystemExit as stop:
        if stop.code is None:
            code = 0
        elif isinstance(stop.code, int):
            code = stop.code
        else:
            print(stop.code, file=sys.stderr)
            code = 1
    except BaseException:  # as the interpreter does for an uncaught exception
        sys.excepthook(*sys.exc_info())
        code = 1
    try:
        atexit._run_exitfuncs()
    except BaseException:
        traceback.print_exc()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _serve():
    """Fork server: one JSON request per stdin line -> ``{"rc": exit status}``."""
    import sslsv_sb.recipe.cli  # noqa: F401  (first, as in the scripts)
    import sslsv_sb.recipe.evaluate  # noqa: F401
    import sslsv_sb.recipe.tools.export_model  # noqa: F401
    import sslsv_sb.recipe.train  # noqa: F401

    for line in sys.stdin:
        req = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _run_child(req)
        deadline = time.monotonic() + req["timeout"]
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                rc = os.waitstatus_to_exitcode(status)
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                rc = "timeout"
                break
            time.sleep(0.02)
        print(json.dumps({"rc": rc}), flush=True)


class WarmRunner:
    """Client of :func:`_serve` (a subprocess started once per test module)."""

    def __init__(self):
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            # run as a script, this file imports tests.tiny_run from the checkout
            env={
                **os.environ,
                "PYTHONPATH": os.pathsep.join(
                    p for p in (ROOT, os.environ.get("PYTHONPATH")) if p
                ),
            },
        )

    def run(self, script, argv, folder, timeout=300):
        """Run ``script argv`` -> ``(exit status, stdout, stderr)``."""
        out, err = os.path.join(folder, "stdout.txt"), os.path.join(folder, "err.txt")
        req = {
            "script": script,
            "argv": [str(a) for a in argv],
            "cwd": ROOT,
            "stdout": out,
            "stderr": err,
            "timeout": timeout,
        }
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        reply = self.proc.stdout.readline()
        assert reply, "the warm runner died"
        rc = json.loads(reply)["rc"]
        with open(out, encoding="utf-8", errors="replace") as f:
            stdout = f.read()
        with open(err, encoding="utf-8", errors="replace") as f:
            stderr = f.read()
        return rc, stdout, stderr

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


# ------------------------------------------------------------------------ data
def _noise(seconds, channels=1, seed=0, rate=SR):
    rng = np.random.default_rng(seed)
    shape = (int(seconds * rate), channels) if channels > 1 else int(seconds * rate)
    return (0.1 * rng.standard_normal(shape)).astype("float32")


def _write_wav(path, x, rate=SR):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    sf.write(path, x, rate)


def make_data(folder):
    """Tiny data folder: 4 train files, 4 test files, trials, noise and RIR banks."""
    for i, name in enumerate(TRAIN_FILES + TEST_FILES):
        _write_wav(os.path.join(folder, name), _noise(1.0, seed=i))
    _write_wav(os.path.join(folder, "noise", "noise", "n0.wav"), _noise(1.0, seed=9))
    rir = np.exp(-np.arange(800) / 80.0).astype("float32") * _noise(0.05, seed=8)
    _write_wav(os.path.join(folder, "rirs", "r0.wav"), rir)
    rows = [f"{f},s{i % 2}" for i, f in enumerate(TRAIN_FILES)]
    _text(folder, "train.csv", "File,Speaker\n" + "\n".join(rows) + "\n")
    _text(folder, "trials.txt", TRIALS)


def _text(folder, name, text):
    with open(os.path.join(folder, name), "w", encoding="utf-8") as f:
        f.write(text)


def _bytes(folder, name, data):
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)


def snapshot(folder):
    """``{relative path: sha256}`` of every file under ``folder`` (dirs as None)."""
    out = {}
    for root, dirs, files in os.walk(folder):
        for d in dirs:
            out[os.path.relpath(os.path.join(root, d), folder) + "/"] = None
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
            out[os.path.relpath(path, folder)] = digest
    return out


@pytest.fixture(scope="module")
def runner():
    warm = WarmRunner()
    yield warm
    warm.close()


@pytest.fixture(scope="module")
def trained(tmp_path_factory, runner):
    """``(data folder, run folder)`` of a finished 1-epoch tiny run.

    Trained once per session: the pytest-xdist workers share it (file lock in the
    session's base folder); cases only read it (they work on copies).
    """
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the session's folder, shared by its workers
    base = root / "bad_inputs_trained"
    data, run = base / "data", base / "run"
    with open(root / "bad_inputs_trained.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
        if not os.path.isfile(run / "verification.json"):
            shutil.rmtree(base, ignore_errors=True)
            make_data(str(data))
            argv = [YAML, f"--data_folder={data}", f"--output_folder={run}"]
            rc, out, err = runner.run(TRAIN, [*argv, *TRAIN_ARGS], str(root))
            assert rc == 0, err[-3000:]
            assert os.path.isfile(run / "verification.json"), out[-2000:]
    return data, run


# ------------------------------------------------------------------- the table
def _replace_line(folder, name, number, text):
    path = os.path.join(folder, name)
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    lines[number - 1] = text
    _text(folder, name, "\n".join(lines) + "\n")


def _append(folder, name, text):
    with open(os.path.join(folder, name), "a", encoding="utf-8") as f:
        f.write(text)


def _ckpt_files(run, name):
    save = os.path.join(run, "save")
    return [
        os.path.join(save, d, name)
        for d in sorted(os.listdir(save))
        if d.startswith("CKPT+") and os.path.isfile(os.path.join(save, d, name))
    ]


def _corrupt_ckpt(data, run):
    del data
    for path in _ckpt_files(run, "embedding_model.ckpt"):
        with open(path, "wb") as f:
            f.write(b"PK\x03\x04 not a checkpoint")


def _hold_lock(data, run):
    """Hold the run's lock from this process (as a training run would)."""
    del data
    from sslsv_sb.recipe.runfolder import FolderLock

    lock = FolderLock(str(run), role="train.py", command="train.py (held by the test)")
    lock.acquire()
    return lock.release


def _nonempty_out(data, run):
    del run
    os.makedirs(os.path.join(data, "bundle"))
    _text(data, "bundle/keep.txt", "a user's file\n")


class Case:
    """One row: script, extra arguments, data change, expected error line.

    ``argv`` items are formatted with ``data`` and ``run`` (the case's copies);
    ``setup(data, run)`` changes them before the run and may return a cleanup
    callable; ``also_intact`` names folders (relative to ``data``) that must stay
    byte-identical too; ``stderr_has`` are patterns of other stderr lines;
    ``known_bug`` marks a case that fails for a known, reported reason (strict
    xfail: the case fails again as soon as the bug is fixed, to drop the mark).
    """

    def __init__(
        self,
        name,
        script,
        argv,
        error,
        setup=None,
        code=2,
        also_intact=(),
        stderr_has=(),
        known_bug=None,
    ):
        self.name, self.script, self.argv, self.error = name, script, argv, error
        self.setup, self.code = setup, code
        self.also_intact, self.stderr_has = also_intact, stderr_has
        self.known_bug = known_bug

    def __repr__(self):
        return self.name


def _with(base, extra):
    """``base`` arguments, those of a key given in ``extra`` replaced by it."""
    keys = {e.split("=", 1)[0] for e in extra}
    return [a for a in base if a.split("=", 1)[0] not in keys] + list(extra)


def _train(*extra):
    base = [YAML, "--data_folder={data}", "--output_folder={run}", *TRAIN_ARGS]
    return _with(base, extra)


def _evaluate(*extra):
    base = [
        YAML,
        "--data_folder={data}",
        "--output_folder={run}",
        "--train_list=train.csv",
        "--trial_lists=[trials.txt]",
        *MODEL_ARGS,
        "--noprogressbar",
    ]
    return _with(base, extra)


def _set(action):
    """``setup`` from ``action(data)`` (a data-only change)."""

    def setup(data, run):
        del run
        action(data)

    return setup


U1 = "wav/u1.wav"  # train.csv line 3
T2 = "wav/t2.wav"  # first used on trials.txt line 2

CASES = [
    # ---- train list and its audio (found before the first step)
    Case(
        "missing_audio",
        TRAIN,
        _train(),
        r"train\.csv:3: audio file not found: .*u1\.wav",
        _set(lambda d: os.remove(os.path.join(d, U1))),
    ),
    Case(
        "corrupt_audio",
        TRAIN,
        _train(),
        r"train\.csv:3: .*u1\.wav: cannot read audio",
        _set(lambda d: _bytes(d, U1, b"RIFF\x24\x00\x00\x00WAVEfmt garbage")),
    ),
    Case(
        "empty_audio_file",
        TRAIN,
        _train(),
        r"train\.csv:3: .*u1\.wav: cannot read audio \(empty file \(0 bytes\)\)",
        _set(lambda d: _bytes(d, U1, b"")),
    ),
    Case(
        "non_audio_file",
        TRAIN,
        _train(),
        r"train\.csv:3: .*u1\.wav: cannot read audio \(Format not recognised\)",
        _set(lambda d: _text(d, U1, "File,Speaker\nthis is text\n")),
    ),
    Case(
        "wrong_sample_rate",
        TRAIN,
        _train(),
        r"train\.csv:3: .*u1\.wav: sample rate 8000 Hz, expected 16000 Hz",
        _set(lambda d: _write_wav(os.path.join(d, U1), _noise(1.0, rate=8000), 8000)),
    ),
    Case(
        "short_audio_dropped",
        TRAIN,
        _train(),
        r"train\.csv: 3 utterances after dropping 1 shorter than min_duration 0\.5 s"
        r", fewer than one batch of 4",
        _set(lambda d: _write_wav(os.path.join(d, U1), _noise(0.1))),
        stderr_has=[r"train\.csv: dropped 1 of 4 files shorter than min_duration"],
    ),
    Case(
        "zero_length_trial_audio",
        TRAIN,
        _train(),
        r"trials\.txt:2: .*t2\.wav: zero-length audio file",
        _set(lambda d: _write_wav(os.path.join(d, T2), np.zeros(0, "float32"))),
    ),
    Case(
        "stereo_averaged_then_bad_label",
        TRAIN,
        _train(),
        r"trials\.txt:3: malformed trial line .*label '2' is neither 1",
        _set(
            lambda d: (
                _write_wav(os.path.join(d, U1), _noise(1.0, channels=2)),
                _replace_line(d, "trials.txt", 3, "2 wav/t2.wav wav/t3.wav"),
            )
        ),
        stderr_has=[r"train\.csv: 1 multi-channel file is averaged to mono"],
    ),
    # ---- list files
    Case(
        "zero_byte_train_list",
        TRAIN,
        _train(),
        r"train\.csv: the train list is empty \(no header line\)",
        _set(lambda d: _text(d, "train.csv", "")),
    ),
    Case(
        "header_only_train_list",
        TRAIN,
        _train(),
        r"train\.csv: the train list is empty",
        _set(lambda d: _text(d, "train.csv", "File,Speaker\n")),
    ),
    Case(
        "wrong_header",
        TRAIN,
        _train(),
        r"train\.csv:1: header must contain 'File' .*found \['Path', 'Spk'\]$",
        _set(lambda d: _text(d, "train.csv", "Path,Spk\nwav/u0.wav,s0\n")),
    ),
    Case(
        "duplicate_train_entry",
        TRAIN,
        _train(),
        r"train\.csv:6: duplicate entry wav/u0\.wav",
        _set(lambda d: _append(d, "train.csv", "wav/u0.wav,s0\n")),
    ),
    Case(
        "malformed_trial_line",
        TRAIN,
        _train(),
        r"trials\.txt:2: malformed trial line '0 wav/t0\.wav'",
        _set(lambda d: _replace_line(d, "trials.txt", 2, "0 wav/t0.wav")),
    ),
    Case(
        "trial_label_2",
        TRAIN,
        _train(),
        r"trials\.txt:4: malformed trial line .*label '2'",
        _set(lambda d: _replace_line(d, "trials.txt", 4, "2 wav/t1.wav wav/t3.wav")),
    ),
    Case(
        "trial_unknown_file",
        TRAIN,
        _train(),
        r"trials\.txt:2: unknown file wav/nope\.wav",
        _set(lambda d: _replace_line(d, "trials.txt", 2, "0 wav/t0.wav wav/nope.wav")),
    ),
    Case(
        "trial_file_wrong_rate",
        TRAIN,
        _train(),
        r"trials\.txt:2: .*t2\.wav: sample rate 22050 Hz",
        _set(lambda d: _write_wav(os.path.join(d, T2), _noise(1.0, rate=22050), 22050)),
    ),
    Case(
        "missing_trial_list",
        TRAIN,
        _train("--trial_lists=[trials.txt,nope.txt]"),
        r"trial_lists: trial list 'nope\.txt' not found",
    ),
    Case(
        "bad_valid_trial_list",
        TRAIN,
        _train("--valid_trial_list=valid.txt"),
        r"valid\.txt:1: malformed trial line",
        _set(lambda d: _text(d, "valid.txt", "1 wav/t0.wav\n")),
    ),
    # ---- augmentation folders
    Case(
        "empty_noise_folder",
        TRAIN,
        _train(),
        r"no wav files under .*noise/\{noise,music,speech\}",
        _set(lambda d: os.remove(os.path.join(d, "noise", "noise", "n0.wav"))),
    ),
    Case(
        "missing_rir_folder",
        TRAIN,
        _train(),
        r"RIR folder not found: .*rirs",
        _set(lambda d: shutil.rmtree(os.path.join(d, "rirs"))),
    ),
    Case(
        "augmentation_file_wrong_rate",
        TRAIN,
        _train(),
        r"rirs/r0\.wav: sample rate 8000 Hz, expected 16000 Hz",
        _set(
            lambda d: _write_wav(
                os.path.join(d, "rirs", "r0.wav"), _noise(0.05, rate=8000), 8000
            )
        ),
    ),
    # ---- overrides
    Case(
        "override_int_text",
        TRAIN,
        _train("--batch_size=abc"),
        r"--batch_size=abc: expected an integer .*got text",
    ),
    Case(
        "override_float_text",
        TRAIN,
        _train("--lr=abc"),
        r"--lr=abc: expected a number",
    ),
    Case(
        "override_int_fraction",
        TRAIN,
        _train("--number_of_epochs=1.5"),
        r"--number_of_epochs=1\.5: expected an integer .*got a float",
    ),
    Case(
        "override_null_default_text",
        TRAIN,
        _train("--eval_crop_seconds=abc"),
        r"--eval_crop_seconds=abc: expected a number or null",
    ),
    Case(
        "override_bool_number",
        TRAIN,
        _train("--tensorboard=1"),
        r"--tensorboard=1: expected True or False",
    ),
    Case(
        "override_list_elements",
        TRAIN,
        _train("--trial_lists=trials.txt"),
        r"--trial_lists=trials\.txt: expected a list",
    ),
    Case(
        "override_unknown_key",
        TRAIN,
        _train("--batchsize=4"),
        r"unknown hyper-parameter on the command line: --batchsize .*did you mean "
        r"--batch_size\b",
    ),
    Case(
        "override_given_twice",
        TRAIN,
        [*_train(), "--seed=3", "--seed=4"],
        r"--seed is given twice on the command line",
    ),
    Case(
        "persistent_workers",
        TRAIN,
        _train(
            "--output_folder={data}/new_run",  # a fresh run, not a resume
            "--dataloader_options={{batch_size: 8, num_workers: 2, "
            "persistent_workers: True}}",
        ),
        r"persistent_workers: True is not supported",
    ),
    # ---- the run folder (lock, resume; H15a)
    Case(
        "locked_output_folder",
        TRAIN,
        _train(),
        r"is in use by pid \d+ on .*held by the test",
        _hold_lock,
    ),
    Case(
        "resume_with_other_model",
        TRAIN,
        _train("--emb_dim=16"),
        r"emb_dim",
    ),
    Case(
        "output_folder_not_creatable",
        TRAIN,
        _train("--output_folder={data}/train.csv/out"),
        r"--output_folder=.*train\.csv/out",
    ),
    # ---- evaluate.py
    Case(
        "evaluate_corrupt_checkpoint",
        EVALUATE,
        _evaluate("--checkpoint=last"),
        r"embedding_model\.ckpt",
        _corrupt_ckpt,
    ),
    Case(
        "evaluate_other_model",
        EVALUATE,
        _evaluate("--channels=[16,16,16,16,48]"),
        r"(channels|size|shape|match)",
    ),
    Case(
        "evaluate_missing_run_folder",
        EVALUATE,
        [YAML, "--data_folder={data}", "--output_folder={data}/no_run", *MODEL_ARGS],
        r"no_run",
    ),
    Case(
        "evaluate_unknown_backend",
        EVALUATE,
        _evaluate("--backends=[cosine,lda]"),
        r"--backends: unknown back-end\(s\) \['lda'\]",
    ),
    Case(
        "evaluate_bad_checkpoint_flag",
        EVALUATE,
        _evaluate("--checkpoint={run}/save/CKPT+nope"),
        r"CKPT\+nope",
    ),
    Case(
        "evaluate_malformed_trials",
        EVALUATE,
        _evaluate(),
        r"trials\.txt:2: malformed trial line",
        _set(lambda d: _replace_line(d, "trials.txt", 2, "0 wav/t0.wav")),
    ),
    Case(
        "evaluate_eval_folder_is_a_file",
        EVALUATE,
        _evaluate("--eval_folder={data}/train.csv"),
        r"train\.csv",
    ),
    # ---- tools/export_model.py
    Case(
        "export_into_run_folder",
        EXPORT,
        ["{run}", "{run}", "--formats=bundle"],
        r"run folder",
    ),
    Case(
        "export_into_non_empty_folder",
        EXPORT,
        ["{run}", "{data}/bundle", "--formats=bundle"],
        r"bundle.*(not empty|--force)",
        _nonempty_out,
        also_intact=["bundle"],
    ),
    Case(
        "export_missing_run_folder",
        EXPORT,
        ["{data}/no_run", "{data}/out", "--formats=bundle"],
        r"no_run",
    ),
    Case(
        "export_corrupt_checkpoint",
        EXPORT,
        ["{run}", "{data}/out", "--formats=bundle"],
        r"embedding_model\.ckpt",
        _corrupt_ckpt,  # of the case's copy: a moved run exports its own
    ),
    Case(
        "export_unknown_format",
        EXPORT,
        ["{run}", "{data}/out", "--formats=bundle,tflite"],
        r"tflite",
    ),
    Case(
        "export_missing_argument",
        EXPORT,
        ["{run}"],
        r"the following arguments are required: out_folder",
    ),
]

_ERROR_LINE = re.compile(r"^(?:[\w.-]+: )?error: (.*)$")


def _prepare(case, trained, tmp_path):
    """Copies of the data and run folders, changed by the case's setup."""
    data, run = tmp_path / "data", tmp_path / "run"
    shutil.copytree(trained[0], data)
    shutil.copytree(trained[1], run)
    cleanup = case.setup(str(data), str(run)) if case.setup else None
    argv = [a.format(data=data, run=run) for a in case.argv]
    return data, run, argv, cleanup


def _check(case, rc, out, err):
    """Exit status, one error line matching the case, no traceback."""
    assert rc == case.code, f"{case.name}: exit {rc}\n{err[-3000:]}"
    errors = [m.group(1) for m in map(_ERROR_LINE.match, err.splitlines()) if m]
    assert len(errors) == 1, f"{case.name}: {len(errors)} error lines\n{err[-3000:]}"
    assert re.search(case.error, errors[0]), f"{case.name}: {errors[0]!r}"
    assert "Traceback" not in err and "Traceback" not in out, err[-3000:]
    for pattern in case.stderr_has:
        assert re.search(pattern, err), f"{case.name}: {pattern!r} not in\n{err}"


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(
            c,
            id=c.name,
            marks=[pytest.mark.xfail(strict=True, reason=c.known_bug)]
            if c.known_bug
            else [],
        )
        for c in CASES
    ],
)
def test_bad_input(case, trained, runner, tmp_path):
    data, run, argv, cleanup = _prepare(case, trained, tmp_path)
    intact = [run] + [data / p for p in case.also_intact]
    before = [snapshot(p) for p in intact]
    try:
        rc, out, err = runner.run(case.script, argv, str(tmp_path))
        after = [snapshot(p) for p in intact]
    finally:
        if cleanup:
            cleanup()
    _check(case, rc, out, err)
    for path, old, new in zip(intact, before, after):
        changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
        assert not changed, f"{case.name}: {path} changed: {changed}"


def test_table_size():
    assert len(CASES) >= 25
    assert len({c.name for c in CASES}) == len(CASES)


def test_cold_process_stderr(trained, tmp_path):
    """A fresh interpreter prints the error line and nothing else on stderr."""
    case = next(c for c in CASES if c.name == "trial_label_2")
    data, run, argv, _ = _prepare(case, trained, tmp_path)
    before = snapshot(run)
    proc = subprocess.run(
        [sys.executable, case.script, *argv],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    _check(case, proc.returncode, proc.stdout, proc.stderr)
    assert proc.stderr.strip().splitlines() == [
        line for line in proc.stderr.strip().splitlines() if line.startswith("error:")
    ], proc.stderr  # no "torchvision is not available" or other noise
    assert snapshot(run) == before


if __name__ == "__main__" and sys.argv[1:] == ["--serve"]:
    _serve()
