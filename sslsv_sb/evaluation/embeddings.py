"""Batched embedding extraction for evaluation.

Utterances are sorted by length and grouped into batches whose padded size stays under
a sample budget, so padding is small and no utterance is embedded alone in a Python
loop. Files are read by a ``DataLoader`` (optionally with workers) one batch at a time.
Either the full utterance is embedded, or ``n_crops`` evenly spaced crops of
``crop_seconds`` whose embeddings are averaged (sslsv's validation protocol).
"""

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from sslsv_sb.data.sampling import read_evenly_spaced_crops, read_full
from sslsv_sb.errors import SSLSVError


def _frames(path):
    try:
        return sf.info(path).frames
    except (RuntimeError, sf.LibsndfileError, OSError) as err:
        raise SSLSVError(f"{path}: cannot read audio ({err})") from err


def make_batches(lengths, max_samples, max_batch):
    """Group indices sorted by decreasing length into bounded padded batches.

    Arguments
    ---------
    lengths : array-like, (n,)
        Length of each item in samples.
    max_samples : int
        Bound on ``batch_size * longest_item`` (padded size).
    max_batch : int
        Bound on the batch size.

    Returns
    -------
    list of np.ndarray
        Index arrays, every index exactly once.
    """
    order = np.argsort(-np.asarray(lengths), kind="stable")
    batches, cur = [], []
    for i in order:
        longest = lengths[cur[0]] if cur else lengths[i]
        if cur and ((len(cur) + 1) * longest > max_samples or len(cur) >= max_batch):
            batches.append(np.asarray(cur))
            cur = []
        cur.append(i)
    if cur:
        batches.append(np.asarray(cur))
    return batches


class _BatchReader(Dataset):
    def __init__(self, paths, batches, crop, n_crops, sample_rate):
        self.paths, self.batches = paths, batches
        self.crop, self.n_crops, self.sample_rate = crop, n_crops, sample_rate

    def __len__(self):
        return len(self.batches)

    def __getitem__(self, i):
        idx = self.batches[i]
        if self.crop:
            x = np.stack(
                [
                    read_evenly_spaced_crops(
                        self.paths[j], self.crop, self.n_crops, self.sample_rate
                    )
                    for j in idx
                ]
            )  # (b, n_crops, crop)
            wavs = torch.from_numpy(x).reshape(-1, self.crop)
            return idx, wavs, torch.ones(wavs.shape[0])
        sigs = [read_full(self.paths[j], self.sample_rate)[0] for j in idx]
        longest = max(len(s) for s in sigs)
        wavs = torch.zeros(len(sigs), longest)
        for k, s in enumerate(sigs):
            wavs[k, : len(s)] = torch.from_numpy(s)
        lens = torch.tensor([len(s) / longest for s in sigs])
        return idx, wavs, lens


def extract_embeddings(
    encode,
    paths,
    crop_seconds=None,
    n_crops=1,
    max_batch_seconds=400.0,
    max_batch=64,
    num_workers=0,
    sample_rate=16000,
    progress=False,
    normalize=True,
):
    """Embed a list of files.

    Arguments
    ---------
    encode : callable
        ``encode(wavs (N, L), lengths (N,)) -> (N, D)`` tensor (e.g.
        :meth:`SSLBrain.encode`).
    paths : list of str
        Audio files.
    crop_seconds : float or None
        None: full utterances; else ``n_crops`` evenly spaced crops, averaged.
    n_crops : int
        Crops per utterance when ``crop_seconds`` is set.
    max_batch_seconds : float
        Padded audio per batch (bounds memory).
    max_batch : int
        Utterances per batch at most.
    num_workers : int
        Loader workers reading files.
    sample_rate : int
        Expected sample rate.
    progress : bool
        Show a progress bar.
    normalize : bool
        L2-normalise each embedding (crop embeddings are normalised before averaging).

    Returns
    -------
    np.ndarray
        ``(len(paths), D)`` float32 embeddings, in the order of ``paths``.
    """
    if len(paths) == 0:
        raise SSLSVError("no files to embed")
    crop = int(crop_seconds * sample_rate) if crop_seconds else None
    if crop:
        lengths = np.full(len(paths), crop * n_crops)
    else:
        lengths = np.array([_frames(p) for p in paths])
        bad = np.flatnonzero(lengths == 0)
        if bad.size:
            raise SSLSVError(f"{paths[bad[0]]}: zero-length audio file")
    batches = make_batches(lengths, int(max_batch_seconds * sample_rate), max_batch)
    loader = DataLoader(
        _BatchReader(list(paths), batches, crop, n_crops, sample_rate),
        batch_size=None,
        num_workers=num_workers,
    )
    out = None
    for idx, wavs, lens in tqdm(loader, disable=not progress, desc="embeddings"):
        emb = encode(wavs, lens).float()
        if normalize:
            emb = torch.nn.functional.normalize(emb, dim=-1)
        if crop:
            emb = emb.view(len(idx), n_crops, -1).mean(dim=1)
            if normalize:
                emb = torch.nn.functional.normalize(emb, dim=-1)
        emb = emb.cpu().numpy()
        if out is None:
            out = np.zeros((len(paths), emb.shape[1]), dtype=np.float32)
        out[np.asarray(idx)] = emb
    return out
