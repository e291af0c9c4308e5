"""Embedded VoxCeleb-shaped synthetic corpus (the project's default data).

Speakers -> sessions ("videos") -> utterances, rendered as 16 kHz mono PCM16 wav:

* speech comes from espeak-ng (``backend="espeak"``, driven through ctypes, see
  :mod:`sslsv_sb.data.espeak`) with one custom voice variant per speaker (formant
  scaling, pitch base and range, breath, roughness, flutter, accent) and a random
  sentence per utterance with small prosody jitter; ``backend="numpy"`` is a
  source-filter fallback (glottal pulses at the speaker's pitch through
  speaker-specific formant filters);
* every session draws one channel (simulated room response, microphone band-limit and
  EQ, background noise at 5-25 dB SNR, gain, -60 dB noise floor) shared by its
  utterances, so that a speaker's sessions differ and channel cues do not solve the
  task;
* augmentation banks (``noise/{noise,music,speech}`` and ``rirs``) come from
  distributions and rooms disjoint from those of the corpus channels.

Modules: ``config`` (:class:`CorpusConfig`, :data:`PRESETS`), ``text`` (sentences),
``speech`` (one speaker's clean speech), ``speakers`` (the seeded plan of speakers,
sessions and utterances), ``channel`` (session channels, room responses), ``banks``
(augmentation banks), ``lists`` (lists, trials, manifest), ``render`` (worker pool),
``cache`` (the public, cached :func:`generate_corpus` / :func:`ensure_corpus`).

Layout of the corpus folder (list paths are relative to it)::

    wav/<spk_id>/<session_id>/<NNNNN>.wav
    train.csv      File,Speaker,Session,Language,Gender   (sslsv train list)
    train_sb.csv   ID,duration,wav,start,stop,spk_id      (SpeechBrain CSV)
    test.csv       File,Speaker,Session,Language,Gender   (held-out speakers)
    trials.txt     "<1|0> <enrol> <test>"                 (cross-session targets)
    noise/{noise,music,speech}/*.wav, rirs/*.wav          (augmentation banks)
    corpus.json    manifest, written last (marks a complete corpus)

Generation is deterministic by seed (independent of ``workers``) and cached: a second
call with the same configuration returns the stored manifest immediately, e.g.
``ensure_corpus("/tmp/tiny_corpus", preset="tiny")`` (about 10 s on 2 cores).

Example
-------
>>> from sslsv_sb.data.corpus import PRESETS
>>> tiny = PRESETS["tiny"]
>>> tiny.n_train_speakers, tiny.n_test_speakers, tiny.languages[0]
(8, 6, 'en-us')
"""

from sslsv_sb.data.corpus.cache import (
    default_data_folder,
    ensure_corpus,
    generate_corpus,
)
from sslsv_sb.data.corpus.channel import apply_channel
from sslsv_sb.data.corpus.config import (
    ENGLISH_ACCENTS,
    GENERATOR_VERSION,
    MULTILINGUAL,
    PRESETS,
    CorpusConfig,
)
from sslsv_sb.data.corpus.lists import make_trials
from sslsv_sb.data.corpus.speech import numpy_speech
from sslsv_sb.data.corpus.text import make_text

__all__ = [
    "ENGLISH_ACCENTS",
    "GENERATOR_VERSION",
    "MULTILINGUAL",
    "PRESETS",
    "CorpusConfig",
    "apply_channel",
    "default_data_folder",
    "ensure_corpus",
    "generate_corpus",
    "make_text",
    "make_trials",
    "numpy_speech",
]
