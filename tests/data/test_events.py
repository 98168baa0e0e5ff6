"""The event -> frame path (snnexp/data/events.py): integration, split boundaries, normalisation, resize, the frame
cache, and the dataset that converts each sample once."""

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
