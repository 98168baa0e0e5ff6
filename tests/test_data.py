"""Event datasets on disk: each test writes a tiny dataset in the real file format and layout, then runs the
real datamodule on it (detection, reading, TET's split, frames, cache, errors)."""

import os

import numpy as np
import pytest
import torch

from snnexp.data import (
    CIFAR10DataModule,
    CIFAR10DVSDataModule,
    CIFAR100DataModule,
    DigitsDataModule,
    DVSGestureDataModule,
    ImageNetDataModule,
    NMNISTDataModule,
    SyntheticDVSDataModule,
    TETAugment,
)
from snnexp.data import cifar10dvs as cifar10dvs_module
from snnexp.data.cifar10dvs import CLASSES
from snnexp.data.events import FrameSpec, to_events
from snnexp.errors import CorruptFileError, DatasetNotFoundError

# ---- writers of the real formats ------------------------------------------------------------------------------


def make_events(n, W, H, seed):
    rng = np.random.default_rng(seed)
    return to_events(
        x=rng.integers(0, W, n),
        y=rng.integers(0, H, n),
        t=np.sort(rng.integers(0, 1 << 20, n)),
        p=rng.integers(0, 2, n),
    )


def write_npz(path, ev):
    """SpikingJelly's events_np file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, t=ev["t"], x=ev["x"], y=ev["y"], p=ev["p"])


def write_cifar10dvs_aedat(path, ev):
    """An original CIFAR10-DVS file: '#' header lines, then big-endian uint32 (address, timestamp) pairs, with
    the address bits SpikingJelly decodes: x = 127 - addr[8:15], y = 127 - addr[1:8], p = 1 - addr[0]."""
    path.parent.mkdir(parents=True, exist_ok=True)
    x, y, p = ev["x"].astype(np.uint32), ev["y"].astype(np.uint32), ev["p"].astype(np.uint32)
    addr = ((127 - x) << 8) | ((127 - y) << 1) | (1 - p)
    body = np.empty(2 * len(ev), dtype=">u4")
    body[0::2], body[1::2] = addr, ev["t"]
    header = b"#!AER-DAT2.0\r\n# This is a raw AE data file - do not edit\r\n# Timestamps tick is 1 us\r\n"
    path.write_bytes(header + body.tobytes())


def write_aedat4(path, ev):
    """An AEDAT 4 file as tonic's CIFAR10DVS ships: magic, size-prefixed IOHeader flatbuffer whose XML names
    one EVTS stream, then size-prefixed EventPacket flatbuffers (struct Event {t: int64, x, y: int16, on: bool})."""
    flatbuffers = pytest.importorskip("flatbuffers")
    description = (
        '<dv version="2.0"><node name="outInfo" path="/mainloop/Recorder/outInfo/">'
        '<node name="0" path="/mainloop/Recorder/outInfo/0/">'
        '<attr key="compression" type="string">NONE</attr>'
        '<attr key="typeIdentifier" type="string">EVTS</attr>'
        '<node name="info" path="/mainloop/Recorder/outInfo/0/info/">'
        '<attr key="sizeX" type="int">128</attr><attr key="sizeY" type="int">128</attr>'
        "</node></node></node></dv>"
    )
    b = flatbuffers.Builder(1024)
    text = b.CreateString(description)
    b.StartObject(3)
    b.PrependUOffsetTRelativeSlot(2, text, 0)
    b.FinishSizePrefixed(b.EndObject(), b"IOHE")
    out = b"#!AER-DAT4.0\r\n" + bytes(b.Output())
    for chunk in np.array_split(np.arange(len(ev)), 2):  # two packets
        b = flatbuffers.Builder(1024)
        b.StartVector(16, len(chunk), 8)
        for i in chunk[::-1]:
            b.Prep(8, 16)
            b.Pad(3)
            b.PrependBool(bool(ev["p"][i]))
            b.PrependInt16(int(ev["y"][i]))
            b.PrependInt16(int(ev["x"][i]))
            b.PrependInt64(int(ev["t"][i]))
        elements = b.EndVector()
        b.StartObject(1)
        b.PrependUOffsetTRelativeSlot(0, elements, 0)
        b.FinishSizePrefixed(b.EndObject(), b"EVTS")
        packet = bytes(b.Output())
        out += (0).to_bytes(4, "little") + len(packet).to_bytes(4, "little") + packet
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(out)


def write_nmnist_bin(path, ev):
    """N-MNIST's 40-bit events: byte 0 x, byte 1 y, then bit 7 polarity and 23 bits of timestamp (big-endian)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = ev["t"].astype(np.int64)
    raw = np.stack(
        [ev["x"], ev["y"], (ev["p"].astype(np.int64) << 7) | ((t >> 16) & 0x7F), (t >> 8) & 0xFF, t & 0xFF], axis=1
    )
    path.write_bytes(raw.astype(np.uint8).tobytes())


def write_gesture_npy(path, ev):
    """tonic's DVSGesture file: an [N, 4] array, columns x, y, p, t in ms."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, np.stack([ev["x"], ev["y"], ev["p"], ev["t"]], axis=1).astype(np.int64))


# ---- CIFAR10-DVS ---------------------------------------------------------------------------------------------

PER_CLASS = 10


def cifar10dvs_events():
    return {(c, i): make_events(150, 128, 128, seed=100 * c + i) for c in range(10) for i in range(PER_CLASS)}


def write_cifar10dvs(root, layout, events):
    for (c, i), ev in events.items():
        name = f"cifar10_{CLASSES[c]}_{i}"
        if layout == "events_np":
            write_npz(root / "events_np" / CLASSES[c] / f"{name}.npz", ev)
        elif layout == "aedat":
            write_cifar10dvs_aedat(root / CLASSES[c] / f"{name}.aedat", ev)
        elif layout == "tonic":
            write_aedat4(root / "CIFAR10DVS" / CLASSES[c] / f"{name}.aedat4", ev)
    return root


@pytest.fixture(scope="module")
def dvs_events():
    return cifar10dvs_events()


@pytest.fixture(scope="module")
def cifar10dvs_root(tmp_path_factory, dvs_events):
    return write_cifar10dvs(tmp_path_factory.mktemp("c10dvs"), "events_np", dvs_events)


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


# ---- N-MNIST -------------------------------------------------------------------------------------------------


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


# ---- DVS Gesture ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["tonic", "events_np"])
def test_dvsgesture_reads_tonic_npy_and_spikingjelly_npz(tmp_path, layout):
    events = {}
    for split, users in (("train", ("user01_fluorescent", "user02_led")), ("test", ("user24_lab",))):
        for user in users:
            for label in range(11):
                ev = make_events(100, 128, 128, seed=len(events))
                ev["t"] //= 1000  # tonic's release stores milliseconds
                events[(split, user, label)] = ev
                if layout == "tonic":
                    sub = "ibmGestureTrain" if split == "train" else "ibmGestureTest"
                    write_gesture_npy(tmp_path / "DVSGesture" / sub / user / f"{label}.npy", ev)
                else:
                    write_npz(tmp_path / "events_np" / split / str(label) / f"{user}_{label}.npz", ev)
    dm = DVSGestureDataModule(root=str(tmp_path), T=4, size=32, batch_size=6, cache=False)
    assert (dm.input_shape, dm.time_steps, dm.num_classes) == ((2, 32, 32), 4, 11)
    dm.prepare_data()
    dm.setup()
    assert len(dm.train_set) == 22 and len(dm.test_set) == 11 and dm.val_set is dm.test_set
    assert sorted(dm.train_set.targets) == sorted(list(range(11)) * 2)
    spec = FrameSpec((128, 128, 2), T=4, size=32)
    for i in (0, 5, 21):
        x, y = dm.train_set[i]
        path = dm.train_set.samples[i][0]
        user = path.parent.name if layout == "tonic" else path.stem.rsplit("_", 1)[0]
        np.testing.assert_allclose(x.numpy(), spec(events[("train", user, y)]), rtol=1e-6)
    x, y = next(iter(dm.test_dataloader()))
    assert x.shape == (4, 6, 2, 32, 32)


# ---- every file-based datamodule: construction does not touch the disk; a missing dataset says where -----------

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


def test_conversion_in_worker_processes_caches_and_reports_a_corrupt_file_in_one_line(tmp_path, dvs_events):
    root = write_cifar10dvs(tmp_path / "r", "events_np", dvs_events)
    dm = CIFAR10DVSDataModule(root=str(root), T=3, num_workers=2, cache_dir=str(tmp_path / "c"))
    dm.prepare_data()
    assert len(list((tmp_path / "c").rglob("*.npy"))) == 100
    (root / "events_np" / "frog" / "cifar10_frog_4.npz").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(CorruptFileError) as err:
        CIFAR10DVSDataModule(root=str(root), T=4, num_workers=2, cache_dir=str(tmp_path / "c")).prepare_data()
    assert "cifar10_frog_4.npz" in str(err.value) and "Traceback" not in str(err.value)


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


def test_a_tiny_cifar10dvs_copy_keeps_one_test_file_per_class(tmp_path, dvs_events):
    root = write_cifar10dvs(tmp_path, "events_np", {k: v for k, v in dvs_events.items() if k[1] < 2})
    dm = CIFAR10DVSDataModule(root=str(root), T=2, cache=False)
    dm.setup()
    assert len(dm.train_set) == 10 and len(dm.test_set) == 10
