"""ModelNet40 / ModelNet10 point clouds in the ``modelnet40_normal_resampled`` layout, as Spiking PointNet
(Ren et al., NeurIPS 2023) and the PointNet++ PyTorch code it builds on read them::

    <root>/modelnet40_shape_names.txt          one class name per line (modelnet10_shape_names.txt: 10 classes)
    <root>/modelnet40_train.txt, _test.txt     one shape id per line, e.g. airplane_0001 (modelnet10_*.txt)
    <root>/<class>/<shape id>.txt              one point per line: x,y,z,nx,ny,nz

Each shape keeps its first ``num_points`` points (``sampling="first"``, the official default) or that many by
farthest-point sampling (``sampling="fps"``, started from point 0 so the cache is deterministic; the official
code starts from a random point). The xyz are centred and scaled into the unit sphere (per shape, after the
sampling, as the official loader); normals are kept unchanged and dropped unless ``use_normals``. Sampled,
normalised arrays are parsed from the text files once and cached atomically under
``<root>/snnexp_cache/modelnet{10,40}_{split}_{num_points}_{sampling}.npz``.

Training augmentation (the official ``provider`` functions, per shape): random point dropout (a ratio
``r ~ U(0, 0.875)``, each point with ``u <= r`` replaced by the first point), one isotropic scale
``U(0.8, 1.25)`` and one shift ``U(-0.1, 0.1)`` per axis, on xyz. Batches are ``[B, C, N]`` with
``C = 3`` (or 6 with normals); static data, the model's encoder repeats them T times. There is no official
validation split: validation is the test set, as in the official training script (report the last epoch).
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from snnexp.data.base import SNNDataModule
from snnexp.errors import CorruptFileError, SnnexpError, dataset_not_found

URL = "https://shapenet.cs.stanford.edu/media/modelnet40_normal_resampled.zip"
SAMPLINGS = ("first", "fps")
SPLITS = ("train", "test")


def normalize_unit_sphere(xyz: np.ndarray) -> np.ndarray:
    """``xyz [..., N, 3]``: subtract the centroid, divide by the largest distance to it."""
    xyz = xyz - xyz.mean(axis=-2, keepdims=True)
    radius = np.sqrt((xyz**2).sum(axis=-1)).max(axis=-1)[..., None, None]
    return xyz / np.where(radius > 0, radius, 1.0)


def farthest_point_sample(xyz: np.ndarray, n: int, start: int = 0) -> np.ndarray:
    """Indices of ``n`` points of ``xyz [M, 3]`` chosen greedily: each next point is the one farthest (in
    squared distance) from those already chosen, starting from ``start``."""
    chosen = np.empty(n, dtype=np.int64)
    nearest = np.full(len(xyz), np.inf)
    farthest = start
    for i in range(n):
        chosen[i] = farthest
        nearest = np.minimum(nearest, ((xyz - xyz[farthest]) ** 2).sum(axis=-1))
        farthest = int(np.argmax(nearest))
    return chosen


def augment_points(points: torch.Tensor, max_dropout: float = 0.875, scale: tuple[float, float] = (0.8, 1.25),
                   shift: float = 0.1) -> torch.Tensor:
    """The official training augmentation of one shape ``points [N, C]`` (xyz first), in its order:
    point dropout (replaced by the first point, all channels), isotropic scale of xyz, shift of xyz."""
    points = points.clone()
    ratio = torch.rand(()) * max_dropout
    drop = torch.rand(points.shape[0]) <= ratio
    points[drop] = points[0].clone()
    points[:, :3] *= torch.empty(()).uniform_(*scale)
    points[:, :3] += torch.empty(3).uniform_(-shift, shift)
    return points


class PointCloudDataset(Dataset):
    """``points [M, N, 6]`` (normalised xyz, normals) and ``labels [M]`` -> ``(x [C, N], label)``."""

    def __init__(self, points: np.ndarray, labels: np.ndarray, use_normals: bool, augment: bool):
        channels = 6 if use_normals else 3
        self.points = torch.from_numpy(np.ascontiguousarray(points[..., :channels], dtype=np.float32))
        self.labels = torch.from_numpy(labels.astype(np.int64))
        self.augment = augment

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        points = self.points[index]
        if self.augment:
            points = augment_points(points)
        return points.t().contiguous(), int(self.labels[index])


class ModelNet40DataModule(SNNDataModule):
    """ModelNet40, 40 classes (9843 train / 2468 test shapes), ``modelnet40_normal_resampled`` layout."""

    name = "modelnet40"
    display_name = "ModelNet40"
    num_classes = 40
    time_steps = None

    def __init__(
        self,
        root: str = "data/modelnet40_normal_resampled",
        num_points: int = 1024,
        sampling: str = "first",
        use_normals: bool = False,
        augment: bool = True,
        cache: bool = True,
        batch_size: int = 48,
        num_workers: int = 0,
        pin_memory: bool = False,
    ):
        super().__init__(batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory)
        if sampling not in SAMPLINGS:
            raise SnnexpError(
                f"Unknown point sampling {sampling!r}; valid are {list(SAMPLINGS)} (set data.sampling=...)."
            )
        if int(num_points) < 1:
            raise SnnexpError(f"data.num_points must be a positive integer, got {num_points!r}.")
        self.root = Path(root).expanduser()
        self.num_points, self.sampling = int(num_points), sampling
        self.use_normals, self.augment, self.cache = bool(use_normals), bool(augment), bool(cache)
        self.input_shape = (6 if use_normals else 3, self.num_points)

    # ------------------------------------------------------------------------------ the files

    @property
    def prefix(self) -> str:
        return f"modelnet{self.num_classes}"

    def index_files(self) -> list[Path]:
        return [self.root / f"{self.prefix}_shape_names.txt"] + [self.root / f"{self.prefix}_{s}.txt" for s in SPLITS]

    def cache_path(self, split: str) -> Path:
        return self.root / "snnexp_cache" / f"{self.prefix}_{split}_{self.num_points}_{self.sampling}.npz"

    def check(self) -> None:
        """Raise ``DatasetNotFoundError`` unless the shape-name and split files are under ``root``."""
        missing = [p.name for p in self.index_files() if not p.is_file()]
        if missing:
            looked_for = (f"{', '.join(p.name for p in self.index_files())} and <class>/<shape id>.txt; "
                          f"missing {', '.join(missing)}")
            raise dataset_not_found(self.display_name, self.root, looked_for, URL)

    def _lines(self, path: Path) -> list[str]:
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]

    def classes(self) -> list[str]:
        names = self._lines(self.root / f"{self.prefix}_shape_names.txt")
        if len(names) != self.num_classes:
            raise CorruptFileError(
                f"{self.root / f'{self.prefix}_shape_names.txt'} lists {len(names)} classes; {self.display_name} "
                f"has {self.num_classes}."
            )
        return names

    def shape_ids(self, split: str) -> list[str]:
        return self._lines(self.root / f"{self.prefix}_{split}.txt")

    # ------------------------------------------------------------------------------ parsing and caching

    def read_shape(self, path: Path) -> np.ndarray:
        """The sampled points ``[num_points, 6]`` of one shape file (xyz not yet normalised)."""
        if not path.is_file():
            raise dataset_not_found(self.display_name, self.root, f"{path} (listed in the split file)", URL)
        try:
            # first-N needs only the first rows; a malformed line there still fails
            max_rows = self.num_points if self.sampling == "first" else None
            points = np.loadtxt(path, delimiter=",", dtype=np.float32, ndmin=2, max_rows=max_rows)
        except ValueError as err:
            raise CorruptFileError(f"{path} is not a text file of x,y,z,nx,ny,nz lines: {err}") from err
        if points.shape[1] != 6:
            raise CorruptFileError(f"{path} has {points.shape[1]} values per line; expected 6 (x,y,z,nx,ny,nz).")
        if len(points) < self.num_points:
            raise CorruptFileError(
                f"{path} has {len(points)} points, fewer than data.num_points={self.num_points}."
            )
        if self.sampling == "fps":
            return points[farthest_point_sample(points[:, :3], self.num_points)]
        return points[: self.num_points]

    def parse(self, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Read every shape of ``split`` from its text file: normalised ``points [M, N, 6]``, labels, ids."""
        index = {name: i for i, name in enumerate(self.classes())}
        ids = self.shape_ids(split)
        points = np.empty((len(ids), self.num_points, 6), dtype=np.float32)
        labels = np.empty(len(ids), dtype=np.int64)
        for i, shape_id in enumerate(ids):
            cls = shape_id.rsplit("_", 1)[0]
            if cls not in index:
                raise CorruptFileError(
                    f"{self.root / f'{self.prefix}_{split}.txt'} lists {shape_id!r}, whose class {cls!r} is not in "
                    f"{self.prefix}_shape_names.txt."
                )
            points[i] = self.read_shape(self.root / cls / f"{shape_id}.txt")
            labels[i] = index[cls]
        points[..., :3] = normalize_unit_sphere(points[..., :3])
        return points, labels, ids

    def load(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """The processed arrays of ``split``: from the cache when it matches the split file, else parsed (and
        cached, written to a temporary file and renamed, so a crash never leaves half a cache)."""
        path = self.cache_path(split)
        if self.cache and path.is_file():
            try:
                with np.load(path) as cached:
                    if list(cached["ids"]) == self.shape_ids(split):
                        return cached["points"], cached["labels"]
            except (OSError, ValueError, KeyError, EOFError) as err:
                warnings.warn(f"ignoring the unreadable cache {path} ({err}); parsing the text files again")
        points, labels, ids = self.parse(split)
        if self.cache:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as f:
                    np.savez(f, points=points, labels=labels, ids=np.array(ids))
                os.replace(f.name, path)
            except OSError as err:
                warnings.warn(f"cannot write the ModelNet cache {path} ({err}); it will be parsed again next time")
        return points, labels

    # ------------------------------------------------------------------------------ Lightning hooks

    def prepare_data(self) -> None:
        self.check()
        if self.cache:  # parse once, on one process; setup then reads the cache
            for split in SPLITS:
                self.load(split)

    def setup(self, stage: str | None = None) -> None:
        self.check()
        train = self.load("train")
        test = self.load("test")
        self.train_set = PointCloudDataset(*train, use_normals=self.use_normals, augment=self.augment)
        self.test_set = PointCloudDataset(*test, use_normals=self.use_normals, augment=False)
        self.val_set = self.test_set  # no official validation split


class ModelNet10DataModule(ModelNet40DataModule):
    """ModelNet10, 10 classes, from the same folder through ``modelnet10_shape_names.txt`` and
    ``modelnet10_train.txt`` / ``modelnet10_test.txt``."""

    name = "modelnet10"
    display_name = "ModelNet10"
    num_classes = 10
