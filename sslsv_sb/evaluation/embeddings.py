"""Batched embedding extraction for evaluation.

Utterances are sorted by length and grouped into small batches of similar length
(:func:`make_batches`): at most ``max_batch`` utterances, at most
``max_batch_seconds`` of padded audio, and a longest utterance at most
``1 + bucket_ratio`` times the shortest. Files are read by a ``DataLoader``
(optionally with workers) one batch at a time, and the encoder runs under
``torch.inference_mode``. Either the full utterance is embedded, or ``n_crops``
evenly spaced crops of ``crop_seconds`` whose embeddings are averaged (sslsv's
validation protocol).

Padding. A shorter utterance of a batch is padded to the batch's longest by
mirroring its own end (``numpy.pad(mode="symmetric")``), not with zeros, and its
relative length excludes the padding. The padding frames are then masked out of the
per-utterance normalisation and of the pooling, but SpeechBrain's ECAPA-TDNN pads
its convolutions with ``reflect``: the last frames of an utterance embedded alone
see a mirror image, and in a batch they see the padding. Mirrored audio is close to
that (the Fbank of a mirrored signal is the mirror of its Fbank); zeros are not
(their log-mel frames sit at the floor and become large negative values after the
normalisation). Embedded corpus, trained ECAPA-TDNN C=256, cosine to the same file
embedded alone: zero-padded batches of 64 min 0.840, mirror-padded defaults min
0.9998 (docs/evaluation.md). The project's ResNet-34, TDNN and SincNet mask every
layer: padding does not change their embeddings.

Parallelism (``jobs``). Forked loader workers with one torch thread each read *and*
embed whole batches; on 2 busy cores this avoided the collapse of one process with
two OpenMP threads (7-13x slower than one thread at load ~14).

Sizes (measured on the embedded corpus, 2-core CPU, one thread, CPU time): one
batch of 64 utterances is ~2x slower per utterance than one at a time (the
activations of a large batch do not fit in the caches); batches of up to ~10 s of
audio are 5-20 % faster than one at a time. Hence the defaults ``max_batch_seconds=10``
and ``bucket_ratio=0.1``.
"""

import dataclasses
import logging
import multiprocessing as mp
import os

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from sslsv_sb.data.sampling import read_evenly_spaced_crops, read_full
from sslsv_sb.errors import SSLSVError
from sslsv_sb.runtime import native_bf16

logger = logging.getLogger(__name__)

#: Default bounds of an evaluation batch (yaml ``eval_batch_size``,
#: ``eval_max_batch_seconds``, ``eval_bucket_ratio``).
MAX_BATCH = 64
MAX_BATCH_SECONDS = 10.0
BUCKET_RATIO = 0.1


def native_bf16_on(device="cpu"):
    """Whether ``device`` runs bf16 convolutions and matmuls natively.

    CPU: :func:`sslsv_sb.runtime.native_bf16` (AVX512-BF16 / AMX); without it oneDNN
    has no bf16 kernels and PyTorch falls back to slow reference convolutions
    (ECAPA-TDNN inference measured ~13x slower than fp32 on a 2-core AVX2 EPYC).

    Arguments
    ---------
    device : str or torch.device
        ``"cpu"``, ``"cuda:0"``, ...

    Returns
    -------
    bool
    """
    kind = torch.device(device).type
    if kind == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return kind == "cpu" and native_bf16()


def follow_train_precision(run_opts):
    """Evaluate in bf16 when training does, unless ``--eval_precision`` is given.

    SpeechBrain's ``--eval_precision`` (the autocast of :meth:`SSLBrain.encode`)
    defaults to fp32 whatever ``--precision`` is. With ``--precision=bf16`` and no
    ``--eval_precision``, the evaluation follows in bf16 when the device runs bf16
    natively (:func:`native_bf16_on`); otherwise it stays fp32 (logged).

    Arguments
    ---------
    run_opts : speechbrain.utils.run_opts.RunOptions
        Parsed run options (a frozen dataclass).

    Returns
    -------
    RunOptions
        ``run_opts``, or a copy with ``eval_precision="bf16"`` (marked as given).

    Example
    -------
    >>> from speechbrain.utils.run_opts import RunOptions
    >>> given = {"precision": "bf16", "eval_precision": "fp32"}
    >>> follow_train_precision(RunOptions.from_dictionary(given)).eval_precision
    'fp32'
    """
    given = getattr(run_opts, "overridden_args", set())
    if "eval_precision" in given or run_opts.get("precision") != "bf16":
        return run_opts
    device = run_opts.get("device") or "cpu"
    if not native_bf16_on(device):
        logger.info(
            "evaluation stays fp32: %s has no native bf16 (emulated bf16 is several "
            "times slower); --eval_precision=bf16 forces it",
            device,
        )
        return run_opts
    logger.info("evaluation in bf16 like training (--eval_precision=fp32 to change)")
    return dataclasses.replace(
        run_opts,
        eval_precision="bf16",
        overridden_args=set(given) | {"eval_precision"},
    )


def _frames(path):
    try:
        return sf.info(path).frames
    except (RuntimeError, sf.LibsndfileError, OSError) as err:
        raise SSLSVError(f"{path}: cannot read audio ({err})") from err


def make_batches(lengths, max_samples, max_batch, max_ratio=None):
    """Group indices sorted by decreasing length into bounded padded batches.

    A batch is closed before an item that would break a bound: more than
    ``max_batch`` items, a padded size ``n_items * longest`` above ``max_samples``,
    or a longest item more than ``1 + max_ratio`` times the new (shortest) item.
    A single item longer than ``max_samples`` forms its own batch.

    Arguments
    ---------
    lengths : array-like, (n,)
        Length of each item in samples.
    max_samples : int
        Bound on ``batch_size * longest_item`` (padded size).
    max_batch : int
        Bound on the batch size.
    max_ratio : float or None
        Length bucketing: bound on ``longest / shortest - 1`` in a batch (0: equal
        lengths only; None: no bound).

    Returns
    -------
    list of np.ndarray
        Index arrays, every index exactly once, longest item first in each.

    Example
    -------
    >>> [b.tolist() for b in make_batches([10, 30, 29, 12, 11], 100, 8)]
    [[1, 2, 3], [4, 0]]
    >>> [b.tolist() for b in make_batches([10, 30, 29, 12, 11], 100, 8, 0.1)]
    [[1, 2], [3, 4], [0]]
    """
    lengths = np.asarray(lengths)
    order = np.argsort(-lengths, kind="stable")
    batches, cur = [], []
    for i in order:
        if cur:
            longest = lengths[cur[0]]
            full = len(cur) >= max_batch or (len(cur) + 1) * longest > max_samples
            spread = max_ratio is not None and longest > (1 + max_ratio) * lengths[i]
            if full or spread:
                batches.append(np.asarray(cur))
                cur = []
        cur.append(i)
    if cur:
        batches.append(np.asarray(cur))
    return batches


def pad_batch(signals, mode="symmetric"):
    """Stack 1-D signals into ``(N, longest)`` with relative lengths.

    Arguments
    ---------
    signals : list of np.ndarray
        ``(L_i,)`` float32 signals.
    mode : str
        ``numpy.pad`` mode of the padding: ``"symmetric"`` (mirror of the signal's
        end, the default; see the module docstring) or ``"constant"`` (zeros).

    Returns
    -------
    (torch.Tensor, torch.Tensor)
        ``(N, longest)`` waveforms and ``(N,)`` relative lengths ``L_i / longest``.

    Example
    -------
    >>> w, lens = pad_batch([np.arange(4.0), np.arange(1.0, 3.0)])
    >>> w.tolist(), lens.tolist()
    ([[0.0, 1.0, 2.0, 3.0], [1.0, 2.0, 2.0, 1.0]], [1.0, 0.5])
    """
    longest = max(len(s) for s in signals)
    wavs = np.stack([np.pad(s, (0, longest - len(s)), mode=mode) for s in signals])
    lens = torch.tensor([len(s) / longest for s in signals])
    return torch.from_numpy(wavs.astype(np.float32, copy=False)), lens


class _BatchReader(Dataset):
    """Batch ``i`` of :func:`make_batches` read from disk: ``(idx, wavs, lens)``."""

    def __init__(self, paths, batches, crop, n_crops, sample_rate, pad_mode):
        self.paths, self.batches = paths, batches
        self.crop, self.n_crops, self.sample_rate = crop, n_crops, sample_rate
        self.pad_mode = pad_mode

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
        wavs, lens = pad_batch(sigs, self.pad_mode)
        return idx, wavs, lens


class _EncodingReader(Dataset):
    """Batches read *and embedded* (in a forked worker): ``(idx, emb, error)``.

    An :class:`SSLSVError` is returned as its message (``error``) and raised again by
    the main process, so the user sees one line, not a worker traceback.
    """

    def __init__(self, reader, encode, first):
        self.reader, self.encode, self.first = reader, encode, first

    def __len__(self):
        return len(self.reader) - self.first

    def __getitem__(self, i):
        try:
            idx, wavs, lens = self.reader[self.first + i]
        except SSLSVError as err:
            return None, None, str(err)
        with torch.inference_mode():
            return idx, self.encode(wavs, lens).float().cpu(), None


def cpu_count():
    """CPU cores this process may run on (its affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _can_fork(emb):
    """Whether embedding in forked workers is safe: CPU output, no CUDA state."""
    return (
        emb.device.type == "cpu"
        and "fork" in mp.get_all_start_methods()
        and not (torch.cuda.is_available() and torch.cuda.is_initialized())
    )


def _embeddings(encode, reader, jobs, num_workers, progress):
    """``(idx, (b, D) float CPU tensor)`` of every batch of ``reader``, in order.

    The first batch is embedded here; with ``jobs > 1`` and a CPU encoder the others
    are embedded by ``jobs`` forked loader workers with one torch thread each (each
    holds a copy-on-write copy of the model), otherwise here too, read by
    ``num_workers`` loader workers.
    """
    bar = tqdm(total=len(reader), disable=not progress, desc="embeddings")
    idx, wavs, lens = reader[0]
    with torch.inference_mode():
        emb = encode(wavs, lens).float().cpu()
    bar.update()
    yield idx, emb
    if len(reader) == 1:
        bar.close()
        return
    if jobs > 1 and _can_fork(emb):
        loader = DataLoader(
            _EncodingReader(reader, encode, 1),
            batch_size=None,
            num_workers=min(jobs, len(reader) - 1),
            multiprocessing_context="fork",
        )
        for idx, emb, error in loader:
            if error is not None:
                raise SSLSVError(error)
            bar.update()
            yield idx, emb
    else:
        loader = DataLoader(
            torch.utils.data.Subset(reader, range(1, len(reader))),
            batch_size=None,
            num_workers=num_workers,
        )
        for idx, wavs, lens in loader:
            with torch.inference_mode():
                emb = encode(wavs, lens).float().cpu()
            bar.update()
            yield idx, emb
    bar.close()


def extract_embeddings(
    encode,
    paths,
    crop_seconds=None,
    n_crops=1,
    max_batch_seconds=MAX_BATCH_SECONDS,
    max_batch=MAX_BATCH,
    bucket_ratio=BUCKET_RATIO,
    num_workers=0,
    sample_rate=16000,
    progress=False,
    normalize=True,
    pad_mode="symmetric",
    jobs=1,
):
    """Embed a list of files.

    Arguments
    ---------
    encode : callable
        ``encode(wavs (N, L), lengths (N,)) -> (N, D)`` tensor (e.g.
        :meth:`SSLBrain.encode`); called under ``torch.inference_mode``.
    paths : list of str
        Audio files.
    crop_seconds : float or None
        None: full utterances; else ``n_crops`` evenly spaced crops, averaged.
    n_crops : int
        Crops per utterance when ``crop_seconds`` is set.
    max_batch_seconds : float
        Padded audio per batch (seconds); smaller batches are faster on CPU.
    max_batch : int
        Utterances per batch at most (1: one at a time, no padding).
    bucket_ratio : float or None
        Longest / shortest utterance of a batch at most ``1 + bucket_ratio`` (0:
        equal lengths only; None: no bound).
    num_workers : int
        Loader workers reading files (``jobs=1`` or a GPU encoder).
    sample_rate : int
        Expected sample rate.
    progress : bool
        Show a progress bar.
    normalize : bool
        L2-normalise each embedding (crop embeddings are normalised before averaging).
    pad_mode : str
        Padding of shorter utterances (:func:`pad_batch`).
    jobs : int
        Processes embedding in parallel: ``jobs > 1`` forks that many loader workers
        with one torch thread each, which read and embed whole batches (only when
        ``encode`` returns CPU tensors and CUDA is not initialised; else this
        process embeds); 0: one per CPU core (:func:`cpu_count`). ``encode`` must
        give the same result in a forked copy of the process (no state it updates).

    Returns
    -------
    np.ndarray
        ``(len(paths), D)`` float32 embeddings, in the order of ``paths``.
    """
    if len(paths) == 0:
        raise SSLSVError("no files to embed")
    if int(max_batch) < 1:
        raise SSLSVError(f"eval_batch_size: must be >= 1, got {max_batch}")
    if not float(max_batch_seconds) > 0:
        raise SSLSVError(
            f"eval_max_batch_seconds: must be > 0, got {max_batch_seconds}"
        )
    if bucket_ratio is not None and not float(bucket_ratio) >= 0:
        raise SSLSVError(f"eval_bucket_ratio: must be >= 0, got {bucket_ratio}")
    if int(jobs) < 0:
        raise SSLSVError(f"eval_jobs: must be >= 0, got {jobs}")
    jobs = int(jobs) or cpu_count()
    crop = int(crop_seconds * sample_rate) if crop_seconds else None
    if crop:
        lengths = np.full(len(paths), crop * n_crops)
    else:
        lengths = np.array([_frames(p) for p in paths])
        bad = np.flatnonzero(lengths == 0)
        if bad.size:
            raise SSLSVError(f"{paths[bad[0]]}: zero-length audio file")
    batches = make_batches(
        lengths,
        int(float(max_batch_seconds) * sample_rate),
        int(max_batch),
        None if bucket_ratio is None else float(bucket_ratio),
    )
    reader = _BatchReader(list(paths), batches, crop, n_crops, sample_rate, pad_mode)
    out = None
    for idx, emb in _embeddings(encode, reader, jobs, num_workers, progress):
        with torch.inference_mode():
            if normalize:
                emb = torch.nn.functional.normalize(emb, dim=-1)
            if crop:
                emb = emb.view(len(idx), n_crops, -1).mean(dim=1)
                if normalize:
                    emb = torch.nn.functional.normalize(emb, dim=-1)
            emb = emb.numpy()
        if out is None:
            out = np.zeros((len(paths), emb.shape[1]), dtype=np.float32)
        out[np.asarray(idx)] = emb
    return out
