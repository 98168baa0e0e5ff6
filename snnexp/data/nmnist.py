"""N-MNIST (Orchard et al., Frontiers in Neuroscience 2015): MNIST digits seen by an ATIS sensor in saccades.

Layouts accepted under ``root``, detected in this order:
  (a) tonic / the original release: ``NMNIST/Train|Test/<digit>/*.bin`` (or without the ``NMNIST/`` level),
      read by ``tonic.io.read_mnist_file`` (40-bit events: x 8 bits, y 8 bits, polarity 1 bit, time 23 bits);
  (b) SpikingJelly: ``events_np/train|test/<digit>/*.npz`` with arrays ``t, x, y, p``.
Split: the official 60,000 / 10,000. Validation is the test set, as in the SNN literature; report the last
epoch (a held-out part of the training set would change the training set the papers used).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from snnexp.data.event_module import EventDataModule, files_by_label, has_files
from snnexp.data.events import read_npz_events, to_events

DIGITS = {str(d): d for d in range(10)}


def read_nmnist_bin(path: Path) -> np.ndarray:
    """Events of one N-MNIST ``.bin`` file, by tonic's reader."""
    from tonic.io import read_mnist_file

    if path.stat().st_size % 5:
        raise ValueError(f"{path.stat().st_size} bytes is not a whole number of 5-byte events")
    events = read_mnist_file(str(path), dtype=np.dtype([("x", int), ("y", int), ("t", int), ("p", int)]))
    return to_events(x=events["x"], y=events["y"], t=events["t"], p=events["p"])


class NMNISTDataModule(EventDataModule):
    """N-MNIST as frames ``[T, 2, 34, 34]`` (or ``size``), 10 classes."""

    name = "nmnist"
    display_name = "N-MNIST"
    num_classes = 10
    sensor_size = (34, 34, 2)
    url = "https://www.garrickorchard.com/datasets/n-mnist"
    looked_for = "NMNIST/Train/<digit>/*.bin, Train/<digit>/*.bin or events_np/train/<digit>/*.npz"

    def __init__(self, root: str = "data/nmnist", batch_size: int = 128, **kwargs):
        """Other arguments and their defaults: :class:`EventDataModule` (the config schema includes them)."""
        super().__init__(root=root, batch_size=batch_size, **kwargs)

    def detect(self):
        for folder in (self.root / "NMNIST", self.root):
            if has_files(folder / "Train", DIGITS, ".bin"):
                return folder, ("Train", "Test"), ".bin"
        if has_files(self.root / "events_np" / "train", DIGITS, ".npz"):
            return self.root / "events_np", ("train", "test"), ".npz"
        return None

    def split_samples(self, layout):
        folder, (train, test), suffix = layout
        reader = read_nmnist_bin if suffix == ".bin" else read_npz_events
        splits = {
            "train": files_by_label(folder / train, DIGITS, suffix),
            "test": files_by_label(folder / test, DIGITS, suffix),
        }
        return splits, reader

    def download_data(self) -> None:
        import tonic

        for train in (True, False):
            tonic.datasets.NMNIST(save_to=str(self.root), train=train)
