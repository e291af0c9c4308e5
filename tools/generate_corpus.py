#!/usr/bin/env python
"""Generate the embedded VoxCeleb-shaped synthetic corpus.

Usage
-----
    python tools/generate_corpus.py --out data/embedded --preset demo --workers 2
    python tools/generate_corpus.py --out /tmp/tiny --preset tiny --backend numpy
    python tools/generate_corpus.py --out /tmp/multi --languages en-us,fr,de,es,it,pt

Any :class:`sslsv_sb.data.corpus.CorpusConfig` field can be overridden with
``--<field> VALUE``. A second run with the same configuration returns at once.
Errors print one line and exit with status 1.
"""

from sslsv_sb.recipe.cli import run_cli
from sslsv_sb.recipe.tools.generate_corpus import main

if __name__ == "__main__":
    run_cli(main)
