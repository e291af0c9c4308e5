"""Training and evaluation benchmarks of sslsv-sb (GitHub issue 9).

The measurements behind ``tools/benchmark.py`` (usage there and in
``docs/benchmarks.md``). Each measurement (:func:`run_one`) runs in its own
interpreter (:func:`subprocess_one`: ``tools/benchmark.py --one <spec>``) so that its
peak memory is its own. Training measurements build the Brain and the train set the
way ``train.py`` does (:func:`build`); :func:`render` writes the Markdown tables.
"""

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from sslsv_sb.recipe.hparams import load_hparams
from sslsv_sb.recipe.paths import REPO as ROOT
from sslsv_sb.recipe.paths import TOOLS, VOXCELEB_SSL
from sslsv_sb.recipe.train import build_train_brain
from sslsv_sb.recipe.trainset import build_train_set

C512 = [512, 512, 512, 512, 1536]

# name -> (yaml, overrides): "ECAPA-512" is ECAPA-TDNN with C = 512 channels.
CONFIGS = {
    "simclr_ecapa512": (
        "simclr_ecapa.yaml",
        {"batch_size": 32, "frame_length": 32000, "channels": C512},
    ),
    "dino_ecapa512": (
        "dino_ecapa.yaml",
        {
            "batch_size": 16,
            "frame_length": 64000,
            "local_length": 32000,
            "n_global": 2,
            "n_local": 4,
            "channels": C512,
            "head_out_dim": 4096,
        },
    ),
}

# --quick: tiny sizes for the smoke test (not a measurement).
QUICK = {
    "simclr_ecapa512": {
        "batch_size": 4,
        "frame_length": 4000,
        "channels": [16, 16, 16, 16, 48],
        "emb_dim": 16,
    },
    "dino_ecapa512": {
        "batch_size": 4,
        "frame_length": 4000,
        "local_length": 2000,
        "n_local": 2,
        "channels": [16, 16, 16, 16, 48],
        "emb_dim": 16,
        "head_out_dim": 64,
        "head_hidden_dim": 32,
        "head_bottleneck_dim": 16,
    },
}


def _peak_rss_mib():
    """Peak RSS (MiB) of this process (``ru_maxrss``)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _tree_rss_mib(pid):
    """Current RSS (MiB) of ``pid`` plus its descendants, from ``/proc``."""
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status", encoding="utf-8") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) / 1024
                        break
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children", encoding="utf-8") as f:
                    todo += [int(c) for c in f.read().split()]
        except (OSError, ValueError):
            continue
    return total


class TreeRSSSampler:
    """Peak summed RSS of this process and its loader workers, sampled in a thread.

    ``ru_maxrss`` of ``RUSAGE_CHILDREN`` gives only the largest child (and counts
    unrelated helper processes), so the workers are sampled from ``/proc`` every
    ``interval`` s. Pages shared between the main process and forked workers are
    counted once per process (an upper bound).
    """

    def __init__(self, interval=0.25):
        import threading

        self.interval, self.peak = interval, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _tree_rss_mib(os.getpid()))
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def build(
    name,
    data_folder,
    out_dir,
    workers=0,
    precision="fp32",
    quick=False,
    compile_=False,
    eval_precision=None,
):
    """Brain, train set and loader options built the way ``train.py`` builds them.

    Returns
    -------
    tuple
        ``(brain, train_set, loader_kwargs, hparams)``.
    """
    yaml, over = CONFIGS[name]
    over = dict(over)
    if quick:
        over.update(QUICK[name])
    # The yaml's `embedded:` block is applied only without --data_folder: give it here.
    over.update(
        {
            "train_list": "train.csv",
            "trial_lists": ["trials.txt"],
            "noise_folder": "noise",
            "rir_folder": "rirs",
            "num_workers": workers,
            "output_folder": out_dir,
        }
    )
    argv = [str(VOXCELEB_SSL / "hparams" / yaml), f"--data_folder={data_folder}"]
    argv += [f"--{k}={json.dumps(v)}" for k, v in over.items()]
    argv += ["--device=cpu", f"--precision={precision}", "--noprogressbar"]
    if eval_precision:
        argv.append(f"--eval_precision={eval_precision}")
    if compile_:
        argv.append("--compile")
    _, run_opts, _, hparams = load_hparams(argv)
    train_set = build_train_set(hparams, world=1)
    brain = build_train_brain(
        hparams, run_opts, train_set.epoch_state, checkpointer=False
    )
    return brain, train_set.dataset, train_set.loader_kwargs, hparams


def _crops_per_step(hparams):
    b = int(hparams["dataloader_options"]["batch_size"])
    return b * sum(int(c) for c, _ in hparams["view_groups"].values())


def _audio_seconds_per_step(hparams):
    b = int(hparams["dataloader_options"]["batch_size"])
    sr = int(hparams["sample_rate"])
    return b * sum(int(c) * int(n) for c, n in hparams["view_groups"].values()) / sr


def _summary(times, hparams):
    t = np.asarray(times)
    med = float(np.median(t))
    return {
        "steps": len(t),
        "s_per_step_median": round(med, 4),
        "s_per_step_mean": round(float(t.mean()), 4),
        "s_per_step_min": round(float(t.min()), 4),
        "s_per_step_max": round(float(t.max()), 4),
        "crops_per_s": round(_crops_per_step(hparams) / med, 2),
        "audio_s_per_s": round(_audio_seconds_per_step(hparams) / med, 2),
    }


def _time_module(module):
    """Accumulate the wall time of ``module``'s forward calls in ``.total``."""

    class Clock:
        total = 0.0

    clock, forward = Clock(), module.forward

    def timed(*args, **kwargs):
        t = time.perf_counter()
        try:
            return forward(*args, **kwargs)
        finally:
            clock.total += time.perf_counter() - t

    module.forward = timed
    return clock


def run_train(spec):
    """One training measurement (``spec`` from :func:`train_specs`); returns a dict."""
    import speechbrain as sb
    import torch

    with tempfile.TemporaryDirectory() as tmp, TreeRSSSampler() as sampler:
        brain, train_set, loader_kwargs, hp = build(
            spec["config"],
            spec["data_folder"],
            tmp,
            workers=spec.get("workers", 0),
            precision=spec.get("precision", "fp32"),
            quick=spec.get("quick", False),
            compile_=spec.get("compile", False),
        )
        warmup, steps = spec["warmup"], spec["steps"]
        loader = brain.make_dataloader(train_set, sb.Stage.TRAIN, **loader_kwargs)
        if spec["mode"] != "loader":
            brain.on_fit_start()
            brain.modules.train()
        brain.on_stage_start(sb.Stage.TRAIN, 1)
        # augment_in_workers=True makes SSLBrain.augment a no-op: the "model" mode.
        brain.hparams.augment_in_workers = spec["mode"] == "model"
        aug_clock = _time_module(brain.modules["augment"])
        times, first = [], None
        parts = {"wait": [], "aug": [], "model": []}  # per step, same run
        t0 = time.perf_counter()
        if spec["mode"] in ("model", "model+aug"):
            batch = next(iter(loader))
            for i in range(warmup + steps):
                aug_clock.total = 0.0
                t = time.perf_counter()
                brain.fit_batch(batch)
                dt = time.perf_counter() - t
                if i == 0:
                    first = dt
                if i >= warmup:
                    times.append(dt)
                    parts["aug"].append(aug_clock.total)
        else:
            it = iter(loader)
            t = time.perf_counter()
            for i in range(warmup + steps):
                aug_clock.total = 0.0
                batch = next(it)
                got = time.perf_counter()
                if spec["mode"] == "pipeline":
                    brain.fit_batch(batch)
                now = time.perf_counter()
                if i == 0:
                    first = now - t
                if i >= warmup:
                    times.append(now - t)
                    parts["wait"].append(got - t)
                    parts["aug"].append(aug_clock.total)
                    parts["model"].append(now - got - aug_clock.total)
                t = now
            del it
        total = time.perf_counter() - t0
        out = dict(spec)
        out.update(_summary(times, hp))
        if parts["aug"] and spec["mode"] != "loader":
            out["aug_s_median"] = round(float(np.median(parts["aug"])), 4)
        if parts["model"] and spec["mode"] == "pipeline":
            # Within-run decomposition, robust to load drift between runs.
            out["wait_s_median"] = round(float(np.median(parts["wait"])), 4)
            out["model_s_median"] = round(float(np.median(parts["model"])), 4)
            ratio = np.asarray(times) / np.asarray(parts["model"])
            out["overhead_ratio_within_run"] = round(float(np.median(ratio)), 4)
        out["first_step_s"] = round(first, 3)
        out["total_s"] = round(total, 2)
        out["crops_per_step"] = _crops_per_step(hp)
        out["audio_s_per_step"] = _audio_seconds_per_step(hp)
        out["torch_threads"] = torch.get_num_threads()
    out["peak_rss_mib"] = _peak_rss_mib()
    out["peak_rss_tree_mib"] = round(sampler.peak, 1)
    return out


def run_eval(spec):
    """Embedding extraction and scoring throughput; returns a dict."""
    import torch

    from sslsv_sb.data.lists import read_trials
    from sslsv_sb.evaluation.embeddings import extract_embeddings, make_batches
    from sslsv_sb.evaluation.scoring import cosine_scores

    data = spec["data_folder"]
    out = dict(spec)
    with tempfile.TemporaryDirectory() as tmp:
        brain, *_ = build(
            spec["config"],
            data,
            tmp,
            quick=spec.get("quick", False),
            eval_precision=spec.get("precision", "fp32"),
        )
        trials = read_trials(os.path.join(data, "trials.txt"), data)
        files = [
            f if os.path.isabs(f) else os.path.join(data, f) for f in trials.files()
        ]
        if spec.get("max_utts"):
            files = files[: spec["max_utts"]]
        import soundfile as sf

        lengths = np.array([sf.info(f).frames for f in files])
        sr = 16000
        batches = make_batches(lengths, 400 * sr, 64)
        padded = sum(len(b) * lengths[b].max() for b in batches)
        rng = np.random.default_rng(0)
        shuffled = rng.permutation(len(files))
        rand_batches = [shuffled[i : i + 64] for i in range(0, len(files), 64)]
        padded_rand = sum(len(b) * lengths[b].max() for b in rand_batches)
        out.update(
            {
                "n_utts": len(files),
                "audio_s": round(float(lengths.sum()) / sr, 1),
                "utt_s_min_max": [
                    round(lengths.min() / sr, 2),
                    round(lengths.max() / sr, 2),
                ],
                "padding_overhead_sorted": round(padded / lengths.sum() - 1, 4),
                "padding_overhead_unsorted_bs64": round(
                    padded_rand / lengths.sum() - 1, 4
                ),
            }
        )
        extract_embeddings(brain.encode, files[:8])  # warm-up
        t = time.perf_counter()
        emb = extract_embeddings(brain.encode, files)
        dt = time.perf_counter() - t
        out["sorted_batches"] = {
            "seconds": round(dt, 2),
            "utts_per_s": round(len(files) / dt, 2),
            "audio_s_per_s": round(float(lengths.sum()) / sr / dt, 2),
        }
        n_one = min(len(files), spec.get("n_single", 64))
        t = time.perf_counter()
        extract_embeddings(brain.encode, files[:n_one], max_batch=1)
        dt = time.perf_counter() - t
        out["one_at_a_time"] = {
            "n_utts": n_one,
            "seconds": round(dt, 2),
            "utts_per_s": round(n_one / dt, 2),
            "audio_s_per_s": round(float(lengths[:n_one].sum()) / sr / dt, 2),
        }
    # Scoring: 10^6 (or --quick: 10^4) trials over random rows of the embeddings.
    n_trials = spec.get("n_trials", 1_000_000)
    e = torch.nn.functional.normalize(torch.from_numpy(emb), dim=-1).numpy()
    idx = rng.integers(0, len(e), (2, n_trials))
    cosine_scores(e, e, idx[0, :1000], idx[1, :1000])
    t = time.perf_counter()
    cosine_scores(e, e, idx[0], idx[1])
    dt = time.perf_counter() - t
    out["scoring"] = {
        "n_trials": n_trials,
        "emb_dim": int(e.shape[1]),
        "seconds": round(dt, 3),
        "trials_per_s": round(n_trials / dt),
    }
    out["torch_threads"] = torch.get_num_threads()
    out["peak_rss_mib"] = _peak_rss_mib()
    return out


def run_one(spec):
    """Dispatch one measurement spec (in this process)."""
    spec = {"precision": "fp32", **spec}
    if spec["kind"] == "train":
        return run_train(spec)
    return run_eval(spec)


def subprocess_one(spec, timeout):
    """Run one spec in a fresh interpreter; returns its dict (or an error record)."""
    cmd = [sys.executable, str(TOOLS / "benchmark.py"), "--one", json.dumps(spec)]
    t = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, cwd=str(ROOT)
        )
    except subprocess.TimeoutExpired:
        return {**spec, "error": f"timeout after {timeout} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        err = (proc.stderr or proc.stdout).strip().splitlines()[-8:]
        return {**spec, "error": " | ".join(err)[-1500:]}
    res = json.loads(lines[-1])
    res["wall_s"] = round(time.perf_counter() - t, 1)
    return res


def machine_info():
    """Machine, versions and date of the run."""
    import speechbrain
    import torch

    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((ln for ln in f if ln.startswith("flags")), "")
    except OSError:
        flags = ""
    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "cpu": cpu,
        "amx": "amx_bf16" in flags,
        "avx512_bf16": "avx512_bf16" in flags,
        "cores": os.cpu_count(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "speechbrain": speechbrain.__version__,
        "torch_threads": torch.get_num_threads(),
    }


def load_avg():
    """1-minute load average (shared machine: printed next to every number)."""
    return round(os.getloadavg()[0], 2)


def train_specs(args):
    """The list of training measurements to run."""
    specs = []
    for cfg in args.configs:
        dino = cfg.startswith("dino")
        warm = args.dino_warmup if dino else args.warmup
        steps = args.dino_steps if dino else args.steps
        base = {
            "kind": "train",
            "config": cfg,
            "data_folder": args.data_folder,
            "quick": args.quick,
            "warmup": warm,
            "steps": steps,
        }
        for prec in args.precisions:
            specs.append({**base, "mode": "model", "precision": prec})
        prec = args.precisions[0]
        specs.append({**base, "mode": "model+aug", "precision": prec})
        for w in args.workers:
            specs.append({**base, "mode": "pipeline", "workers": w, "precision": prec})
            specs.append(
                {**base, "mode": "loader", "workers": w, "steps": args.loader_steps}
            )
        if args.compile:
            specs.append({**base, "mode": "model", "precision": prec, "compile": True})
    return specs


def eval_specs(args):
    """The list of evaluation measurements to run."""
    base = {
        "kind": "eval",
        "config": "simclr_ecapa512",
        "data_folder": args.data_folder,
        "quick": args.quick,
    }
    if args.quick:
        base.update({"max_utts": 16, "n_single": 4, "n_trials": 10_000})
    return [{**base, "precision": p} for p in args.precisions]


def metrics_bench(args):
    """EER/minDCF time and memory on 10^6 trials (``tools/benchmark_metrics.py``)."""
    n = 10_000 if args.quick else 1_000_000
    cmd = [sys.executable, str(TOOLS / "benchmark_metrics.py"), f"--n={n}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(ROOT))
    if proc.returncode != 0:
        return {"error": proc.stderr.strip()[-800:]}
    return json.loads(proc.stdout)


# ---------------------------------------------------------------------- rendering
def _fmt(x, nd=3):
    return "-" if x is None else (f"{x:.{nd}f}" if isinstance(x, float) else str(x))


def render(results, path):
    """Markdown tables of one or more result files (appended as a generated block)."""
    lines = ["<!-- generated by tools/benchmark.py --render; edit the prose above -->"]

    def model_refs(files):
        """(config, precision) -> s/step of the pure model step run at the lowest
        load in ``files`` (the least disturbed reference)."""
        best = {}
        for res in files:
            for r in res.get("train", []):
                if r.get("mode") == "model" and not r.get("compile"):
                    if "error" not in r:
                        key = (r["config"], r.get("precision", "fp32"))
                        load = r.get("load_before", 0.0)
                        if key not in best or load < best[key][0]:
                            best[key] = (load, r["s_per_step_median"])
        return {k: v for k, (_, v) in best.items()}

    global_ref = model_refs(results)
    for res in results:
        # Same-file reference first (same time window and load), else any file.
        ref = {**global_ref, **model_refs([res])}
        m = res["machine"]
        lines += [
            "",
            f"### Run {m['date']} ({res.get('label', '')})",
            "",
            f"- Machine: {m['cpu']} ({m['cores']} cores, AMX: {m['amx']}, "
            f"AVX512-BF16: {m.get('avx512_bf16', True)}), "
            f"GPU: {m['gpu'] or 'none'}; torch {m['torch']}, SpeechBrain "
            f"{m['speechbrain']}, Python {m['python']}; torch threads "
            f"{m['torch_threads']}.",
            f"- Command: `{res.get('command', '')}`",
        ]
        if res.get("train"):
            lines += [
                "",
                "| config | mode | workers | precision | steps | s/step median "
                "(min-max) | crops/s | audio s/s | ratio vs model run | data wait / "
                "aug / model s (within-run ratio) | peak RSS MiB (+workers) | load |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|",
            ]
        for r in res.get("train", []):
            comp = " (compile)" if r.get("compile") else ""
            if "error" in r:
                err = r["error"][:200]
                lines.append(
                    f"| {r['config']} | {r['mode']}{comp} | {r.get('workers', 0)} | "
                    f"{r.get('precision', '-')} | - | error: {err} | | | | | |"
                    f" {r.get('load_before', '-')} |"
                )
                continue
            base = ref.get((r["config"], r.get("precision", "fp32")))
            ratio = (
                f"{r['s_per_step_median'] / base:.3f}"
                if base and r["mode"] != "model"
                else "1"
                if r["mode"] == "model" and not comp
                else "-"
            )
            prec = r.get("precision", "-") if r["mode"] != "loader" else "-"
            if "overhead_ratio_within_run" in r:
                split = (
                    f"{r['wait_s_median']:.3f} / {r['aug_s_median']:.3f} / "
                    f"{r['model_s_median']:.3f} ({r['overhead_ratio_within_run']:.3f})"
                )
            elif "aug_s_median" in r and r["mode"] == "model+aug":
                split = f"- / {r['aug_s_median']:.3f} / -"
            else:
                split = "-"
            lines.append(
                f"| {r['config']} | {r['mode']}{comp} | {r.get('workers', 0)} | {prec} "
                f"| {r['warmup']}+{r['steps']} | {r['s_per_step_median']:.3f} "
                f"({r['s_per_step_min']:.3f}-{r['s_per_step_max']:.3f}) | "
                f"{r['crops_per_s']:.1f} | {r['audio_s_per_s']:.1f} | {ratio} | "
                f"{split} | "
                f"{r['peak_rss_mib']:.0f} ({r.get('peak_rss_tree_mib', 0):.0f}) | "
                f"{r['load_before']}/{r['load_after']} |"
            )
        ev = res.get("eval", [])
        if ev:
            lines += [
                "",
                "| precision | utts | audio s | sorted: utt/s | sorted: audio s/s | "
                "one-at-a-time: utt/s | padding sorted / unsorted | scoring trials/s "
                "| peak RSS MiB | load |",
                "|---|---|---|---|---|---|---|---|---|---|",
            ]
            for r in ev:
                if "error" in r:
                    err = r["error"][:200]
                    lines.append(f"| {r.get('precision')} | error: {err} |")
                    continue
                lines.append(
                    f"| {r.get('precision', 'fp32')} | {r['n_utts']} | "
                    f"{r['audio_s']} | "
                    f"{r['sorted_batches']['utts_per_s']} | "
                    f"{r['sorted_batches']['audio_s_per_s']} | "
                    f"{r['one_at_a_time']['utts_per_s']} | "
                    f"{r['padding_overhead_sorted']:.1%} / "
                    f"{r['padding_overhead_unsorted_bs64']:.1%} | "
                    f"{r['scoring']['trials_per_s']:,} | {r['peak_rss_mib']:.0f} | "
                    f"{r['load_before']}/{r['load_after']} |"
                )
        met = res.get("metrics")
        if met and "results" in met:
            lines += [
                "",
                f"Metrics on {met['n_trials']:,} trials (best of {met['repeats']}, "
                f"OMP_NUM_THREADS=1; load {met.get('load_before')}/"
                f"{met.get('load_after')}): "
                + ", ".join(
                    f"{k} {v['seconds']} s / {v['peak_mib']} MiB"
                    for k, v in met["results"].items()
                )
                + f"; process peak RSS {met['peak_rss_mib']} MiB.",
            ]
    block = "\n".join(lines) + "\n"
    marker = lines[0]
    text = Path(path).read_text(encoding="utf-8") if Path(path).exists() else ""
    head = text.split(marker)[0] if marker in text else text
    Path(path).write_text(head.rstrip("\n") + "\n\n" + block, encoding="utf-8")


def main(argv=None):
    """Command line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data_folder", default="/tmp/bench_corpus")
    ap.add_argument("--out", default=None, help="JSON result file")
    ap.add_argument("--render", default=None, help="Markdown file to (re)generate")
    ap.add_argument(
        "--render_only",
        nargs="*",
        default=None,
        help="render these JSON files (no measurement)",
    )
    ap.add_argument("--label", default="")
    ap.add_argument(
        "--suite",
        nargs="+",
        default=["train", "eval", "metrics"],
        choices=["train", "eval", "metrics"],
    )
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=CONFIGS)
    ap.add_argument(
        "--modes", nargs="+", default=None, help="keep only these training modes"
    )
    ap.add_argument("--workers", nargs="+", type=int, default=[0, 2])
    ap.add_argument(
        "--precisions",
        nargs="+",
        default=["fp32", "bf16"],
        choices=["fp32", "bf16", "fp16"],
    )
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--dino_warmup", type=int, default=2)
    ap.add_argument("--dino_steps", type=int, default=5)
    ap.add_argument("--loader_steps", type=int, default=20)
    ap.add_argument("--compile", action="store_true", help="also time --compile")
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.one:
        print(json.dumps(run_one(json.loads(args.one))))
        return 0
    if args.render_only is not None:
        res = [json.loads(Path(p).read_text()) for p in args.render_only]
        render(res, args.render or "docs/benchmarks.md")
        return 0
    if args.quick:
        args.warmup, args.steps, args.loader_steps = 1, 1, 2
        args.dino_warmup, args.dino_steps = 1, 1
    result = {
        "machine": machine_info(),
        "label": args.label,
        "command": " ".join(["python tools/benchmark.py", *(argv or sys.argv[1:])]),
        "train": [],
        "eval": [],
    }

    def save():
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(result, indent=1), encoding="utf-8")

    jobs = []
    if "train" in args.suite:
        specs = train_specs(args)
        if args.modes:
            specs = [s for s in specs if s["mode"] in args.modes]
        jobs += [("train", s) for s in specs]
    if "eval" in args.suite:
        jobs += [("eval", s) for s in eval_specs(args)]
    for key, spec in jobs:
        before = load_avg()
        res = subprocess_one(spec, args.timeout)
        res["load_before"], res["load_after"] = before, load_avg()
        result[key].append(res)
        print(json.dumps(res), flush=True)
        save()
    if "metrics" in args.suite:
        before = load_avg()
        result["metrics"] = metrics_bench(args)
        result["metrics"]["load_before"] = before
        result["metrics"]["load_after"] = load_avg()
        print(json.dumps(result["metrics"]), flush=True)
    save()
    if args.render:
        render([result], args.render)
    return 1 if any("error" in r for k in ("train", "eval") for r in result[k]) else 0

