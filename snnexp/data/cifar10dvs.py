"""CIFAR10-DVS (Li et al., Frontiers in Neuroscience 2017): 10,000 DVS128 recordings of CIFAR-10 images.

Layouts accepted under ``root``, detected in this order:
  (a) SpikingJelly: ``events_np/<class>/*.npz`` with arrays ``t, x, y, p``;
  (b) tonic: ``CIFAR10DVS/<class>/*.aedat4`` (or ``<class>/*.aedat4``), read by ``tonic.io.read_aedat4``,
      which needs the ``aedat`` package (``pip install aedat``);
  (c) the original release: ``<class>/*.aedat`` (or ``CIFAR10DVS/<class>/*.aedat``), AEDAT 2.0 files.

Preprocessing follows TET: T frames of equal event count, per-polarity counts at 128x128, each frame divided
by its max, resized to 48x48; training augmentation: horizontal flip and a circular roll of up to 5 pixels.
Split as TET and the Spike-driven Transformer: for every class, files sorted by name, the first 90% train
(900) and the last 10% test (100), "9k/1k" (a tiny copy keeps at least one test file per class). There is
no separate validation set in these papers: validation is the test set, so report the last epoch rather than
the best validation epoch.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from snnexp.data.event_module import EventDataModule, files_by_label, has_files
from snnexp.data.events import read_npz_events, to_events
from snnexp.errors import CorruptFileError, SnnexpError, dataset_not_found

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
LABELS = {name: i for i, name in enumerate(CLASSES)}


def read_aedat2(path: Path) -> np.ndarray:
    """Events of an original CIFAR10-DVS ``.aedat`` file (AEDAT 2.0, jAER DVS128 addresses).

    The file is header lines starting with ``#``, then big-endian uint32 pairs (address, timestamp in us).
    Address bits, as SpikingJelly decodes CIFAR10-DVS (``cifar10_dvs.load_origin_data``, after
    jackd/events-tfds): ``a = (addr & 0xFE) >> 1``, ``b = (addr & 0x7F00) >> 8``, ``on = addr & 1``, and the
    event is ``x = 127 - b``, ``y = 127 - a``, ``p = 1 - on``. Using SpikingJelly's mapping keeps this layout
    identical, frame for frame, to layout (a), which SpikingJelly produces from these files. (tonic's
    ``read_dvs_128`` reads other bits, ``x = (addr >> 8) & 0x7F``, ``y = (addr >> 1) & 0x7F``, unflipped.)
    """
    data = path.read_bytes()
    start = 0
    while data.startswith(b"#", start):
        end = data.find(b"\n", start)
        if end < 0:
            raise CorruptFileError(f"{path}: header never ends (no event data after the '#' lines)")
        start = end + 1
    if (len(data) - start) % 8:
        raise CorruptFileError(f"{path}: {len(data) - start} bytes of events is not a whole number of 8-byte events")
    words = np.frombuffer(data, dtype=">u4", offset=start)
    addr, t = words[0::2].astype(np.int64), words[1::2].astype(np.int64)
    a, b, on = (addr & 0xFE) >> 1, (addr & 0x7F00) >> 8, addr & 1
    return to_events(x=127 - b, y=127 - a, t=t, p=1 - on)


def read_aedat4(path: Path) -> np.ndarray:
    """Events of one of tonic's CIFAR10-DVS ``.aedat4`` files, by tonic's own reader (fields t, x, y, on)."""
    from tonic.io import read_aedat4 as tonic_read_aedat4

    events = tonic_read_aedat4(str(path))
    t, x, y, p = (events[name] for name in events.dtype.names[:4])
    return to_events(x=x, y=y, t=t, p=p)


class CIFAR10DVSDataModule(EventDataModule):
    """CIFAR10-DVS as frames ``[T, 2, size, size]``, 10 classes, TET's preprocessing by default."""

    name = "cifar10dvs"
    display_name = "CIFAR10-DVS"
    num_classes = 10
    sensor_size = (128, 128, 2)
    url = "https://figshare.com/articles/dataset/CIFAR10-DVS_New/4724671"
    looked_for = "events_np/<class>/*.npz, CIFAR10DVS/<class>/*.aedat4 or <class>/*.aedat"

    def __init__(self, root: str = "data/cifar10dvs", size: int | None = 48, norm: str = "max",
                 train_ratio: float = 0.9, augment: bool = True, batch_size: int = 128, **kwargs):
        """TET's defaults; other arguments and their defaults: :class:`EventDataModule` (the schema includes them)."""
        super().__init__(root=root, size=size, norm=norm, augment=augment, batch_size=batch_size, **kwargs)
        self.train_ratio = train_ratio

    def detect(self):
        for folder, suffix in (
            (self.root / "events_np", ".npz"),
            (self.root / "CIFAR10DVS", ".aedat4"),
            (self.root, ".aedat4"),
            (self.root, ".aedat"),
            (self.root / "CIFAR10DVS", ".aedat"),
        ):
            if has_files(folder, CLASSES, suffix):
                return folder, suffix
        return None

    def split_samples(self, layout):
        folder, suffix = layout
        reader = {".npz": read_npz_events, ".aedat4": read_aedat4, ".aedat": read_aedat2}[suffix]
        if suffix == ".aedat4":
            try:
                import aedat  # noqa: F401  (tonic.io.read_aedat4 imports it)
            except ImportError as err:
                raise SnnexpError(
                    f"CIFAR10-DVS under {folder} is in tonic's .aedat4 layout, whose reader needs the 'aedat' "
                    f"package: pip install aedat (or convert the data to SpikingJelly's events_np layout)"
                ) from err
        train, test = [], []
        for name in CLASSES:
            files = files_by_label(folder, {name: LABELS[name]}, suffix)
            if not files:
                raise dataset_not_found(
                    self.display_name, self.root, f"{folder}/{name}/*{suffix} (class {name} is empty)", self.url
                )
            # SpikingJelly's split_to_train_test_set (900/100 of 1000); a tiny copy keeps at least one test file
            cut = min(math.ceil(len(files) * self.train_ratio), len(files) - 1)
            train += files[:cut]
            test += files[cut:]
        return {"train": train, "test": test}, reader

    def download_data(self) -> None:
        import tonic

        tonic.datasets.CIFAR10DVS(save_to=str(self.root))
