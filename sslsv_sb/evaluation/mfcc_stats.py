"""Non-learned baseline back-end: MFCC statistics, z-normalised, cosine.

Each utterance becomes the mean and the standard deviation over its frames of 19
MFCCs: coefficients ``c1 .. c19`` of SpeechBrain's
``speechbrain.lobes.features.MFCC`` (``n_mels=40``, ``n_mfcc=20``, 25 ms windows
every 10 ms, 400-point FFT, no deltas and no context frames) with ``c0`` (the
log-energy term) dropped, so a ``(38,)`` vector. Every dimension is then
z-normalised with the mean and the standard deviation over the set of files being
scored (one trial list: no labels, no training data), and trials are scored by the
cosine of the normalised vectors.

It needs no model, so it is the reference every table of a learned encoder can show
next to it (``--backends=[cosine,mfcc_stats]``,
:mod:`sslsv_sb.evaluation.verification`). On the split-half trials of the 251
LibriSpeech excerpts of the shared shelf (50 held-out speakers) it scores 5.7 % EER,
and 9.59 % on the trials between quarters of the utterances (``--split_parts 4``): a
learned encoder that does not beat it has not learned much about speakers.

Padding is ignored: the statistics of a batched, zero-padded utterance use only the
frames of its own samples (see :func:`mfcc_statistics`).
"""

import numpy as np
import torch

from sslsv_sb.evaluation.embeddings import extract_embeddings
from sslsv_sb.evaluation.scoring import cosine_scores

N_MFCC = 19
N_MELS = 40
HOP_SAMPLES = 160  # 10 ms at 16 kHz


def _mfcc_module(sample_rate):
    from speechbrain.lobes.features import MFCC

    return MFCC(
        deltas=False,
        context=False,
        sample_rate=sample_rate,
        n_mels=N_MELS,
        n_mfcc=N_MFCC + 1,
        n_fft=400,
        win_length=25,
        hop_length=10,
    )


class MFCCStatistics(torch.nn.Module):
    """``(N, L)`` waveforms -> ``(N, 38)`` mean and std of MFCCs ``c1 .. c19``.

    Arguments
    ---------
    sample_rate : int
        Sample rate of the waveforms (the frame hop is 10 ms).

    Example
    -------
    >>> wavs = torch.randn(2, 16000)
    >>> wavs[1, 8000:] = 0.0  # the second utterance is 0.5 s, zero-padded
    >>> stats = MFCCStatistics()
    >>> batched = stats(wavs, torch.tensor([1.0, 0.5]))
    >>> batched.shape
    torch.Size([2, 38])
    >>> alone = stats(wavs[1:, :8000])
    >>> torch.allclose(alone[0], batched[1], atol=1e-4)
    True
    """

    def __init__(self, sample_rate=16000):
        super().__init__()
        self.mfcc = _mfcc_module(sample_rate)
        self.hop = int(round(sample_rate * 0.010))

    @torch.no_grad()
    def forward(self, wavs, lengths=None):
        """Mean and std over the valid frames of each utterance.

        Arguments
        ---------
        wavs : torch.Tensor, (N, L)
            Zero-padded waveforms.
        lengths : torch.Tensor, (N,), optional
            Relative lengths in (0, 1] (SpeechBrain convention); None: all 1.

        Returns
        -------
        torch.Tensor, (N, 38)
            ``[mean(c1..c19), std(c1..c19)]`` (``std`` with ``ddof=0``).
        """
        wavs = wavs.float()
        if wavs.ndim != 2:
            raise ValueError(f"wavs must be (N, L), got {tuple(wavs.shape)}")
        if lengths is None:
            lengths = torch.ones(wavs.shape[0])
        n_samples = (lengths.float().cpu() * wavs.shape[1]).round().long()
        coeffs = self.mfcc(wavs)[:, :, 1:]  # (N, T, 19), c0 dropped
        n_frames = coeffs.shape[1]
        # centred STFT: frame t covers samples around t * hop; a signal of n samples
        # has n // hop + 1 frames
        valid = torch.clamp(n_samples // self.hop + 1, 1, n_frames)
        mask = (torch.arange(n_frames)[None, :] < valid[:, None]).to(coeffs)
        mask = mask.unsqueeze(-1)  # (N, T, 1)
        count = mask.sum(1)
        mean = (coeffs * mask).sum(1) / count
        var = (((coeffs - mean[:, None]) * mask) ** 2).sum(1) / count
        return torch.cat([mean, var.clamp_min(0).sqrt()], dim=1)


def mfcc_stats_features(paths, sample_rate=16000, num_workers=0, progress=False):
    """MFCC statistics of audio files (full utterances, batched by length).

    Arguments
    ---------
    paths : list of str
        Audio files.
    sample_rate : int
        Expected sample rate.
    num_workers : int
        Loader workers reading the files.
    progress : bool
        Progress bar.

    Returns
    -------
    np.ndarray, (len(paths), 38), float32
        Not normalised (see :func:`mfcc_stats_scores`).
    """
    stats = MFCCStatistics(sample_rate)
    return extract_embeddings(
        stats,
        list(paths),
        num_workers=num_workers,
        sample_rate=sample_rate,
        progress=progress,
        normalize=False,
        pad_mode="constant",  # zeros: the valid frames are those of the file alone
    )


def znorm_features(features):
    """Standardise each dimension over the rows (mean 0, std 1; ``ddof=0``).

    Arguments
    ---------
    features : array-like, (N, D)

    Returns
    -------
    np.ndarray, (N, D), float64
        A constant dimension becomes 0.

    Example
    -------
    >>> z = znorm_features([[1.0, 5.0], [3.0, 5.0]])
    >>> z.tolist()
    [[-1.0, 0.0], [1.0, 0.0]]
    """
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"features must be (N >= 2, D), got {x.shape}")
    sd = x.std(axis=0)
    return (x - x.mean(axis=0)) / np.where(sd > 0, sd, 1.0)


def mfcc_stats_scores(features, enrol_idx, test_idx):
    """Cosine scores of z-normalised MFCC statistics for index-based trials.

    Arguments
    ---------
    features : array-like, (N, 38)
        :func:`mfcc_stats_features` of the files of one trial list; the z-norm uses
        these ``N`` rows.
    enrol_idx, test_idx : array-like of int, (T,)
        Rows of each trial.

    Returns
    -------
    np.ndarray, (T,), float64

    Example
    -------
    >>> rng = np.random.default_rng(0)
    >>> spk = rng.normal(size=(4, 38))
    >>> feats = spk[[0, 0, 1, 1, 2, 2, 3, 3]] + 0.1 * rng.normal(size=(8, 38))
    >>> s = mfcc_stats_scores(feats, [0, 2, 0], [1, 3, 2])
    >>> bool(s[0] > s[2] and s[1] > s[2])
    True
    """
    z = znorm_features(features).astype(np.float32)
    return cosine_scores(z, z, enrol_idx, test_idx)
