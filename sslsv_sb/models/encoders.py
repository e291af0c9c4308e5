"""Encoder wrappers with one output convention: ``(B, T, F), lengths -> (B, D)``.

SpeechBrain's ``ECAPA_TDNN`` returns ``(B, 1, D)``; the thin subclass below squeezes it
so every method sees ``(B, D)``, while keeping SpeechBrain's parameter names (a
checkpoint of ``ECAPAEncoder`` loads into a plain ``ECAPA_TDNN`` and back).
"""

import torch
from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN
from speechbrain.lobes.models.ECAPA_TDNN import Conv1d as ECAPAConv1d
from speechbrain.nnet.CNN import get_padding_elem
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
        use_sliced_reflect_padding(self)

    def forward(self, x, lengths=None):
        """``(B, T, F)`` features, relative ``lengths (B,)`` -> ``(B, D)``."""
        return super().forward(x, lengths).squeeze(1)


class SlicedReflectConv1d(ECAPAConv1d):
    """ECAPA's ``Conv1d`` whose reflect "same" padding is built from slices.

    The padded tensor is the one ``F.pad(x, pad, mode="reflect")`` returns, element
    for element (forward and backward), but ``aten::reflection_pad1d`` is slow on
    CPU: profiling a bf16 evaluation of ECAPA C=256 showed it at 11 % of the self CPU
    time (18 % with its copies), about 5x the cost of a ``cat`` of two flipped
    slices. Kernel-size-1 convolutions (most of ECAPA's) pad nothing and now return
    their input without the full copy that ``F.pad`` makes.
    """

    def _manage_padding(self, x, kernel_size, dilation, stride):
        """``(B, C, T) -> (B, C, T + left + right)``, reflected at both ends."""
        left, right = get_padding_elem(self.in_channels, stride, kernel_size, dilation)
        if left == right == 0:
            return x
        if max(left, right) >= x.shape[-1]:  # F.pad's own error for too short input
            return nn.functional.pad(x, (left, right), mode="reflect")
        parts = [x[..., 1 : left + 1].flip(-1), x, x[..., -right - 1 : -1].flip(-1)]
        return torch.cat(parts, dim=-1)


def use_sliced_reflect_padding(module):
    """Give every reflect-"same" ECAPA ``Conv1d`` in ``module`` the sliced padding.

    Only the class of each such convolution changes (to
    :class:`SlicedReflectConv1d`, a subclass): parameters, state-dict names and
    outputs are unchanged.

    Arguments
    ---------
    module : torch.nn.Module
        Changed in place.

    Returns
    -------
    int
        The number of convolutions changed.

    Example
    -------
    >>> enc = ECAPA_TDNN(40, lin_neurons=16, channels=[32, 32, 32, 32, 96])
    >>> x = torch.randn(2, 50, 40)
    >>> with torch.no_grad():
    ...     before = enc.eval()(x)
    ...     n = use_sliced_reflect_padding(enc)
    ...     after = enc(x)
    >>> n > 0, torch.equal(before, after)
    (True, True)
    """
    n = 0
    for m in module.modules():
        if (
            type(m) is ECAPAConv1d
            and m.padding == "same"
            and m.padding_mode == "reflect"
        ):
            m.__class__ = SlicedReflectConv1d
            n += 1
    return n


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
