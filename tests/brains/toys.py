"""Tiny stand-in modules shared by the Brain unit tests (no audio, no SpeechBrain)."""

from torch import nn


class Frames(nn.Module):
    """Toy front-end: ``(N, L) -> (N, L / 40, 40)`` frames."""

    def forward(self, wavs):
        return wavs.reshape(wavs.shape[0], -1, 40)


class NoNorm(nn.Module):
    """Identity normalisation with SpeechBrain's ``(feats, lengths)`` signature."""

    def forward(self, feats, lengths=None):
        return feats


class TinyEncoder(nn.Module):
    """``(N, T, 40) -> (N, dim)``: per-frame linear, mean over time, BatchNorm."""

    def __init__(self, dim=8):
        super().__init__()
        self.linear = nn.Linear(40, dim)
        self.bn = nn.BatchNorm1d(dim)
        self.out_dim = dim

    def forward(self, feats, lengths=None):
        return self.bn(self.linear(feats).mean(dim=1))
