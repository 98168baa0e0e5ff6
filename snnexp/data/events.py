"""From event streams to frames, once: integration, resize, normalisation, and an on-disk frame cache.

Every event dataset (CIFAR10-DVS, DVS Gesture, N-MNIST, synthetic_dvs) goes through this one path:

    events (x, y, t, p)  --events_to_frames-->  counts [T, P, H, W]  --normalise-->  --resize-->  float32 frames

and the result is cached as one ``.npy`` file per sample, so the raw events are parsed once per (T, size, ...)
and later epochs read frames only.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from snnexp.errors import CorruptFileError, SnnexpError

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)  # no space left on the device; disk quota exceeded


class CacheWriteError(SnnexpError):
    """The frame cache cannot be written (disk full, no permission): the message names the folder and the ways out."""


def events_to_frames(events: np.ndarray, sensor_size: Sequence[int], T: int, split_by: str = "number") -> np.ndarray:
    """Integrate an event stream into ``T`` frames of per-polarity event counts, ``float32 [T, P, H, W]``.

    ``events`` is a structured array with fields ``x``, ``y``, ``t``, ``p`` (tonic's convention), in recording
    order; ``sensor_size`` is ``(W, H, P)``. Polarity ``p > 0`` goes to channel 1 and the rest to channel 0
    (with ``P == 1`` every event goes to channel 0). Events outside the sensor are dropped.

    ``split_by="number"`` is SpikingJelly's ``integrate_events_by_fixed_frames_number``: with N events and
    ``d = N // T``, frame i holds events ``[i*d, (i+1)*d)`` and the last frame also takes the remainder
    ``[(T-1)*d, N)``. ``split_by="time"`` cuts ``[t_min, t_max]`` into T equal bins (``t_max`` falls in the last).
    """
    W, H, P = (int(s) for s in sensor_size)
    frames = np.zeros((T, P, H, W), dtype=np.float32)
    n = len(events)
    if n == 0:
        return frames
    if split_by == "number":
        d = n // T
        frame = np.full(n, T - 1, dtype=np.int64) if d == 0 else np.minimum(np.arange(n) // d, T - 1)
    elif split_by == "time":
        t = events["t"].astype(np.float64)
        t0, t1 = t.min(), t.max()
        frame = (
            np.zeros(n, dtype=np.int64) if t1 == t0 else np.minimum(((t - t0) * T / (t1 - t0)).astype(np.int64), T - 1)
        )
    else:
        raise ValueError(f"split_by must be 'number' or 'time', got {split_by!r}")
    x = events["x"].astype(np.int64)
    y = events["y"].astype(np.int64)
    p = (events["p"].astype(np.int64) > 0).astype(np.int64) if P > 1 else np.zeros(n, dtype=np.int64)
    inside = (x >= 0) & (x < W) & (y >= 0) & (y < H)
    flat = ((frame * P + p) * H + y) * W + x
    frames += np.bincount(flat[inside], minlength=T * P * H * W).reshape(T, P, H, W).astype(np.float32)
    return frames


def normalise_frames(frames: np.ndarray, norm: str = "none") -> np.ndarray:
    """``"max"``: divide each time step's frame ``[P, H, W]`` by its maximum (TET's CIFAR10-DVS), empty frames stay 0.
    ``"none"``: keep the counts."""
    if norm == "none":
        return frames
    if norm != "max":
        raise ValueError(f"norm must be 'max' or 'none', got {norm!r}")
    peak = frames.reshape(frames.shape[0], -1).max(axis=1).reshape(-1, 1, 1, 1)
    return np.divide(frames, peak, out=np.zeros_like(frames), where=peak > 0)


def resize_frames(frames: np.ndarray, size: int | None) -> np.ndarray:
    """Resize ``[T, P, H, W]`` to ``[T, P, size, size]`` by antialiased bilinear interpolation.

    TET resizes 128 -> 48 with torchvision's ``Resize`` on PIL images (bilinear with antialiasing when shrinking);
    ``antialias=True`` is torch's equivalent. ``None`` keeps the sensor resolution.
    """
    if size is None or tuple(frames.shape[-2:]) == (size, size):
        return frames
    out = F.interpolate(
        torch.from_numpy(frames), size=(size, size), mode="bilinear", align_corners=False, antialias=True
    )
    return out.numpy()


@dataclass(frozen=True)
class FrameSpec:
    """How events become frames: the parameters that name a frame cache.

    Calling it runs ``events_to_frames`` -> ``normalise_frames`` -> ``resize_frames`` (TET's order: normalise at
    full resolution, then shrink)."""

    sensor_size: tuple[int, int, int]  # (W, H, P)
    T: int
    split_by: str = "number"
    size: int | None = None
    norm: str = "none"

    def __post_init__(self):
        if self.split_by not in ("number", "time"):
            raise ValueError(f"split_by must be 'number' or 'time', got {self.split_by!r}")
        if self.norm not in ("max", "none"):
            raise ValueError(f"norm must be 'max' or 'none', got {self.norm!r}")

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        """Shape of one frame, ``(P, H, W)`` after resizing."""
        W, H, P = self.sensor_size
        return (P, H, W) if self.size is None else (P, self.size, self.size)

    @property
    def tag(self) -> str:
        """Folder-name form, e.g. ``T10_number_48_max``."""
        return f"T{self.T}_{self.split_by}_{self.size or 'full'}_{self.norm}"

    def __call__(self, events: np.ndarray) -> np.ndarray:
        frames = events_to_frames(events, self.sensor_size, self.T, self.split_by)
        return resize_frames(normalise_frames(frames, self.norm), self.size).astype(np.float32, copy=False)


def fingerprint(items: Iterable[str]) -> str:
    """Short stable hash of a sample list (relative paths and labels), so a cache never serves another list."""
    digest = hashlib.sha1()
    for item in items:
        digest.update(item.encode())
        digest.update(b"\n")
    return digest.hexdigest()[:8]


class FrameCache:
    """One ``.npy`` file of frames per sample under ``folder``: ``<folder>/<index>.npy``.

    An entry is complete when it exists under its final name: each is written to a temporary file of its own in
    the same folder and then renamed (``os.replace``, atomic), so a killed run, a full disk or two runs filling
    the same cache at once never leave half a file under that name. Two such runs may convert the same sample;
    both write the same frames and the last rename wins. ``load`` still refuses an entry that does not parse or
    has another ``shape`` (a file damaged after the fact): the sample is converted again."""

    def __init__(self, folder: str | os.PathLike, shape: tuple[int, ...] | None = None):
        self.folder = Path(folder)
        self.shape = tuple(shape) if shape is not None else None

    def path(self, index: int) -> Path:
        return self.folder / f"{index:06d}.npy"

    def load(self, index: int) -> np.ndarray | None:
        """The cached frames of ``index``, or ``None`` when absent or not a valid entry (then it is converted again)."""
        path = self.path(index)
        if not path.is_file():
            return None
        try:
            frames = np.load(path)
        except (OSError, ValueError, EOFError):  # unreadable entry (an empty file raises EOFError)
            return None
        if frames.dtype != np.float32 or (self.shape is not None and frames.shape != self.shape):
            return None
        return frames

    def remove_stale(self, older_than_s: float = 3600.0) -> None:
        """Delete temporary files that a killed run left behind (never read, only taking space); a write in
        progress in another run is seconds old, so only files older than ``older_than_s`` go."""
        now = time.time()
        for tmp in self.folder.glob(".*.tmp"):
            with contextlib.suppress(OSError):  # another run may remove it first
                if now - tmp.stat().st_mtime > older_than_s:
                    tmp.unlink()

    def save(self, index: int, frames: np.ndarray) -> None:
        """Write the entry of ``index`` atomically; on any failure the temporary file is removed and nothing is left."""
        self.folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=f".{index:06d}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.save(f, frames)
            os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes it private (0600); a shared cache stays readable
            os.replace(tmp, self.path(index))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def cache_folder(cache_root: str | os.PathLike, dataset: str, split: str, spec: FrameSpec, samples_id: str) -> Path:
    """``<cache_root>/<dataset>/<split>_T{T}_{split_by}_{size}_{norm}_<samples fingerprint>``."""
    return Path(cache_root) / dataset / f"{split}_{spec.tag}_{samples_id}"


class EventFrameDataset(Dataset):
    """Samples ``(frames [T, P, H, W] float32 tensor, label int)`` from a list of ``(source, label)``.

    A source is a path, read by ``reader(path)``, or a zero-argument callable returning events (generated
    data). A reader failure becomes ``CorruptFileError`` naming the file. With ``cache`` every sample is
    converted once and later read from the cache; ``transform`` (augmentation) runs on the frame tensor after
    the cache, so cached frames stay un-augmented.
    """

    def __init__(
        self,
        samples: Sequence[tuple[object, int]],
        spec: FrameSpec,
        reader: Callable[[Path], np.ndarray] | None = None,
        cache: FrameCache | str | os.PathLike | None = None,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ):
        self.samples = list(samples)
        self.spec = spec
        self.reader = reader
        shape = (spec.T, *spec.frame_shape)
        self.cache = FrameCache(cache, shape) if isinstance(cache, (str, os.PathLike)) else cache
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def targets(self) -> list[int]:
        return [int(label) for _, label in self.samples]

    def events(self, index: int) -> np.ndarray:
        """The raw events of sample ``index`` (parses the file)."""
        source = self.samples[index][0]
        if callable(source):
            return source()
        try:
            return self.reader(Path(source))
        except CorruptFileError:
            raise
        except Exception as err:  # any parser failure means the file is not what it should be
            raise CorruptFileError(f"cannot read events from {source}: {type(err).__name__}: {err}") from err

    def frames(self, index: int) -> np.ndarray:
        """Frames of sample ``index``: from the cache when present, else converted (and cached)."""
        if self.cache is not None:
            cached = self.cache.load(index)
            if cached is not None:
                return cached
        frames = self.spec(self.events(index))
        if self.cache is not None:
            try:
                self.cache.save(index, frames)
            except OSError as err:
                raise self._write_error(err, frames.nbytes) from err
        return frames

    def _write_error(self, err: OSError, entry_bytes: int) -> CacheWriteError:
        """One line for a failed cache write: which folder, why, how much room the rest needs, the ways out."""
        folder = self.cache.folder
        ways_out = ("set data.cache_dir= to another folder (writable, with room), or data.cache=false to convert "
                    "events on every read")
        if err.errno not in DISK_FULL:
            return CacheWriteError(f"cannot write the event-frame cache in {folder}: {err.strerror or err}; {ways_out}")
        todo = len(self.missing())
        try:
            free = f"{_size(shutil.disk_usage(folder).free)} free there"
        except OSError:
            free = "free space unknown"
        return CacheWriteError(
            f"no space left to cache event frames in {folder} ({err.strerror}): the {todo} samples of this split not "
            f"cached yet need about {_size(todo * entry_bytes)} ({_size(entry_bytes)} each, {free}); free space there, "
            f"or {ways_out}"
        )

    def __getitem__(self, index: int):
        x = torch.from_numpy(self.frames(index))
        if self.transform is not None:
            x = self.transform(x)
        return x, int(self.samples[index][1])

    def missing(self) -> list[int]:
        """Indices whose frames are not cached yet."""
        if self.cache is None:
            return []
        return [i for i in range(len(self)) if not self.cache.path(i).is_file()]

    def precompute(self, num_workers: int = 0, description: str = "frames") -> None:
        """Convert every uncached sample once, with a progress bar, using ``num_workers`` processes."""
        if self.cache is not None:
            self.cache.remove_stale()
        todo = self.missing()
        if not todo:
            return
        from rich.progress import track

        loader = DataLoader(_Convert(self, todo), batch_size=None, num_workers=num_workers)
        for error in track(loader, total=len(todo), description=f"caching {description} ({len(todo)} samples)"):
            if error is not None:
                raise error


class _Convert(Dataset):
    """Runs ``EventFrameDataset.frames`` for the listed indices (the cache is the output). Returns ``None`` or
    the ``SnnexpError`` itself (a corrupt file, a full disk), so it reaches the user as one line even from a
    worker process (DataLoader would wrap a raised one in the worker's traceback)."""

    def __init__(self, dataset: EventFrameDataset, indices: list[int]):
        self.dataset, self.indices = dataset, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> SnnexpError | None:
        try:
            self.dataset.frames(self.indices[i])
        except SnnexpError as err:
            return err
        return None


def _size(nbytes: int) -> str:
    """``nbytes`` for a message: ``"812 KiB"``, ``"3.1 GiB"``."""
    value, unit = float(nbytes), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            break
        value /= 1024
    return f"{value:.0f} {unit}" if unit in ("B", "KiB") else f"{value:.1f} {unit}"


def read_npz_events(path: Path) -> np.ndarray:
    """SpikingJelly's ``events_np`` files: an ``.npz`` with arrays ``t``, ``x``, ``y``, ``p``."""
    with np.load(path) as npz:
        return to_events(x=npz["x"], y=npz["y"], t=npz["t"], p=npz["p"])


EVENT_DTYPE = np.dtype([("x", np.int16), ("y", np.int16), ("t", np.int64), ("p", np.int8)])


def to_events(x, y, t, p) -> np.ndarray:
    """Pack four equal-length arrays into the structured event array used everywhere here."""
    events = np.empty(len(t), dtype=EVENT_DTYPE)
    events["x"], events["y"], events["t"], events["p"] = x, y, t, p
    return events
