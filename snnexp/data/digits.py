"""digits: scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes), so a fresh machine trains
with no download. Static data: batches ``[B, 1, 8, 8]`` with pixel values in [0, 1] (the raw 0..16 / 16)."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import TensorDataset

from snnexp.data.base import SNNDataModule


def digits_indices(labels, val_fraction: float = 0.1, test_fraction: float = 0.2, split_seed: int = 0) -> dict:
    """``{"train"|"val"|"test": indices}``: a fixed, stratified split that does not depend on the run's seed
    (runs with different seeds see the same test set). ``test_fraction`` of all images for test,
    ``val_fraction`` of all for validation, the rest for training (70/10/20 by default: 1257/180/360)."""
    from sklearn.model_selection import train_test_split

    labels = np.asarray(labels)
    rest, test = train_test_split(
        np.arange(len(labels)), test_size=test_fraction, stratify=labels, random_state=split_seed
    )
    val_of_rest = val_fraction / (1.0 - test_fraction)
    train, val = train_test_split(rest, test_size=val_of_rest, stratify=labels[rest], random_state=split_seed)
    return {"train": train, "val": val, "test": test}


def digits_split(val_fraction: float = 0.1, test_fraction: float = 0.2, split_seed: int = 0) -> dict:
    """``{"train"|"val"|"test": (images float32 [N, 1, 8, 8] in [0, 1], labels int64 [N])}``."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(data.target, dtype=torch.long)
    splits = digits_indices(data.target, val_fraction, test_fraction, split_seed)
    return {name: (x[ids], y[ids]) for name, ids in splits.items()}


class DigitsDataModule(SNNDataModule):
    """scikit-learn's 8x8 digits, static, ``input_shape (1, 8, 8)``, 10 classes. ``root`` is accepted and
    ignored (the data ships with scikit-learn)."""

    name = "digits"
    num_classes = 10
    input_shape = (1, 8, 8)
    time_steps = None

    def __init__(
        self,
        root: str | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        split_seed: int = 0,
        batch_size: int = 64,
        num_workers: int = 0,
        pin_memory: bool = False,
    ):
        super().__init__(batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory)
        self.val_fraction, self.test_fraction, self.split_seed = val_fraction, test_fraction, split_seed

    def setup(self, stage: str | None = None) -> None:
        splits = digits_split(self.val_fraction, self.test_fraction, self.split_seed)
        self.train_set, self.val_set, self.test_set = (TensorDataset(*splits[s]) for s in ("train", "val", "test"))
