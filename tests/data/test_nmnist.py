"""N-MNIST (snnexp/data/nmnist.py): tonic's .bin files written here, read back into frames; download only on request."""

import numpy as np
import pytest

from helpers.formats import make_events, write_nmnist_bin
from snnexp.data import NMNISTDataModule
from snnexp.data.events import FrameSpec
from snnexp.errors import CorruptFileError, DatasetNotFoundError


def test_nmnist_reads_tonic_bin_files(tmp_path):
    events = {}
    for split, folder in (("train", "Train"), ("test", "Test")):
        for d in range(10):
            for i in range(2 if split == "train" else 1):
                ev = make_events(120, 34, 34, seed=hash((split, d, i)) % 1000)
                ev["t"] %= 1 << 23  # 23-bit timestamps, no overflow markers
                ev = ev[np.argsort(ev["t"], kind="stable")]
                events[(split, d, i)] = ev
                write_nmnist_bin(tmp_path / "NMNIST" / folder / str(d) / f"{i:05d}.bin", ev)
    dm = NMNISTDataModule(root=str(tmp_path), T=5, batch_size=4, cache_dir=str(tmp_path / "cache"))
    assert (dm.input_shape, dm.time_steps, dm.num_classes) == ((2, 34, 34), 5, 10)
    dm.prepare_data()
    dm.setup()
    assert len(dm.train_set) == 20 and len(dm.test_set) == 10 and dm.val_set is dm.test_set
    spec = FrameSpec((34, 34, 2), T=5)
    x, y = dm.train_set[7]  # digit 3, file 1
    assert y == 3
    np.testing.assert_array_equal(x.numpy(), spec(events[("train", 3, 1)]))
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (5, 4, 2, 34, 34)

    bad = tmp_path / "NMNIST" / "Test" / "4" / "00000.bin"
    bad.write_bytes(bad.read_bytes()[:-2])
    with pytest.raises(CorruptFileError, match=str(bad)):
        NMNISTDataModule(root=str(tmp_path), T=5, cache_dir=str(tmp_path / "cache2")).prepare_data()


def test_download_happens_only_when_asked_and_lands_in_a_detected_layout(tmp_path, monkeypatch):
    import tonic

    calls = []

    class FakeNMNIST:  # stands in for tonic's downloader: writes what tonic's archive extracts to
        def __init__(self, save_to, train=True):
            calls.append(train)
            folder = "Train" if train else "Test"
            for d in range(10):
                write_nmnist_bin(tmp_path / "NMNIST" / folder / str(d) / "00001.bin", make_events(50, 34, 34, seed=d))

    monkeypatch.setattr(tonic.datasets, "NMNIST", FakeNMNIST)
    with pytest.raises(DatasetNotFoundError):
        NMNISTDataModule(root=str(tmp_path), T=2, cache=False).prepare_data()
    assert calls == []
    dm = NMNISTDataModule(root=str(tmp_path), T=2, cache=False, download=True)
    dm.prepare_data()
    dm.setup()
    assert calls == [True, False] and len(dm.train_set) == 10 and len(dm.test_set) == 10
