"""glibc's malloc set for training (snnexp/kernels/heap.py): a freed 64 MiB block stays resident for reuse, the
user's own MALLOC_* settings win.

mallopt changes the whole process, so each case runs in a fresh Python process that mallocs, writes and frees a
block through libc directly and reports its resident set (``/proc/self/statm``) around it."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from snnexp.kernels import heap

pytestmark = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                                reason="glibc's malloc on Linux")

MiB = 1 << 20
CHILD = """
import ctypes, json, os, sys
from snnexp.kernels import heap

libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

applied = heap.reuse_freed_blocks() if sys.argv[1] == "reuse" else None
size = 64 << 20
before = rss()
block = libc.malloc(size)
libc.memset(block, 1, size)
written = rss()
libc.free(block)
print(json.dumps({"applied": applied, "written": written - before, "after_free": rss() - before}))
"""


def _block_rss(mode: str, **env) -> dict:
    clean = {k: v for k, v in os.environ.items() if k not in heap.USER_SETTINGS}
    proc = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, env={**clean, **env})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_freed_block_stays_resident_for_reuse():
    out = _block_rss("reuse")
    assert out["applied"] is True
    assert out["written"] >= 60 * MiB
    assert out["after_free"] >= 60 * MiB  # kept in the heap: the next step's tensor of that size does not page-fault


def test_glibc_defaults_return_the_block():
    out = _block_rss("defaults")
    assert out["written"] >= 60 * MiB
    assert out["after_free"] < 8 * MiB  # its own mapping, unmapped when freed


def test_user_malloc_settings_are_kept():
    out = _block_rss("reuse", MALLOC_MMAP_THRESHOLD_="65536")
    assert out["applied"] is False
    assert out["after_free"] < 8 * MiB  # the user's threshold still rules

