"""Writers of the datasets' real on-disk formats and layouts, shared by the data tests and the combination tests:
each writes a tiny dataset exactly as the official release (or tonic / SpikingJelly) lays it out, so that the real
datamodules read it."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from PIL import Image

from snnexp.data.cifar10dvs import CLASSES
from snnexp.data.events import to_events

# ---- event streams ---------------------------------------------------------------------------------------------


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


# ---- CIFAR10-DVS -----------------------------------------------------------------------------------------------

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


# ---- CIFAR-10 / CIFAR-100 --------------------------------------------------------------------------------------


def cifar_image(index):
    """A [3, 32, 32] uint8 image whose pixels encode (index, channel, row, column), to check the layout."""
    c, h, w = np.meshgrid(np.arange(3), np.arange(32), np.arange(32), indexing="ij")
    return ((index * 7 + c * 50 + h * 3 + w) % 256).astype(np.uint8)


def pickle_to(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def write_cifar10(root, per_batch=4):
    """cifar-10-batches-py/: data_batch_1..5 and test_batch ({data: uint8 [N, 3072] as R, G, B planes, labels,
    filenames, batch_label}) and batches.meta ({label_names, num_cases_per_batch, num_vis})."""
    folder = root / "cifar-10-batches-py"
    index = 0
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        ids = range(index, index + per_batch)
        index += per_batch
        pickle_to(
            folder / name,
            {
                "batch_label": name,
                "labels": [i % 10 for i in ids],
                "data": np.stack([cifar_image(i).reshape(-1) for i in ids]),
                "filenames": [f"img_{i}.png" for i in ids],
            },
        )
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    pickle_to(folder / "batches.meta", {"label_names": names, "num_cases_per_batch": per_batch, "num_vis": 3072})
    return folder


def write_cifar100(root, n=6):
    """cifar-100-python/: train and test ({data, fine_labels, coarse_labels, filenames, batch_label}) and meta."""
    folder = root / "cifar-100-python"
    for name, offset in (("train", 0), ("test", 100)):
        ids = range(offset, offset + n)
        pickle_to(
            folder / name,
            {
                "batch_label": name,
                "fine_labels": [(i * 13) % 100 for i in ids],
                "coarse_labels": [i % 20 for i in ids],
                "data": np.stack([cifar_image(i).reshape(-1) for i in ids]),
                "filenames": [f"img_{i}.png" for i in ids],
            },
        )
    pickle_to(
        folder / "meta",
        {"fine_label_names": [f"c{i}" for i in range(100)], "coarse_label_names": [f"s{i}" for i in range(20)]},
    )
    return folder


# ---- ImageNet (ImageFolder) ------------------------------------------------------------------------------------


def write_imagefolder(root, classes=("n01440764", "n01443537"), per_class=3):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(
                    root / split / c / f"{i}.JPEG", format="JPEG"
                )


# ---- ModelNet40 / ModelNet10 (modelnet40_normal_resampled) -----------------------------------------------------

POINTS_PER_SHAPE = 50
# three classes carry shapes; the others only fill the shape-name lists (flower_pot has an underscore, as in
# the real ModelNet40, so the class must be taken from the shape id up to its last underscore)
USED = ["airplane", "flower_pot", "night_stand"]
NAMES40 = USED + [f"class{i:02d}" for i in range(37)]
NAMES10 = ["bathtub", "airplane", "night_stand"] + [f"other{i}" for i in range(7)]


def write_modelnet(root, seed=0):
    """Write the layout under ``root``; return ``{shape_id: raw points [50, 6]}`` and the split lists."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    shapes, splits = {}, {"train": [], "test": []}
    for cls in USED:
        (root / cls).mkdir(exist_ok=True)
        for i in range(1, 4):
            shape_id = f"{cls}_{i:04d}"
            xyz = rng.normal(size=(POINTS_PER_SHAPE, 3)) * rng.uniform(0.5, 3, size=3) + rng.normal(size=3) * 5
            normals = rng.normal(size=(POINTS_PER_SHAPE, 3))
            normals /= np.linalg.norm(normals, axis=1, keepdims=True)
            points = np.concatenate([xyz, normals], axis=1).astype(np.float32)
            lines = [",".join(f"{v:.6e}" for v in p) for p in points]
            (root / cls / f"{shape_id}.txt").write_text("\n".join(lines) + "\n")
            shapes[shape_id] = np.array([[float(v) for v in line.split(",")] for line in lines])
            splits["train" if i < 3 else "test"].append(shape_id)
    (root / "modelnet40_shape_names.txt").write_text("\n".join(NAMES40) + "\n")
    for split, ids in splits.items():
        (root / f"modelnet40_{split}.txt").write_text("\n".join(ids) + "\n")
        ids10 = [s for s in ids if not s.startswith("flower_pot")]
        (root / f"modelnet10_{split}.txt").write_text("\n".join(ids10) + "\n")
    (root / "modelnet10_shape_names.txt").write_text("\n".join(NAMES10) + "\n")
    return shapes, splits
