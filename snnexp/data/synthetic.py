"""synthetic_dvs: procedurally generated event streams, so an event-data run needs no download.

Each sample is a DVS recording of a bar sweeping across a square sensor in one of four directions (the
label: 0 right, 1 left, 2 down, 3 up), with random thickness, length, lateral offset, speed and start, plus
uniform noise events. A moving edge makes ON events where the bar arrives and OFF events where it leaves,
as a real DVS does. The label is a matter of motion (where the bar is at which frame, and which polarity
leads), so a small convolutional SNN learns it to near 100% in a few epochs.

Samples are generated in memory, deterministically from (``seed``, split, index), independent of the run's
seed, and go through the same ``events_to_frames`` path (and optionally the same frame cache) as real data.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from snnexp.data.event_module import EventDataModule

SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
DIRECTIONS = ("right", "left", "down", "up")


def moving_bar_events(
    sensor: int, seed: int, split_id: int, index: int, noise: float = 0.1, steps: int = 48
) -> np.ndarray:
    """Events ``(x, y, t, p)`` of a bar moving in direction ``index % 4`` across a ``sensor x sensor`` DVS.

    Time runs over ``steps`` steps of 1 ms; at each step the bar's occupied pixels change and every pixel it
    newly covers fires ON (p=1), every pixel it leaves fires OFF (p=0), at a random time within the step.
    ``noise`` adds that fraction of uniform random events. Motion to the right is generated, then mirrored
    and/or transposed for the other directions.
    """
    rng = np.random.default_rng([seed, split_id, index])
    direction = index % 4
    thickness = int(rng.integers(2, 5))
    length = int(rng.integers(sensor // 2, sensor + 1))
    top = int(rng.integers(0, sensor - length + 1))
    speed = rng.uniform(0.5, 1.0) * sensor / steps * 1.5  # pixels per step: crosses most of the sensor
    start = rng.uniform(-thickness, sensor - speed * steps) if sensor - speed * steps > -thickness else -thickness

    xs, ys, ts, ps = [], [], [], []
    covered = np.zeros(sensor, dtype=bool)
    rows = np.arange(top, top + length)
    for k in range(steps + 1):
        left = int(np.floor(start + speed * k))
        now = np.zeros(sensor, dtype=bool)
        now[max(left, 0) : max(min(left + thickness, sensor), 0)] = True
        for polarity, cols in ((1, np.flatnonzero(now & ~covered)), (0, np.flatnonzero(covered & ~now))):
            if cols.size:
                x, y = np.meshgrid(cols, rows, indexing="ij")
                xs.append(x.ravel()), ys.append(y.ravel())
                ts.append(k * 1000 + rng.integers(0, 1000, x.size)), ps.append(np.full(x.size, polarity))
        covered = now
    x, y, t, p = (np.concatenate(a) if a else np.zeros(0, dtype=np.int64) for a in (xs, ys, ts, ps))

    n_noise = int(noise * max(len(t), 1))
    x = np.concatenate([x, rng.integers(0, sensor, n_noise)])
    y = np.concatenate([y, rng.integers(0, sensor, n_noise)])
    t = np.concatenate([t, rng.integers(0, (steps + 1) * 1000, n_noise)])
    p = np.concatenate([p, rng.integers(0, 2, n_noise)])

    if direction in (1, 3):  # left / up: mirror the x axis (time and polarity unchanged)
        x = sensor - 1 - x
    if direction in (2, 3):  # down / up: swap the axes
        x, y = y, x
    order = np.argsort(t, kind="stable")
    events = np.empty(len(t), dtype=[("x", np.int16), ("y", np.int16), ("t", np.int64), ("p", np.int8)])
    events["x"], events["y"], events["t"], events["p"] = x[order], y[order], t[order], p[order]
    return events


class SyntheticDVSDataModule(EventDataModule):
    """Moving-bar event streams as frames ``[T, 2, size, size]``, 4 classes, no files needed.

    ``root`` is accepted and only used for the frame cache when ``cache=True`` (off by default: generating
    is as fast as reading a cache).
    """

    name = "synthetic_dvs"
    display_name = "synthetic_dvs"
    num_classes = 4

    def __init__(
        self,
        root: str = "data",
        num_train: int = 512,
        num_val: int = 128,
        num_test: int = 256,
        sensor: int = 32,
        T: int = 8,
        split_by: str = "number",
        size: int | None = None,
        norm: str = "none",
        noise: float = 0.1,
        seed: int = 0,
        augment: bool = False,
        cache: bool = False,
        cache_dir: str | None = None,
        batch_size: int = 64,
        num_workers: int = 0,
        pin_memory: bool = False,
    ):
        self.sensor_size = (sensor, sensor, 2)
        super().__init__(
            root, T, split_by, size, norm, augment, cache, cache_dir, False, batch_size, num_workers, pin_memory
        )
        self.sizes = {"train": num_train, "val": num_val, "test": num_test}
        self.sensor, self.noise, self.seed = sensor, noise, seed

    def detect(self):
        return "generated"

    def split_samples(self, layout):
        splits = {
            split: [
                (partial(moving_bar_events, self.sensor, self.seed, SPLIT_IDS[split], i, self.noise), i % 4)
                for i in range(n)
            ]
            for split, n in self.sizes.items()
        }
        return splits, None

    def sample_key(self, source) -> str:
        return "-".join(str(a) for a in source.args)
