"""Atomic checkpoint files: a process killed at any moment (``kill -9`` during a write included) leaves either the
previous complete ``last.ckpt`` or the new complete one, never a truncated file.

Lightning's own writer stages the file in the system's temp directory and moves it into place, which becomes a
plain (interruptible) copy when that directory is on another filesystem. Here the bytes go to a hidden file beside
the target, are flushed to disk, and ``os.replace`` swaps it in (atomic on POSIX and Windows). Only torch is
imported, so tests can kill a bare writer process.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

PARTIAL_SUFFIX = ".partial"  # hidden ".<name>.<pid>.partial" files: an interrupted write, removed at the next start


def atomic_torch_save(obj, path: str | os.PathLike) -> None:
    """``torch.save(obj, path)`` such that ``path`` is always either its old or its new complete content."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}{PARTIAL_SUFFIX}")
    try:
        with open(partial, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def remove_partial_writes(directory: str | os.PathLike) -> None:
    """Delete what writes interrupted by a kill left behind in ``directory``."""
    directory = Path(directory)
    if directory.is_dir():
        for leftover in directory.glob(f".*{PARTIAL_SUFFIX}"):
            leftover.unlink(missing_ok=True)


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable too (a power cut right after it); not possible (nor needed) on every platform."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

