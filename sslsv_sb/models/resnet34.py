"""Fast / thin ResNet-34 with squeeze-excitation for log-mel inputs.

References
----------
J. S. Chung, J. Huh, S. Mun, M. Lee, H. S. Heo, S. Choe, C. Ham, S. Jung, B.-J. Lee,
I. Han, "In defence of metric learning for speaker recognition", Interspeech 2020,
arXiv:2003.11982 ("Fast ResNet-34": half-width [16, 32, 64, 128] channels,
self-attentive pooling; "thin ResNet-34": [32, 64, 128, 256]).
K. He, X. Zhang, S. Ren, J. Sun, "Deep residual learning for image recognition",
CVPR 2016, arXiv:1512.03385.
K. He, X. Zhang, S. Ren, J. Sun, "Delving deep into rectifiers", ICCV 2015,
arXiv:1502.01852 (the "fan_out" normal initialisation of the convolutions).
J. Hu, L. Shen, G. Sun, "Squeeze-and-excitation networks", CVPR 2018,
arXiv:1709.01507.
W. Cai, J. Chen, M. Li, "Exploring the encoding layer and loss function in
end-to-end speaker and language recognition system", Odyssey 2018,
arXiv:1804.05160 (self-attentive pooling, SAP).
"""

import torch
import torch.nn.functional as F
from torch import nn

from sslsv_sb.models.tdnn import (
    abs_lengths,
    conv_out_lengths,
    length_mask,
    masked_mean,
    masked_mean_std,
)


def _apply_mask(x, mask):
    """Zeroes padded time frames of ``x`` (``(B, C, F, T)``) if ``mask`` is given."""
    return x if mask is None else x * mask.to(x.dtype)


def _time_mask(n, max_len):
    """``(B, 1, 1, T)`` boolean time mask (or None if ``n`` is None)."""
    if n is None:
        return None
    return length_mask(n, max_len)[:, None, None, :]


class SqueezeExcitation(nn.Module):
    """Length-aware squeeze-excitation (Hu et al., arXiv:1709.01507).

    The squeeze is a mean over frequency and the *valid* time frames only.

    Arguments
    ---------
    channels : int
        Number of channels ``C``.
    reduction : int
        Bottleneck reduction ratio ``r``.
    """

    def __init__(self, channels, reduction=8):
        super().__init__()
        self.fc = nn.Sequential(
            nn.Linear(channels, channels // reduction),
            nn.ReLU(inplace=True),
            nn.Linear(channels // reduction, channels),
            nn.Sigmoid(),
        )

    def forward(self, x, mask=None):
        """``(B, C, F, T)`` and optional ``(B, 1, 1, T)`` mask -> ``(B, C, F, T)``."""
        if mask is None:
            s = x.float().mean(dim=(2, 3))
        else:
            s = masked_mean(x.float().mean(dim=2), mask[:, :, 0, :], dim=-1)
        w = self.fc(s.to(x.dtype))
        return x * w[:, :, None, None].to(x.dtype)


class SEBasicBlock(nn.Module):
    """Residual block ``conv3x3-ReLU-BN-conv3x3-BN-SE (+ shortcut) -ReLU``.

    Layer order follows voxceleb_trainer's ``SEBasicBlock`` (ReLU before the first
    BN). Convolutions have no bias; the shortcut is ``conv1x1-BN`` when the shape
    changes.

    Arguments
    ---------
    in_channels, out_channels : int
        Channels.
    stride : int
        Stride on both frequency and time.
    reduction : int
        SE reduction ratio.
    """

    def __init__(self, in_channels, out_channels, stride=1, reduction=8):
        super().__init__()
        self.stride = stride
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.se = SqueezeExcitation(out_channels, reduction)
        self.shortcut = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x, n=None):
        """``(B, C_in, F, T)`` (masked), optional ``(B,)`` frame counts.

        Returns the masked ``(B, C_out, F', T')`` output and the new frame counts.
        """
        out = self.bn1(self.relu(self.conv1(x)))
        if n is not None:
            n = conv_out_lengths(n, 3, self.stride, 1)
        mask = _time_mask(n, out.shape[-1])
        out = self.bn2(self.conv2(_apply_mask(out, mask)))
        out = self.se(out, mask)
        residual = x if self.shortcut is None else self.shortcut(x)
        out = self.relu(out + residual)
        return _apply_mask(out, mask), n


class ResNet34(nn.Module):
    """Fast / thin ResNet-34 speaker encoder (Chung et al., arXiv:2003.11982).

    Input log-mel ``(B, T, F)`` is seen as a 1-channel image ``(B, 1, F, T)``. Stem
    ``Conv2d(1, c, 7, stride=(2, 1), padding=3, bias=False)-BN-ReLU`` (frequency / 2),
    four stages of ``[3, 4, 6, 3]`` :class:`SEBasicBlock` with channels
    ``base_channels * [1, 2, 4, 8]`` and strides ``[1, 2, 2, 1]`` (frequency / 8 and
    time / 4 overall), then:

    * ``pooling="sap"``: mean over frequency, self-attentive pooling over time
      (``tanh(Linear(C, C))`` scored by a learned vector, softmax over valid frames),
      ``Linear(C, out_dim)`` -> ``(B, out_dim)``;
    * ``pooling="stats"``: mean and std (variance floored at 1e-5) over valid frames of
      the flattened ``(C * F / 8)`` maps, ``Linear(2 * C * F / 8, out_dim)``
      -> ``(B, out_dim)``;
    * ``pooling=None`` / ``"none"`` / False: per-frame ``Linear(C * F / 8, out_dim)``
      -> frame-level ``(B, out_dim, ceil(T / 4))`` (padded frames zeroed), for CPC.

    Every layer zeroes the padded time frames and the SE squeeze and the pooling
    only use valid frames, so padding does not change the output (in eval mode).

    **Initialisation** (as voxceleb_trainer and sslsv): every ``Conv2d`` weight is
    drawn from He's normal with ``mode="fan_out"`` (std ``sqrt(2 / (C_out k^2))``,
    arXiv:1502.01852), BatchNorm scales 1 and shifts 0. PyTorch's default conv init
    is about 2.5x smaller; since every convolution is followed by BatchNorm, a
    smaller weight only raises Adam's effective step (``lr / ||w||``). Before this
    init, MoCo + ResNet-34 did not learn at the demo budget (42.09 -> 42.15 % EER,
    where sslsv reached 29.95 %; ``docs/sslsv_comparison.md``).

    Arguments
    ---------
    input_size : int
        Number of mel bins ``F`` (40 for the SAP default, 80 for DINO/stats).
    out_dim : int
        Embedding dimension.
    base_channels : int
        16 for "Fast ResNet-34" (sslsv default), 32 for the wide / thin variant.
    block_sizes : list of int
        Residual blocks per stage.
    pooling : str or None
        ``"sap"``, ``"stats"`` or None / ``"none"``.
    se_reduction : int
        SE reduction ratio.

    Example
    -------
    >>> enc = ResNet34(input_size=40)
    >>> enc(torch.randn(2, 40, 40)).shape
    torch.Size([2, 512])
    >>> ResNet34(input_size=40, pooling=None)(torch.randn(2, 40, 40)).shape
    torch.Size([2, 512, 10])
    """

    STRIDES = (1, 2, 2, 1)

    def __init__(
        self,
        input_size=40,
        out_dim=512,
        base_channels=16,
        block_sizes=(3, 4, 6, 3),
        pooling="sap",
        se_reduction=8,
    ):
        super().__init__()
        if pooling in (None, False, "none", "None"):
            pooling = None
        if pooling not in (None, "sap", "stats"):
            raise ValueError(f"pooling must be 'sap', 'stats' or None, got {pooling!r}")
        if len(block_sizes) != len(self.STRIDES):
            raise ValueError("block_sizes must have 4 entries")
        self.pooling = pooling
        self.out_dim = out_dim
        self.stem = nn.Sequential(
            nn.Conv2d(1, base_channels, 7, stride=(2, 1), padding=3, bias=False),
            nn.BatchNorm2d(base_channels),
            nn.ReLU(inplace=True),
        )
        blocks = []
        in_ch = base_channels
        freq = (input_size - 1) // 2 + 1  # stem
        for i, (n_blocks, stride) in enumerate(zip(block_sizes, self.STRIDES)):
            out_ch = base_channels * 2**i
            for j in range(n_blocks):
                s = stride if j == 0 else 1
                blocks.append(SEBasicBlock(in_ch, out_ch, s, se_reduction))
                freq = (freq - 1) // s + 1
                in_ch = out_ch
        self.blocks = nn.ModuleList(blocks)
        self.channels = in_ch
        self.freq_out = freq
        flat = in_ch * freq
        if pooling == "sap":
            self.sap_linear = nn.Linear(in_ch, in_ch)
            self.sap_vector = nn.Parameter(torch.empty(in_ch, 1))
            nn.init.xavier_normal_(self.sap_vector)
            self.fc = nn.Linear(in_ch, out_dim)
        elif pooling == "stats":
            self.fc = nn.Linear(2 * flat, out_dim)
        else:
            self.fc = nn.Linear(flat, out_dim)
        self._init_weights()

    def _init_weights(self):
        """He ``fan_out`` normal for the convolutions, ``(1, 0)`` for BatchNorm."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _sap(self, x, mask):
        """Self-attentive pooling: ``(B, C, T)`` -> ``(B, C)``."""
        h = x.transpose(1, 2)  # (B, T, C)
        scores = torch.tanh(self.sap_linear(h)) @ self.sap_vector  # (B, T, 1)
        scores = scores.squeeze(-1).float()
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        w = F.softmax(scores, dim=-1)  # (B, T)
        return torch.sum(h.float() * w.unsqueeze(-1), dim=1)

    def forward(self, feats, lengths=None):
        """Encodes log-mel features.

        Arguments
        ---------
        feats : torch.Tensor
            ``(B, T, F)`` features with ``F == input_size``.
        lengths : torch.Tensor, optional
            ``(B,)`` relative lengths in ``(0, 1]``.

        Returns
        -------
        torch.Tensor
            ``(B, out_dim)``, or ``(B, out_dim, ceil(T / 4))`` when ``pooling`` is None.
        """
        x = feats.transpose(1, 2).unsqueeze(1)  # (B, 1, F, T)
        n = None if lengths is None else abs_lengths(lengths, x.shape[-1])
        mask = _time_mask(n, x.shape[-1])
        x = _apply_mask(self.stem(_apply_mask(x, mask)), mask)
        for block in self.blocks:
            x, n = block(x, n)
        t_mask = None if n is None else length_mask(n, x.shape[-1])  # (B, T')
        if self.pooling == "sap":
            x = x.mean(dim=2)  # (B, C, T')
            return self.fc(self._sap(x, t_mask))
        x = x.flatten(1, 2)  # (B, C * F', T')
        if self.pooling == "stats":
            mean, std = masked_mean_std(
                x, None if t_mask is None else t_mask.unsqueeze(1), dim=-1
            )
            return self.fc(torch.cat([mean, std], dim=1))
        out = self.fc(x.transpose(1, 2)).transpose(1, 2)  # (B, out_dim, T')
        if t_mask is not None:
            out = out * t_mask.unsqueeze(1).to(out.dtype)
        return out
