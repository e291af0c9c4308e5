"""Time and peak memory of the sort-based verification metrics.

The measurement of ``tools/benchmark_metrics.py`` (usage there): random scores and
labels, best wall time over repeats and peak traced allocation per metric
(:func:`measure`).
"""

import argparse
import json
import resource
import time
import tracemalloc

import numpy as np

from sslsv_sb.evaluation import metrics as M


def measure(fn, repeats):
    """Best wall time over ``repeats`` calls and peak traced memory of one call."""
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    tracemalloc.start()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"seconds": round(best, 4), "peak_mib": round(peak / 2**20, 1)}


def main(argv=None):
    """Time the metrics on random trials; print one JSON object; return 0."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="number of trials")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--target-ratio", type=float, default=0.1)
    ap.add_argument("--enrolments", type=int, default=20_000)
    ap.add_argument("--all", action="store_true", help="also Cllr, minCllr, AvgRPrec")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    labels = rng.random(args.n) < args.target_ratio
    scores = rng.normal(size=args.n) + 2.0 * labels
    enrol = rng.integers(0, args.enrolments, args.n)

    jobs = {
        "eer": lambda: M.eer(scores, labels),
        "min_dcf": lambda: M.min_dcf(scores, labels, 0.01),
        "eer+mindcf": lambda: M.verification_metrics(scores, labels),
        "act_dcf": lambda: M.act_dcf(scores, labels, 0.01),
    }
    if args.all:
        jobs.update(
            {
                "cllr": lambda: M.cllr(scores, labels),
                "min_cllr": lambda: M.min_cllr(scores, labels),
                "avg_rprec": lambda: M.avg_rprec(scores, labels, enrol),
                "det_curve": lambda: M.det_curve(scores, labels),
            }
        )
    out = {"n_trials": args.n, "repeats": args.repeats, "results": {}}
    for name, fn in jobs.items():
        out["results"][name] = measure(fn, args.repeats)
    out["eer+mindcf_under_1s"] = out["results"]["eer+mindcf"]["seconds"] < 1.0
    # ru_maxrss is KiB on Linux.
    out["peak_rss_mib"] = round(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1
    )
    print(json.dumps(out, indent=2))
    return 0
