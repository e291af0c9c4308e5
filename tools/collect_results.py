#!/usr/bin/env python
"""Collect many runs' ``verification.json`` into one comparison table.

Usage::

    python tools/collect_results.py "results/*/" [more globs] \\
        --metrics eer mindcf_0.01 --md table.md --csv table.csv [--untrained]

Each glob matches run folders (containing ``verification.json``) or the JSON files
themselves. Rows are runs (the folder path), columns are ``list/backend/metric``.
The Markdown table is printed to stdout and optionally written with ``--md``.

Accepted ``verification.json`` schema (written by
``sslsv_sb/evaluation/verification.py``)::

    {
      "lists": {"<trial list>": {"<backend>": {"eer": 3.1, "mindcf_0.01": 0.3,
                                                "mindcf_0.05": 0.2, ...}}},
      "untrained": {"lists": {...}},   # optional, same shape
      "meta": {...}                    # optional, ignored here
    }

The flat form without ``"lists"`` (``{"<list>": {"<backend>": {...}}, "meta": ...}``)
is accepted too: every top-level key except ``meta`` and ``untrained`` is a list.
Metric values must be numbers (``eer`` in %, minDCF normalised). Missing cells are
left empty; ``--untrained`` adds a ``<run> [untrained]`` row per run that has one.
"""

from sslsv_sb.recipe.cli import run_cli
from sslsv_sb.recipe.tools.collect_results import main

if __name__ == "__main__":
    run_cli(main)
