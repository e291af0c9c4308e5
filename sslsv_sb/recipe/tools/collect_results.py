"""Collect many runs' ``verification.json`` into one comparison table.

The table builder of ``tools/collect_results.py`` (usage and the accepted
``verification.json`` schema there): :func:`find_runs` expands the globs,
:func:`load_run` flattens one file, :func:`collect` builds the rows and columns,
:func:`to_markdown` / :func:`write_csv` write them. A malformed file raises
:class:`ResultsError` naming the file (and line); the command prints it and exits 1.
"""

import argparse
import csv
import glob
import json
import os
import sys
from pathlib import Path

DEFAULT_METRICS = ("eer", "mindcf_0.01", "mindcf_0.05")
RESERVED = ("meta", "untrained")


class ResultsError(ValueError):
    """Malformed or missing verification.json."""


def find_runs(patterns):
    """Expand globs to ``verification.json`` paths (sorted, de-duplicated).

    Arguments
    ---------
    patterns : list of str
        Globs of run folders or JSON files.

    Returns
    -------
    list of Path
    """
    found = []
    for pat in patterns:
        for m in sorted(glob.glob(pat, recursive=True)):
            p = Path(m)
            if p.is_dir():
                p = p / "verification.json"
                if not p.is_file():
                    continue
            if p.is_file():
                found.append(p)
    return list(dict.fromkeys(found))


def _lists_of(data, path):
    lists = (
        data["lists"]
        if "lists" in data
        else {k: v for k, v in data.items() if k not in RESERVED}
    )
    if not isinstance(lists, dict):
        raise ResultsError(f"{path}: 'lists' must be an object")
    for name, backends in lists.items():
        if not isinstance(backends, dict) or not all(
            isinstance(m, dict) for m in backends.values()
        ):
            raise ResultsError(
                f"{path}: list {name!r} must map backend -> {{metric: value}}"
            )
    return lists


def load_run(path):
    """Flatten one verification.json.

    Returns
    -------
    main, untrained : dict, dict or None
        ``{(list, backend, metric): float}``.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as err:
        raise ResultsError(f"{path}: not found") from err
    except json.JSONDecodeError as err:
        raise ResultsError(f"{path}:{err.lineno}: invalid JSON ({err.msg})") from err
    if not isinstance(data, dict):
        raise ResultsError(f"{path}: top level must be an object")

    def flat(lists):
        out = {}
        for name, backends in lists.items():
            for backend, metrics in backends.items():
                for metric, value in metrics.items():
                    if isinstance(value, (int, float)) and not isinstance(value, bool):
                        out[(name, backend, metric)] = float(value)
        return out

    main = flat(_lists_of(data, path))
    untrained = None
    if isinstance(data.get("untrained"), dict):
        untrained = flat(_lists_of(data["untrained"], path))
    return main, untrained


def run_name(path, common):
    """Row label: the run folder relative to the common parent."""
    folder = Path(path).parent
    try:
        rel = folder.relative_to(common)
        return str(rel) if str(rel) != "." else folder.name
    except ValueError:
        return str(folder)


def collect(paths, metrics=DEFAULT_METRICS, untrained=False):
    """Build the comparison table.

    Arguments
    ---------
    paths : list of Path
        ``verification.json`` files.
    metrics : sequence of str or None
        Metrics to keep (column order); ``None`` keeps all numeric metrics.
    untrained : bool
        Add ``<run> [untrained]`` rows.

    Returns
    -------
    columns : list of str
        ``"run"`` then ``"<list>/<backend>/<metric>"``; lists and backends sorted,
        metrics in the requested order.
    rows : list of dict
        One per run: ``{"run": name, column: float}`` (missing cells absent).
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise ResultsError("no verification.json found")
    parents = [p.resolve().parent for p in paths]
    common = Path(os.path.commonpath([str(p) for p in parents]))
    if len(set(parents)) == 1:
        common = parents[0].parent
    rows, keys = [], set()
    for p in paths:
        main, unt = load_run(p)
        name = run_name(p.resolve(), common)
        entries = [(name, main)]
        if untrained and unt:
            entries.append((f"{name} [untrained]", unt))
        for label, flat in entries:
            if metrics is not None:
                flat = {k: v for k, v in flat.items() if k[2] in metrics}
            keys.update(flat)
            row = {"run": label}
            row.update({"/".join(k): v for k, v in flat.items()})
            rows.append(row)
    order = {m: i for i, m in enumerate(metrics)} if metrics is not None else {}

    def sort_key(k):
        return (k[0], k[1], order.get(k[2], len(order)), k[2])

    columns = ["run"] + ["/".join(k) for k in sorted(keys, key=sort_key)]
    return columns, rows


def _fmt(value, column):
    if value is None:
        return ""
    return f"{value:.2f}" if column.endswith("/eer") else f"{value:.4f}"


def to_markdown(columns, rows):
    """Markdown table (EER with 2 decimals, other metrics with 4)."""
    lines = [
        "| " + " | ".join(columns) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(columns) - 1)) + "|",
    ]
    for r in rows:
        cells = [r["run"]] + [_fmt(r.get(c), c) for c in columns[1:]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_csv(columns, rows, path):
    """CSV with full-precision values; missing cells empty."""
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, restval="")
        w.writeheader()
        for r in rows:
            w.writerow(r)
    return Path(path)


def main(argv=None):
    """Print (and write) the table of the runs matched by the globs; return 0 or 1."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("patterns", nargs="+", help="globs of run folders / JSON files")
    ap.add_argument(
        "--metrics",
        nargs="*",
        default=list(DEFAULT_METRICS),
        help="metrics to keep (default: %(default)s); give 'all' for every metric",
    )
    ap.add_argument("--md", help="write the Markdown table here")
    ap.add_argument("--csv", help="write the CSV table here")
    ap.add_argument("--untrained", action="store_true", help="add untrained rows")
    args = ap.parse_args(argv)
    metrics = None if args.metrics == ["all"] else tuple(args.metrics)
    try:
        paths = find_runs(args.patterns)
        columns, rows = collect(paths, metrics, args.untrained)
    except ResultsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    md = to_markdown(columns, rows)
    print(md, end="")
    if args.md:
        Path(args.md).write_text(md)
    if args.csv:
        write_csv(columns, rows, args.csv)
    return 0
