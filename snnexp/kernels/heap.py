"""glibc's malloc set for training on the CPU: freed large blocks stay in the heap for the next step to reuse.

By default glibc serves a large request (128 KiB and up; the threshold adapts up to 32 MiB) with a fresh ``mmap`` and
returns it to the kernel when freed, so every large tensor of a training step page-faults on each of its 4 KiB pages
when first written. On 2 cores that was about a quarter of a VGGSNN step (``benchmarks/step_cpu.py``). Raising
``M_MMAP_THRESHOLD`` and ``M_TRIM_THRESHOLD`` keeps such blocks for reuse, as jemalloc and tcmalloc do on the CPU and
PyTorch's caching allocator does on the GPU: the resident set then stays near a step's peak between steps instead of
falling back after each one. Settings the user gave glibc (``MALLOC_*_`` variables, ``GLIBC_TUNABLES``) are kept.
The heap fragments, though (a ResNet-19 step's peak 1.7x), so the default is :func:`cache_torch_tensors` instead.
"""

from __future__ import annotations

import ctypes
import os
import platform

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
LIMIT = 1 << 30  # blocks up to 1 GiB are reused; larger ones still get their own mapping
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "GLIBC_TUNABLES")


def user_settings() -> list[str]:
    """The environment variables through which the user already set glibc's malloc (then it is left alone)."""
    return [name for name in USER_SETTINGS if os.environ.get(name)]


def reuse_freed_blocks(limit: int = LIMIT) -> bool:
    """Keep freed blocks of up to ``limit`` bytes in this process's heap for reuse; True if glibc took it.

    False, changing nothing, off glibc (macOS, Windows, musl) or where the user set glibc's malloc themselves."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc" or user_settings():
        return False
    libc = ctypes.CDLL(None)  # the C library this process already runs on
    return bool(libc.mallopt(M_MMAP_THRESHOLD, limit)) and bool(libc.mallopt(M_TRIM_THRESHOLD, limit))


def cache_torch_tensors() -> bool:
    """Make snnexp's buffer cache torch's CPU allocator (:func:`snnexp.kernels.cpu.cache_torch_tensors`): the same
    reuse of pages for tensors of 1 MiB and more, without the heap's fragmentation (``cache_cpu_tensors``, the
    default). True if it took; False, with one warning, where the CPU extension cannot be built."""
    from snnexp.kernels import cpu

    if not cpu.loads(cpu.extension, "the CPU buffer cache", "torch's own allocator"):
        return False
    cpu.cache_torch_tensors()
    return True
