"""Every file-based datamodule (snnexp/data/base.py's contract): construction describes the data without touching the
disk, and a missing dataset stops with where snnexp looked and the override to fix it."""

import pytest

from snnexp.data import (
    CIFAR10DataModule,
    CIFAR10DVSDataModule,
    CIFAR100DataModule,
    DigitsDataModule,
    DVSGestureDataModule,
    ImageNetDataModule,
    NMNISTDataModule,
    SyntheticDVSDataModule,
)
from snnexp.errors import DatasetNotFoundError


FILE_BASED = [
    CIFAR10DataModule,
    CIFAR100DataModule,
    ImageNetDataModule,
    CIFAR10DVSDataModule,
    DVSGestureDataModule,
    NMNISTDataModule,
]


@pytest.mark.parametrize("cls", FILE_BASED + [DigitsDataModule, SyntheticDVSDataModule])
def test_constructing_a_datamodule_describes_it_without_touching_the_disk(tmp_path, cls):
    root = tmp_path / "nowhere"
    dm = cls(root=str(root))
    assert isinstance(dm.name, str) and dm.num_classes > 1
    assert len(dm.input_shape) == 3 and dm.time_steps in (None,) + tuple(range(1, 100))
    assert not root.exists()


@pytest.mark.parametrize("cls", FILE_BASED)
def test_a_missing_dataset_stops_with_where_we_looked_and_the_override(tmp_path, cls):
    root = tmp_path / "empty"
    root.mkdir()
    dm = cls(root=str(root))
    with pytest.raises(DatasetNotFoundError) as err:
        dm.prepare_data()
    message = str(err.value)
    assert str(root) in message and "data.root=" in message and "http" in message
    with pytest.raises(DatasetNotFoundError):
        dm.setup()
