"""The contract every snnexp datamodule fulfils."""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from snnexp.data.order import resumable_loader


def time_major_collate(batch):
    """Stack samples ``(x [T, ...], y)`` into ``(x [T, B, ...], y [B])``: snnexp is time-major everywhere."""
    xs, ys = zip(*batch)
    x = torch.stack([torch.as_tensor(x) for x in xs], dim=1)
    y = torch.as_tensor(ys, dtype=torch.long)
    return x, y


class SNNDataModule(L.LightningDataModule):
    """Base datamodule.

    Subclasses set, in ``__init__`` and without touching the disk (so ``snnexp.train.build`` can inspect any
    experiment):
      ``name``         short name used in logs,
      ``num_classes``  number of classes,
      ``input_shape``  shape of one sample at one time step, channels first, e.g. ``(3, 32, 32)``,
      ``time_steps``   ``None`` for static data (batches ``[B, ...]``; the model's encoder repeats them T times),
                       or T for sequence data (batches ``[T, B, ...]``).
    ``prepare_data`` checks that the dataset is on disk (raising ``snnexp.errors.DatasetNotFoundError`` with one
    clear message) or downloads it when ``download=True``. ``setup`` builds ``self.train_set``, ``self.val_set``
    and ``self.test_set``.
    """

    name: str = "data"
    train_collate = None  # a batch-level training augmentation (e.g. MixUp/CutMix) used as the collate function
    num_classes: int
    input_shape: tuple[int, ...]
    time_steps: int | None = None

    def __init__(self, batch_size: int = 64, num_workers: int = 0, pin_memory: bool = False):
        super().__init__()
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    @property
    def collate_fn(self):
        return time_major_collate if self.time_steps is not None else None

    def _loader(self, dataset: Dataset, shuffle: bool, collate_fn=None) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            collate_fn=collate_fn or self.collate_fn,
            persistent_workers=self.num_workers > 0,
            drop_last=False,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled by (seed, epoch) and resumable mid-epoch (:mod:`snnexp.data.order`); the seed is the run's
        (``torch.initial_seed()``, which ``seed_everything`` sets); under DDP, this process's share."""
        trainer = self.trainer
        replicas, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        return resumable_loader(self.train_set, seed=torch.initial_seed(), batch_size=self.batch_size,
                                num_replicas=replicas, rank=rank, num_workers=self.num_workers,
                                pin_memory=self.pin_memory, collate_fn=self.train_collate or self.collate_fn,
                                persistent_workers=self.num_workers > 0, drop_last=False)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False)
