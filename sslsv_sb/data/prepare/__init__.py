"""Corpus preparation: train lists, trial lists and augmentation banks.

One module per source (``voxceleb``, ``musan_rir``, ``sitw``, ``voices``,
``voxlingua``, ``cremad``, ``kaldi``); shared download / extraction / conversion /
validation helpers live in ``common``. Thin CLIs are in ``tools/prepare_data/``;
see ``docs/data_preparation.md``.
"""

from sslsv_sb.data.prepare.cremad import prepare_cremad
from sslsv_sb.data.prepare.kaldi import import_kaldi
from sslsv_sb.data.prepare.musan_rir import prepare_augmentation
from sslsv_sb.data.prepare.sitw import prepare_sitw
from sslsv_sb.data.prepare.voices import prepare_voices
from sslsv_sb.data.prepare.voxceleb import prepare_voxceleb
from sslsv_sb.data.prepare.voxlingua import prepare_voxlingua107

__all__ = [
    "import_kaldi",
    "prepare_augmentation",
    "prepare_cremad",
    "prepare_sitw",
    "prepare_voices",
    "prepare_voxceleb",
    "prepare_voxlingua107",
]
