"""``tools/eval_speed.py``: evaluation speed, ours against sslsv, interleaved.

One process builds our encoder the way ``train.py`` does (a method yaml, seeded, not
trained: the speed does not depend on the weights) and times
:func:`~sslsv_sb.evaluation.verification.time_verification` (embed every distinct
file of a trial list, full utterances, then score every trial) once per *variant*
of the extraction batches. With ``--sslsv``, every round also runs sslsv's own
``CosineSVEvaluation`` on the same files with the same encoder size in sslsv's
environment (:mod:`sslsv_sb.sslsv_compare.eval_timing`, a fresh process per round,
warmed up on a few trials like ours). Rounds are interleaved (ours, sslsv, ours,
sslsv, ...) so that a change of machine load hits both sides; the report gives
the median utt/s of each side and their ratio, with the machine, CPU model, load
and date.

Usage::

    python tools/eval_speed.py [--data_folder DIR] [--trials trials.txt] \\
        [--channels 256 --emb_dim 192 --n_mels 40] [--rounds 3] [--threads N] \\
        [--variant NAME:BATCH:SECONDS:RATIO[:JOBS] ...] [--out result.json] \\
        [--sslsv /path/to/sslsv --sslsv_python /path/to/venv/bin/python] \\
        [--key=value yaml overrides, --eval_precision=bf16, ...]

The default variant is the yaml's extraction settings (``eval_batch_size``,
``eval_max_batch_seconds``, ``eval_bucket_ratio``, ``eval_jobs``); ``--variant
one:1:10:0`` adds one utterance at a time in this process, ``--variant
big:64:400:none`` the pre-issue-17 batches of 64 (``none``: no bucketing; ``JOBS``
defaults to 1: this process, with its torch threads).
"""

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time

import numpy as np

from sslsv_sb.errors import SSLSVError

REPO = os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
)
HPARAMS = os.path.join(REPO, "recipes", "VoxCeleb", "SSL", "hparams")
SSLSV_SCRIPT = os.path.join(REPO, "sslsv_sb", "sslsv_compare", "eval_timing.py")


def parse_variant(text):
    """``NAME:BATCH:SECONDS:RATIO[:JOBS]`` -> ``(name, extract_embeddings kwargs)``.

    Example
    -------
    >>> parse_variant("one:1:10:0")
    ('one', {'max_batch': 1, 'max_batch_seconds': 10.0, 'bucket_ratio': 0.0, 'jobs': 1})
    >>> parse_variant("big:64:400:none:2")[1]["bucket_ratio"] is None
    True
    """
    parts = text.split(":")
    if len(parts) not in (4, 5) or not parts[0]:
        raise SSLSVError(f"--variant {text}: expected NAME:BATCH:SECONDS:RATIO[:JOBS]")
    name, batch, seconds, ratio = parts[:4]
    try:
        kw = {
            "max_batch": int(batch),
            "max_batch_seconds": float(seconds),
            "bucket_ratio": None if ratio.lower() in ("none", "null") else float(ratio),
            "jobs": int(parts[4]) if len(parts) == 5 else 1,
        }
    except ValueError as err:
        raise SSLSVError(f"--variant {text}: {err}") from err
    if kw["max_batch"] < 1 or not kw["max_batch_seconds"] > 0 or kw["jobs"] < 0:
        raise SSLSVError(f"--variant {text}: BATCH >= 1, SECONDS > 0, JOBS >= 0")
    if kw["bucket_ratio"] is not None and kw["bucket_ratio"] < 0:
        raise SSLSVError(f"--variant {text}: RATIO >= 0 or none expected")
    return name, kw


def build_parser():
    """The tool's options (anything else is a ``--key=value`` yaml override)."""
    ap = argparse.ArgumentParser(
        prog="eval_speed.py",
        allow_abbrev=False,
        description=__doc__.split("\n\n")[0],
        epilog="Other --key=value arguments are yaml overrides / run options of "
        "our side (as for train.py).",
    )
    ap.add_argument("--yaml", default=os.path.join(HPARAMS, "simclr_ecapa.yaml"))
    ap.add_argument("--data_folder", default=None, help="default: embedded corpus")
    ap.add_argument("--trials", default=None, help="default: the yaml's first list")
    ap.add_argument("--channels", type=int, default=256, help="ECAPA C (both sides)")
    ap.add_argument("--emb_dim", type=int, default=192, help="embedding size")
    ap.add_argument("--n_mels", type=int, default=40, help="mel bins")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (both)")
    ap.add_argument("--warmup", type=int, default=8, help="untimed warm-up trials")
    ap.add_argument("--variant", action="append", default=[], help="extra batching")
    ap.add_argument("--out", default=None, help="JSON result file")
    ap.add_argument("--sslsv", default=os.environ.get("SSLSV_DIR"), help="sslsv dir")
    ap.add_argument(
        "--sslsv_python", default=os.environ.get("SSLSV_PYTHON"), help="its python"
    )
    return ap


def build_ours(args, overrides, out_dir):
    """``(brain, hparams)``: the yaml's Brain with the requested encoder size."""
    from sslsv_sb.export import build_brain
    from sslsv_sb.recipe.hparams import load_hparams

    c = args.channels
    argv = [
        args.yaml,
        f"--output_folder={out_dir}",
        f"--channels=[{c},{c},{c},{c},{3 * c}]",
        f"--emb_dim={args.emb_dim}",
        f"--n_mels={args.n_mels}",
        "--device=cpu",
        "--noprogressbar",
    ]
    if args.data_folder:
        argv.append(f"--data_folder={args.data_folder}")
        if os.path.isfile(os.path.join(args.data_folder, "corpus.json")):
            # the embedded corpus's layout, as train.py applies it by itself
            argv += ["--train_list=train.csv", "--noise_folder=noise"]
            argv += ["--rir_folder=rirs", "--trial_lists=[trials.txt]"]
    _, run_opts, _, hparams = load_hparams(argv + list(overrides))
    brain = build_brain(hparams, run_opts, with_checkpointer=False)
    return brain, hparams


def machine():
    """Machine description recorded with every result."""
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next(
                (
                    ln.split(":", 1)[1].strip()
                    for ln in f
                    if ln.startswith("model name")
                ),
                cpu,
            )
    except OSError:
        pass
    return {
        "host": platform.node(),
        "cpu_model": cpu,
        "cpus": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }


def run_sslsv(args, data_folder, trials, threads):
    """One timed sslsv evaluation in a fresh process; its result dict."""
    if not args.sslsv_python or not os.path.isfile(args.sslsv_python):
        raise SSLSVError(f"--sslsv_python: not found: {args.sslsv_python}")
    if not os.path.isdir(os.path.join(args.sslsv, "sslsv")):
        raise SSLSVError(f"--sslsv: {args.sslsv} has no sslsv package folder")
    cmd = [
        args.sslsv_python,
        SSLSV_SCRIPT,
        f"--data_folder={data_folder}",
        f"--trials={trials}",
        f"--channels={args.channels}",
        f"--emb_dim={args.emb_dim}",
        f"--n_mels={args.n_mels}",
        f"--threads={threads}",
        f"--warmup={args.warmup}",
    ]
    env = {**os.environ, "PYTHONPATH": args.sslsv}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        raise SSLSVError(f"sslsv evaluation failed ({proc.returncode}):\n{tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])["rounds"][0]


def summarise(rounds):
    """Median / min / max utt/s (wall) and median files per CPU second."""
    ups = [r["utt_per_s"] for r in rounds]
    cpu = [r["cpu_utt_per_s"] for r in rounds if "cpu_utt_per_s" in r]
    return {
        "utt_per_s_median": float(np.median(ups)),
        "utt_per_s_min": float(min(ups)),
        "utt_per_s_max": float(max(ups)),
        "cpu_utt_per_s_median": float(np.median(cpu)) if cpu else None,
        "eer": rounds[-1]["eer"],
        "rounds": rounds,
    }


def main(argv):
    """Run the interleaved timing; returns the result dict (also ``--out``)."""
    import torch

    from sslsv_sb.evaluation.verification import (
        EvalConfig,
        extraction_batches,
        time_verification,
    )
    from sslsv_sb.sslsv_compare.eval_timing import warmup_lines

    args, overrides = build_parser().parse_known_args(argv)
    bad = [o for o in overrides if not o.startswith("--")]
    if bad:
        raise SSLSVError(f"unexpected arguments {bad} (overrides are --key=value)")
    variants = [parse_variant(v) for v in args.variant]
    if args.sslsv and not args.sslsv_python:
        raise SSLSVError("--sslsv needs --sslsv_python (or $SSLSV_PYTHON)")
    if args.rounds < 1:
        raise SSLSVError(f"--rounds: must be >= 1, got {args.rounds}")
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        brain, hparams = build_ours(args, overrides, tmp)
        data = hparams["data_folder"]
        trials = args.trials or list(hparams["trial_lists"])[0]
        trial_path = trials if os.path.isabs(trials) else os.path.join(data, trials)
        if not os.path.isfile(trial_path):
            raise SSLSVError(f"--trials: {trial_path} not found")
        variants.insert(
            0, ("yaml", extraction_batches(EvalConfig.from_hparams(hparams)))
        )
        warm = os.path.join(tmp, "warmup_trials.txt")
        with open(trial_path, encoding="utf-8") as f:
            head = warmup_lines(list(f), args.warmup) if args.warmup else []
        with open(warm, "w", encoding="utf-8") as f:
            f.writelines(head)
        n_params = sum(p.numel() for p in brain.inference_modules()[2].parameters())
        result = {
            "machine": machine(),
            "load_before": list(os.getloadavg()),
            "torch": torch.__version__,
            "threads": threads,
            "eval_precision": brain.eval_precision,
            "yaml": os.path.relpath(args.yaml, REPO),
            "data_folder": data,
            "trials": trials,
            "encoder": {
                "channels": args.channels,
                "emb_dim": args.emb_dim,
                "n_mels": args.n_mels,
                "n_params_ours": n_params,
            },
            "command": "python tools/eval_speed.py " + " ".join(argv),
            "ours": {name: [] for name, _ in variants},
            "sslsv": [],
        }
        for _, kw in variants:
            if head:
                time_verification(brain.encode, warm, data, **kw)
        for r in range(args.rounds):
            for name, kw in variants:
                res = time_verification(brain.encode, trial_path, data, **kw)
                result["ours"][name].append(res)
                print(
                    f"round {r + 1} ours {name}: {res['utt_per_s']:.1f} utt/s",
                    flush=True,
                )
            if args.sslsv:
                res = run_sslsv(args, data, trials, threads)
                result["sslsv"].append(res)
                print(f"round {r + 1} sslsv: {res['utt_per_s']:.1f} utt/s", flush=True)
    result["load_after"] = list(os.getloadavg())
    result["ours"] = {k: summarise(v) for k, v in result["ours"].items()}
    if result["sslsv"]:
        result["sslsv"] = summarise(result["sslsv"])
        ref = result["sslsv"]["utt_per_s_median"]
        result["ratio_to_sslsv"] = {
            k: v["utt_per_s_median"] / ref for k, v in result["ours"].items()
        }
        ref = result["sslsv"]["cpu_utt_per_s_median"]
        if ref:
            result["cpu_ratio_to_sslsv"] = {
                k: v["cpu_utt_per_s_median"] / ref for k, v in result["ours"].items()
            }
    print(format_report(result))
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
    return result


def format_report(result):
    """Plain-text table of a result dict."""
    m = result["machine"]
    enc = result["encoder"]
    lines = [
        f"{m['date']}  {m['host']}  {m['cpu_model']} ({m['cpus']} CPUs)  "
        f"load {result['load_before'][0]:.2f} -> {result['load_after'][0]:.2f}  "
        f"torch {result['torch']}  threads {result['threads']}  "
        f"eval {result['eval_precision']}",
        f"ECAPA-TDNN C={enc['channels']} D={enc['emb_dim']} {enc['n_mels']} mels, "
        f"{result['trials']} in {result['data_folder']}",
        f"{'side':<22} {'utt/s median':>12} {'min':>7} {'max':>7} {'x sslsv':>8}"
        f" {'utt/CPU-s':>9} {'x sslsv':>8}",
    ]
    ratio = result.get("ratio_to_sslsv", {})
    cpu_ratio = result.get("cpu_ratio_to_sslsv", {})

    def cells(s, r, c):
        cpu = s["cpu_utt_per_s_median"]
        return (
            f"{s['utt_per_s_median']:12.1f} {s['utt_per_s_min']:7.1f} "
            f"{s['utt_per_s_max']:7.1f} "
            + (f"{r:8.2f}" if r is not None else f"{'-':>8}")
            + (f" {cpu:9.1f}" if cpu else f" {'-':>9}")
            + (f" {c:8.2f}" if c is not None else f" {'-':>8}")
        )

    for name, s in result["ours"].items():
        lines.append(
            f"{'ours ' + name:<22} " + cells(s, ratio.get(name), cpu_ratio.get(name))
        )
    if result.get("sslsv"):
        s = result["sslsv"]
        lines.append(f"{'sslsv':<22} " + cells(s, 1.0, 1.0 if cpu_ratio else None))
    return "\n".join(lines)
