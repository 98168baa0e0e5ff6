"""DVS128 Gesture (Amir et al., CVPR 2017): 11 hand and arm gestures, 29 subjects, 128x128 DVS.

Layouts accepted under ``root``, detected in this order:
  (a) tonic: ``DVSGesture/ibmGestureTrain|ibmGestureTest/<user>_<lighting>/<label>.npy`` (or without the
      ``DVSGesture/`` level): one ``[N, 4]`` array per recording, columns ``x, y, p, t`` with t in ms
      (tonic's preprocessed release, already cut into one gesture per file);
  (b) SpikingJelly: ``events_np/train|test/<label>/*.npz`` with arrays ``t, x, y, p``.
Augmentation is off by default: TET's horizontal flip would turn a left-hand gesture into a right-hand one.
The official split is by subject (23 train, 6 test: 1176 / 288 samples). Validation is the test set, as in
the papers (Spike-driven Transformer, SpikingJelly); report the last epoch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from snnexp.data.event_module import EventDataModule, files_by_label, has_files
from snnexp.data.events import read_npz_events, to_events

CLASSES = (
    "hand clapping",
    "right hand wave",
    "left hand wave",
    "right arm clockwise",
    "right arm counter-clockwise",
    "left arm clockwise",
    "left arm counter-clockwise",
    "arm roll",
    "air drums",
    "air guitar",
    "other gestures",
)


def read_gesture_npy(path: Path) -> np.ndarray:
    """Events of one file of tonic's DVSGesture release: ``[N, 4]`` columns x, y, p, t (ms -> us, as tonic)."""
    data = np.load(path)
    if data.ndim != 2 or data.shape[1] != 4:
        raise ValueError(f"expected an [N, 4] array (x, y, p, t), got shape {data.shape}")
    return to_events(
        x=data[:, 0], y=data[:, 1], t=np.round(data[:, 3].astype(np.float64) * 1000).astype(np.int64), p=data[:, 2]
    )


class DVSGestureDataModule(EventDataModule):
    """DVS128 Gesture as frames ``[T, 2, size, size]``, 11 classes."""

    name = "dvsgesture"
    display_name = "DVS128 Gesture"
    num_classes = 11
    sensor_size = (128, 128, 2)
    url = "https://research.ibm.com/interactive/dvsgesture/ (tonic's copy: https://figshare.com/ndownloader/files/38022171)"
    looked_for = "DVSGesture/ibmGestureTrain/<user>/<label>.npy or events_np/train/<label>/*.npz"

    def __init__(self, root: str = "data/dvsgesture", T: int = 16, batch_size: int = 16, **kwargs):
        """Other arguments and their defaults: :class:`EventDataModule` (the config schema includes them)."""
        super().__init__(root=root, T=T, batch_size=batch_size, **kwargs)

    def detect(self):
        for folder in (self.root / "DVSGesture", self.root):
            if next((folder / "ibmGestureTrain").glob("*/*.npy"), None) is not None:
                return "tonic", folder
        if has_files(self.root / "events_np" / "train", range(self.num_classes), ".npz"):
            return "spikingjelly", self.root / "events_np"
        return None

    def split_samples(self, layout):
        kind, folder = layout
        if kind == "spikingjelly":
            labels = {str(i): i for i in range(self.num_classes)}
            splits = {split: files_by_label(folder / split, labels, ".npz") for split in ("train", "test")}
            return splits, read_npz_events
        splits = {}
        for split, sub in (("train", "ibmGestureTrain"), ("test", "ibmGestureTest")):
            files = sorted((folder / sub).glob("*/*.npy"))
            splits[split] = [(path, int(path.stem)) for path in files]
        return splits, read_gesture_npy

    def download_data(self) -> None:
        import tonic

        for train in (True, False):
            tonic.datasets.DVSGesture(save_to=str(self.root), train=train)
