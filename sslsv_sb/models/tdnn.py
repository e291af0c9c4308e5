"""X-vector TDNN encoder and the length-aware helpers shared by all encoders.

The helpers (``abs_lengths``, ``conv_out_lengths``, ``length_mask``,
``masked_mean``, ``masked_mean_std``, ``MaskedStatisticsPooling``) turn relative
lengths (SpeechBrain convention: ``(B,)`` in ``(0, 1]``, fraction of the padded
time axis) into exact frame counts after each convolution, so that padding a batch
element with zeros does not change its embedding (in eval mode).

Reference
---------
D. Snyder, D. Garcia-Romero, G. Sell, D. Povey, S. Khudanpur, "X-vectors: robust
DNN embeddings for speaker recognition", ICASSP 2018.
"""

import torch
from speechbrain.nnet.CNN import Conv1d
from speechbrain.nnet.normalization import BatchNorm1d
from torch import nn


def per_layer(**options):
    """Per-layer hyper-parameter sequences as lists, checked to share one length.

    Arguments
    ---------
    **options
        Name -> sequence (one entry per layer).

    Returns
    -------
    list of list
        The sequences as lists, in argument order.

    Example
    -------
    >>> per_layer(kernel_sizes=(5, 3), dilations=(1, 2))
    [[5, 3], [1, 2]]
    """
    if len({len(v) for v in options.values()}) > 1:
        *first, last = options
        raise ValueError(f"{', '.join(first)} and {last} must match in length")
    return [list(v) for v in options.values()]


def abs_lengths(lengths, max_len, device=None):
    """Converts relative lengths to absolute frame counts.

    Arguments
    ---------
    lengths : torch.Tensor or None
        ``(B,)`` relative lengths in ``(0, 1]``; None means all full.
    max_len : int
        Size of the (padded) time axis the relative lengths refer to.
    device : torch.device, optional
        Device of the result when ``lengths`` is None (then ``B`` is unknown and a
        scalar tensor equal to ``max_len`` is returned).

    Returns
    -------
    torch.Tensor
        ``(B,)`` (or scalar) int64 frame counts, clamped to ``[1, max_len]``.
    """
    if lengths is None:
        return torch.tensor(max_len, device=device)
    n = torch.round(lengths.float() * max_len).long()
    return n.clamp(1, max_len)


def conv_out_lengths(n, kernel_size, stride=1, padding=0, dilation=1):
    """Number of output frames of a convolution / pooling with zero padding.

    ``floor((n + 2 p - d (k - 1) - 1) / s) + 1`` (PyTorch formula, floor mode),
    clamped to at least 1.

    Arguments
    ---------
    n : torch.Tensor
        Input frame counts (int64).
    kernel_size, stride, padding, dilation : int
        Layer hyper-parameters (time axis).

    Returns
    -------
    torch.Tensor
        Output frame counts.
    """
    out = torch.div(
        n + 2 * padding - dilation * (kernel_size - 1) - 1,
        stride,
        rounding_mode="floor",
    )
    return (out + 1).clamp(min=1)


def length_mask(n, max_len):
    """Boolean mask ``(B, max_len)`` that is True on the first ``n[b]`` frames.

    Arguments
    ---------
    n : torch.Tensor
        ``(B,)`` absolute frame counts (or a scalar, broadcast to one row).
    max_len : int
        Size of the time axis.

    Returns
    -------
    torch.Tensor
        ``(B, max_len)`` (or ``(1, max_len)``) boolean mask.
    """
    steps = torch.arange(max_len, device=n.device)
    return steps.unsqueeze(0) < n.reshape(-1, 1)


def masked_mean(x, mask, dim=-1):
    """Mean of ``x`` over ``dim`` restricted to ``mask`` (computed in fp32).

    Arguments
    ---------
    x : torch.Tensor
        Input, e.g. ``(B, C, T)``.
    mask : torch.Tensor or None
        Boolean mask broadcastable to ``x`` (e.g. ``(B, 1, T)``); None = all frames.
    dim : int
        Axis to reduce.

    Returns
    -------
    torch.Tensor
        ``x`` reduced over ``dim``.
    """
    x = x.float()
    if mask is None:
        return x.mean(dim=dim)
    m = mask.to(x.dtype)
    return (x * m).sum(dim=dim) / m.sum(dim=dim).clamp(min=1.0)


def masked_mean_std(x, mask, dim=-1, eps=1e-5):
    """Masked mean and standard deviation over ``dim`` (fp32).

    The (biased) variance is clamped to ``eps`` before the square root, as in
    voxceleb_trainer / sslsv, which keeps the gradient finite for constant inputs.

    Arguments
    ---------
    x : torch.Tensor
        Input, e.g. ``(B, C, T)``.
    mask : torch.Tensor or None
        Boolean mask broadcastable to ``x``; None = all frames.
    dim : int
        Axis to reduce.
    eps : float
        Variance floor.

    Returns
    -------
    mean, std : torch.Tensor
        Both reduced over ``dim``.
    """
    x = x.float()
    mean = masked_mean(x, mask, dim=dim)
    diff2 = (x - mean.unsqueeze(dim)) ** 2
    var = masked_mean(diff2, mask, dim=dim)
    return mean, torch.sqrt(var.clamp(min=eps))


class MaskedStatisticsPooling(nn.Module):
    """Length-aware mean + standard-deviation pooling over the last axis.

    Unlike ``speechbrain.nnet.pooling.StatisticsPooling`` it takes exact absolute
    frame counts (so it stays exact after un-padded convolutions), adds no noise to
    the mean and computes in fp32.

    Arguments
    ---------
    eps : float
        Variance floor.

    Example
    -------
    >>> pool = MaskedStatisticsPooling()
    >>> pool(torch.randn(2, 8, 10), torch.tensor([10, 6])).shape
    torch.Size([2, 16])
    """

    def __init__(self, eps=1e-5):
        super().__init__()
        self.eps = eps

    def forward(self, x, n_frames=None):
        """``(B, C, T)``, optional ``(B,)`` frame counts -> ``(B, 2 C)`` (fp32)."""
        mask = None
        if n_frames is not None:
            mask = length_mask(n_frames, x.shape[-1]).unsqueeze(1)
        mean, std = masked_mean_std(x, mask, dim=-1, eps=self.eps)
        return torch.cat([mean, std], dim=1)


class TDNN(nn.Module):
    """X-vector TDNN encoder (Snyder et al., ICASSP 2018).

    Five frame-level TDNN layers (``Conv1d-LeakyReLU-BatchNorm``, no padding, so
    every output frame only sees real input frames), length-aware statistics pooling
    (mean + std) and segment layers ``Linear(2 C, D)-ReLU-BN-Linear(D, D)`` as in
    sslsv's ``TDNN``. Built from SpeechBrain's ``Conv1d`` / ``BatchNorm1d``
    (``speechbrain.lobes.models.Xvector`` is *not* reused: it uses reflect "same"
    padding, which breaks length invariance, its pooling adds noise to the mean,
    and it has a single segment layer).

    Arguments
    ---------
    input_size : int
        Feature dimension ``F`` (number of mel bins), default 40 as in sslsv.
    out_dim : int
        Embedding dimension ``D``.
    channels : list of int
        Output channels of the frame-level layers.
    kernel_sizes : list of int
        Kernel size of each frame-level layer.
    dilations : list of int
        Dilation of each frame-level layer.
    pooling : bool
        If False, return the frame-level output of the last TDNN layer
        ``(B, channels[-1], T - context)`` (frames past each length are zeroed).

    Example
    -------
    >>> enc = TDNN(input_size=40)
    >>> enc(torch.randn(2, 50, 40)).shape
    torch.Size([2, 512])
    >>> TDNN(input_size=40, pooling=False)(torch.randn(2, 50, 40)).shape
    torch.Size([2, 1500, 36])
    """

    def __init__(
        self,
        input_size=40,
        out_dim=512,
        channels=(512, 512, 512, 512, 1500),
        kernel_sizes=(5, 3, 3, 1, 1),
        dilations=(1, 2, 3, 1, 1),
        pooling=True,
    ):
        super().__init__()
        channels, self.kernel_sizes, self.dilations = per_layer(
            channels=channels, kernel_sizes=kernel_sizes, dilations=dilations
        )
        self.context = sum(d * (k - 1) for k, d in zip(kernel_sizes, dilations))
        self.pooling = pooling
        layers = []
        in_ch = input_size
        for ch, k, d in zip(channels, kernel_sizes, dilations):
            layers.append(
                nn.ModuleList(
                    [
                        Conv1d(
                            out_channels=ch,
                            kernel_size=k,
                            in_channels=in_ch,
                            dilation=d,
                            padding="valid",
                        ),
                        nn.LeakyReLU(),
                        BatchNorm1d(input_size=ch),
                    ]
                )
            )
            in_ch = ch
        self.frame_layers = nn.ModuleList(layers)
        if pooling:
            self.stats = MaskedStatisticsPooling()
            self.segment = nn.Sequential(
                nn.Linear(2 * in_ch, out_dim),
                nn.ReLU(),
                nn.BatchNorm1d(out_dim),
                nn.Linear(out_dim, out_dim),
            )
            self.out_dim = out_dim
        else:
            self.out_dim = in_ch

    def forward(self, feats, lengths=None):
        """Computes x-vectors.

        Arguments
        ---------
        feats : torch.Tensor
            ``(B, T, F)`` features, ``T > context`` (14 frames by default).
        lengths : torch.Tensor, optional
            ``(B,)`` relative lengths in ``(0, 1]``.

        Returns
        -------
        torch.Tensor
            ``(B, D)`` embeddings, or ``(B, C_last, T - context)`` if ``pooling`` is
            False.
        """
        if feats.shape[1] <= self.context:
            raise ValueError(
                f"TDNN needs more than {self.context} frames, got {feats.shape[1]}"
            )
        x = feats  # (B, T, C): SpeechBrain layers are channel-last
        for conv, act, bn in self.frame_layers:
            x = bn(act(conv(x)))
        x = x.transpose(1, 2)  # (B, C, T')
        n = None
        if lengths is not None:
            n = abs_lengths(lengths, feats.shape[1]) - self.context
            n = n.clamp(min=1)
        if not self.pooling:
            if n is not None:
                x = x * length_mask(n, x.shape[-1]).unsqueeze(1).to(x.dtype)
            return x
        return self.segment(self.stats(x, n))
