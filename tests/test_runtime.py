"""sslsv_sb.runtime: glibc keeps freed memory (no munmap / page faults per step)."""

import json
import os
import subprocess
import sys

import pytest

from sslsv_sb import runtime

# malloc, touch and free 64 MiB blocks (above glibc's largest dynamic mmap
# threshold, 32 MiB) 20 times, as tensors of a training step are, and count the
# minor page faults of the loop. With glibc's defaults every block is a fresh mmap
# whose pages all fault in again (the kernel zeroes each one).
_CHILD = r"""
import ctypes, json, resource
from sslsv_sb.runtime import configure_allocator
state = configure_allocator()
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
def step():
    p = libc.malloc(64 << 20)
    libc.memset(p, 1, 64 << 20)
    libc.free(p)
step()  # warm-up
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    step()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
print(json.dumps({"state": state, "faults": faults}))
"""


def _child(env_extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env.pop("GLIBC_TUNABLES", None)
    env.update(env_extra)
    out = subprocess.run(
        [sys.executable, "-c", _CHILD], capture_output=True, text=True, env=env
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(runtime._glibc() is None, reason="glibc only")
def test_allocator_keeps_freed_memory_and_can_be_switched_off():
    kept = _child({})
    default = _child({"SSLSV_MALLOC": "default"})
    # 20 x 64 MiB = 327,680 pages: the default faults each one in again.
    assert default["faults"] > 20 * 16384 * 0.9
    assert kept["faults"] < 2000
    assert not default["state"]["applied"]
    assert kept["state"]["applied"] and kept["state"]["settings"] == {
        "M_MMAP_MAX": 0,
        "M_TRIM_THRESHOLD": -1,
    }


def test_user_settings_are_left_alone():
    for env in ({"MALLOC_ARENA_MAX": "2"}, {"GLIBC_TUNABLES": "glibc.malloc.x=1"}):
        state = runtime.configure_allocator(environ=env)
        assert not state["applied"] and "user allocator settings" in state["reason"]
    assert runtime.configure_allocator(environ={"SSLSV_MALLOC": "off"}) == {
        "applied": False,
        "reason": "SSLSV_MALLOC=default",
        "settings": {},
    }


def test_run_cli_applies_the_allocator_settings():
    code = (
        "from sslsv_sb import runtime\n"
        "from sslsv_sb.recipe.cli import run_cli\n"
        "run_cli(lambda argv: print(runtime._STATE.get('applied')), [])\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env.pop("SSLSV_MALLOC", None)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env
    )
    assert out.returncode == 0, out.stderr[-2000:]
    expected = "True" if runtime._glibc() is not None else "None"
    assert out.stdout.strip() == expected


def test_emulated_bf16_gets_a_warning(capsys):
    argv = ["x.yaml", "--precision=bf16", "--lr=1"]
    assert "emulated" in runtime.precision_warning(argv, has_native_bf16=False)
    assert runtime.precision_warning(argv, has_native_bf16=True) is None
    assert runtime.precision_warning(["--precision", "fp32"], False) is None
    assert runtime.precision_warning(argv + ["--device", "cuda:1"], False) is None
    out = runtime.configure_process(["--precision", "bf16", "--device=cpu"])
    native = runtime.native_bf16()
    assert (out["warning"] is None) == native
    err = capsys.readouterr().err
    assert err.startswith("warning: --precision=bf16") != native
