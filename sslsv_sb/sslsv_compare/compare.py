"""Side-by-side comparison with sslsv: run both toolkits, score both, report.

For one method and encoder, :func:`main`:

1. resolves the data (the embedded corpus, rendered if missing, or
   ``--data_folder``), our settings
   (:func:`~sslsv_sb.sslsv_compare.mapping.our_settings` plus ``--overrides``) and
   the equal step budget (``--steps`` / ``--epochs``);
2. translates the settings into an sslsv ``config.yml``
   (:func:`~sslsv_sb.sslsv_compare.mapping.to_sslsv`) and prints the settings table,
   flagging every setting that differs;
3. sslsv side: builds the data view (:mod:`~sslsv_sb.sslsv_compare.dataview`),
   checks with a dry run of the runner that sslsv's loaded config holds every
   written value, then trains with sslsv's own trainer in sslsv's virtual
   environment (:mod:`~sslsv_sb.sslsv_compare.runner`) and saves its embeddings of
   the trial files; the sslsv folder must be unchanged afterwards (file list, sizes
   and modification times);
4. our side: ``recipes/VoxCeleb/SSL/train.py`` with every setting on the command
   line, which scores the untrained and trained encoders itself;
5. scores both toolkits with the same code (the project's
   :func:`~sslsv_sb.evaluation.scoring.cosine_scores` and
   :func:`~sslsv_sb.evaluation.metrics.verification_metrics` on the same trial
   list) and writes the report: a table on stdout and ``<out>/comparison.json``.

Work folders: ``<out>/sslsv`` (data view, generated config, sslsv's model folder,
``run.log``) and ``<out>/ours`` (our run folder). A re-run replaces them.
"""

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

from sslsv_sb.errors import SSLSVError
from sslsv_sb.sslsv_compare import dataview
from sslsv_sb.sslsv_compare.mapping import (
    METHODS,
    VIEW_DIR,
    VIEW_TRIAL_LIST,
    check_resolved,
    extra_rows,
    format_table,
    make_budget,
    method_entry,
    our_cli_args,
    our_settings,
    to_sslsv,
    yaml_name,
)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN_PY = os.path.join(REPO, "recipes", "VoxCeleb", "SSL", "train.py")
HPARAMS = os.path.join(REPO, "recipes", "VoxCeleb", "SSL", "hparams")
RUNNER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "runner.py")

#: Packages of sslsv's virtual environment (``--make-venv``): sslsv's requirements
#: on a current stack (torch/torchaudio pinned to the project's pair).
SSLSV_VENV_PACKAGES = (
    "torch==2.14.1",
    "torchaudio==2.11.0",
    "numpy",
    "pandas",
    "soundfile",
    "scikit-learn",
    "tensorboard",
    "ruamel.yaml",
    "dacite",
    "prettyprinter",
    "tqdm",
    "wandb",
)
#: Modules the runner needs in sslsv's environment (checked before running).
SSLSV_VENV_MODULES = (
    "torch",
    "torchaudio",
    "numpy",
    "pandas",
    "scipy",
    "soundfile",
    "sklearn",
    "ruamel.yaml",
    "dacite",
    "prettyprinter",
    "tqdm",
    "wandb",
    "tensorboard",
)
_MARKER = ".sslsv_compare"


# ---------------------------------------------------------------------- arguments
def parse_args(argv):
    """Command-line options (see ``docs/sslsv_comparison.md``)."""
    parser = argparse.ArgumentParser(
        prog="compare_sslsv.py",
        description="Train one method with sslsv and with the project on identical "
        "settings, score both the same way, report EER / minDCF and speed.",
    )
    parser.add_argument("--method", choices=sorted(METHODS))
    parser.add_argument("--encoder", default="ecapa", choices=["ecapa", "resnet34"])
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=int, help="optimiser steps on each side")
    budget.add_argument(
        "--epochs", type=int, help="epochs on each side (default 11: the demo)"
    )
    parser.add_argument(
        "--overrides",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="our settings to change (YAML values), mapped to both toolkits",
    )
    parser.add_argument("--only", choices=["sslsv", "ours"], help="run one side")
    parser.add_argument("--out", help="work folder (default results/sslsv_compare/...)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (2)")
    parser.add_argument("--seed", type=int, default=1717, help="seed (1717)")
    parser.add_argument(
        "--sslsv",
        default=os.environ.get("SSLSV_DIR"),
        help="extracted sslsv folder (default $SSLSV_DIR)",
    )
    parser.add_argument(
        "--sslsv-python",
        default=os.environ.get("SSLSV_PYTHON"),
        help="python of sslsv's virtual environment (default $SSLSV_PYTHON)",
    )
    parser.add_argument(
        "--make-venv",
        metavar="DIR",
        help="create sslsv's virtual environment in DIR (pip) if missing, use it",
    )
    parser.add_argument(
        "--data_folder", help="data folder (default: the embedded corpus)"
    )
    parser.add_argument(
        "--corpus",
        default="demo",
        choices=["demo", "tiny"],
        help="embedded corpus preset when no --data_folder is given (demo)",
    )
    parser.add_argument("--train_list", help="train list (relative to the data)")
    parser.add_argument("--trial_list", help="trial list (relative to the data)")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the settings, check sslsv's loaded config, do not train",
    )
    parser.add_argument(
        "--verbose", action="store_true", help="echo both toolkits' output"
    )
    parser.add_argument(
        "--table",
        nargs="+",
        metavar="JSON",
        help="print the markdown table of these comparison.json files, train nothing",
    )
    args = parser.parse_args(argv)
    if args.table:
        return args
    if args.method is None:
        parser.error("the following arguments are required: --method")
    if args.steps is None and args.epochs is None:
        args.epochs = 11
    if args.threads < 1:
        parser.error("--threads must be >= 1")
    return args


def parse_overrides(items):
    """``["key=value", ...]`` -> ``{key: value}`` with YAML values (1.2 rules).

    Raises
    ------
    SSLSVError
        For an item without ``=`` or with an unreadable value.
    """
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    yaml = YAML(typ="safe", pure=True)
    out = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise SSLSVError(f"--overrides: expected KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = yaml.load(text) if text.strip() else None
        except YAMLError as err:
            raise SSLSVError(
                f"--overrides {key}: cannot read {text!r} ({err})"
            ) from err
    return out


# ----------------------------------------------------------------------- the data
def resolve_data(args):
    """``(data folder, embedded?)``: ``--data_folder`` or the embedded corpus.

    A folder holding ``corpus.json`` (the embedded corpus's manifest) uses the
    embedded corpus's list names, bank folders and method values.
    """
    if args.data_folder:
        folder = os.path.abspath(args.data_folder)
        if not os.path.isdir(folder):
            raise SSLSVError(f"--data_folder: folder not found: {folder}")
    else:
        from sslsv_sb.data.corpus import default_data_folder, ensure_corpus

        out = os.path.join(default_data_folder(), args.corpus)
        folder = str(ensure_corpus(out, preset=args.corpus))
    return folder, os.path.isfile(os.path.join(folder, "corpus.json"))


def read_train_rows(path, data_folder):
    """Train files and speakers as our recipe reads them (same filtering)."""
    from sslsv_sb.data.lists import read_train_list

    df = read_train_list(path, data_folder, label_key=None)
    speakers = list(df["Speaker"]) if "Speaker" in df else ["unknown"] * len(df)
    return list(df["File"]), speakers


# ------------------------------------------------------------------ sslsv helpers
def check_sslsv_dir(path):
    """The extracted sslsv folder (absolute), checked."""
    if not path:
        raise SSLSVError(
            "--sslsv: give the extracted sslsv folder (or set SSLSV_DIR), or run "
            "--only ours"
        )
    path = os.path.abspath(path)
    for rel in ("sslsv/bin/train.py", "sslsv/Config.py", "sslsv/trainer/Trainer.py"):
        if not os.path.isfile(os.path.join(path, rel)):
            raise SSLSVError(f"--sslsv: {path} is not an sslsv folder (no {rel})")
    return path


def venv_commands(venv_dir, base_python=None):
    """Commands creating sslsv's virtual environment in ``venv_dir``."""
    python = os.path.join(venv_dir, "bin", "python")
    return [
        [base_python or sys.executable, "-m", "venv", venv_dir],
        [python, "-m", "pip", "install", "--quiet", *SSLSV_VENV_PACKAGES],
    ]


def sslsv_python(args):
    """Python of sslsv's environment (created with ``--make-venv`` if asked)."""
    if args.make_venv:
        venv = os.path.abspath(args.make_venv)
        python = os.path.join(venv, "bin", "python")
        if not os.path.isfile(python):
            for cmd in venv_commands(venv):
                print("+", " ".join(cmd), flush=True)
                if subprocess.run(cmd).returncode:
                    raise SSLSVError(f"--make-venv: command failed: {' '.join(cmd)}")
        return python
    if not args.sslsv_python:
        raise SSLSVError(
            "--sslsv-python: give the python of sslsv's virtual environment (or set "
            "SSLSV_PYTHON), or create one with --make-venv DIR"
        )
    if not os.path.isfile(args.sslsv_python):
        raise SSLSVError(f"--sslsv-python: not found: {args.sslsv_python}")
    return args.sslsv_python


def probe_python(python):
    """``(major, minor)`` of sslsv's python; checks the modules the runner needs."""
    code = (
        "import importlib.util, sys\n"
        f"missing = [m for m in {SSLSV_VENV_MODULES!r} "
        "if importlib.util.find_spec(m) is None]\n"
        "print(sys.version_info[0], sys.version_info[1], *missing)\n"
    )
    try:
        res = subprocess.run(
            [python, "-c", code], capture_output=True, text=True, timeout=120
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise SSLSVError(f"--sslsv-python {python}: cannot run it ({err})") from err
    fields = res.stdout.split()
    if res.returncode or len(fields) < 2:
        raise SSLSVError(f"--sslsv-python {python}: {res.stderr.strip()[-300:]}")
    if fields[2:]:
        raise SSLSVError(
            f"--sslsv-python {python}: missing module(s) {', '.join(fields[2:])} "
            f"(install: {' '.join(SSLSV_VENV_PACKAGES)})"
        )
    return int(fields[0]), int(fields[1])


def snapshot(folder):
    """``{relative path: (size, mtime_ns)}`` of every file and link under ``folder``."""
    out = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = os.path.join(root, name)
            st = os.lstat(path)
            out[os.path.relpath(path, folder)] = (st.st_size, st.st_mtime_ns)
    return out


def snapshot_diff(before, after):
    """Paths added, removed or changed between two :func:`snapshot` results."""
    changed = [p for p in before if p in after and before[p] != after[p]]
    return {
        "added": sorted(set(after) - set(before)),
        "removed": sorted(set(before) - set(after)),
        "changed": sorted(changed),
    }


def reset_dir(path):
    """Empty a work folder of this tool (refuses a folder it did not create)."""
    if os.path.exists(path):
        if not os.path.isfile(os.path.join(path, _MARKER)):
            raise SSLSVError(
                f"{path} exists and was not created by the comparison tool; "
                "choose another --out"
            )
        shutil.rmtree(path)
    os.makedirs(path)
    with open(os.path.join(path, _MARKER), "w", encoding="utf-8") as f:
        f.write("work folder of tools/compare_sslsv.py; replaced on re-runs\n")


def run_logged(name, cmd, cwd, env, log_path, verbose):
    """Run ``cmd``, write its output to ``log_path``; returns the wall time (s)."""
    start = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        )
        for line in proc.stdout:
            log.write(line)
            if verbose:
                print(line, end="", flush=True)
        code = proc.wait()
    if code:
        with open(log_path, encoding="utf-8") as f:
            tail = "".join(f.readlines()[-15:])
        raise SSLSVError(
            f"{name} failed (exit {code}); log {log_path}; last lines:\n{tail}"
        )
    return time.perf_counter() - start


def thread_env(threads, **extra):
    """Environment with ``threads`` intra-op threads for torch / OpenMP / MKL."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[key] = str(threads)
    env.update(extra)
    return env


def write_sslsv_inputs(work, name, mapping):
    """Write ``models/<name>/config.yml`` and ``fixups.json``; returns their paths.

    The config is JSON, which sslsv's YAML 1.2 loader reads as YAML.
    """
    config_rel = os.path.join("models", name, "config.yml")
    os.makedirs(os.path.join(work, "models", name))
    with open(os.path.join(work, config_rel), "w", encoding="utf-8") as f:
        f.write("# written by tools/compare_sslsv.py (sslsv_sb.sslsv_compare)\n")
        json.dump(mapping.config, f, indent=2)
        f.write("\n")
    with open(os.path.join(work, "fixups.json"), "w", encoding="utf-8") as f:
        json.dump(mapping.fixups, f, indent=2)
    return config_rel, "fixups.json"


def runner_command(python, version, config_rel, threads, max_steps, dry_run=False):
    """The runner's command line (``-P``: no script folder on ``sys.path``)."""
    cmd = [python]
    if version >= (3, 11):
        cmd.append("-P")
    cmd += [
        RUNNER,
        "--config",
        config_rel,
        "--fixups",
        "fixups.json",
        "--trials",
        VIEW_TRIAL_LIST,
        "--out",
        "results",
        "--threads",
        str(threads),
    ]
    if max_steps is not None:
        cmd += ["--max-steps", str(max_steps)]
    if dry_run:
        cmd.append("--dry-run")
    return cmd


def run_sslsv(ctx, dry_run=False, runner_args=()):
    """Build the view and config, check them, train with sslsv; returns results.

    ``runner_args`` are appended to the training run's runner command (e.g.
    ``["--time-only"]`` for ``tools/benchmark.py --sslsv``)."""
    args, mapping = ctx["args"], ctx["mapping"]
    sslsv_dir = check_sslsv_dir(args.sslsv)
    python = sslsv_python(args)
    version = probe_python(python)
    work = os.path.join(ctx["out"], "sslsv")
    before = snapshot(sslsv_dir)
    reset_dir(work)
    counts = dataview.build_view(
        os.path.join(work, VIEW_DIR),
        ctx["data_folder"],
        ctx["files"],
        ctx["speakers"],
        ctx["trial_path"],
        ctx["bank"],
    )
    name = f"{args.method}_{args.encoder}"
    config_rel, _ = write_sslsv_inputs(work, name, mapping)
    env = thread_env(
        args.threads,
        PYTHONPATH=sslsv_dir,
        PYTHONDONTWRITEBYTECODE="1",
        WANDB_MODE="disabled",
        WANDB_SILENT="true",
    )
    limit = ctx["budget"].step_limit
    check_cmd = runner_command(python, version, config_rel, args.threads, limit, True)
    run_logged(
        "sslsv config check",
        check_cmd,
        work,
        env,
        os.path.join(work, "check.log"),
        False,
    )
    result = _load_json(os.path.join(work, "results", "runner.json"))
    problems = check_resolved(mapping, result["resolved_config"])
    if result["steps_per_epoch"] != ctx["budget"].steps_per_epoch:
        problems.append(
            f"sslsv has {result['steps_per_epoch']} steps per epoch, ours "
            f"{ctx['budget'].steps_per_epoch} ({result['n_train']} vs "
            f"{ctx['budget'].n_train} utterances)"
        )
    if problems:
        raise SSLSVError(
            "sslsv's loaded config differs from the written one:\n  "
            + "\n  ".join(problems)
        )
    out = {"work": work, "view": counts, "command": None, "check": "ok"}
    if not dry_run:
        cmd = runner_command(python, version, config_rel, args.threads, limit)
        cmd += list(runner_args)
        out["command"] = " ".join(cmd)
        print(f"[sslsv] training in {work} (log: run.log)", flush=True)
        out["wall_seconds"] = run_logged(
            "sslsv run", cmd, work, env, os.path.join(work, "run.log"), args.verbose
        )
        out.update(_load_json(os.path.join(work, "results", "runner.json")))
    diff = snapshot_diff(before, snapshot(sslsv_dir))
    if any(diff.values()):
        raise SSLSVError(f"the sslsv folder {sslsv_dir} changed during the run: {diff}")
    out["sslsv_folder_unchanged"] = True
    out["sslsv_dir"] = sslsv_dir
    out["sslsv_python"] = python
    return out


# --------------------------------------------------------------------- our side
def our_command(ctx):
    """Our ``train.py`` command line with every setting explicit."""
    args = ctx["args"]
    if not os.path.isfile(TRAIN_PY):
        raise SSLSVError(
            f"{TRAIN_PY} not found: run the tool from a repository checkout"
        )
    return [
        sys.executable,
        TRAIN_PY,
        os.path.join(HPARAMS, yaml_name(args.method, args.encoder)),
        f"--output_folder={os.path.join(ctx['out'], 'ours')}",
        f"--data_folder={ctx['data_folder']}",
        *our_cli_args(ctx["ours"], ctx["extra"], ctx["budget"]),
        "--noprogressbar",
    ]


def parse_train_log(path):
    """Per-epoch ``{"loss", "time_s"}`` from our ``train_log.txt`` (may be empty)."""
    import re

    epochs = []
    if not os.path.isfile(path):
        return epochs
    number = r"(-?[0-9.]+(?:e[-+]?[0-9]+)?|nan|inf)"
    with open(path, encoding="utf-8") as f:
        for line in f:
            loss = re.search(r"train loss: " + number, line)
            secs = re.search(r"train time_s: " + number, line)
            if loss or secs:
                epochs.append(
                    {
                        "loss": float(loss.group(1)) if loss else None,
                        "time_s": float(secs.group(1)) if secs else None,
                    }
                )
    return epochs


def run_ours(ctx):
    """Train and verify with our recipe; returns timing and paths."""
    args = ctx["args"]
    work = os.path.join(ctx["out"], "ours")
    reset_dir(work)
    cmd = our_command(ctx)
    print(f"[ours] training in {work} (log: run.log)", flush=True)
    wall = run_logged(
        "our run",
        cmd,
        REPO,
        thread_env(args.threads),
        os.path.join(work, "run.log"),
        args.verbose,
    )
    epochs = parse_train_log(os.path.join(work, "train_log.txt"))
    train_s = sum(e["time_s"] or 0.0 for e in epochs)
    steps = ctx["budget"].steps
    return {
        "work": work,
        "command": " ".join(cmd),
        "wall_seconds": wall,
        "train_seconds": train_s,
        "steps": steps,
        "s_per_step": train_s / steps if steps else None,
        "epochs_log": epochs,
    }


# ------------------------------------------------------------------------ scoring
def score_embeddings(npz_path, trials):
    """EER (%) and minDCF(0.01) of saved embeddings on ``trials`` (our code).

    Arguments
    ---------
    npz_path : str
        ``ids`` (trial-list paths) and ``emb`` ``(U, D)``.
    trials : sslsv_sb.data.lists.Trials

    Returns
    -------
    dict
    """
    from sslsv_sb.evaluation.metrics import verification_metrics
    from sslsv_sb.evaluation.scoring import cosine_scores, index_trials

    with np.load(npz_path, allow_pickle=False) as z:
        emb = dict(zip([str(i) for i in z["ids"]], z["emb"]))
    mat, e_idx, t_idx, _ = index_trials(trials.enrol, trials.test, emb, trials.name)
    scores = cosine_scores(mat, mat, e_idx, t_idx)
    return _metrics(verification_metrics(scores, trials.labels, p_targets=(0.01,)))


def score_saved_scores(npz_path, trials):
    """EER (%) and minDCF(0.01) of our run's saved cosine scores (same metric code)."""
    from sslsv_sb.evaluation.metrics import verification_metrics

    with np.load(npz_path, allow_pickle=False) as z:
        scores = z[f"{trials.name}__cosine"]
        labels = z[f"{trials.name}__labels"]
    if not np.array_equal(labels, trials.labels):
        raise SSLSVError(f"{npz_path}: the labels differ from {trials.name}")
    return _metrics(verification_metrics(scores, labels, p_targets=(0.01,)))


def _metrics(m):
    return {"eer": m["eer"], "mindcf_0.01": m["mindcf_0.01"]}


def score_sslsv(result, trials):
    """Our scoring of sslsv's embeddings, plus sslsv's own numbers."""
    folder = os.path.join(result["work"], "results")
    return {
        tag: {
            **score_embeddings(os.path.join(folder, f"embeddings_{tag}.npz"), trials),
            "own": result["own_metrics"][tag],
        }
        for tag in ("untrained", "trained")
    }


def score_ours(result, trials):
    """Our scoring of our run's saved scores, plus verification.json's numbers."""
    work = result["work"]
    report = _load_json(os.path.join(work, "verification.json"))
    own = {
        "trained": report["lists"][trials.name]["cosine"],
        "untrained": report.get("untrained", {})
        .get("lists", {})
        .get(trials.name, {})
        .get("cosine", {}),
    }
    return {
        tag: {
            **score_saved_scores(os.path.join(work, f"scores_{tag}.npz"), trials),
            "own": _metrics(own[tag]) if own[tag] else None,
        }
        for tag in ("untrained", "trained")
    }


# ------------------------------------------------------------------------- report
def report_rows(method, encoder, results):
    """Result rows (one per toolkit) of the report."""
    rows = []
    for toolkit in ("sslsv", "ours"):
        res = results.get(toolkit)
        if not res:
            continue
        scores = res["scores"]
        rows.append(
            {
                "toolkit": toolkit,
                "method": method,
                "encoder": encoder,
                "untrained_eer": scores["untrained"]["eer"],
                "untrained_mindcf": scores["untrained"]["mindcf_0.01"],
                "trained_eer": scores["trained"]["eer"],
                "trained_mindcf": scores["trained"]["mindcf_0.01"],
                "steps": res["steps"],
                "train_seconds": res["train_seconds"],
                "s_per_step": res["s_per_step"],
                "wall_seconds": res["wall_seconds"],
                "own_trained_eer": (scores["trained"].get("own") or {}).get("eer"),
            }
        )
    return rows


def format_report(rows):
    """Plain-text result table."""
    header = (
        "toolkit",
        "method",
        "untrained EER %",
        "minDCF",
        "trained EER %",
        "minDCF",
        "steps",
        "train s",
        "s/step",
        "wall s",
        "own EER %",
    )
    cells = [header]
    for r in rows:
        cells.append(
            (
                r["toolkit"],
                f"{r['method']} ({r['encoder']})",
                f"{r['untrained_eer']:.2f}",
                f"{r['untrained_mindcf']:.3f}",
                f"{r['trained_eer']:.2f}",
                f"{r['trained_mindcf']:.3f}",
                str(r["steps"]),
                f"{r['train_seconds']:.0f}",
                f"{r['s_per_step']:.2f}" if r["s_per_step"] is not None else "-",
                f"{r['wall_seconds']:.0f}",
                f"{r['own_trained_eer']:.2f}"
                if r["own_trained_eer"] is not None
                else "-",
            )
        )
    widths = [max(len(c[i]) for c in cells) for i in range(len(header))]
    lines = ["  ".join(c[i].ljust(widths[i]) for i in range(len(c))) for c in cells]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(line.rstrip() for line in lines)


#: A side "learns" when its trained EER is at most this fraction of its untrained one
#: (issue 14's bar for the rows that did not beat their untrained encoder).
LEARNS = 0.85


def _seed(payload):
    run = payload.get("run") or {}
    if "seed" in run:
        return run["seed"]
    words = payload.get("ours_command", "").split()
    seeds = [w.split("=", 1)[1] for w in words if w.startswith("--seed=")]
    return int(seeds[0]) if seeds else None


def _same_run_key(payload):
    """What two one-sided runs must share to be one comparison: method, encoder,
    seed, budget and every mapped setting on both sides (paths and times excluded)."""
    settings = tuple(
        (s["setting"], json.dumps(s["ours"]), json.dumps(s["sslsv"]))
        for s in payload.get("settings", [])
    )
    budget = json.dumps(payload.get("budget"), sort_keys=True)
    return (payload["method"], payload["encoder"], _seed(payload), budget, settings)


def pair_one_sided(payloads):
    """Join one-sided runs (``--only sslsv`` / ``--only ours``) of one comparison.

    A one-sided payload is joined to the first unused one-sided payload of the other
    toolkit with the same :func:`_same_run_key`; the joined payload keeps both
    report rows and both run records (``run_sides``). Everything else passes
    through unchanged, in order.

    Example
    -------
    >>> base = {"method": "dino", "encoder": "ecapa", "budget": {"steps": 880},
    ...         "settings": [{"setting": "lr", "ours": 0.001, "sslsv": 0.001}]}
    >>> a = base | {"run": {"seed": 1}, "report": [{"toolkit": "sslsv"}]}
    >>> b = base | {"run": {"seed": 1}, "report": [{"toolkit": "ours"}]}
    >>> c = base | {"run": {"seed": 2}, "report": [{"toolkit": "ours"}]}
    >>> [[r["toolkit"] for r in p["report"]] for p in pair_one_sided([a, b, c])]
    [['sslsv', 'ours'], ['ours']]
    """
    out, used = [], set()
    for i, p in enumerate(payloads):
        if i in used:
            continue
        sides = [r["toolkit"] for r in p.get("report", [])]
        if len(sides) == 1:
            for j in range(i + 1, len(payloads)):
                q = payloads[j]
                other = [r["toolkit"] for r in q.get("report", [])]
                if (
                    j not in used
                    and len(other) == 1
                    and other != sides
                    and _same_run_key(q) == _same_run_key(p)
                ):
                    used.add(j)
                    first, second = (p, q) if sides == ["sslsv"] else (q, p)
                    p = dict(p)
                    p["report"] = first["report"] + second["report"]
                    p["run_sides"] = {
                        "sslsv": first.get("run") or {},
                        "ours": second.get("run") or {},
                    }
                    break
        out.append(p)
    return out


def _where(run):
    return ", ".join(
        str(x) for x in (run.get("started"), (run.get("commit") or "")[:7]) if x
    )


def markdown_table(payloads):
    """Markdown table of ``comparison.json`` payloads, one line per comparison.

    One-sided runs of the same comparison are first joined
    (:func:`pair_one_sided`); their ``run`` cell names both runs.

    Example
    -------
    >>> side = lambda u, t, s: {"untrained_eer": u, "untrained_mindcf": 1.0,
    ...     "trained_eer": t, "trained_mindcf": 0.8, "steps": 242, "s_per_step": s}
    >>> p = {"method": "moco", "encoder": "ecapa", "ours_command": "x --seed=7",
    ...      "report": [dict(side(27.6, 7.6, 4.0), toolkit="sslsv"),
    ...                 dict(side(27.9, 26.3, 3.0), toolkit="ours")]}
    >>> cells = markdown_table([p]).splitlines()[-1].split(" | ")
    >>> cells[4:8]
    ['27.60 -> 7.60 (0.800)', '27.90 -> 26.30 (0.800)', '3.46', 'yes / no']
    """
    lines = [
        "| method | encoder | seed | steps | sslsv: untrained -> trained EER % "
        "(minDCF) | ours: untrained -> trained EER % (minDCF) | ours / sslsv "
        f"| learns (<= {LEARNS} x untrained) sslsv / ours | s/step sslsv / ours "
        "| run |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in pair_one_sided(payloads):
        rows = {r["toolkit"]: r for r in p.get("report", [])}
        s, o = rows.get("sslsv"), rows.get("ours")

        def eers(r):
            if r is None:
                return "-"
            return (
                f"{r['untrained_eer']:.2f} -> {r['trained_eer']:.2f} "
                f"({r['trained_mindcf']:.3f})"
            )

        def learns(r):
            if r is None:
                return "-"
            return "yes" if r["trained_eer"] <= LEARNS * r["untrained_eer"] else "no"

        def speed(r):
            return (
                "-"
                if r is None or r.get("s_per_step") is None
                else (f"{r['s_per_step']:.2f}")
            )

        ratio = f"{o['trained_eer'] / s['trained_eer']:.2f}" if s and o else "-"
        steps = (o or s or {}).get("steps", "-")
        if "run_sides" in p:
            where = "; ".join(
                f"{side}: {_where(run) or '-'}" for side, run in p["run_sides"].items()
            )
        else:
            where = _where(p.get("run") or {})
        lines.append(
            f"| {p['method']} | {p['encoder']} | {_seed(p)} | {steps} | {eers(s)} "
            f"| {eers(o)} | {ratio} | {learns(s)} / {learns(o)} "
            f"| {speed(s)} / {speed(o)} | {where or '-'} |"
        )
    return "\n".join(lines)


def run_record(args):
    """When, where and with which code a comparison runs (``comparison.json``)."""
    from sslsv_sb.recipe.tools.benchmark import machine_info

    info = machine_info()
    try:
        commit = subprocess.run(
            ["git", "-C", REPO, "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    return {
        "started": info["date"],
        "machine": {k: info[k] for k in ("host", "cpu", "isa", "cores", "torch")},
        "load_before": round(os.getloadavg()[0], 2),
        "commit": commit,
        "seed": args.seed,
        "threads": args.threads,
    }


def _load_json(path):
    if not os.path.isfile(path):
        raise SSLSVError(f"expected output not found: {path}")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _write_json(path, payload):
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=2, default=str)
    os.replace(tmp, path)


# --------------------------------------------------------------------------- main
def prepare(args):
    """Everything both sides need: data, settings, budget, mapping."""
    from sslsv_sb.data.lists import read_trials, resolve

    method_entry(args.method, args.encoder)
    overrides = parse_overrides(args.overrides)
    overrides.setdefault("seed", args.seed)
    data_folder, embedded = resolve_data(args)
    if args.train_list:
        overrides["train_list"] = args.train_list
    if args.trial_list:
        overrides["trial_lists"] = [args.trial_list]
    ours, extra = our_settings(args.method, args.encoder, embedded, overrides)
    if len(ours["trial_lists"]) != 1:
        raise SSLSVError(f"trial_lists: compare on one list, got {ours['trial_lists']}")
    train_path = resolve(ours["train_list"], data_folder)
    files, speakers = read_train_rows(train_path, data_folder)
    trial_path = resolve(ours["trial_lists"][0], data_folder)
    trials = read_trials(trial_path, data_folder)
    budget = make_budget(len(files), ours["batch_size"], args.steps, args.epochs)
    bank = dataview.bank_files(data_folder, ours["noise_folder"], ours["rir_folder"])
    counts = {k: len(v) for k, v in bank.items()}
    dataview.check_banks(bank, str(ours["strategy"]), float(ours["aug_prob"]))
    mapping = to_sslsv(args.method, args.encoder, ours, budget, counts, args.threads)
    mapping.rows.extend(extra_rows(extra))
    out = os.path.abspath(
        args.out
        or os.path.join(
            REPO, "results", "sslsv_compare", f"{args.method}_{args.encoder}"
        )
    )
    return {
        "args": args,
        "ours": ours,
        "extra": extra,
        "data_folder": data_folder,
        "embedded": embedded,
        "files": files,
        "speakers": speakers,
        "trial_path": trial_path,
        "trials": trials,
        "budget": budget,
        "bank": bank,
        "mapping": mapping,
        "out": out,
    }


def main(argv=None):
    """Run the comparison; returns the ``comparison.json`` payload."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.table:
        text = markdown_table([_load_json(path) for path in args.table])
        print(text)
        return text
    ctx = prepare(args)
    entry = METHODS[args.method]
    mapping, budget = ctx["mapping"], ctx["budget"]
    print(f"{entry.label} + {args.encoder}: data {ctx['data_folder']}")
    print(format_table(mapping.rows))
    differ = mapping.differing()
    if differ:
        print(
            f"\n{len(differ)} setting(s) differ: {', '.join(r.setting for r in differ)}"
        )
    os.makedirs(ctx["out"], exist_ok=True)
    payload = {
        "method": args.method,
        "encoder": args.encoder,
        "label": entry.label,
        "data_folder": ctx["data_folder"],
        "budget": dataclasses.asdict(budget) | {"step_limit": budget.step_limit},
        "settings": [dataclasses.asdict(r) for r in mapping.rows],
        "sslsv_config": mapping.config,
        "sslsv_fixups": mapping.fixups,
        "ours_command": " ".join(our_command(ctx)),
        "run": run_record(args),
        "results": {},
    }
    if args.dry_run:
        if args.only != "ours" and args.sslsv:
            run_sslsv(ctx, dry_run=True)
            print("\nsslsv loaded the generated config with every value in place.")
        print(f"\nours: {payload['ours_command']}")
        return payload
    if args.only != "ours":
        res = run_sslsv(ctx)
        res["scores"] = score_sslsv(res, ctx["trials"])
        payload["results"]["sslsv"] = res
    if args.only != "sslsv":
        res = run_ours(ctx)
        res["scores"] = score_ours(res, ctx["trials"])
        payload["results"]["ours"] = res
    payload["report"] = report_rows(args.method, args.encoder, payload["results"])
    path = os.path.join(ctx["out"], "comparison.json")
    _write_json(path, payload)
    print()
    print(format_report(payload["report"]))
    print(
        "\nEER/minDCF: the project's metrics on both toolkits' cosine scores; "
        "'own EER': each toolkit's own number for the trained encoder."
    )
    print(f"report written to {path}")
    return payload
