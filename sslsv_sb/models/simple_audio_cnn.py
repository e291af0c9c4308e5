"""Raw-waveform convolutional encoder of Contrastive Predictive Coding.

Reference
---------
A. van den Oord, Y. Li, O. Vinyals, "Representation learning with contrastive
predictive coding", arXiv:1807.03748, 2018 (section 3.1: five strided 1-D
convolutions with strides [5, 4, 2, 2, 2], filter sizes [10, 8, 4, 4, 4] and 512
hidden units with ReLU, one feature vector every 10 ms at 16 kHz).
"""

from torch import nn

from sslsv_sb.models.tdnn import (
    abs_lengths,
    conv_out_lengths,
    length_mask,
    masked_mean,
    per_layer,
)


class SimpleAudioCNN(nn.Module):
    """CPC waveform encoder: 5 x ``Conv1d(no bias)-BatchNorm-ReLU``, total stride 160.

    Length-aware: frames past each utterance's valid length are zeroed after every
    layer, so (in eval mode) zero-padding an utterance and giving its relative length
    leaves its valid frames, and its pooled embedding, unchanged.

    Arguments
    ---------
    out_dim : int
        Channels of the last layer ``D`` (``encoder_dim`` in sslsv).
    hidden_dim : int
        Channels of the first four layers.
    kernel_sizes, strides, paddings : list of int
        Per-layer hyper-parameters (CPC paper / sslsv defaults).
    frame_level : bool
        True (default): return ``(B, D, L / 160)``; False: length-aware mean over time
        ``(B, D)``.

    Example
    -------
    >>> import torch
    >>> enc = SimpleAudioCNN()
    >>> enc(torch.randn(2, 3200)).shape
    torch.Size([2, 512, 20])
    >>> SimpleAudioCNN(frame_level=False)(torch.randn(2, 3200, 1)).shape
    torch.Size([2, 512])
    """

    def __init__(
        self,
        out_dim=512,
        hidden_dim=512,
        kernel_sizes=(10, 8, 4, 4, 4),
        strides=(5, 4, 2, 2, 2),
        paddings=(3, 2, 1, 1, 1),
        frame_level=True,
    ):
        super().__init__()
        self.kernel_sizes, self.strides, self.paddings = per_layer(
            kernel_sizes=kernel_sizes, strides=strides, paddings=paddings
        )
        n_layers = len(kernel_sizes)
        dims = [1] + [hidden_dim] * (n_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(
            nn.Sequential(
                nn.Conv1d(dims[i], dims[i + 1], k, stride=s, padding=p, bias=False),
                nn.BatchNorm1d(dims[i + 1]),
                nn.ReLU(),
            )
            for i, (k, s, p) in enumerate(zip(kernel_sizes, strides, paddings))
        )
        self.frame_level = frame_level
        self.out_dim = out_dim

    def forward(self, wavs, lengths=None):
        """Encodes raw waveforms.

        Arguments
        ---------
        wavs : torch.Tensor
            ``(B, L)`` or ``(B, L, 1)`` 16 kHz waveforms.
        lengths : torch.Tensor, optional
            ``(B,)`` relative lengths in ``(0, 1]``.

        Returns
        -------
        torch.Tensor
            ``(B, D, T')`` with ``T' = L / 160`` (``L`` a multiple of 160) if
            ``frame_level``, else ``(B, D)``.
        """
        if wavs.dim() == 3:
            if wavs.shape[-1] != 1:
                raise ValueError(
                    f"expected (B, L) or (B, L, 1), got {tuple(wavs.shape)}"
                )
            wavs = wavs.squeeze(-1)
        if wavs.dim() != 2:
            raise ValueError(f"expected (B, L) or (B, L, 1), got {tuple(wavs.shape)}")
        x = wavs.unsqueeze(1)  # (B, 1, L)
        n, mask = None, None
        if lengths is not None:
            n = abs_lengths(lengths, x.shape[-1])
            mask = length_mask(n, x.shape[-1]).unsqueeze(1)
        for layer, k, s, p in zip(
            self.layers, self.kernel_sizes, self.strides, self.paddings
        ):
            if mask is not None:
                x = x * mask.to(x.dtype)
            x = layer(x)
            if n is not None:
                n = conv_out_lengths(n, k, s, p)
                mask = length_mask(n, x.shape[-1]).unsqueeze(1)
        if mask is not None:
            x = x * mask.to(x.dtype)
        if self.frame_level:
            return x
        return masked_mean(x, mask, dim=-1)
