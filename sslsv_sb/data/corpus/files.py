"""Atomic writers of the corpus files (wav, text, CSV)."""

import csv
import io
import os

import numpy as np
import soundfile as sf


def write_wav(path, wav, sr):
    """Write PCM16 wav atomically (temporary file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    sf.write(tmp, np.asarray(wav, dtype=np.float32), sr, subtype="PCM_16", format="WAV")
    os.replace(tmp, path)


def write_text_atomic(path, text):
    """Write a text file atomically (temporary file + rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def csv_text(header, rows):
    """Return ``header`` and ``rows`` as CSV text (``\\n`` line ends)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()
