"""Configuration of the synthetic corpus: :class:`CorpusConfig` and :data:`PRESETS`."""

import dataclasses
import json
from dataclasses import dataclass

from sslsv_sb.errors import SSLSVError

GENERATOR_VERSION = "1.0"

ENGLISH_ACCENTS = ("en-us", "en-gb-x-rp", "en-029", "en-gb-scotland")
MULTILINGUAL = ("en-us", "fr", "de", "es", "it", "pt")

# room responses simulated for the session channels (each session draws one)
N_CHANNEL_RIRS = 64


@dataclass
class CorpusConfig:
    """Size and content knobs of the synthetic corpus (defaults = the demo size).

    Arguments
    ---------
    n_train_speakers, n_test_speakers : int
        Disjoint train and test (trial) speakers.
    train_sessions, train_utts_per_session : int
        Sessions per train speaker and utterances per session.
    test_sessions, test_utts_per_session : int
        Same for test speakers (``test_sessions >= 2`` for cross-session targets).
    min_duration, max_duration : float
        Utterance duration range in seconds.
    languages : tuple of str
        espeak-ng voices (accents or languages), assigned round-robin to speakers;
        the ``Language`` column carries them.
    nontarget_ratio : float
        Non-target trials per target trial.
    n_noise_files : int
        Files per augmentation noise category (noise, music, speech).
    n_rirs : int
        Room responses in the augmentation bank.
    seed : int
        Master seed.
    backend : str
        ``"espeak"``, ``"numpy"`` or ``"auto"`` (espeak if it loads, else numpy).
    sample_rate : int
        Output sampling rate in Hz.
    """

    n_train_speakers: int = 60
    n_test_speakers: int = 30
    train_sessions: int = 4
    train_utts_per_session: int = 6
    test_sessions: int = 3
    test_utts_per_session: int = 4
    min_duration: float = 2.5
    max_duration: float = 4.5
    languages: tuple = ENGLISH_ACCENTS
    nontarget_ratio: float = 4.0
    n_noise_files: int = 30
    n_rirs: int = 40
    seed: int = 1234
    backend: str = "auto"
    sample_rate: int = 16000

    def __post_init__(self):
        if isinstance(self.languages, str):
            self.languages = tuple(x for x in self.languages.split(",") if x)
        self.languages = tuple(self.languages)
        self.validate()

    def validate(self):
        """Raise :class:`SSLSVError` naming the offending key if a knob is invalid."""
        positive = (
            "n_train_speakers",
            "n_test_speakers",
            "train_sessions",
            "train_utts_per_session",
            "test_sessions",
            "test_utts_per_session",
        )
        for key in positive:
            if int(getattr(self, key)) < 1:
                raise SSLSVError(f"corpus config: {key} must be >= 1")
        if self.test_sessions < 2:
            raise SSLSVError(
                "corpus config: test_sessions must be >= 2 (targets are cross-session)"
            )
        if self.n_test_speakers < 2:
            raise SSLSVError("corpus config: n_test_speakers must be >= 2")
        if not 0.5 <= self.min_duration <= self.max_duration:
            raise SSLSVError(
                "corpus config: need 0.5 <= min_duration <= max_duration "
                f"(got {self.min_duration}, {self.max_duration})"
            )
        if not self.languages:
            raise SSLSVError("corpus config: languages must not be empty")
        if self.backend not in ("auto", "espeak", "numpy"):
            raise SSLSVError(
                f"corpus config: backend must be auto, espeak or numpy "
                f"(got {self.backend!r})"
            )
        if self.sample_rate < 8000:
            raise SSLSVError("corpus config: sample_rate must be >= 8000")
        if self.nontarget_ratio < 0 or self.n_noise_files < 0 or self.n_rirs < 0:
            raise SSLSVError(
                "corpus config: nontarget_ratio, n_noise_files, n_rirs must be >= 0"
            )

    def to_dict(self):
        """Return the configuration as a JSON-compatible dict."""
        return json.loads(json.dumps(dataclasses.asdict(self)))


PRESETS = {
    "demo": CorpusConfig(),
    "tiny": CorpusConfig(
        n_train_speakers=8,
        n_test_speakers=6,
        train_sessions=2,
        train_utts_per_session=3,
        test_sessions=2,
        test_utts_per_session=2,
        min_duration=1.5,
        max_duration=2.5,
        n_noise_files=3,
        n_rirs=4,
    ),
}
