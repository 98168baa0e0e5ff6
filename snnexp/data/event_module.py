"""The shared datamodule of event datasets: find the files, list (file, label) per split, turn them into frames.

A subclass says what its dataset is (``name``, ``sensor_size``, ``url``, ``looked_for``) and implements
``detect()`` (which on-disk layout is under ``root``, without reading events) and ``split_samples()`` (the
``(path, label)`` lists of each split and the reader of the files). Everything else, the frame path, the
cache and the augmentation, is here, identical for every event dataset.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from snnexp.data.augment import TETAugment
from snnexp.data.base import SNNDataModule
from snnexp.data.events import EventFrameDataset, FrameSpec, cache_folder, fingerprint
from snnexp.errors import dataset_not_found

Samples = list[tuple[object, int]]


class EventDataModule(SNNDataModule):
    """Base of the event datamodules. Batches are ``x [T, B, P, H, W]`` float32 and ``y [B]``.

    Keyword arguments common to all event datasets:
      ``root``        where the dataset lies (its layouts are detected, see the subclass),
      ``T``           number of frames per sample,
      ``split_by``    ``"number"`` (equal event counts, SpikingJelly) or ``"time"`` (equal time bins),
      ``size``        frame side after resizing, ``None`` keeps the sensor resolution,
      ``norm``        ``"max"`` (each frame divided by its max) or ``"none"`` (event counts),
      ``augment``     TET's flip + roll on the training set,
      ``cache``       convert each sample once and keep its frames on disk,
      ``cache_dir``   where the frames go, default ``<root>/snnexp_frames``,
      ``download``    let tonic download the dataset when it is missing (never by default).
    """

    sensor_size: tuple[int, int, int]  # (W, H, P)
    url: str = ""
    looked_for: str = ""
    display_name: str = ""

    def __init__(
        self,
        root: str = "data",
        T: int = 10,
        split_by: str = "number",
        size: int | None = None,
        norm: str = "none",
        augment: bool = False,
        cache: bool = True,
        cache_dir: str | None = None,
        download: bool = False,
        batch_size: int = 64,
        num_workers: int = 0,
        pin_memory: bool = False,
    ):
        super().__init__(batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory)
        self.root = Path(root).expanduser()
        self.spec = FrameSpec(tuple(self.sensor_size), int(T), split_by, size, norm)
        self.time_steps = int(T)
        self.input_shape = self.spec.frame_shape
        self.augment = augment
        self.cache = cache
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else self.root / "snnexp_frames"
        self.download = download

    # ---- what a subclass provides -------------------------------------------------------------------------
    def detect(self):
        """The layout found under ``root`` (any truthy value the subclass understands), or ``None``."""
        raise NotImplementedError

    def split_samples(self, layout) -> tuple[dict[str, Samples], Callable[[Path], np.ndarray] | None]:
        """``({"train": [(path, label), ...], "test": [...], optionally "val": [...]}, reader)``."""
        raise NotImplementedError

    def download_data(self) -> None:
        """Fetch the dataset into ``root`` (through tonic); only called when ``download=True``."""
        raise NotImplementedError(f"{self.name} cannot be downloaded automatically")

    def sample_key(self, source) -> str:
        """A stable name of one sample, for the cache fingerprint: its path relative to ``root``."""
        return os.path.relpath(source, self.root)

    # ---- Lightning hooks ----------------------------------------------------------------------------------
    def require(self):
        """The detected layout; downloads first when allowed; raises ``DatasetNotFoundError`` otherwise."""
        layout = self.detect()
        if layout is None and self.download:
            self.download_data()
            layout = self.detect()
        if layout is None:
            raise dataset_not_found(self.display_name or self.name, self.root, self.looked_for, self.url)
        return layout

    def datasets(self) -> dict[str, EventFrameDataset]:
        """One ``EventFrameDataset`` per split, each with its own cache folder; ``val`` defaults to ``test``."""
        splits, reader = self.split_samples(self.require())
        out = {}
        for split, samples in splits.items():
            if not samples:
                looked_for = f"{self.looked_for}; the {split} split is empty"
                raise dataset_not_found(self.display_name or self.name, self.root, looked_for, self.url)
            cache = None
            if self.cache:
                samples_id = fingerprint(f"{self.sample_key(s)}:{label}" for s, label in samples)
                cache = cache_folder(self.cache_dir, self.name, split, self.spec, samples_id)
            transform = TETAugment() if (split == "train" and self.augment) else None
            out[split] = EventFrameDataset(samples, self.spec, reader=reader, cache=cache, transform=transform)
        out.setdefault("val", out["test"])
        return out

    def prepare_data(self) -> None:
        """Check the dataset is there (or download it), then convert every sample to frames once."""
        sets = self.datasets()
        if self.cache:
            for split in ("train", "test", "val"):  # val is usually test: already cached, nothing to do
                sets[split].precompute(self.num_workers, description=f"{self.name} {split}")

    def setup(self, stage: str | None = None) -> None:
        sets = self.datasets()
        self.train_set, self.val_set, self.test_set = sets["train"], sets["val"], sets["test"]


def files_by_label(folder: Path, labels: dict[str, int], suffix: str) -> Samples:
    """``(path, label)`` for every ``<folder>/<label name>/*<suffix>``, classes in label order, files sorted by
    name (the order of SpikingJelly's and torchvision's ``DatasetFolder``, which "first 90%" splits rely on)."""
    samples = []
    for name, label in sorted(labels.items(), key=lambda kv: kv[1]):
        samples += [(path, label) for path in sorted((folder / name).glob(f"*{suffix}"))]
    return samples


def has_files(folder: Path, names, suffix: str) -> bool:
    """Whether any ``<folder>/<name>/*<suffix>`` exists."""
    return any(next((folder / str(n)).glob(f"*{suffix}"), None) is not None for n in names)
