"""Checkpoint files given on the command line (``resume=``, ``method.teacher_ckpt=``): checked, then loaded safely.

Every such file goes through :func:`load_checkpoint`, which turns each way a file can be unusable (empty, not a
torch file, truncated, a failed CRC-32, objects a safe load refuses, no ``state_dict``) into one
:class:`CheckpointError` line naming the option and the file, instead of a traceback from deep inside torch.

Loading is always ``torch.load(weights_only=True)``: torch's restricted unpickler, which builds tensors and plain
containers only and never runs code from the file. snnexp's own checkpoints need nothing more: Lightning's keys
(``epoch``, ``loops``, ``callbacks``, ``optimizer_states``, ``lr_schedulers``) hold ints, floats, strings, tensors
and dicts, the methods' extra state is plain floats, and the RNG states of ``snnexp.resume`` are tensors and
tuples; so no type is added with ``add_safe_globals`` (a test checks that a real run's checkpoint names no unsafe
global). Lightning itself resumes with torch's default, also ``weights_only=True``, so a file that passes here
also loads there.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch

from snnexp.errors import CorruptFileError

# what Lightning reads when it resumes a fit (a missing one is a KeyError traceback from Lightning)
RESUME_KEYS = ("pytorch-lightning_version", "state_dict", "optimizer_states", "lr_schedulers")
ZIP_MAGIC = b"PK\x03\x04"
LEGACY_MAGIC = pickle.dumps(torch.serialization.MAGIC_NUMBER, protocol=2)[:-1]  # how a pre-1.6 torch file begins


class CheckpointError(CorruptFileError):
    """A checkpoint file that cannot be used: unreadable, truncated, corrupt, unsafe to unpickle or without weights."""


def load_checkpoint(path: str | os.PathLike, option: str, remedy: str, required: tuple[str, ...] = ("state_dict",),
                    mmap: bool = False) -> dict:
    """The checkpoint dict in ``path``, verified (CRC-32 of every archive member) and loaded with
    ``weights_only=True``; any defect is a one-line :class:`CheckpointError` ``"<option>: <path> ...; <remedy>"``.

    ``required`` are the top-level keys the caller needs; ``mmap=True`` maps the tensors instead of reading them
    (for a check before another loader reads the file)."""
    path = Path(path)
    is_zip = _check_bytes(path, option, remedy)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and is_zip)
    except Exception as err:  # torch reports a damaged file with RuntimeError, EOFError, KeyError, UnpicklingError...
        unsafe = _unsafe_globals(path, err, is_zip) if isinstance(err, pickle.UnpicklingError) else []
        if unsafe:
            raise CheckpointError(
                f"{option}: {path} holds Python objects that a safe load refuses ({', '.join(unsafe)}); snnexp loads "
                "checkpoints with torch.load(weights_only=True), which allows tensors and plain containers only. "
                "If you trust the file, save just its weights: torch.save({'state_dict': <its state_dict>}, <new path>)"
            ) from err
        reason = f"truncated or corrupt: {_short(err)}" if is_zip else _not_torch(path, err)
        raise _unreadable(option, path, reason, remedy) from err
    _check_content(obj, path, option, remedy, required)
    return obj


def _check_bytes(path: Path, option: str, remedy: str) -> bool:
    """Refuse an empty, unreadable or damaged file before unpickling; True for a zip-format torch file.

    torch verifies no checksum when it loads, so a flipped byte in a tensor would load silently: every member of
    the archive is read here and checked against its CRC-32 (skipped where torch wrote none, CRC 0)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as err:
        raise CheckpointError(f"{option}: cannot read {path}: {err.strerror or err}; {remedy}") from err
    if size == 0:
        raise _unreadable(option, path, "the file is empty, 0 bytes", remedy)
    if head != ZIP_MAGIC:
        return False  # a legacy (pre-1.6) torch file, or not a torch file at all: torch.load tells which
    try:
        with zipfile.ZipFile(path) as archive:
            for member in archive.infolist():
                if member.CRC:
                    _read_through(archive, member)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as err:
        reason = _zip_reason(err, size)
        raise _unreadable(option, path, f"truncated or corrupt: {reason}", remedy) from err
    return True


def _read_through(archive: zipfile.ZipFile, member: zipfile.ZipInfo) -> None:
    """Read one member to its end: ``zipfile`` raises ``BadZipFile`` when its CRC-32 does not match."""
    with archive.open(member) as f:
        while f.read(1 << 22):
            pass


def _zip_reason(err: Exception, size: int) -> str:
    """A short reason for a damaged archive: a missing end record means the file was cut short."""
    text = str(err)
    if "not a zip file" in text.lower():
        return f"{size:,} bytes and the zip archive's end record is missing, so the file ends early"
    return _short(err)


def _check_content(obj, path: Path, option: str, remedy: str, required: tuple[str, ...]) -> None:
    """Refuse a readable torch file that is not a checkpoint (a tensor, a module's weights under other keys, ...)."""
    if not isinstance(obj, Mapping):
        raise _not_checkpoint(option, path, f"it holds a {type(obj).__name__}, not a dict", remedy)
    missing = [key for key in required if key not in obj]
    if missing and "state_dict" in obj:
        raise _not_checkpoint(option, path, f"it holds weights only, without {', '.join(missing)}, so training "
                              "cannot continue from it", remedy)
    if missing:
        keys = ", ".join(map(str, list(obj)[:6])) + (", ..." if len(obj) > 6 else "")
        raise _not_checkpoint(option, path, f"no {', '.join(missing)} among its keys ({keys or 'none'})", remedy)
    if "state_dict" in obj and not isinstance(obj["state_dict"], Mapping):
        raise _not_checkpoint(option, path, f"its state_dict is a {type(obj['state_dict']).__name__}, not a dict",
                              remedy)


def _unreadable(option: str, path: Path, reason: str, remedy: str) -> CheckpointError:
    return CheckpointError(f"{option}: {path} is not a readable checkpoint ({reason}); {remedy}")


def _not_checkpoint(option: str, path: Path, reason: str, remedy: str) -> CheckpointError:
    return CheckpointError(f"{option}: {path} is a torch file but not a training checkpoint ({reason}); {remedy}")


def _unsafe_globals(path: Path, err: Exception, is_zip: bool) -> list[str]:
    """The names of the Python objects a weights-only load refused (from the archive, else from the message)."""
    names = []
    if is_zip:
        try:
            names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception:
            pass
    return names[:4] or re.findall(r"GLOBAL ([\w.]+)", str(err))[:4]


def _not_torch(path: Path, err: Exception) -> str:
    """Why a file that is no zip archive failed: a damaged legacy (pre-1.6) torch file, or no torch file at all."""
    with open(path, "rb") as f:
        head = f.read(len(LEGACY_MAGIC))
    if head == LEGACY_MAGIC:
        return f"truncated or corrupt legacy torch file: {_short(err)}"
    return f"not a PyTorch file: neither a zip archive nor a legacy torch pickle; it starts with {head[:8]!r}"


def _short(err: BaseException, limit: int = 160) -> str:
    """The exception's first line, cut to ``limit`` characters: the reason in a one-line message."""
    lines = str(err).strip().splitlines()
    text = f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_resume(path: str | os.PathLike, option: str) -> str:
    """``path`` as a string once it is a checkpoint Lightning can resume from (the tensors only mapped, not read);
    refused in one line otherwise, before Lightning's own load would fail with a traceback."""
    path = Path(path)
    others = sorted(p.name for p in path.parent.glob("*.ckpt") if p.name != path.name)
    remedy = ("pass resume=<another checkpoint>" + (f" (next to it: {', '.join(others[:3])})" if others else "")
              + ", or start a new run in another hydra.run.dir")
    load_checkpoint(path, option, remedy, required=RESUME_KEYS, mmap=True)
    return str(path)
