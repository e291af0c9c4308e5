"""Encoder wrappers with one output convention: ``(B, T, F), lengths -> (B, D)``.

SpeechBrain's ``ECAPA_TDNN`` returns ``(B, 1, D)``; the thin subclass below squeezes it
so every method sees ``(B, D)``, while keeping SpeechBrain's parameter names (a
checkpoint of ``ECAPAEncoder`` loads into a plain ``ECAPA_TDNN`` and back).
"""

import torch
from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN
from speechbrain.processing.features import InputNormalization
from torch import nn

from sslsv_sb.errors import SSLSVError


class ECAPAEncoder(ECAPA_TDNN):
    """ECAPA-TDNN (Desplanques et al., arXiv 2005.07143) returning ``(B, D)``.

    Arguments
    ---------
    input_size : int
        Number of input features (mel bins).
    lin_neurons : int
        Embedding size D.
    channels : list of int
        ``[C, C, C, C, 3C]``; C=512 (6.2 M params) or C=1024 (20.8 M).
    **kwargs
        Forwarded to ``speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN``.

    Example
    -------
    >>> import torch
    >>> enc = ECAPAEncoder(40, lin_neurons=16, channels=[32, 32, 32, 32, 96])
    >>> enc(torch.randn(2, 50, 40)).shape
    torch.Size([2, 16])
    """

    def __init__(self, input_size, lin_neurons=192, **kwargs):
        super().__init__(input_size, lin_neurons=lin_neurons, **kwargs)
        self.out_dim = lin_neurons

    def forward(self, x, lengths=None):
        """``(B, T, F)`` features, relative ``lengths (B,)`` -> ``(B, D)``."""
        return super().forward(x, lengths).squeeze(1)


class WaveformFeatures(nn.Module):
    """Identity front-end for raw-waveform encoders: ``(B, L) -> (B, L, 1)``."""

    def forward(self, wavs):
        """Add a trailing feature axis so normalisation treats samples as frames."""
        return wavs.unsqueeze(-1)


class FeatureNorm(nn.Module):
    """Per-utterance feature normalisation or none: ``(B, T, F), lengths -> same``.

    ``norm="sentence"``: every log-mel bin normalised over the utterance's valid
    frames, mean and variance (SpeechBrain's ``InputNormalization(norm_type=
    "sentence", std_norm=True)``, as the mel encoder blocks do by default, and as
    sslsv's ``InstanceNorm1d``). ``norm="none"``: the features pass through.

    The per-utterance normalisation removes the utterance's long-term spectral
    envelope, which carries the channel and part of the speaker: right for
    cross-session trials (VoxCeleb), a loss where enrolment and test share a
    recording (the split-utterance trials of the LibriSpeech excerpts: untrained
    ECAPA 37.0 % EER with it, 23.9 % without). ``InputNormalization`` refuses
    ``mean_norm=False``, hence this module; ``none`` has no state.

    Arguments
    ---------
    norm : str
        ``"sentence"`` or ``"none"``.

    Example
    -------
    >>> import torch
    >>> x = torch.randn(2, 50, 40) * 3 + 5
    >>> FeatureNorm("none")(x, torch.ones(2)) is x
    True
    >>> y = FeatureNorm("sentence")(x, torch.ones(2))
    >>> bool(y.mean(dim=1).abs().max() < 1e-4), y.shape
    (True, torch.Size([2, 50, 40]))
    >>> FeatureNorm("global")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    sslsv_sb.errors.SSLSVError: feature_norm: expected ... got 'global'
    """

    NORMS = ("sentence", "none")

    def __init__(self, norm="sentence"):
        super().__init__()
        if norm not in self.NORMS:
            raise SSLSVError(
                f"feature_norm: expected 'sentence' or 'none', got {norm!r}"
            )
        self.norm = norm
        self.sentence = None
        if norm == "sentence":
            self.sentence = InputNormalization(norm_type="sentence", std_norm=True)

    def forward(self, feats, lengths=None):
        """``feats (B, T, F)``, ``lengths (B,)`` relative -> ``(B, T, F)``."""
        if self.sentence is None:
            return feats
        if lengths is None:
            lengths = torch.ones(feats.shape[0], device=feats.device)
        return self.sentence(feats, lengths)
