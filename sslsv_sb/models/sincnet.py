"""SincNet-style raw-waveform encoder built on SpeechBrain's ``SincConv``.

Reference
---------
M. Ravanelli, Y. Bengio, "Speaker recognition from raw waveform with SincNet",
IEEE SLT 2018, arXiv:1808.00158 (first layer: 80 parametrised band-pass sinc
filters of length 251, then 1-D convolutions of 60 filters of length 5, each layer
followed by max-pooling of 3 and a leaky ReLU).

Differences to the paper (to keep the module small and length-aware): BatchNorm
instead of layer normalisation (the paper's layer norm spans the whole time axis,
which would make the output depend on the padding), configurable conv widths
(default 128), and a statistics pooling + linear projection instead of the three
2048-unit fully-connected layers.
"""

import torch
from speechbrain.nnet.CNN import SincConv
from torch import nn

from sslsv_sb.models.tdnn import (
    MaskedStatisticsPooling,
    abs_lengths,
    conv_out_lengths,
    length_mask,
)


class SincNetFrontEnd(nn.Module):
    """Sinc filterbank + small conv stack: ``(B, L)`` waveform -> ``(B, C, T')``.

    ``SincConv(sinc_channels, sinc_kernel, padding="valid")`` -> ``|x|`` ->
    ``MaxPool(pool_sizes[0])`` -> ``BN`` -> ``LeakyReLU(0.2)``, then for every entry of
    ``conv_channels``: ``Conv1d(k=conv_kernel, valid)`` -> ``MaxPool`` -> ``BN`` ->
    ``LeakyReLU(0.2)``. All convolutions are un-padded and pooling uses floor mode,
    so valid output frames never see padded samples. The sinc layer is computed in
    fp32 even under autocast (the filter formula evaluates ``sin`` of arguments up to
    hundreds of radians, which bf16 cannot represent accurately).

    Arguments
    ---------
    sinc_channels : int
        Number of sinc band-pass filters.
    sinc_kernel : int
        Sinc filter length in samples (odd).
    sinc_stride : int
        Stride of the sinc convolution.
    conv_channels : list of int
        Output channels of the conv layers after the sinc layer.
    conv_kernel : int
        Kernel size of those conv layers.
    pool_sizes : list of int
        Max-pooling size after the sinc layer and after each conv layer
        (``len(conv_channels) + 1`` entries).
    sample_rate : int
        Sampling rate used to initialise the sinc filters (mel-spaced).

    Example
    -------
    >>> fe = SincNetFrontEnd()
    >>> fe(torch.randn(2, 4000)).shape
    torch.Size([2, 128, 137])
    """

    def __init__(
        self,
        sinc_channels=80,
        sinc_kernel=251,
        sinc_stride=1,
        conv_channels=(128, 128),
        conv_kernel=5,
        pool_sizes=(3, 3, 3),
        sample_rate=16000,
    ):
        super().__init__()
        if len(pool_sizes) != len(conv_channels) + 1:
            raise ValueError("pool_sizes needs len(conv_channels) + 1 entries")
        self.sinc = SincConv(
            out_channels=sinc_channels,
            kernel_size=sinc_kernel,
            in_channels=1,
            stride=sinc_stride,
            padding="valid",
            sample_rate=sample_rate,
        )
        self.sinc_kernel = sinc_kernel
        self.sinc_stride = sinc_stride
        self.conv_kernel = conv_kernel
        self.pool_sizes = list(pool_sizes)
        self.sinc_post = nn.Sequential(
            nn.MaxPool1d(pool_sizes[0]),
            nn.BatchNorm1d(sinc_channels),
            nn.LeakyReLU(0.2),
        )
        layers = []
        in_ch = sinc_channels
        for ch, pool in zip(conv_channels, pool_sizes[1:]):
            layers.append(
                nn.Sequential(
                    nn.Conv1d(in_ch, ch, conv_kernel),
                    nn.MaxPool1d(pool),
                    nn.BatchNorm1d(ch),
                    nn.LeakyReLU(0.2),
                )
            )
            in_ch = ch
        self.convs = nn.Sequential(*layers)
        self.out_dim = in_ch

    def out_lengths(self, n):
        """Absolute output frame counts for absolute input sample counts ``n``."""
        n = conv_out_lengths(n, self.sinc_kernel, self.sinc_stride)
        n = conv_out_lengths(n, self.pool_sizes[0], self.pool_sizes[0])
        for pool in self.pool_sizes[1:]:
            n = conv_out_lengths(n, self.conv_kernel)
            n = conv_out_lengths(n, pool, pool)
        return n

    def forward(self, wavs):
        """``(B, L)`` or ``(B, L, 1)`` waveforms -> ``(B, C, T')`` frames."""
        if wavs.dim() == 3 and wavs.shape[-1] == 1:
            wavs = wavs.squeeze(-1)
        if wavs.dim() != 2:
            raise ValueError(f"expected (B, L) or (B, L, 1), got {tuple(wavs.shape)}")
        with torch.autocast(device_type=wavs.device.type, enabled=False):
            x = self.sinc(wavs.float())  # (B, L', C), channel-last
        x = x.transpose(1, 2).abs()
        x = self.sinc_post(x)
        return self.convs(x)


class SincEncoder(nn.Module):
    """SincNet speaker encoder (Ravanelli and Bengio, arXiv:1808.00158).

    :class:`SincNetFrontEnd` followed by length-aware mean + std pooling and
    ``Linear(2 C, out_dim)`` -> ``(B, out_dim)``; with ``frame_level=True`` a per-frame
    ``Linear(C, out_dim)`` gives ``(B, out_dim, T')`` instead (about 581 frames per
    second with the defaults; padded frames zeroed).

    Arguments
    ---------
    out_dim : int
        Embedding dimension.
    frame_level : bool
        Return frame-level features instead of a pooled embedding.
    **frontend_kwargs
        Passed to :class:`SincNetFrontEnd`.

    Example
    -------
    >>> enc = SincEncoder(out_dim=256)
    >>> enc(torch.randn(2, 4000)).shape
    torch.Size([2, 256])
    >>> SincEncoder(frame_level=True)(torch.randn(2, 4000)).shape
    torch.Size([2, 512, 137])
    """

    def __init__(self, out_dim=512, frame_level=False, **frontend_kwargs):
        super().__init__()
        self.frontend = SincNetFrontEnd(**frontend_kwargs)
        ch = self.frontend.out_dim
        self.frame_level = frame_level
        self.out_dim = out_dim
        if frame_level:
            self.fc = nn.Linear(ch, out_dim)
        else:
            self.pool = MaskedStatisticsPooling()
            self.fc = nn.Linear(2 * ch, out_dim)

    def forward(self, wavs, lengths=None):
        """Encodes raw waveforms.

        Arguments
        ---------
        wavs : torch.Tensor
            ``(B, L)`` or ``(B, L, 1)`` 16 kHz waveforms (``L`` > about 0.1 s).
        lengths : torch.Tensor, optional
            ``(B,)`` relative lengths in ``(0, 1]``.

        Returns
        -------
        torch.Tensor
            ``(B, out_dim)``, or ``(B, out_dim, T')`` if ``frame_level``.
        """
        x = self.frontend(wavs)  # (B, C, T')
        n = None
        if lengths is not None:
            n = self.frontend.out_lengths(abs_lengths(lengths, wavs.shape[1]))
            n = n.clamp(max=x.shape[-1])
        if not self.frame_level:
            return self.fc(self.pool(x, n))
        out = self.fc(x.transpose(1, 2)).transpose(1, 2)
        if n is not None:
            out = out * length_mask(n, out.shape[-1]).unsqueeze(1).to(out.dtype)
        return out
