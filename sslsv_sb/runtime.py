"""Process-level runtime settings, applied once at the start of every script.

**Allocator.** PyTorch's CPU tensors come from glibc's ``malloc``. By default glibc
serves blocks above a (dynamic, at most 32 MiB) threshold with ``mmap`` and gives
them back with ``munmap`` when freed, and it trims the top of its heap when more than
twice that threshold is free. A training step allocates and frees hundreds of
megabytes of activations and gradients, so every step hands that memory back to the
kernel and faults it in again page by page (each new page is zeroed by the kernel):
on this project's ECAPA steps that was about a third of the process's CPU time spent
in the kernel (issue 17; numbers in ``docs/benchmarks.md``). :func:`configure_allocator`
keeps freed memory in the process instead: ``M_MMAP_MAX = 0`` (no ``mmap`` for large
blocks: they come from the heap and return to its free lists) and
``M_TRIM_THRESHOLD = -1`` (the heap is never trimmed). The process's resident memory
then stays at its peak, as with PyTorch's caching allocator on a GPU.

It is applied by :func:`sslsv_sb.recipe.cli.run_cli`, so every recipe script and tool
gets it. Set ``SSLSV_MALLOC=default`` to keep glibc's defaults; a ``MALLOC_*_``
variable or a ``glibc.malloc`` tunable in ``GLIBC_TUNABLES`` set by the user is also
left alone. Other C libraries (musl, macOS, Windows) are not touched.

Example
-------
>>> settings = configure_allocator(environ={"SSLSV_MALLOC": "default"})
>>> settings["applied"], settings["reason"]
(False, 'SSLSV_MALLOC=default')
"""

import ctypes
import os
import platform
import sys

#: ``mallopt`` parameters of glibc (``<malloc.h>``).
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4

#: What :func:`configure_allocator` sets: ``{name: (mallopt parameter, value)}``.
#: ``M_TRIM_THRESHOLD = -1`` disables trimming, ``M_MMAP_MAX = 0`` disables ``mmap``
#: for large requests (``man mallopt``).
ALLOCATOR_SETTINGS = {
    "M_MMAP_MAX": (M_MMAP_MAX, 0),
    "M_TRIM_THRESHOLD": (M_TRIM_THRESHOLD, -1),
}

#: Environment switch: ``default`` (or ``0``/``off``) keeps glibc's defaults.
ENV_SWITCH = "SSLSV_MALLOC"
_USER_MALLOC_ENV = (
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_MMAP_MAX_",
    "MALLOC_TOP_PAD_",
    "MALLOC_ARENA_MAX",
)

_STATE = {}


def _glibc():
    """The running glibc as a ``ctypes`` library, or None on another C library."""
    if not sys.platform.startswith("linux"):
        return None
    if platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt  # noqa: B018 (symbol lookup)
    except (OSError, AttributeError):
        return None
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    return libc


def configure_allocator(environ=None):
    """Keep freed memory in the process (glibc ``mallopt``); idempotent.

    Arguments
    ---------
    environ : mapping or None
        Environment to read the switches from (default: ``os.environ``).

    Returns
    -------
    dict
        ``{"applied": bool, "reason": str, "settings": {name: value}}``; ``reason``
        says why nothing was applied (switch off, user settings, not glibc).
    """
    environ = os.environ if environ is None else environ
    switch = environ.get(ENV_SWITCH, "").strip().lower()
    if switch in ("default", "0", "off", "no"):
        return {"applied": False, "reason": f"{ENV_SWITCH}=default", "settings": {}}
    user = [k for k in _USER_MALLOC_ENV if k in environ]
    if "glibc.malloc" in environ.get("GLIBC_TUNABLES", ""):
        user.append("GLIBC_TUNABLES")
    if user:
        reason = f"user allocator settings kept ({', '.join(user)})"
        return {"applied": False, "reason": reason, "settings": {}}
    if _STATE.get("applied"):
        return dict(_STATE)
    libc = _glibc()
    if libc is None:
        return {"applied": False, "reason": "not glibc", "settings": {}}
    done = {}
    for name, (param, value) in ALLOCATOR_SETTINGS.items():
        if libc.mallopt(param, value) == 1:  # 1 on success
            done[name] = value
    _STATE.update(
        applied=bool(done),
        reason="mallopt" if done else "mallopt failed",
        settings=done,
    )
    return dict(_STATE)


def native_bf16():
    """Whether this CPU computes bf16 natively (oneDNN: AVX512-BF16 or AMX).

    Without it, bf16 autocast on CPU is emulated: an ECAPA-TDNN step was about 8x
    slower than in fp32 on an AVX2-only CPU (``docs/benchmarks.md``).
    """
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return True  # unknown: assume native (no warning)


def _option(argv, name):
    """Value of ``--name=value`` / ``--name value`` in ``argv`` (last one), or None."""
    value = None
    for i, arg in enumerate(argv):
        if arg == f"--{name}" and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(f"--{name}="):
            value = arg.split("=", 1)[1]
    return value


def precision_warning(argv, has_native_bf16=None):
    """A warning for ``--precision=bf16`` on a CPU that emulates bf16, else None.

    Arguments
    ---------
    argv : list of str
        The script's arguments (SpeechBrain's ``--precision`` / ``--device``).
    has_native_bf16 : bool or None
        Override of :func:`native_bf16` (tests).

    Example
    -------
    >>> precision_warning(["x.yaml", "--precision=fp32"]) is None
    True
    >>> precision_warning(["x.yaml", "--precision", "bf16"], False)[:40]
    '--precision=bf16 on a CPU without native'
    >>> precision_warning(["--precision=bf16", "--device=cuda:0"], False) is None
    True
    """
    if _option(argv, "precision") != "bf16":
        return None
    if (_option(argv, "device") or "cpu").startswith("cuda"):
        return None
    native = native_bf16() if has_native_bf16 is None else has_native_bf16
    if native:
        return None
    return (
        "--precision=bf16 on a CPU without native bf16 (no AVX512-BF16 / AMX): bf16 "
        "is emulated here and several times slower than fp32; use --precision=fp32"
    )


def configure_process(argv=None):
    """Runtime settings of a script's process (called by ``run_cli``).

    Arguments
    ---------
    argv : list of str or None
        The script's arguments (checked for an emulated ``--precision=bf16``, which
        gets a warning on stderr).

    Returns
    -------
    dict
        ``{"allocator": <configure_allocator() result>, "warning": str or None}``.
    """
    warning = precision_warning(list(argv)) if argv else None
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    return {"allocator": configure_allocator(), "warning": warning}
