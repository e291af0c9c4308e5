"""Minimal ctypes driver for espeak-ng (from the ``espeakng-loader`` wheel).

No system package and no root access are needed: the wheel ships ``libespeak-ng.so``
and a full ``espeak-ng-data`` folder. Custom speakers are written as voice *variant*
files into a private, writable data folder (:func:`make_data_folder`) whose large
read-only parts are symbolic links to the wheel's data.

Example
-------
>>> synth = EspeakSynth()
>>> wav = synth.synth("hello world", voice="en-us")
>>> wav.dtype, synth.sample_rate, wav.ndim
(dtype('float32'), 22050, 1)
>>> synth.close()
"""

from __future__ import annotations

import ctypes
import os
import pathlib
import shutil
import tempfile
import threading

import numpy as np

from sslsv_sb.errors import SSLSVError

# espeak-ng API constants (speak_lib.h)
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_ESPEAK_CHARS_UTF8 = 1
_ESPEAK_RATE = 1
_ESPEAK_VOLUME = 2
_ESPEAK_PITCH = 3
_ESPEAK_RANGE = 4

_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)

#: at most this many custom variant files live in one data folder at a time
MAX_VARIANTS_PER_FOLDER = 100

_LOCK = threading.Lock()
_LIB = None


def wheel_paths():
    """Return ``(library_path, data_path)`` of the ``espeakng-loader`` wheel.

    Raises
    ------
    SSLSVError
        If the wheel is not installed or its files are missing.
    """
    try:
        import espeakng_loader
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise SSLSVError(
            "espeak-ng is unavailable: install the 'espeakng-loader' wheel "
            "(pip install espeakng-loader) or use backend='numpy'"
        ) from err
    lib = pathlib.Path(espeakng_loader.get_library_path())
    data = pathlib.Path(espeakng_loader.get_data_path())
    if not lib.is_file():
        raise SSLSVError(f"espeak-ng library not found: {lib}")
    return lib, data


def _setup(lib):
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_Initialize.argtypes = [
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
    ]
    lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetVoiceByName.restype = ctypes.c_int
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_SetParameter.restype = ctypes.c_int
    lib.espeak_Synth.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_uint,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.c_uint,
        ctypes.c_void_p,
        ctypes.c_void_p,
    ]
    lib.espeak_Synth.restype = ctypes.c_int
    lib.espeak_Synchronize.restype = ctypes.c_int
    lib.espeak_Terminate.restype = ctypes.c_int
    lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
    lib.espeak_ng_SetRandSeed.restype = None
    return lib


def _load_library(private=False):
    """Load libespeak-ng; ``private=True`` loads a fresh copy with its own state.

    espeak-ng keeps internal state between syntheses (and across
    ``espeak_Terminate``), so its output depends on what was synthesised before. A
    private copy (the library file copied to a temporary path, then ``dlopen``-ed)
    starts from a clean state, which makes synthesis reproducible.
    """
    global _LIB
    lib_path, _ = wheel_paths()
    if not private and _LIB is not None:
        return _LIB
    path = lib_path
    if private:
        fd, tmp = tempfile.mkstemp(prefix="libespeak-ng-", suffix=".so")
        os.close(fd)
        shutil.copyfile(lib_path, tmp)
        path = pathlib.Path(tmp)
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as err:
        raise SSLSVError(f"cannot load espeak-ng library {lib_path}: {err}") from err
    finally:
        if private:
            path.unlink(missing_ok=True)  # the mapping stays valid
    lib = _setup(lib)
    if not private:
        _LIB = lib
    return lib


def make_data_folder(parent=None):
    """Create a writable espeak-ng data folder for custom voice variants.

    Every entry of the wheel's ``espeak-ng-data`` is symlinked except
    ``voices/!v`` which is an empty real folder (the stock variants are left out
    so that the voice list stays short).

    Arguments
    ---------
    parent : str or pathlib.Path, optional
        Folder in which the data folder is created (a temporary folder if None).

    Returns
    -------
    pathlib.Path
        The new data folder (pass it to :class:`EspeakSynth`).
    """
    _, src = wheel_paths()
    if parent is not None:
        pathlib.Path(parent).mkdir(parents=True, exist_ok=True)
    dst = pathlib.Path(tempfile.mkdtemp(prefix="espeak-ng-data-", dir=parent))
    for entry in src.iterdir():
        if entry.name == "voices":
            continue
        (dst / entry.name).symlink_to(entry)
    (dst / "voices" / "!v").mkdir(parents=True)
    for entry in (src / "voices").iterdir():
        if entry.name != "!v":
            (dst / "voices" / entry.name).symlink_to(entry)
    return dst


def variant_text(
    name,
    gender="male",
    pitch=(90, 140),
    formants=(100, 100, 100, 100, 100, 100),
    heights=None,
    breath=0,
    roughness=0,
    flutter=0,
):
    """Return the text of an espeak-ng voice variant file.

    Arguments
    ---------
    name : str
        Variant name.
    gender : str
        ``"male"`` or ``"female"``.
    pitch : tuple of int
        ``(low, high)`` pitch in Hz.
    formants : sequence of int
        Frequency scaling (percent) of formants 0..5.
    heights : sequence of int, optional
        Amplitude scaling (percent) of formants 0..5 (100 if None).
    breath : int
        Breathiness 0..(~6), applied to the higher formants.
    roughness : int
        Roughness 0..7.
    flutter : int
        Pitch flutter.

    Returns
    -------
    str
    """
    heights = heights or [100] * len(formants)
    lines = [
        "language variant",
        f"name {name}",
        f"gender {gender}",
        f"pitch {int(pitch[0])} {int(pitch[1])}",
    ]
    for k, (freq, height) in enumerate(zip(formants, heights)):
        lines.append(f"formant {k} {int(freq)} {int(height)} 100")
    if breath > 0:
        b = int(breath)
        lines.append(f"breath 0 {max(b - 2, 0)} {b - 1} {b} {b} {b} {b} {b}")
    if roughness > 0:
        lines.append(f"roughness {int(roughness)}")
    if flutter > 0:
        lines.append(f"flutter {int(flutter)}")
    return "\n".join(lines) + "\n"


class EspeakSynth:
    """Synchronous espeak-ng synthesiser (one per process).

    espeak-ng keeps global state, so only one data folder can be active per process:
    creating a new instance with another folder re-initialises the library.

    Arguments
    ---------
    data_dir : str or pathlib.Path, optional
        espeak-ng data folder (the wheel's read-only copy if None).
    private : bool
        Load a private copy of the library with a clean internal state (see
        :func:`_load_library`): the output then depends only on the calls made on
        this instance. Call :meth:`close` when done.
    """

    _active_dir = None

    def __init__(self, data_dir=None, private=False):
        self.private = private
        self.lib = _load_library(private)
        self.data_dir = pathlib.Path(data_dir or wheel_paths()[1])
        self._chunks = []

        def _collect(wav, numsamples, events):
            if numsamples > 0:
                self._chunks.append(np.ctypeslib.as_array(wav, (numsamples,)).copy())
            return 0

        self._callback = _CALLBACK(_collect)
        with _LOCK:
            if not private and EspeakSynth._active_dir is not None:
                self.lib.espeak_Terminate()
            rate = self.lib.espeak_Initialize(
                _AUDIO_OUTPUT_SYNCHRONOUS, 0, str(self.data_dir).encode(), 0
            )
            if rate <= 0:
                raise SSLSVError(
                    f"espeak-ng failed to initialise with data folder {self.data_dir}"
                )
            if not private:
                EspeakSynth._active_dir = self.data_dir
        self.sample_rate = int(rate)
        self.lib.espeak_SetSynthCallback(self._callback)

    def close(self):
        """Release a private library instance (no-op for the shared one)."""
        if self.private and self.lib is not None:
            import _ctypes

            self.lib.espeak_Terminate()
            _ctypes.dlclose(self.lib._handle)
            self.lib = None

    def write_variant(self, name, text):
        """Write a voice variant file ``voices/!v/<name>`` into the data folder."""
        vdir = self.data_dir / "voices" / "!v"
        if not os.access(vdir, os.W_OK):
            raise SSLSVError(f"espeak-ng variant folder is not writable: {vdir}")
        n_files = sum(1 for _ in vdir.iterdir())
        if n_files >= MAX_VARIANTS_PER_FOLDER:
            raise SSLSVError(
                f"too many variant files in {vdir} ({n_files}); remove unused ones"
            )
        (vdir / name).write_text(text)

    def remove_variant(self, name):
        """Delete the variant file ``voices/!v/<name>`` (no error if missing)."""
        (self.data_dir / "voices" / "!v" / name).unlink(missing_ok=True)

    def synth(self, text, voice="en-us", rate=160, pitch=50, pitch_range=50, seed=0):
        """Synthesise ``text``.

        Arguments
        ---------
        text : str
            Text to speak (UTF-8).
        voice : str
            espeak voice name, optionally with ``+variant``.
        rate : int
            Speaking rate in words per minute (80..450).
        pitch : int
            Relative pitch 0..100 (50 = the voice's own).
        pitch_range : int
            Relative pitch range 0..100 (50 = the voice's own).
        seed : int
            Seed of espeak-ng's internal random generator (breath noise, jitter):
            the output is a deterministic function of the inputs and this seed.

        Returns
        -------
        numpy.ndarray
            ``(L,)`` float32 waveform in [-1, 1] at :attr:`sample_rate`.
        """
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise SSLSVError(f"espeak-ng has no voice {voice!r} in {self.data_dir}")
        self.lib.espeak_SetParameter(_ESPEAK_RATE, int(rate), 0)
        self.lib.espeak_SetParameter(_ESPEAK_VOLUME, 100, 0)
        self.lib.espeak_SetParameter(_ESPEAK_PITCH, int(pitch), 0)
        self.lib.espeak_SetParameter(_ESPEAK_RANGE, int(pitch_range), 0)
        self._chunks = []
        self.lib.espeak_ng_SetRandSeed(int(seed) % (2**31 - 1))
        buf = text.encode("utf-8") + b"\0"
        status = self.lib.espeak_Synth(
            buf, len(buf), 0, 0, 0, _ESPEAK_CHARS_UTF8, None, None
        )
        self.lib.espeak_Synchronize()
        if status != 0:
            raise SSLSVError(f"espeak-ng synthesis failed (status {status})")
        if not self._chunks:
            return np.zeros(0, dtype=np.float32)
        return (np.concatenate(self._chunks).astype(np.float32) / 32768.0).copy()


def espeak_available():
    """Return True if espeak-ng loads and synthesises a short word."""
    try:
        synth = EspeakSynth(private=True)
        try:
            return synth.synth("test").size > 0
        finally:
            synth.close()
    except (SSLSVError, OSError):
        return False


def remove_data_folder(path):
    """Delete a data folder made by :func:`make_data_folder` (symlinks not followed)."""
    shutil.rmtree(path, ignore_errors=True)
