"""Fixtures of the data tests: CIFAR10-DVS event streams and a tiny ModelNet, written in their real layouts."""

import pytest

from helpers.formats import cifar10dvs_events, write_cifar10dvs, write_modelnet


@pytest.fixture(scope="module")
def dvs_events():
    return cifar10dvs_events()


@pytest.fixture(scope="module")
def cifar10dvs_root(tmp_path_factory, dvs_events):
    return write_cifar10dvs(tmp_path_factory.mktemp("c10dvs"), "events_np", dvs_events)


@pytest.fixture
def dataset(tmp_path):
    """A ModelNet40/10 copy in the ``modelnet40_normal_resampled`` layout: (root, raw shapes, split lists)."""
    root = tmp_path / "modelnet40_normal_resampled"
    shapes, splits = write_modelnet(root)
    return root, shapes, splits
