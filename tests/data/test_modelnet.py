"""ModelNet40/10 (snnexp/data/modelnet.py) in the ``modelnet40_normal_resampled`` layout: a tiny dataset is written in
that exact layout (shape-name and split files, one ``x,y,z,nx,ny,nz`` text file per shape; the ``dataset`` fixture
of tests/data/conftest.py) and read back by the real loader."""

import itertools

import numpy as np
import pytest
import torch

from helpers.formats import NAMES10, NAMES40, USED
from snnexp.data import ModelNet10DataModule, ModelNet40DataModule
from snnexp.data.modelnet import augment_points
from snnexp.errors import CorruptFileError, DatasetNotFoundError


def setup(root, **kwargs):
    kwargs = {"num_points": 32, "augment": False, **kwargs}
    dm = (kwargs.pop("cls", ModelNet40DataModule))(root=str(root), batch_size=4, **kwargs)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def unit_sphere(xyz):
    """Independent normalisation, point by point: centre on the mean, divide by the largest norm."""
    centre = [sum(p[d] for p in xyz) / len(xyz) for d in range(3)]
    centred = [[p[d] - centre[d] for d in range(3)] for p in xyz]
    radius = max(sum(v * v for v in p) ** 0.5 for p in centred)
    return np.array([[v / radius for v in p] for p in centred])


def brute_force_fps(xyz, n):
    """Farthest-point sampling from the full distance matrix: start at point 0, then repeatedly take the point
    whose distance to its nearest chosen point is largest."""
    dist = np.linalg.norm(xyz[:, None] - xyz[None], axis=-1)
    chosen = [0]
    while len(chosen) < n:
        chosen.append(int(np.argmax(dist[:, chosen].min(axis=1))))
    return chosen


def min_pairwise(xyz):
    return min(np.linalg.norm(a - b) for a, b in itertools.combinations(xyz, 2))


def test_first_n_points_round_trip_normalised_into_the_unit_sphere(dataset):
    root, shapes, splits = dataset
    dm = setup(root)
    assert dm.input_shape == (3, 32) and dm.time_steps is None and dm.num_classes == 40
    assert len(dm.train_set) == 6 and len(dm.test_set) == 3 and dm.val_set is dm.test_set
    for split, ds in (("train", dm.train_set), ("test", dm.test_set)):
        for i, shape_id in enumerate(splits[split]):
            x, label = ds[i]
            assert x.shape == (3, 32) and x.dtype == torch.float32
            expected = unit_sphere(shapes[shape_id][:32, :3].tolist())
            np.testing.assert_allclose(x.numpy().T, expected, rtol=1e-4, atol=1e-5)
            assert label == NAMES40.index(shape_id.rsplit("_", 1)[0])
            assert abs(np.linalg.norm(x.numpy(), axis=0).max() - 1) < 1e-5


def test_normals_are_kept_unchanged_as_channels_3_to_5(dataset):
    root, shapes, splits = dataset
    dm = setup(root, use_normals=True)
    assert dm.input_shape == (6, 32)
    x, _ = dm.test_set[0]
    np.testing.assert_allclose(x[3:].numpy().T, shapes[splits["test"][0]][:32, 3:], rtol=1e-5, atol=1e-6)


def test_batches_are_channels_first_and_training_is_augmented(dataset):
    root, _, _ = dataset
    dm = setup(root, augment=True)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 32) and y.dtype == torch.long
    x, y = next(iter(dm.test_dataloader()))
    assert x.shape == (3, 3, 32)
    torch.manual_seed(0)
    a, b = dm.train_set[0][0], dm.train_set[0][0]
    assert not torch.equal(a, b)  # a fresh augmentation at each read
    assert torch.equal(dm.test_set[0][0], dm.test_set[0][0])


def test_augmentation_is_dropout_to_the_first_point_then_one_scale_and_one_shift():
    torch.manual_seed(3)
    points = torch.randn(200, 6)
    out = augment_points(points)
    # normals are neither scaled nor shifted, so a row whose normal is row 0's was replaced by row 0
    dropped = (out[:, 3:] == points[0, 3:]).all(1)
    dropped[0] = False
    kept = ~dropped
    assert 0 < dropped.sum() < 200 * 0.875 + 20  # ratio ~ U(0, 0.875); this seed drops some
    torch.testing.assert_close(out[kept, 3:], points[kept, 3:], rtol=0, atol=0)
    # kept xyz = s * p + t with one s in [0.8, 1.25] and one t in [-0.1, 0.1]^3; dropped xyz = s * p0 + t
    p, q = points[kept, :3], out[kept, :3]
    s = ((q[1] - q[0]) / (p[1] - p[0])).mean()
    t = q[0] - s * p[0]
    assert 0.8 <= s <= 1.25 and (t.abs() <= 0.1 + 1e-6).all()
    torch.testing.assert_close(q, s * p + t, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out[dropped, :3], (s * points[0, :3] + t).expand(int(dropped.sum()), 3),
                               rtol=1e-4, atol=1e-4)


def test_farthest_point_sampling_matches_a_brute_force_reference(dataset):
    root, shapes, splits = dataset
    first = setup(root, num_points=12)
    fps = setup(root, num_points=12, sampling="fps")
    for i, shape_id in enumerate(splits["train"]):
        raw = shapes[shape_id]
        chosen = brute_force_fps(raw[:, :3], 12)
        expected = unit_sphere(raw[chosen, :3].tolist())
        got = fps.train_set[i][0].numpy().T
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
        # farthest points are mutually farther apart than the first 12
        assert min_pairwise(got) > min_pairwise(first.train_set[i][0].numpy().T)
    assert (root / "snnexp_cache" / "modelnet40_train_12_fps.npz").is_file()


def test_processed_arrays_are_cached_once_and_read_back_without_the_text_files(dataset):
    root, _, _ = dataset
    dm = setup(root)
    cache = root / "snnexp_cache" / "modelnet40_train_32_first.npz"
    assert cache.is_file() and (root / "snnexp_cache" / "modelnet40_test_32_first.npz").is_file()
    assert not list((root / "snnexp_cache").glob("*.tmp"))  # written atomically: no leftovers
    stamp = cache.stat().st_mtime_ns
    for cls in USED:  # the second run must not need (nor parse) a single shape file
        for f in (root / cls).iterdir():
            f.unlink()
    again = setup(root)
    assert cache.stat().st_mtime_ns == stamp
    for a, b in ((dm.train_set, again.train_set), (dm.test_set, again.test_set)):
        assert torch.equal(a.points, b.points) and torch.equal(a.labels, b.labels)
    with pytest.raises(DatasetNotFoundError, match="airplane_0001.txt"):
        setup(root, num_points=16)  # another size is not cached: it needs the (deleted) text files


def test_modelnet10_reads_its_own_shape_names_and_splits(dataset):
    root, _, splits = dataset
    dm = setup(root, cls=ModelNet10DataModule)
    assert dm.num_classes == 10 and len(dm.train_set) == 4 and len(dm.test_set) == 2
    labels = sorted({int(dm.train_set[i][1]) for i in range(4)})
    assert labels == [NAMES10.index("airplane"), NAMES10.index("night_stand")]
    assert (root / "snnexp_cache" / "modelnet10_train_32_first.npz").is_file()


def test_missing_dataset_says_where_it_looked_and_how_to_fix_it(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        setup(tmp_path / "nowhere")
    message = str(err.value)
    assert "nowhere" in message and "modelnet40_shape_names.txt" in message
    assert "modelnet40_normal_resampled.zip" in message and "data.root=" in message


@pytest.mark.parametrize("content,match", [
    ("1.0,2.0,oops,0,0,1\n" * 50, "not a text file"),
    ("1.0,2.0,3.0\n" * 50, "3 values per line"),
    ("1.0,2.0,3.0,0,0,1\n" * 10, "10 points, fewer than data.num_points=32"),
])
def test_malformed_shape_file_raises_corrupt_file_error_naming_it(dataset, content, match):
    root, _, _ = dataset
    bad = root / "night_stand" / "night_stand_0002.txt"
    bad.write_text(content)
    with pytest.raises(CorruptFileError, match=match) as err:
        setup(root)
    assert str(bad) in str(err.value)
