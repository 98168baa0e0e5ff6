"""CIFAR10-DVS (snnexp/data/cifar10dvs.py): each test writes a tiny dataset in the real file formats and layouts
(SpikingJelly's events_np, the original AEDAT 2, tonic's AEDAT 4), then runs the real datamodule on it
(detection, reading, TET's split, frames, cache, errors)."""

import os

import numpy as np
import pytest
import torch

from helpers.formats import write_cifar10dvs
from snnexp.data import CIFAR10DVSDataModule, TETAugment
from snnexp.data import cifar10dvs as cifar10dvs_module
from snnexp.data.cifar10dvs import CLASSES
from snnexp.data.events import FrameSpec
from snnexp.errors import CorruptFileError, DatasetNotFoundError


@pytest.mark.parametrize("layout", ["events_np", "aedat", "tonic"])
def test_cifar10dvs_reads_every_layout_to_the_same_frames(tmp_path, dvs_events, layout):
    if layout == "tonic":
        pytest.importorskip("aedat", reason="tonic.io.read_aedat4 needs the aedat package")
    root = write_cifar10dvs(tmp_path, layout, dvs_events)
    dm = CIFAR10DVSDataModule(root=str(root), T=4, augment=False, cache=False)
    dm.prepare_data()
    dm.setup()
    spec = FrameSpec((128, 128, 2), T=4, split_by="number", size=48, norm="max")
    # sample 0 of train is airplane file 0; sample 9 is automobile file 0 (9 train files per class)
    for index, key in ((0, (0, 0)), (9, (1, 0)), (89, (9, 8))):
        x, y = dm.train_set[index]
        assert y == key[0]
        np.testing.assert_allclose(x.numpy(), spec(dvs_events[key]), rtol=1e-6, atol=1e-7)


def test_cifar10dvs_split_is_the_first_90_percent_of_each_class_and_val_is_test(cifar10dvs_root, tmp_path):
    dm = CIFAR10DVSDataModule(root=str(cifar10dvs_root), T=4, cache_dir=str(tmp_path))
    dm.setup()
    assert len(dm.train_set) == 90 and len(dm.test_set) == 10 and dm.val_set is dm.test_set
    train_names = [os.path.basename(p) for p, _ in dm.train_set.samples]
    test_names = [os.path.basename(p) for p, _ in dm.test_set.samples]
    assert test_names == [f"cifar10_{c}_9.npz" for c in CLASSES]
    assert train_names[:9] == [f"cifar10_airplane_{i}.npz" for i in range(9)]
    assert torch.bincount(torch.tensor(dm.train_set.targets)).tolist() == [9] * 10


def test_cifar10dvs_batches_are_time_major_frames_with_tet_defaults(cifar10dvs_root, tmp_path):
    dm = CIFAR10DVSDataModule(root=str(cifar10dvs_root), T=10, batch_size=8, cache_dir=str(tmp_path))
    assert (dm.num_classes, dm.input_shape, dm.time_steps) == (10, (2, 48, 48), 10)
    dm.prepare_data()
    dm.setup()
    assert isinstance(dm.train_set.transform, TETAugment) and dm.test_set.transform is None
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (10, 8, 2, 48, 48) and x.dtype == torch.float32
    assert y.shape == (8,) and y.dtype == torch.long
    x, _ = next(iter(dm.test_dataloader()))
    assert 0 <= x.min() and x.amax(dim=(2, 3, 4)).max() <= 1 + 1e-6  # each frame divided by its max


def test_cifar10dvs_frames_are_cached_once_and_later_runs_do_not_parse(cifar10dvs_root, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = CIFAR10DVSDataModule(root=str(cifar10dvs_root), T=4, augment=False, cache_dir=str(cache))
    first.prepare_data()
    folders = sorted(p.name for p in (cache / "cifar10dvs").iterdir())
    assert [f.rsplit("_", 1)[0] for f in folders] == ["test_T4_number_48_max", "train_T4_number_48_max"]
    assert sum(len(list((cache / "cifar10dvs" / f).glob("*.npy"))) for f in folders) == 100
    first.setup()

    def parse(path):
        raise AssertionError(f"parsed {path} although its frames are cached")

    monkeypatch.setattr(cifar10dvs_module, "read_npz_events", parse)
    again = CIFAR10DVSDataModule(root=str(cifar10dvs_root), T=4, augment=False, cache_dir=str(cache))
    again.prepare_data()
    again.setup()
    for i in (0, 50, 89):
        assert torch.equal(again.train_set[i][0], first.train_set[i][0])
    assert sum(x.shape[1] for x, _ in again.val_dataloader()) == 10


def test_a_different_frame_setting_gets_its_own_cache(cifar10dvs_root, tmp_path):
    for T in (2, 3):
        CIFAR10DVSDataModule(root=str(cifar10dvs_root), T=T, cache_dir=str(tmp_path)).prepare_data()
    names = {p.name.rsplit("_", 1)[0] for p in (tmp_path / "cifar10dvs").iterdir()}
    assert names == {f"{s}_T{T}_number_48_max" for s in ("train", "test") for T in (2, 3)}


def test_cifar10dvs_corrupt_files_are_named(tmp_path, dvs_events):
    root = write_cifar10dvs(tmp_path / "npz", "events_np", dvs_events)
    bad = root / "events_np" / "cat" / "cifar10_cat_1.npz"
    bad.write_bytes(b"garbage")
    with pytest.raises(CorruptFileError, match="cifar10_cat_1.npz"):
        CIFAR10DVSDataModule(root=str(root), cache_dir=str(tmp_path / "c")).prepare_data()

    root = write_cifar10dvs(tmp_path / "aedat", "aedat", dvs_events)
    bad = root / "dog" / "cifar10_dog_0.aedat"
    bad.write_bytes(bad.read_bytes()[:-3])  # a truncated event
    with pytest.raises(CorruptFileError, match="cifar10_dog_0.aedat"):
        CIFAR10DVSDataModule(root=str(root), cache_dir=str(tmp_path / "c2")).prepare_data()


def test_cifar10dvs_with_an_empty_class_folder_says_which(tmp_path, dvs_events):
    root = write_cifar10dvs(tmp_path, "events_np", {k: v for k, v in dvs_events.items() if k[0] != 3})
    with pytest.raises(DatasetNotFoundError, match="class cat is empty"):
        CIFAR10DVSDataModule(root=str(root)).setup()


def test_conversion_in_worker_processes_caches_and_reports_a_corrupt_file_in_one_line(tmp_path, dvs_events):
    root = write_cifar10dvs(tmp_path / "r", "events_np", dvs_events)
    dm = CIFAR10DVSDataModule(root=str(root), T=3, num_workers=2, cache_dir=str(tmp_path / "c"))
    dm.prepare_data()
    assert len(list((tmp_path / "c").rglob("*.npy"))) == 100
    (root / "events_np" / "frog" / "cifar10_frog_4.npz").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(CorruptFileError) as err:
        CIFAR10DVSDataModule(root=str(root), T=4, num_workers=2, cache_dir=str(tmp_path / "c")).prepare_data()
    assert "cifar10_frog_4.npz" in str(err.value) and "Traceback" not in str(err.value)


def test_a_tiny_cifar10dvs_copy_keeps_one_test_file_per_class(tmp_path, dvs_events):
    root = write_cifar10dvs(tmp_path, "events_np", {k: v for k, v in dvs_events.items() if k[1] < 2})
    dm = CIFAR10DVSDataModule(root=str(root), T=2, cache=False)
    dm.setup()
    assert len(dm.train_set) == 10 and len(dm.test_set) == 10
