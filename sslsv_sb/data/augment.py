"""Noise and reverberation augmentation of views, batched on the training device.

Why our own module rather than SpeechBrain's ``Augmenter``/``AddNoise``/``AddReverb``:
those draw the augmentation choice, the noise offset and the room response once per
*batch* (see ``../shared/docs/speechbrain_integration.md`` §5), while SSL needs every
view of every sample augmented independently. Here every choice (whether to augment,
strategy, noise category, file, offset, SNR, babble count, room response, EQ) is drawn
per row, and the work is a handful of batched tensor ops (gather, FFT convolution) on
whatever device holds the batch — no per-sample Python loop.

Banks are read once from MUSAN-like folders (``<noise_folder>/{noise,music,speech}``)
and an RIR folder (``<rir_folder>/**/*.wav``), each capped to ``max_files`` random files
of at most ``max_seconds`` (MUSAN does not fit in memory; the subset is re-drawn with
:meth:`ViewAugment.reload` if wanted). Default SNR ranges follow sslsv
(noise 0-15 dB, speech 13-20 dB, music 5-15 dB; one file per view, as sslsv, whose
3-7 speaker babble is commented out: ``babble=(3, 7)`` restores the Kaldi recipe).
"""

import glob
import os

import numpy as np
import soundfile as sf
import torch
from torch import nn

from sslsv_sb.data.sampling import audio_info
from sslsv_sb.errors import SSLSVError

CATEGORIES = ("noise", "music", "speech")
STRATEGIES = ("reverb+noise", "reverb", "noise", "reverb|noise", "all")


def _load_bank(files, max_seconds, sample_rate):
    """Pad a list of wavs into ``(n, max_len)`` float tensor + lengths ``(n,)``."""
    max_len = int(max_seconds * sample_rate)
    sigs = []
    for path in files:
        try:
            x, sr = sf.read(path, dtype="float32", always_2d=True, frames=max_len)
        except (RuntimeError, sf.LibsndfileError, OSError) as err:
            raise SSLSVError(f"{path}: cannot read augmentation audio ({err})") from err
        if sr != sample_rate:
            raise SSLSVError(f"{path}: sample rate {sr} Hz, expected {sample_rate} Hz")
        if x.shape[0] == 0:
            raise SSLSVError(f"{path}: zero-length augmentation file")
        sigs.append(x.mean(axis=1))
    lengths = torch.tensor([len(s) for s in sigs], dtype=torch.long)
    bank = torch.zeros(len(sigs), int(lengths.max()))
    for i, s in enumerate(sigs):
        bank[i, : len(s)] = torch.from_numpy(s)
    return bank, lengths


def fast_fft_size(n):
    """Smallest ``2^a 3^b 5^c >= n`` (a fast FFT length).

    ``view length + RIR length - 1`` is often prime or has a large prime factor
    (``64000 + 16000 - 1 = 79999`` is prime), where the FFT falls back to a several
    times slower algorithm; zero-padding further changes nothing in the linear
    convolution that is kept.

    Example
    -------
    >>> fast_fft_size(79999), fast_fft_size(45323), fast_fft_size(1)
    (80000, 46080, 1)
    """
    n = int(n)
    best = 1 << max(0, (n - 1).bit_length())
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            # smallest power of two lifting p35 to >= n
            p = p35 << max(0, (-(-n // p35) - 1).bit_length())
            best = min(best, p)
            p35 *= 3
        p5 *= 5
    return best


def _list_wavs(folder):
    return sorted(glob.glob(os.path.join(folder, "**", "*.wav"), recursive=True))


class ViewAugment(nn.Module):
    """Independent per-row noise + reverberation (+ optional EQ) augmentation.

    Arguments
    ---------
    noise_folder : str or None
        MUSAN-like folder with ``noise/``, ``music/``, ``speech/`` sub-folders (any
        subset); None disables additive noise.
    rir_folder : str or None
        Folder of room impulse responses (searched recursively); None disables reverb.
    aug_prob : float
        Probability that a row is augmented at all.
    strategy : str
        ``reverb+noise`` (both), ``reverb``, ``noise``, ``reverb|noise`` (one of the
        two, 50/50) or ``all`` (uniform among none / reverb / noise / both).
    snr_noise, snr_music, snr_speech : tuple of float
        SNR ranges in dB per noise category.
    babble : tuple of int
        Inclusive range of the number of speech files summed for babble.
    eq_prob : float
        Probability of a random microphone-like band-limit and spectral tilt.
    max_files : int
        Files loaded per category (random subset, seeded).
    max_seconds : float
        Maximum length kept per noise file (RIRs are cut at 1 s).
    sample_rate : int
        Sample rate of the banks and of the views.
    seed : int
        Seed of the file subset.
    """

    def __init__(
        self,
        noise_folder=None,
        rir_folder=None,
        aug_prob=1.0,
        strategy="reverb+noise",
        snr_noise=(0.0, 15.0),
        snr_music=(5.0, 15.0),
        snr_speech=(13.0, 20.0),
        babble=(1, 1),
        eq_prob=0.0,
        max_files=500,
        max_seconds=8.0,
        sample_rate=16000,
        seed=0,
    ):
        super().__init__()
        if strategy not in STRATEGIES:
            raise SSLSVError(f"augmentation strategy {strategy!r} not in {STRATEGIES}")
        self.aug_prob = float(aug_prob)
        self.strategy = strategy
        self.snr = {"noise": snr_noise, "music": snr_music, "speech": snr_speech}
        self.babble = (int(babble[0]), int(babble[1]))
        self.eq_prob = float(eq_prob)
        self.sample_rate = sample_rate
        self.noise_folder, self.rir_folder = noise_folder, rir_folder
        self.max_files, self.max_seconds = max_files, max_seconds
        self.seed = seed
        self.categories = []
        self.has_rir = False
        self.loaded = False
        self._tiled_cache = {}  # category -> cyclically extended bank (see _tiled)

    def load(self, data_folder=None, seed=None):
        """Load the banks; relative folders are resolved against ``data_folder``.

        Called by the recipe once the data folder is known (the yaml is loaded before
        the embedded corpus may exist); ``forward`` loads lazily otherwise.
        """
        self.noise_folder, self.rir_folder = self._folders(data_folder)
        self.reload(self.seed if seed is None else seed)
        return self

    def _folders(self, data_folder=None):
        """Noise and RIR folders, relative ones resolved against ``data_folder``."""
        folders = []
        for folder in (self.noise_folder, self.rir_folder):
            if folder and data_folder and not os.path.isabs(folder):
                folder = os.path.normpath(os.path.join(data_folder, folder))
            folders.append(folder)
        return folders

    def bank_files(self, seed=0, data_folder=None):
        """The files :meth:`reload` loads for ``seed``, without reading them.

        Arguments
        ---------
        seed : int
            Seed of the random subsets (``max_files`` per bank).
        data_folder : str or None
            Folder of relative ``noise_folder`` / ``rir_folder`` values (None: as
            set, i.e. already resolved by :meth:`load`).

        Returns
        -------
        dict
            ``{category: [wav paths]}`` for the noise categories present and
            ``{"rir": [...]}`` when a RIR folder is set.

        Raises
        ------
        SSLSVError
            A folder that does not exist or holds no ``.wav`` file.
        """
        noise_folder, rir_folder = self._folders(data_folder)
        rng = np.random.default_rng(seed)
        out = {}
        if noise_folder:
            if not os.path.isdir(noise_folder):
                raise SSLSVError(
                    f"noise folder not found: {noise_folder} (--noise_folder; null "
                    "disables additive noise)"
                )
            for cat in CATEGORIES:
                files = _list_wavs(os.path.join(noise_folder, cat))
                if len(files) > self.max_files:
                    files = list(rng.choice(files, self.max_files, replace=False))
                if files:
                    out[cat] = files
            if not out:
                raise SSLSVError(
                    f"no wav files under {noise_folder}/{{noise,music,speech}}"
                )
        if rir_folder:
            if not os.path.isdir(rir_folder):
                raise SSLSVError(
                    f"RIR folder not found: {rir_folder} (--rir_folder; null "
                    "disables reverberation)"
                )
            files = _list_wavs(rir_folder)
            if not files:
                raise SSLSVError(f"no wav files under {rir_folder}")
            if len(files) > self.max_files:
                files = list(rng.choice(files, self.max_files, replace=False))
            out["rir"] = files
        return out

    def check(self, data_folder=None, seed=None):
        """Check the banks :meth:`load` would read, reading only file headers.

        Folders exist and hold wav files; every file of the subsets drawn for
        ``seed`` opens as audio at ``sample_rate`` with at least one sample.

        Raises
        ------
        SSLSVError
            Naming the folder or the file.
        """
        seed = self.seed if seed is None else seed
        for files in self.bank_files(seed, data_folder).values():
            for path in files:
                frames, rate, _ = audio_info(path)
                if rate != self.sample_rate:
                    raise SSLSVError(
                        f"{path}: sample rate {rate} Hz, expected "
                        f"{self.sample_rate} Hz (augmentation file)"
                    )
                if frames == 0:
                    raise SSLSVError(f"{path}: zero-length augmentation file")

    def reload(self, seed=0):
        """(Re)load random subsets of the noise and RIR banks."""
        files_of = self.bank_files(seed)
        self.categories = []
        self._tiled_cache = {}
        device = next(iter(self.buffers()), torch.empty(0)).device
        for cat in CATEGORIES:
            if cat in files_of:
                bank, lengths = _load_bank(
                    files_of[cat], self.max_seconds, self.sample_rate
                )
                self.register_buffer(f"bank_{cat}", bank, persistent=False)
                self.register_buffer(f"len_{cat}", lengths, persistent=False)
                self.categories.append(cat)
        self.has_rir = False
        if "rir" in files_of:
            rirs, _ = _load_bank(files_of["rir"], 1.0, self.sample_rate)
            # Align the direct path to t=0 and normalise to unit energy.
            peak = rirs.abs().argmax(dim=1)
            idx = (peak[:, None] + torch.arange(rirs.shape[1])[None]).clamp(
                max=rirs.shape[1] - 1
            )
            rirs = torch.gather(rirs, 1, idx) * (
                torch.arange(rirs.shape[1])[None] < (rirs.shape[1] - peak[:, None])
            )
            rirs = rirs / rirs.norm(dim=1, keepdim=True).clamp_min(1e-8)
            self.register_buffer("rirs", rirs, persistent=False)
            self.has_rir = True
        self.to(device)
        self.loaded = True

    # ------------------------------------------------------------------ helpers
    def _tiled(self, cat, length):
        """Bank rows repeated cyclically to ``max_len + length - 1`` samples (cached).

        Row ``i`` continues as ``bank[i, j % len_i]``, so any wrap-around crop of at
        most ``length`` samples is a contiguous slice: crops are then one row gather
        of an ``unfold`` view instead of an ``(n_rows, length)`` int64 index with a
        modulo (about 30x faster on CPU, same values). Built once per category,
        device and longest crop length; costs ``(max_len + length) / max_len`` times
        the bank's memory.
        """
        bank, lens = getattr(self, f"bank_{cat}"), getattr(self, f"len_{cat}")
        width = bank.shape[1] + length - 1
        cached = self._tiled_cache.get(cat)
        if cached is None or cached.shape[1] < width or cached.device != bank.device:
            cached = torch.empty(len(lens), width, device=bank.device)
            for i, n in enumerate(lens.tolist()):  # once per bank file, at build
                reps = -(-width // n)
                cached[i] = bank[i, :n].repeat(reps)[:width]
            self._tiled_cache[cat] = cached
        return cached

    def _crops(self, cat, n_rows, length, gen):
        """Random wrap-around crops ``(n_rows, length)`` from one category bank."""
        lens = getattr(self, f"len_{cat}")
        dev = lens.device
        f = torch.randint(len(lens), (n_rows,), generator=gen, device="cpu").to(dev)
        start = (torch.rand(n_rows, generator=gen).to(dev) * lens[f]).long()
        return self._tiled(cat, length).unfold(1, length, 1)[f, start]

    @staticmethod
    def _power(x):
        return x.pow(2).mean(dim=1) + 1e-8

    def _add_noise(self, x, rows, gen):
        """Add noise at a random SNR to ``x[rows]`` (rows is a bool mask (B,))."""
        idx = rows.nonzero().squeeze(1)
        n, length = idx.numel(), x.shape[1]
        if n == 0:
            return x
        dev = x.device
        cat_id = torch.randint(len(self.categories), (n,), generator=gen).to(dev)
        noise = torch.zeros(n, length, device=dev)
        snr = torch.zeros(n, device=dev)
        for c, cat in enumerate(self.categories):  # loop over <= 3 categories
            sel = (cat_id == c).nonzero().squeeze(1)
            m = sel.numel()
            if m == 0:
                continue
            lo, hi = self.snr[cat]
            snr[sel] = lo + (hi - lo) * torch.rand(m, generator=gen).to(dev)
            if cat == "speech":
                k_max = self.babble[1]
                k = torch.randint(self.babble[0], k_max + 1, (m,), generator=gen).to(
                    dev
                )
                parts = self._crops(cat, m * k_max, length, gen).view(m, k_max, length)
                keep = torch.arange(k_max, device=dev)[None] < k[:, None]
                noise[sel] = torch.einsum("mkl,mk->ml", parts, keep.to(parts.dtype))
            else:
                noise[sel] = self._crops(cat, m, length, gen)
        clean = x[idx]
        scale = torch.sqrt(self._power(clean) / (self._power(noise) * 10 ** (snr / 10)))
        x = x.clone()
        x[idx] = clean + scale[:, None] * noise
        return x

    def _reverb(self, x, rows, gen):
        """Convolve ``x[rows]`` with random room responses (FFT, same length)."""
        idx = rows.nonzero().squeeze(1)
        if idx.numel() == 0:
            return x
        dev = x.device
        r = torch.randint(self.rirs.shape[0], (idx.numel(),), generator=gen).to(dev)
        length = x.shape[1]
        n_fft = fast_fft_size(length + self.rirs.shape[1] - 1)
        clean = x[idx]
        y = torch.fft.irfft(
            torch.fft.rfft(clean, n=n_fft) * torch.fft.rfft(self.rirs[r], n=n_fft),
            n=n_fft,
        )[:, :length]
        # Keep the level of the dry signal (the RIR has unit energy, not unit gain).
        y = y * torch.sqrt(self._power(clean) / self._power(y))[:, None]
        x = x.clone()
        x[idx] = y
        return x

    def _eq(self, x, rows, gen):
        """Random band-limit (low 50-400 Hz, high 3-7.8 kHz) and spectral tilt."""
        idx = rows.nonzero().squeeze(1)
        if idx.numel() == 0:
            return x
        dev, n = x.device, idx.numel()
        spec = torch.fft.rfft(x[idx])
        freqs = torch.fft.rfftfreq(x.shape[1], 1 / self.sample_rate).to(dev)[None]
        u = torch.rand(n, 3, generator=gen).to(dev)
        lo = 50 + 350 * u[:, :1]
        hi = 3000 + 4800 * u[:, 1:2]
        tilt = (u[:, 2:3] - 0.5) * 6.0  # dB per octave
        gain = torch.sigmoid((freqs - lo) / (0.1 * lo)) * torch.sigmoid(
            (hi - freqs) / (0.05 * hi)
        )
        octaves = torch.log2(freqs.clamp_min(1.0) / 1000.0)
        gain = gain * 10 ** (tilt * octaves / 20)
        y = torch.fft.irfft(spec * gain, n=x.shape[1])
        y = y * torch.sqrt(self._power(x[idx]) / self._power(y))[:, None]
        x = x.clone()
        x[idx] = y
        return x

    # ------------------------------------------------------------------ forward
    @torch.no_grad()
    def forward(self, wavs, generator=None):
        """Augment each row independently.

        Arguments
        ---------
        wavs : torch.Tensor
            ``(B, L)`` views (all the same length).
        generator : torch.Generator or None
            CPU generator for the random choices (default: global RNG).

        Returns
        -------
        torch.Tensor
            ``(B, L)`` float32 augmented views.
        """
        if not self.loaded:
            self.load().to(wavs.device)
        x = wavs.float()
        b, dev = x.shape[0], x.device
        u = torch.rand(b, 3, generator=generator).to(dev)
        on = u[:, 0] < self.aug_prob
        if self.strategy == "reverb+noise":
            rev, noi = on, on
        elif self.strategy == "reverb":
            rev, noi = on, torch.zeros_like(on)
        elif self.strategy == "noise":
            rev, noi = torch.zeros_like(on), on
        elif self.strategy == "reverb|noise":
            rev, noi = on & (u[:, 1] < 0.5), on & (u[:, 1] >= 0.5)
        else:  # "all": none / reverb / noise / both uniformly
            choice = (u[:, 1] * 4).long()
            rev = on & ((choice == 1) | (choice == 3))
            noi = on & ((choice == 2) | (choice == 3))
        if self.eq_prob > 0:
            x = self._eq(x, on & (u[:, 2] < self.eq_prob), generator)
        if self.has_rir:
            x = self._reverb(x, rev, generator)
        if self.categories:
            x = self._add_noise(x, noi, generator)
        return x
