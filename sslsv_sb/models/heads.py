"""Projection, prediction and clustering heads (all heads live in this one file).

A head is an MLP described by a list of blocks; named subclasses only set the block
list with the paper's defaults, so the architecture of each method is readable here.
"""

import torch
from torch import nn


class ProjectionHead(nn.Module):
    """MLP built from ``(in_dim, out_dim, batch_norm, activation, bias)`` blocks.

    Arguments
    ---------
    blocks : list of tuple
        Each ``(in_dim, out_dim, bn, act)`` or ``(in_dim, out_dim, bn, act, bias)``:
        ``bn`` is an ``nn.Module`` (e.g. ``nn.BatchNorm1d(out_dim)``) or None, ``act``
        an ``nn.Module`` or None, ``bias`` (default True) for the linear layer.

    Example
    -------
    >>> head = ProjectionHead([(8, 16, nn.BatchNorm1d(16), nn.ReLU()), (16, 4, None, None)])
    >>> head(torch.randn(5, 8)).shape
    torch.Size([5, 4])
    """

    def __init__(self, blocks):
        super().__init__()
        layers = []
        for block in blocks:
            in_dim, out_dim, bn, act = block[:4]
            bias = block[4] if len(block) > 4 else True
            layers.append(nn.Linear(in_dim, out_dim, bias=bias))
            if bn is not None:
                layers.append(bn)
            if act is not None:
                layers.append(act)
        self.layers = nn.Sequential(*layers)
        self.out_dim = blocks[-1][1]

    def forward(self, x):
        """``(B, in_dim) -> (B, out_dim)``."""
        return self.layers(x)


def mlp_blocks(in_dim, hidden_dims, out_dim, last_bn=False, act=nn.ReLU):
    """Blocks for ``Linear-BN-act`` hidden layers and a plain (optionally BN) output."""
    dims = [in_dim, *hidden_dims]
    blocks = [(a, b, nn.BatchNorm1d(b), act()) for a, b in zip(dims[:-1], dims[1:])]
    blocks.append(
        (dims[-1], out_dim, nn.BatchNorm1d(out_dim, affine=False) if last_bn else None, None)
    )
    return blocks


class SimCLRProjectionHead(ProjectionHead):
    """SimCLR projector (arXiv 2002.05709): ``Linear-BN-ReLU`` x n_hidden, then Linear.

    sslsv's default is 3 layers (2048-2048-128); its headline speaker configs use no
    projector at all (``projector: null`` in the recipes).
    """

    def __init__(self, in_dim, hidden_dim=2048, out_dim=128, n_hidden=2):
        super().__init__(mlp_blocks(in_dim, [hidden_dim] * n_hidden, out_dim))


class Identity(nn.Module):
    """Identity head that still exposes ``out_dim`` (for "no projector" configs)."""

    def __init__(self, dim):
        super().__init__()
        self.out_dim = dim

    def forward(self, x):
        """Return ``x`` unchanged."""
        return x
