"""Encoder wrappers with one output convention: ``(B, T, F), lengths -> (B, D)``.

SpeechBrain's ``ECAPA_TDNN`` returns ``(B, 1, D)``; the thin subclass below squeezes it
so every method sees ``(B, D)``, while keeping SpeechBrain's parameter names (a
checkpoint of ``ECAPAEncoder`` loads into a plain ``ECAPA_TDNN`` and back).
"""

from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN
from torch import nn


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
