"""Crop reading and view samplers for self-supervised training.

Only the frames of each crop are read from disk (``soundfile`` seek + read), never the
whole file, except for files shorter than the crop, which are read once and padded by
wrapping (repeating the signal): no sentinel value can reach the encoder.

Randomness is derived from ``(seed, epoch, dataset index)`` with numpy's
``default_rng``, so crops do not depend on the number of loader workers or DDP ranks,
differ between samples, epochs and ranks (ranks see different indices), and a resumed
run reproduces the crops of an uninterrupted one.
"""

import os

import numpy as np
import soundfile as sf
import torch

from sslsv_sb.errors import SSLSVError


class EpochState:
    """Mutable epoch holder shared by the dataset pipeline and the Brain.

    Loader workers are (re)created at each epoch from the dataset as it is then, so
    setting ``epoch`` in ``on_stage_start`` reaches the workers of that epoch.
    """

    def __init__(self, epoch=0):
        self.epoch = epoch


AUDIO_ERRORS = (RuntimeError, sf.LibsndfileError, OSError)


def _reason(err, path):
    """Short reason of a libsndfile / OS error (the path is named by the caller)."""
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        return "empty file (0 bytes)"
    if isinstance(err, sf.LibsndfileError):
        return err.error_string.rstrip(".")
    return getattr(err, "strerror", None) or str(err)


def audio_info(path):
    """``(frames, sample_rate, channels)`` of an audio file, from its header only.

    Raises
    ------
    SSLSVError
        The file cannot be opened as audio (missing, empty, not audio, corrupt
        header), naming it.

    Example
    -------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = os.path.join(tmp, "a.wav")
    ...     sf.write(path, np.zeros((800, 2), dtype="float32"), 16000)
    ...     audio_info(path)
    (800, 16000, 2)
    """
    try:
        with sf.SoundFile(path) as f:
            return int(f.frames), int(f.samplerate), int(f.channels)
    except AUDIO_ERRORS as err:
        raise SSLSVError(f"{path}: cannot read audio ({_reason(err, path)})") from err


def _check_info(f, path, sample_rate):
    if f.samplerate != sample_rate:
        raise SSLSVError(
            f"{path}: sample rate {f.samplerate} Hz, expected {sample_rate} Hz "
            "(resample the corpus first)"
        )
    if f.frames == 0:
        raise SSLSVError(f"{path}: zero-length audio file")


def read_crops(path, lengths, rng, sample_rate=16000):
    """Read random crops of the given lengths from one file.

    Arguments
    ---------
    path : str
        Audio file (mono or multi-channel; channels are averaged).
    lengths : list of int
        Length in samples of each crop.
    rng : numpy.random.Generator
        Source of the crop positions.
    sample_rate : int
        Expected sample rate (a different rate is an error, not a silent resample).

    Returns
    -------
    list of np.ndarray
        One float32 array ``(length,)`` per requested crop.
    """
    try:
        with sf.SoundFile(path) as f:
            _check_info(f, path, sample_rate)
            frames = f.frames
            crops = []
            whole = None
            for length in lengths:
                if frames >= length:
                    start = int(rng.integers(0, frames - length + 1))
                    f.seek(start)
                    x = f.read(length, dtype="float32", always_2d=True)
                    if x.shape[0] != length:
                        raise SSLSVError(
                            f"{path}: truncated file (header says {frames} frames, "
                            f"read {start + x.shape[0]})"
                        )
                else:
                    if whole is None:
                        f.seek(0)
                        whole = f.read(dtype="float32", always_2d=True)
                    # Wrap-pad: repeat the signal from a random phase.
                    start = int(rng.integers(0, whole.shape[0]))
                    idx = (start + np.arange(length)) % whole.shape[0]
                    x = whole[idx]
                crops.append(x.mean(axis=1) if x.shape[1] > 1 else x[:, 0])
            return crops
    except SSLSVError:
        raise
    except AUDIO_ERRORS as err:
        raise SSLSVError(f"{path}: cannot read audio ({_reason(err, path)})") from err


def read_evenly_spaced_crops(path, length, n_crops, sample_rate=16000):
    """``n_crops`` crops of ``length`` samples evenly spaced over the file.

    Returns
    -------
    np.ndarray
        ``(n_crops, length)`` float32 (short files wrap-padded).
    """
    frames, rate, _ = audio_info(path)
    if rate != sample_rate:
        raise SSLSVError(
            f"{path}: sample rate {rate} Hz, expected {sample_rate} Hz "
            "(resample the corpus first)"
        )
    if frames == 0:
        raise SSLSVError(f"{path}: zero-length audio file")
    if frames <= length:
        x, _ = read_full(path, sample_rate)
        idx = np.arange(length) % x.shape[0]
        return np.stack([x[idx]] * n_crops)
    starts = np.linspace(0, frames - length, n_crops).astype(np.int64)
    out = np.empty((n_crops, length), dtype=np.float32)
    with sf.SoundFile(path) as f:
        for i, s in enumerate(starts):
            f.seek(int(s))
            x = f.read(length, dtype="float32", always_2d=True)
            out[i] = x.mean(axis=1)
    return out


def read_full(path, sample_rate=16000):
    """Read a whole file as mono float32 ``(L,)``; returns ``(signal, sample_rate)``."""
    try:
        with sf.SoundFile(path) as f:
            _check_info(f, path, sample_rate)
            x = f.read(dtype="float32", always_2d=True)
    except SSLSVError:
        raise
    except AUDIO_ERRORS as err:
        raise SSLSVError(f"{path}: cannot read audio ({_reason(err, path)})") from err
    return x.mean(axis=1), sample_rate


class ViewSampler:
    """Draw the views of one training example (a dataset pipeline stage).

    Arguments
    ---------
    groups : dict
        Output key -> ``(count, length_in_samples)``. Examples: siamese
        ``{"views": (2, 32000)}``; DINO multi-crop
        ``{"views": (2, 64000), "local_views": (4, 32000)}``; supervised
        ``{"views": (1, 32000)}``; SSPS adds ``{"ref_view": (1, 64000)}``.
    seed : int
        Base seed; crops depend on ``(seed, epoch, index)`` only.
    epoch_state : EpochState
        Shared epoch counter (set by the Brain at each epoch start).
    sample_rate : int
        Expected sample rate of every file.

    Each key is emitted as a float tensor ``(count, length)``; a batch then holds
    ``(B, count, length)`` per key.
    """

    def __init__(
        self,
        groups,
        seed=0,
        epoch_state=None,
        sample_rate=16000,
        partners=None,
        pair_key="views",
        augment=None,
        augment_keys=None,
    ):
        if not groups:
            raise ValueError("ViewSampler needs at least one view group")
        for key, (count, length) in groups.items():
            if int(count) < 1 or int(length) < 1:
                raise ValueError(f"view group {key}: count and length must be >= 1")
        self.groups = {k: (int(c), int(n)) for k, (c, n) in groups.items()}
        self.seed = int(seed)
        self.epoch_state = epoch_state or EpochState()
        self.sample_rate = sample_rate
        self.partners = partners
        self.pair_key = pair_key
        if partners is not None and self.groups[pair_key][0] < 2:
            raise ValueError(f"positive pairs need >= 2 crops in group {pair_key!r}")
        self.augment = augment
        self.augment_keys = list(augment_keys or [])

    @property
    def keys(self):
        """Output keys, in order."""
        return list(self.groups)

    def rng(self, index):
        """Generator for one example at the current epoch."""
        return np.random.default_rng([self.seed, self.epoch_state.epoch, int(index)])

    def sample(self, path, index):
        """Dict ``key -> tensor (count, length)`` for the file at ``path``.

        With ``partners`` (supervised positive pairs), the second and later crops of
        ``pair_key`` come from another utterance of the same speaker, drawn from
        ``partners[index]`` (a list of paths that never contains ``path`` itself).
        With ``augment`` (augmentation in loader workers), the groups in
        ``augment_keys`` are augmented here, each crop independently.
        """
        rng = self.rng(index)
        lengths = [n for c, n in self.groups.values() for _ in range(c)]
        crops = read_crops(path, lengths, rng, self.sample_rate)
        if self.partners is not None and len(self.partners[index]) > 0:
            others = self.partners[index]
            other = others[int(rng.integers(len(others)))]
            start = 0
            for key, (count, _) in self.groups.items():
                if key == self.pair_key:
                    break
                start += count
            count, length = self.groups[self.pair_key]
            crops[start + 1 : start + count] = read_crops(
                other, [length] * (count - 1), rng, self.sample_rate
            )
        out, i = {}, 0
        for key, (count, _) in self.groups.items():
            out[key] = torch.from_numpy(np.stack(crops[i : i + count]))
            i += count
        if self.augment is not None:
            gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
            for key in self.augment_keys:
                out[key] = self.augment(out[key], generator=gen)
        return out

    def generate(self, path, index):
        """Generator form for SpeechBrain's ``GeneratorDynamicItem``."""
        out = self.sample(path, index)
        for key in self.groups:
            yield out[key]
