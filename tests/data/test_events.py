"""The event -> frame path (snnexp/data/events.py): integration, split boundaries, normalisation, resize, the frame
cache, and the dataset that converts each sample once."""

import os

import numpy as np
import pytest
import torch

from snnexp.data.events import (
    EventFrameDataset,
    FrameCache,
    FrameSpec,
    events_to_frames,
    normalise_frames,
    resize_frames,
    to_events,
)
from snnexp.errors import CorruptFileError


def random_events(n, W, H, seed=0):
    rng = np.random.default_rng(seed)
    return to_events(
        x=rng.integers(0, W, n), y=rng.integers(0, H, n), t=np.sort(rng.integers(0, 10_000, n)), p=rng.integers(0, 2, n)
    )


def test_events_to_frames_counts_match_an_independent_np_add_at():
    W, H, T, n = 7, 5, 3, 200  # W != H catches a transposed frame
    ev = random_events(n, W, H)
    expected = np.zeros((T, 2, H, W))
    chunk = n // T
    for i in range(T):
        lo, hi = i * chunk, ((i + 1) * chunk if i < T - 1 else n)
        sl = slice(lo, hi)
        np.add.at(expected[i], (ev["p"][sl], ev["y"][sl], ev["x"][sl]), 1)
    frames = events_to_frames(ev, (W, H, 2), T, "number")
    assert frames.dtype == np.float32 and frames.shape == (T, 2, H, W)
    np.testing.assert_array_equal(frames, expected)


def test_split_by_number_puts_the_remainder_in_the_last_frame():
    n, T = 23, 4  # 23 // 4 = 5: frames hold events [0,5) [5,10) [10,15) [15,23)
    ev = to_events(x=np.arange(n), y=np.zeros(n), t=np.arange(n), p=np.ones(n))
    frames = events_to_frames(ev, (n, 1, 2), T, "number")
    got = [np.flatnonzero(frames[i, 1, 0]).tolist() for i in range(T)]
    assert got == [list(range(0, 5)), list(range(5, 10)), list(range(10, 15)), list(range(15, 23))]
    assert frames[:, 0].sum() == 0  # every event has p = 1


def test_split_by_number_with_fewer_events_than_frames_fills_only_the_last_frame():
    ev = to_events(x=[0, 1], y=[0, 0], t=[0, 1], p=[0, 1])  # SpikingJelly: N // T = 0, last chunk is [0, N)
    frames = events_to_frames(ev, (2, 1, 2), 5, "number")
    assert frames[:4].sum() == 0 and frames[4].sum() == 2


def test_split_by_time_uses_equal_time_bins_from_t_min_to_t_max():
    t = np.array([100, 110, 124, 125, 150, 199, 200])  # bins of 25 us from 100; t_max falls in the last bin
    ev = to_events(x=np.arange(7), y=np.zeros(7), t=t, p=np.zeros(7))
    frames = events_to_frames(ev, (7, 1, 1), 4, "time")
    got = [np.flatnonzero(frames[i, 0, 0]).tolist() for i in range(4)]
    assert got == [[0, 1, 2], [3], [4], [5, 6]]


def test_empty_stream_and_events_outside_the_sensor_give_zero_frames():
    empty = to_events(x=[], y=[], t=[], p=[])
    assert events_to_frames(empty, (4, 4, 2), 3).sum() == 0
    outside = to_events(x=[4, -1, 0], y=[0, 0, 9], t=[0, 1, 2], p=[1, 1, 1])
    assert events_to_frames(outside, (4, 4, 2), 1).sum() == 0


def test_polarity_one_channel_sums_both_polarities():
    ev = to_events(x=[0, 0], y=[0, 0], t=[0, 1], p=[0, 1])
    assert events_to_frames(ev, (1, 1, 1), 1)[0, 0, 0, 0] == 2


def test_max_normalisation_divides_each_time_step_by_its_own_max():
    frames = np.zeros((3, 2, 4, 4), np.float32)
    frames[0, 0, 1, 1], frames[0, 1, 2, 2] = 4, 2
    frames[1, 1, 0, 0] = 8
    out = normalise_frames(frames, "max")
    assert out[0, 0, 1, 1] == 1 and out[0, 1, 2, 2] == 0.5 and out[1, 1, 0, 0] == 1
    assert out[2].sum() == 0  # an empty frame stays empty, no NaN
    assert normalise_frames(frames, "none") is frames


def test_resize_keeps_constants_and_preserves_the_mean_of_a_pattern():
    const = np.full((2, 2, 16, 16), 3.0, np.float32)
    np.testing.assert_allclose(resize_frames(const, 8), 3.0, rtol=1e-6)
    rng = np.random.default_rng(0)
    pattern = rng.random((2, 2, 128, 128)).astype(np.float32)
    small = resize_frames(pattern, 48)
    assert small.shape == (2, 2, 48, 48)
    np.testing.assert_allclose(small.mean(), pattern.mean(), rtol=1e-2)
    assert resize_frames(pattern, None) is pattern


def test_frame_spec_normalises_then_resizes_and_names_its_cache():
    spec = FrameSpec((128, 128, 2), T=4, split_by="number", size=48, norm="max")
    frames = spec(random_events(5000, 128, 128))
    assert frames.shape == (4, 2, 48, 48) and frames.dtype == np.float32
    assert spec.frame_shape == (2, 48, 48) and spec.tag == "T4_number_48_max"
    assert frames.max() <= 1.0 + 1e-6
    with pytest.raises(ValueError):
        FrameSpec((4, 4, 2), T=2, split_by="count")


def test_frame_cache_writes_atomically_and_reads_back(tmp_path, monkeypatch):
    cache = FrameCache(tmp_path / "c")
    frames = np.arange(24, dtype=np.float32).reshape(1, 2, 3, 4)
    cache.save(3, frames)
    assert [p.name for p in (tmp_path / "c").iterdir()] == ["000003.npy"]  # no temporary file left
    mask = os.umask(0o022)
    os.umask(mask)
    assert (tmp_path / "c" / "000003.npy").stat().st_mode & 0o777 == 0o666 & ~mask  # as any new file, not private
    np.testing.assert_array_equal(cache.load(3), frames)
    assert cache.load(4) is None

    def killed_mid_write(f, arr):
        f.write(b"\x93NUMPY half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "save", killed_mid_write)
    with pytest.raises(KeyboardInterrupt):
        cache.save(5, frames)
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["000003.npy"]


def test_dataset_converts_each_sample_once_then_reads_the_cache(tmp_path):
    calls = []

    def reader(path):
        calls.append(path)
        return random_events(300, 8, 8, seed=len(calls))

    spec = FrameSpec((8, 8, 2), T=3)
    samples = [(tmp_path / f"{i}.ev", i % 2) for i in range(5)]
    ds = EventFrameDataset(samples, spec, reader=reader, cache=tmp_path / "cache")
    ds.precompute()
    assert len(calls) == 5 and len(list((tmp_path / "cache").glob("*.npy"))) == 5
    first = [ds[i][0] for i in range(5)]

    def no_parsing(path):
        raise AssertionError("the raw events were parsed again")

    again = EventFrameDataset(samples, spec, reader=no_parsing, cache=tmp_path / "cache")
    again.precompute()
    for i in range(5):
        x, y = again[i]
        assert torch.equal(x, first[i]) and y == i % 2


def test_a_reader_failure_becomes_corrupt_file_error_naming_the_file(tmp_path):
    bad = tmp_path / "broken.npz"
    bad.write_bytes(b"not an npz")
    from snnexp.data.events import read_npz_events

    ds = EventFrameDataset([(bad, 0)], FrameSpec((4, 4, 2), T=2), reader=read_npz_events)
    with pytest.raises(CorruptFileError, match="broken.npz"):
        ds[0]


# ---- the cache under concurrent runs, a full disk and damaged entries ------------------------------------------

def _fill(src, cache, barrier, results):
    """One run filling the cache: waits for the other at ``barrier``, then converts what is missing, slowly (20 ms a
    sample) so that the two runs overlap for the whole fill; reports the samples it converted itself."""
    import time

    from snnexp.data.events import read_npz_events

    converted = []

    def slow_reader(path):
        converted.append(path.stem)
        time.sleep(0.02)
        return read_npz_events(path)

    samples = [(p, 0) for p in sorted(src.glob("*.npz"))]
    ds = EventFrameDataset(samples, FrameSpec((32, 32, 2), T=4, size=16, norm="max"), reader=slow_reader, cache=cache)
    barrier.wait(timeout=60)
    ds.precompute()
    results.put(converted)


def _watch(cache, done, results):
    """A third process that reads every entry under its final name while the two runs write: each must be whole."""
    torn, reads = [], 0
    while not done.is_set():
        for path in sorted(cache.glob("*.npy")):
            try:
                whole = np.load(path).shape == (4, 2, 16, 16)
            except FileNotFoundError:
                continue
            except (OSError, ValueError, EOFError):
                whole = False
            reads += 1
            if not whole:
                torn.append(path.name)
    results.put((torn, reads))


def test_two_processes_filling_one_cache_at_once_leave_the_entries_one_process_writes(tmp_path):
    import multiprocessing

    from helpers.formats import make_events, write_npz
    from snnexp.data.events import read_npz_events

    n = 30
    for i in range(n):
        write_npz(tmp_path / "src" / f"{i:03d}.npz", make_events(400, 32, 32, seed=i))
    cache = tmp_path / "cache"
    ctx = multiprocessing.get_context("fork")  # real processes, started without importing torch again
    barrier, results, watched, done = ctx.Barrier(2), ctx.Queue(), ctx.Queue(), ctx.Event()
    watcher = ctx.Process(target=_watch, args=(cache, done, watched))
    fillers = [ctx.Process(target=_fill, args=(tmp_path / "src", cache, barrier, results)) for _ in range(2)]
    for p in (watcher, *fillers):
        p.start()
    converted = [results.get(timeout=120) for _ in fillers]
    done.set()
    torn, reads = watched.get(timeout=60)
    for p in (watcher, *fillers):
        p.join(timeout=60)
    assert [p.exitcode for p in (watcher, *fillers)] == [0, 0, 0]
    assert len(converted[0]) + len(converted[1]) > n  # some samples were converted and written by both at once
    assert reads > n and torn == []  # read while being written, an entry was never half there

    spec = FrameSpec((32, 32, 2), T=4, size=16, norm="max")
    assert sorted(p.name for p in cache.iterdir()) == [f"{i:06d}.npy" for i in range(n)]  # no temporary file left
    for i in range(n):
        expected = spec(read_npz_events(tmp_path / "src" / f"{i:03d}.npz"))
        np.testing.assert_array_equal(np.load(cache / f"{i:06d}.npy"), expected)


@pytest.mark.parametrize("num_workers", [0, 1])
def test_a_full_disk_while_caching_is_one_clear_error_and_leaves_no_entry(num_workers, cifar10dvs_root, tmp_path,
                                                                          monkeypatch):
    import errno

    from snnexp.data.cifar10dvs import CIFAR10DVSDataModule
    from snnexp.data.events import CacheWriteError

    def make():
        return CIFAR10DVSDataModule(root=str(cifar10dvs_root), T=2, size=16, cache_dir=str(tmp_path / "frames"),
                                    num_workers=num_workers)

    real_save, writes = np.save, []

    def disk_fills_on_the_fourth_write(f, arr):
        writes.append(1)
        if len(writes) >= 4:
            f.write(b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, 'sha")  # half a header...
            f.flush()
            raise OSError(errno.ENOSPC, "No space left on device")  # ... then the disk is full
        real_save(f, arr)

    monkeypatch.setattr(np, "save", disk_fills_on_the_fourth_write)
    with pytest.raises(CacheWriteError) as info:
        make().prepare_data()
    message = str(info.value)
    folder = next((tmp_path / "frames" / "cifar10dvs").iterdir())
    assert len(message.splitlines()) == 1, message
    assert message.startswith(f"no space left to cache event frames in {folder} (No space left on device): the ")
    assert "samples of this split not cached yet need about " in message and " KiB each, " in message
    assert " free there); free space there, or set data.cache_dir=" in message and "data.cache=false" in message
    assert sorted(p.name for p in folder.iterdir()) == ["000000.npy", "000001.npy", "000002.npy"]  # no half entry

    monkeypatch.setattr(np, "save", real_save)  # space freed: the next run fills the rest
    dm = make()
    dm.prepare_data()
    dm.setup()
    fresh = CIFAR10DVSDataModule(root=str(cifar10dvs_root), T=2, size=16, cache=False)
    fresh.setup()
    for i in (0, 3, len(fresh.train_set) - 1):  # frames(), not [i]: the training set's augmentation is random
        np.testing.assert_array_equal(dm.train_set.frames(i), fresh.train_set.frames(i))


def test_a_damaged_cache_entry_is_never_read_as_valid(tmp_path):
    spec = FrameSpec((8, 8, 2), T=3)
    samples = [(lambda i=i: random_events(200, 8, 8, seed=i), 0) for i in range(4)]
    ds = EventFrameDataset(samples, spec, cache=tmp_path / "c")
    ds.precompute()
    good = [ds.frames(i) for i in range(4)]
    whole = ds.cache.path(1).read_bytes()
    ds.cache.path(0).write_bytes(b"")  # an empty file
    ds.cache.path(1).write_bytes(whole[: len(whole) // 2])  # cut mid-data
    np.save(ds.cache.path(2), np.zeros((3, 2, 4, 4), np.float32))  # a valid .npy of another shape
    np.save(ds.cache.path(3), good[3].astype(np.float64))  # another dtype
    for i in range(4):
        assert ds.cache.load(i) is None
        np.testing.assert_array_equal(ds.frames(i), good[i])  # converted again ...
        np.testing.assert_array_equal(ds.cache.load(i), good[i])  # ... and the entry repaired


def test_a_killed_runs_temporary_files_are_removed_once_stale(tmp_path):
    import os
    import time

    cache = FrameCache(tmp_path / "c")
    cache.save(0, np.zeros((1, 1, 2, 2), np.float32))
    old, fresh = tmp_path / "c" / ".000001.abc.tmp", tmp_path / "c" / ".000002.def.tmp"
    old.write_bytes(b"\x93NUMPY half")
    fresh.write_bytes(b"\x93NUMPY being written")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    cache.remove_stale()
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == [fresh.name, "000000.npy"]
