"""Training and evaluation benchmarks of sslsv-sb (issues 9 and 17).

The measurements behind ``tools/benchmark.py`` (usage there and in
``docs/benchmarks.md``). Each measurement (:func:`run_one`) runs in its own
interpreter (:func:`subprocess_one`: ``tools/benchmark.py --one <spec>``) so that its
peak memory is its own. Training measurements build the Brain and the train set the
way ``train.py`` does (:func:`build`), from any recipe yaml and data folder with the
same ``--key=value`` overrides; :func:`sslsv_side` times sslsv on the same shapes
through the comparison tool's runner; :func:`render` writes the Markdown tables.
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

from sslsv_sb.errors import SSLSVError
from sslsv_sb.recipe.hparams import load_hparams
from sslsv_sb.recipe.paths import REPO as ROOT
from sslsv_sb.recipe.paths import TOOLS, VOXCELEB_SSL
from sslsv_sb.recipe.train import build_train_brain
from sslsv_sb.recipe.trainset import build_train_set

C512 = [512, 512, 512, 512, 1536]
HPARAMS = VOXCELEB_SSL / "hparams"

# name -> (yaml, overrides, sslsv method): "ECAPA-512" is ECAPA-TDNN with C = 512
# channels; "demo" is the shape of `make demo` (Makefile DEMO_ARGS, bf16 there).
CONFIGS = {
    "simclr_ecapa512": (
        "simclr_ecapa.yaml",
        {"batch_size": 32, "frame_length": 32000, "channels": C512},
        "simclr",
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
        "dino",
    ),
    "demo": (
        "simclr_ecapa.yaml",
        {
            "batch_size": 64,
            "frame_length": 16000,
            "channels": [256, 256, 256, 256, 768],
            "emb_dim": 192,
            "temperature": 0.07,
            "eq_prob": 0.5,
        },
        "simclr",
    ),
}

# --quick: tiny sizes for the smoke test (not a measurement).
QUICK_SIMCLR = {
    "batch_size": 4,
    "frame_length": 4000,
    "channels": [16, 16, 16, 16, 48],
    "emb_dim": 16,
}
QUICK = {
    "simclr_ecapa512": QUICK_SIMCLR,
    "demo": QUICK_SIMCLR,
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

#: SpeechBrain run options the tool sets itself (one per measurement).
_OWN_RUN_OPTIONS = ("precision", "eval_precision", "output_folder", "num_workers")


def parse_overrides(args):
    """``--key=value`` / ``--key value`` arguments -> ``{key: value text}``.

    These are the yaml overrides and SpeechBrain run options of ``train.py``,
    applied to every configuration of the run. Options the benchmark sets per
    measurement (``--precision``: use ``--precisions``; ``--num_workers``: use
    ``--workers``; ``--output_folder``) are refused.

    Example
    -------
    >>> parse_overrides(["--lr=0.1", "--channels", "[8,8,8,8,24]", "--device=cpu"])
    {'lr': '0.1', 'channels': '[8,8,8,8,24]', 'device': 'cpu'}

    Raises
    ------
    SSLSVError
        An argument that is not ``--key=value`` or an option set by the tool.
    """
    out, i = {}, 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or len(arg) < 3:
            raise SSLSVError(f"unexpected argument {arg!r} (overrides are --key=value)")
        key, sep, value = arg[2:].partition("=")
        if not sep:
            if i + 1 >= len(args) or args[i + 1].startswith("--"):
                raise SSLSVError(f"--{key}: missing value")
            i += 1
            value = args[i]
        if key in _OWN_RUN_OPTIONS:
            use = {
                "precision": "--precisions",
                "eval_precision": "--precisions",
                "num_workers": "--workers",
                "output_folder": "(temporary)",
            }[key]
            raise SSLSVError(
                f"--{key}: set by the benchmark per measurement; use {use}"
            )
        out[key] = value
        i += 1
    return out


def config_entry(name, yaml=None):
    """``{"config", "yaml", "preset", "method"}`` of a preset or a user yaml.

    A user yaml (``--yaml``) has no preset overrides; its sslsv method is read from
    its file name (``<method>_<encoder>.yaml``) when the comparison maps it.
    """
    if yaml is None:
        if name not in CONFIGS:
            raise SSLSVError(
                f"--configs: unknown configuration {name!r} "
                f"(presets: {', '.join(CONFIGS)}; or give --yaml FILE)"
            )
        file, preset, method = CONFIGS[name]
        return {
            "config": name,
            "yaml": str(HPARAMS / file),
            "preset": preset,
            "method": method,
        }
    path = Path(yaml)
    if not path.is_file() and (HPARAMS / yaml).is_file():
        path = HPARAMS / yaml
    if not path.is_file():
        raise SSLSVError(f"--yaml: file not found: {yaml}")
    stem = path.stem
    method = stem.rsplit("_", 1)[0] if stem.endswith("_ecapa") else None
    return {"config": stem, "yaml": str(path.resolve()), "preset": {}, "method": method}


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


def hparams_argv(spec, out_dir=None, workers=None, precision=None, eval_precision=None):
    """``load_hparams`` arguments of a measurement spec (preset, user overrides).

    Later values win: the preset's shape, then ``--quick`` sizes, then the user's
    ``--key=value`` overrides, then what the benchmark sets per measurement.
    """
    over = {k: json.dumps(v) for k, v in spec.get("preset", {}).items()}
    if spec.get("quick"):
        over.update(
            {
                k: json.dumps(v)
                for k, v in QUICK.get(spec["config"], QUICK_SIMCLR).items()
            }
        )
    over.update(spec.get("overrides", {}))
    if spec.get("embedded_layout"):
        for k, v in spec["embedded_layout"].items():
            over.setdefault(k, json.dumps(v))
    if workers is not None:
        over["num_workers"] = str(workers)
    if out_dir is not None:
        over["output_folder"] = out_dir
    over.setdefault("device", "cpu")
    argv = [spec["yaml"]]
    if spec.get("data_folder"):
        argv.append(f"--data_folder={spec['data_folder']}")
    argv += [f"--{k}={v}" for k, v in over.items()]
    if precision:
        argv.append(f"--precision={precision}")
    if eval_precision:
        argv.append(f"--eval_precision={eval_precision}")
    if spec.get("compile"):
        argv.append("--compile")
    return argv + ["--noprogressbar"]


def load_spec_hparams(spec, out_dir, **kwargs):
    """``(run_opts, hparams)`` of a spec, with the embedded corpus's layout when the
    data folder holds one (``corpus.json``: the yaml's ``embedded:`` block applies,
    as ``train.py`` does without ``--data_folder``)."""
    _, run_opts, _, hparams = load_hparams(hparams_argv(spec, out_dir, **kwargs))
    folder = hparams["data_folder"]
    layout = hparams.get("embedded") or {}
    if (
        spec.get("data_folder")
        and "embedded_layout" not in spec
        and layout
        and os.path.isfile(os.path.join(folder, "corpus.json"))
    ):
        spec = {**spec, "embedded_layout": dict(layout)}
        _, run_opts, _, hparams = load_hparams(hparams_argv(spec, out_dir, **kwargs))
    return run_opts, hparams


def build(spec, out_dir, workers=0, precision="fp32", eval_precision=None):
    """Brain, train set and loader options built the way ``train.py`` builds them.

    Arguments
    ---------
    spec : dict
        ``yaml``, ``preset``, ``overrides`` (user ``--key=value`` texts),
        ``data_folder`` (None: the embedded corpus), ``quick``, ``compile``.
    out_dir : str
        Output folder of the run (temporary).

    Returns
    -------
    tuple
        ``(brain, train_set, loader_kwargs, hparams)``.
    """
    run_opts, hparams = load_spec_hparams(
        spec,
        out_dir,
        workers=workers,
        precision=precision,
        eval_precision=eval_precision,
    )
    train_set = build_train_set(hparams, world=1)
    brain = build_train_brain(
        hparams, run_opts, train_set.epoch_state, checkpointer=False
    )
    return brain, train_set.dataset, train_set.loader_kwargs, hparams


def _view_groups(hparams):
    groups = hparams.get("view_groups") or {"views": (2, hparams["frame_length"])}
    return [(int(c), int(n)) for c, n in groups.values()]


def _crops_per_step(hparams):
    b = int(hparams["dataloader_options"]["batch_size"])
    return b * sum(c for c, _ in _view_groups(hparams))


def _audio_seconds_per_step(hparams):
    b = int(hparams["dataloader_options"]["batch_size"])
    sr = int(hparams["sample_rate"])
    return b * sum(c * n for c, n in _view_groups(hparams)) / sr


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


def _rusage():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return np.array([r.ru_utime, r.ru_stime, r.ru_minflt, r.ru_majflt], dtype=float)


def _rusage_fields(delta, steps):
    """Per-step CPU time in user and kernel mode and page faults (load-robust)."""
    user, sys_, minflt, majflt = delta
    return {
        "user_s_per_step": round(user / steps, 3),
        "sys_s_per_step": round(sys_ / steps, 3),
        "sys_over_user": round(sys_ / user, 4) if user else None,
        "minflt_per_step": int(minflt / steps),
        "majflt_per_step": int(majflt / steps),
    }


class Batches:
    """Batches of a loader without end: a new pass starts when one is exhausted
    (a list shorter than warm-up + timed steps wraps around)."""

    def __init__(self, loader):
        self.loader, self.passes = loader, 0
        self._it = None

    def next(self):
        """The next batch, starting a new pass over the loader if needed."""
        for _ in range(2):
            if self._it is None:
                self._it, self.passes = iter(self.loader), self.passes + 1
            try:
                return next(self._it)
            except StopIteration:
                self._it = None
        raise SSLSVError("the train loader yields no batch (train list too short?)")

    def close(self):
        """Drop the running iterator (stops loader workers)."""
        self._it = None


def run_train(spec):
    """One training measurement (``spec`` from :func:`train_specs`); returns a dict."""
    import speechbrain as sb
    import torch

    from sslsv_sb.runtime import configure_allocator

    allocator = configure_allocator()
    with tempfile.TemporaryDirectory() as tmp, TreeRSSSampler() as sampler:
        brain, train_set, loader_kwargs, hp = build(
            spec,
            tmp,
            workers=spec.get("workers", 0),
            precision=spec.get("precision", "fp32"),
        )
        warmup, steps = spec["warmup"], spec["steps"]
        loader = brain.make_dataloader(train_set, sb.Stage.TRAIN, **loader_kwargs)
        if spec["mode"] != "loader":
            brain.on_fit_start()
            brain.modules.train()
        brain.on_stage_start(sb.Stage.TRAIN, 1)
        # augment_in_workers=True makes SSLBrain.augment a no-op: the "model" mode.
        brain.hparams.augment_in_workers = spec["mode"] == "model"
        aug_clock = (
            _time_module(brain.modules["augment"])
            if "augment" in brain.modules
            else None
        )
        times, first = [], None
        parts = {"wait": [], "aug": [], "model": []}  # per step, same run
        batches = Batches(loader)
        t0 = time.perf_counter()
        if spec["mode"] in ("model", "model+aug"):
            batch = batches.next()
            for i in range(warmup + steps):
                if i == warmup:
                    ru0 = _rusage()
                if aug_clock:
                    aug_clock.total = 0.0
                t = time.perf_counter()
                brain.fit_batch(batch)
                dt = time.perf_counter() - t
                if i == 0:
                    first = dt
                if i >= warmup:
                    times.append(dt)
                    parts["aug"].append(aug_clock.total if aug_clock else 0.0)
        else:
            t = time.perf_counter()
            for i in range(warmup + steps):
                if i == warmup:
                    ru0 = _rusage()
                if aug_clock:
                    aug_clock.total = 0.0
                batch = batches.next()
                got = time.perf_counter()
                if spec["mode"] == "pipeline":
                    brain.fit_batch(batch)
                now = time.perf_counter()
                aug = aug_clock.total if aug_clock else 0.0
                if i == 0:
                    first = now - t
                if i >= warmup:
                    times.append(now - t)
                    parts["wait"].append(got - t)
                    parts["aug"].append(aug)
                    parts["model"].append(now - got - aug)
                t = now
        usage = _rusage() - ru0
        batches.close()
        total = time.perf_counter() - t0
        out = dict(spec)
        out.update(_summary(times, hp))
        out.update(_rusage_fields(usage, steps))
        out["loader_passes"] = batches.passes
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
        out["allocator"] = (
            allocator.get("settings", {})
            if allocator["applied"]
            else allocator["reason"]
        )
    out["peak_rss_mib"] = _peak_rss_mib()
    out["peak_rss_tree_mib"] = round(sampler.peak, 1)
    return out


def run_eval(spec):
    """Embedding extraction and scoring throughput; returns a dict."""
    import torch

    from sslsv_sb.data.lists import read_trials, resolve
    from sslsv_sb.evaluation.embeddings import extract_embeddings, make_batches
    from sslsv_sb.evaluation.scoring import cosine_scores

    out = dict(spec)
    with tempfile.TemporaryDirectory() as tmp:
        brain, _, _, hp = build(spec, tmp, eval_precision=spec.get("precision", "fp32"))
        data = hp["data_folder"]
        trial_list = resolve(list(hp["trial_lists"])[0], data)
        trials = read_trials(trial_list, data)
        files = [resolve(f, data) for f in trials.files()]
        if spec.get("max_utts"):
            files = files[: spec["max_utts"]]
        import soundfile as sf

        lengths = np.array([sf.info(f).frames for f in files])
        sr = int(hp["sample_rate"])
        out["trial_list"] = trial_list
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
        "host": platform.node(),
        "cpu": cpu,
        "isa": next(
            (f for f in ("amx_bf16", "avx512_bf16", "avx512f", "avx2") if f in flags),
            "-",
        ),
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


def _base_spec(entry, args):
    return {
        **entry,
        "data_folder": args.data_folder,
        "overrides": args.overrides,
        "quick": args.quick,
    }


def train_specs(args, entries):
    """The list of training measurements to run (``entries``: :func:`config_entry`)."""
    specs = []
    for entry in entries:
        dino = entry["config"].startswith("dino")
        warm = args.dino_warmup if dino else args.warmup
        steps = args.dino_steps if dino else args.steps
        base = {
            **_base_spec(entry, args),
            "kind": "train",
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


def eval_specs(args, entries):
    """The list of evaluation measurements to run (first configuration)."""
    base = {**_base_spec(entries[0], args), "kind": "eval"}
    if args.quick:
        base.update({"max_utts": 16, "n_single": 4, "n_trials": 10_000})
    return [{**base, "precision": p} for p in args.precisions]


def validate(entries, args):
    """Load every configuration once with the overrides, before any measurement:
    an unknown key, a bad value or a missing data folder is a user error (exit 2)
    here, not a failed subprocess later. Returns ``{config: hparams}``."""
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for entry in entries:
            spec = _base_spec(entry, args)
            _, out[entry["config"]] = load_spec_hparams(spec, tmp)
    return out


# ------------------------------------------------------------- sslsv side by side
def sslsv_overrides(method, hparams, workers=0):
    """The comparison tool's ``--overrides`` giving sslsv our shapes.

    Arguments
    ---------
    method : str
        ``simclr`` or ``dino`` (a method of the comparison tool).
    hparams : dict
        Our loaded hyper-parameters of the configuration.

    Returns
    -------
    list of str
        ``key=value`` items (JSON values).
    """
    keys = ["batch_size", "n_mels", "channels", "emb_dim", "strategy", "aug_prob"]
    if method == "dino":
        keys += [
            "local_length",
            "n_global",
            "n_local",
            "head_out_dim",
            "head_hidden_dim",
            "head_bottleneck_dim",
        ]
    over = {k: hparams[k] for k in keys if k in hparams}
    over["frame_length"] = int(hparams["frame_length"])
    over["batch_size"] = int(hparams["dataloader_options"]["batch_size"])
    over["num_workers"] = workers
    return [f"{k}={json.dumps(v)}" for k, v in over.items()]


def sslsv_side(entry, hparams, args, steps, out_dir):
    """Train ``steps`` steps with sslsv's own code on our shapes; returns a row.

    Uses the comparison tool (:mod:`sslsv_sb.sslsv_compare`): its settings mapping,
    data view, config check and runner (``--time-only``: per-step times, no
    embeddings). sslsv trains in fp32 (its autocast is commented out).
    """
    from sslsv_sb.sslsv_compare import compare

    method = entry.get("method")
    if method not in ("simclr", "dino"):
        raise SSLSVError(
            f"--sslsv: no sslsv mapping for configuration {entry['config']!r} "
            "(SimCLR and DINO ECAPA yamls are mapped)"
        )
    threads = args.threads or _torch_threads()
    argv = [
        "--method",
        method,
        "--encoder",
        "ecapa",
        "--steps",
        str(steps),
        "--out",
        out_dir,
        "--threads",
        str(threads),
        "--sslsv",
        args.sslsv,
        "--sslsv-python",
        args.sslsv_python,
        "--data_folder",
        hparams["data_folder"],
        "--overrides",
        *sslsv_overrides(method, hparams),
    ]
    cargs = compare.parse_args(argv)
    ctx = compare.prepare(cargs)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    res = compare.run_sslsv(ctx, runner_args=["--time-only"])
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "kind": "sslsv",
        "config": entry["config"],
        "precision": "fp32",
        "steps_total": res["steps"],
        "step_seconds": [round(x, 4) for x in res.get("step_seconds", [])],
        "differing_settings": [r.setting for r in ctx["mapping"].differing()],
        "threads": threads,
        "children_user_s": round(after.ru_utime - before.ru_utime, 2),
        "children_sys_s": round(after.ru_stime - before.ru_stime, 2),
        "children_minflt": after.ru_minflt - before.ru_minflt,
    }


def _torch_threads():
    import torch

    return torch.get_num_threads()


def sslsv_summary(row, warmup, hparams):
    """Median s/step of an sslsv row after ``warmup`` steps (same fields as ours)."""
    times = row["step_seconds"][warmup:]
    if not times:
        return {**row, "error": "sslsv recorded no step after the warm-up"}
    return {**row, "warmup": warmup, **_summary(times, hparams)}


def side_by_side_ratios(rows):
    """sslsv s/step divided by ours, per (config, precision), over A,B pairs.

    ``rows`` are in run order; each of our pipeline rows is paired with the sslsv
    row of the same configuration in the same repeat. Returns a list of dicts with
    the per-pair ratios and their median (> 1: we are faster).
    """
    out = {}
    for r in rows:
        if r.get("kind") != "sslsv" or "error" in r:
            continue
        for o in rows:
            if (
                o.get("kind") == "train"
                and o.get("side_by_side")
                and o["config"] == r["config"]
                and o.get("repeat") == r.get("repeat")
                and "error" not in o
            ):
                key = (o["config"], o["precision"])
                ratio = r["s_per_step_median"] / o["s_per_step_median"]
                out.setdefault(key, []).append(round(ratio, 3))
    return [
        {
            "config": c,
            "precision": p,
            "ratios": v,
            "speedup_vs_sslsv": round(float(np.median(v)), 3),
        }
        for (c, p), v in out.items()
    ]


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


def _when_where(r, m):
    """``date | machine (CPU) | load`` cells of a row (run values for old rows)."""
    date = (r.get("date") or m["date"])[:16].replace("T", " ")
    host = r.get("host") or m.get("host") or "-"
    cpu = r.get("cpu") or m["cpu"]
    cores = r.get("cores") or m["cores"]
    isa = (
        r.get("isa") or m.get("isa") or ("avx512_bf16" if m.get("avx512_bf16") else "-")
    )
    load = f"{r.get('load_before', '-')}/{r.get('load_after', '-')}"
    return f"{date} | {host}: {cpu}, {cores} cores, {isa} | {load}"


def _cpu_cells(r):
    """``user / sys s per step (sys/user) | minor faults per step`` cells."""
    if "user_s_per_step" not in r:
        return "- | -"
    ratio = r.get("sys_over_user")
    ratio = "-" if ratio is None else f"{ratio:.1%}"
    return (
        f"{r['user_s_per_step']:.2f} / {r['sys_s_per_step']:.2f} ({ratio}) | "
        f"{r['minflt_per_step']:,}"
    )


WHEN_WHERE = "date | machine: CPU | load"


def _render_side_by_side(res, m):
    """Table of the sslsv rows and the ratios of a ``--sslsv`` run."""
    rows = res.get("sslsv") or []
    if not rows:
        return []
    lines = [
        "",
        "Side by side (A = ours: full pipeline, 0 workers; B = sslsv, fp32, its "
        "own loader and augmentation; run order A,B,A,B):",
        "",
        "| toolkit | config | precision | repeat | steps | s/step median (min-max) "
        f"| crops/s | {WHEN_WHERE} |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    ordered = sorted(
        [("ours", r) for r in res.get("train", []) if r.get("side_by_side")]
        + [("sslsv", r) for r in rows],
        key=lambda x: x[1].get("date", ""),
    )
    for tk, r in ordered:
        if "error" in r:
            lines.append(
                f"| {tk} | {r['config']} | {r.get('precision', '-')} | "
                f"{r.get('repeat', '-')} | - | error: {r['error'][:200]} | | "
                f"{_when_where(r, m)} |"
            )
            continue
        lines.append(
            f"| {tk} | {r['config']} | {r.get('precision', '-')} | "
            f"{r.get('repeat', '-')} | {r['warmup']}+{r['steps']} | "
            f"{r['s_per_step_median']:.3f} ({r['s_per_step_min']:.3f}-"
            f"{r['s_per_step_max']:.3f}) | {r['crops_per_s']:.1f} | "
            f"{_when_where(r, m)} |"
        )
    ratios = res.get("side_by_side") or []
    if ratios:
        lines += [
            "",
            "| config | our precision | sslsv s/step / our s/step (per pair) |",
            "|---|---|---|",
        ]
        for r in ratios:
            pairs = ", ".join(f"{x:.2f}" for x in r["ratios"])
            lines.append(
                f"| {r['config']} | {r['precision']} | "
                f"**{r['speedup_vs_sslsv']:.2f}x** ({pairs}) |"
            )
    return lines


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
                "aug / model s (within-run ratio) | CPU s/step user / sys (sys/user) "
                f"| minor faults/step | peak RSS MiB (+workers) | {WHEN_WHERE} |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
            ]
        for r in res.get("train", []):
            comp = " (compile)" if r.get("compile") else ""
            if "error" in r:
                err = r["error"][:200]
                lines.append(
                    f"| {r['config']} | {r['mode']}{comp} | {r.get('workers', 0)} | "
                    f"{r.get('precision', '-')} | - | error: {err} | | | | | | | |"
                    f" {_when_where(r, m)} |"
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
                f"{split} | {_cpu_cells(r)} | "
                f"{r['peak_rss_mib']:.0f} ({r.get('peak_rss_tree_mib', 0):.0f}) | "
                f"{_when_where(r, m)} |"
            )
        ev = res.get("eval", [])
        if ev:
            lines += [
                "",
                "| precision | utts | audio s | sorted: utt/s | sorted: audio s/s | "
                "one-at-a-time: utt/s | padding sorted / unsorted | scoring trials/s "
                f"| peak RSS MiB | {WHEN_WHERE} |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|",
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
                    f"{_when_where(r, m)} |"
                )
        lines += _render_side_by_side(res, m)
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


def results_to_render(out, result):
    """Every result file next to ``out`` (date order, this run included), so that
    ``--render`` regenerates the whole page; just ``[result]`` without ``--out``."""
    if not out:
        return [result]
    files = sorted(Path(out).resolve().parent.glob("*.json"))
    loaded = [json.loads(p.read_text(encoding="utf-8")) for p in files]
    loaded = [r for r in loaded if isinstance(r, dict) and "machine" in r]
    return sorted(loaded, key=lambda r: r["machine"].get("date", ""))


def build_parser():
    """The tool's own options (anything else is a ``--key=value`` override)."""
    ap = argparse.ArgumentParser(
        prog="benchmark.py",
        allow_abbrev=False,  # --precision is an override error, not --precisions
        description=__doc__.split("\n\n")[0],
        epilog="Other --key=value arguments are yaml overrides (as for train.py), "
        "applied to every configuration.",
    )
    ap.add_argument(
        "--data_folder",
        default=None,
        help="data folder (default: the embedded corpus, as train.py)",
    )
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
    ap.add_argument(
        "--configs",
        nargs="*",
        default=None,
        help=f"presets ({', '.join(CONFIGS)}; default simclr_ecapa512 "
        "dino_ecapa512, none with --yaml)",
    )
    ap.add_argument(
        "--yaml", nargs="+", default=[], help="recipe yaml(s) to measure as they are"
    )
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
    ap.add_argument(
        "--sslsv",
        default=None,
        metavar="DIR",
        help="also time sslsv (extracted folder) on the same shapes, interleaved "
        "with our full pipeline (0 workers), and print the ratios",
    )
    ap.add_argument(
        "--sslsv-python",
        dest="sslsv_python",
        default=None,
        metavar="PY",
        help="python of sslsv's virtual environment",
    )
    ap.add_argument(
        "--repeats",
        type=int,
        default=2,
        help="--sslsv: A,B pairs per configuration (A = ours, B = sslsv)",
    )
    ap.add_argument(
        "--threads", type=int, default=None, help="torch threads of the sslsv side"
    )
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    return ap


def _row_context(machine):
    """Machine, CPU, date and load recorded on every row."""
    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "host": machine.get("host", ""),
        "cpu": machine["cpu"],
        "cores": machine["cores"],
        "isa": machine.get("isa", "-"),
    }


def _side_by_side_jobs(args, entries):
    """A,B,A,B: our pipeline (each precision) then sslsv, ``--repeats`` times."""
    jobs = []
    for entry in entries:
        dino = entry["config"].startswith("dino")
        warm = args.dino_warmup if dino else args.warmup
        steps = args.dino_steps if dino else args.steps
        base = {**_base_spec(entry, args), "kind": "train", "mode": "pipeline"}
        for rep in range(args.repeats):
            for prec in args.precisions:
                spec = {**base, "workers": 0, "precision": prec, "warmup": warm}
                spec.update(steps=steps, side_by_side=True, repeat=rep)
                jobs.append(("train", spec))
            jobs.append(
                (
                    "sslsv",
                    {"entry": entry, "repeat": rep, "warmup": warm, "steps": steps},
                )
            )
    return jobs


def main(argv=None):
    """Command line entry point (returns the exit status)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args, rest = build_parser().parse_known_args(argv)
    if args.one:
        print(json.dumps(run_one(json.loads(args.one))))
        return 0
    if args.render_only is not None:
        res = [json.loads(Path(p).read_text()) for p in args.render_only]
        render(res, args.render or "docs/benchmarks.md")
        return 0
    args.overrides = parse_overrides(rest)
    if args.data_folder:
        args.data_folder = os.path.abspath(args.data_folder)
        if not os.path.isdir(args.data_folder):
            raise SSLSVError(f"--data_folder: folder not found: {args.data_folder}")
    if bool(args.sslsv) != bool(args.sslsv_python):
        raise SSLSVError("--sslsv and --sslsv-python go together")
    if args.sslsv:
        from sslsv_sb.sslsv_compare.compare import check_sslsv_dir, probe_python

        args.sslsv = check_sslsv_dir(args.sslsv)
        probe_python(args.sslsv_python)
    configs = args.configs
    if configs is None:
        configs = [] if args.yaml else ["simclr_ecapa512", "dino_ecapa512"]
    entries = [config_entry(c) for c in configs]
    entries += [config_entry(None, y) for y in args.yaml]
    if not entries:
        raise SSLSVError("nothing to measure: give --configs and/or --yaml")
    if args.quick:
        args.warmup, args.steps, args.loader_steps = 1, 1, 2
        args.dino_warmup, args.dino_steps = 1, 1
    loaded = validate(entries, args)  # user errors before any measurement
    machine = machine_info()
    result = {
        "machine": machine,
        "label": args.label,
        "command": " ".join(["python tools/benchmark.py", *argv]),
        "train": [],
        "eval": [],
    }

    def save():
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            tmp = f"{args.out}.tmp"
            Path(tmp).write_text(json.dumps(result, indent=1), encoding="utf-8")
            os.replace(tmp, args.out)

    jobs = []
    if args.sslsv:
        jobs += _side_by_side_jobs(args, entries)
        result["sslsv"] = []
    elif "train" in args.suite:
        specs = train_specs(args, entries)
        if args.modes:
            specs = [s for s in specs if s["mode"] in args.modes]
        jobs += [("train", s) for s in specs]
    if "eval" in args.suite and not args.sslsv:
        jobs += [("eval", s) for s in eval_specs(args, entries)]
    with tempfile.TemporaryDirectory() as work:
        for key, spec in jobs:
            row = _row_context(machine)
            before = load_avg()
            if key == "sslsv":
                entry = spec["entry"]
                out_dir = os.path.join(work, f"{entry['config']}_{spec['repeat']}")
                hp = loaded[entry["config"]]
                res = sslsv_side(
                    entry, hp, args, spec["warmup"] + spec["steps"], out_dir
                )
                res = sslsv_summary(res, spec["warmup"], hp)
                res["repeat"] = spec["repeat"]
            else:
                res = subprocess_one(spec, args.timeout)
            res.update(row, load_before=before, load_after=load_avg())
            result[key].append(res)
            print(json.dumps(res), flush=True)
            if args.sslsv:
                result["side_by_side"] = side_by_side_ratios(
                    result["train"] + result["sslsv"]
                )
            save()
    if "metrics" in args.suite and not args.sslsv:
        before = load_avg()
        result["metrics"] = metrics_bench(args)
        result["metrics"]["load_before"] = before
        result["metrics"]["load_after"] = load_avg()
        print(json.dumps(result["metrics"]), flush=True)
    save()
    for r in result.get("side_by_side", []):
        print(
            f"{r['config']} {r['precision']}: sslsv s/step / ours = "
            f"{r['speedup_vs_sslsv']} (pairs: {r['ratios']})"
        )
    if args.render:
        render(results_to_render(args.out, result), args.render)
    failed = any(
        "error" in r for k in ("train", "eval", "sslsv") for r in result.get(k, [])
    )
    return 1 if failed else 0
