"""scikit-learn's digits (snnexp/data/digits.py): the fixed 70/10/20 split and static batches in unit range."""

import numpy as np
import torch

from snnexp.data import DigitsDataModule
from snnexp.data.digits import digits_indices


def test_digits_split_is_70_10_20_stratified_disjoint_and_independent_of_the_run_seed():
    from sklearn.datasets import load_digits

    labels = load_digits().target
    np.random.seed(1)
    torch.manual_seed(1)
    a = digits_indices(labels)
    np.random.seed(2)
    torch.manual_seed(2)
    b = digits_indices(labels)
    assert {k: len(v) for k, v in a.items()} == {"train": 1257, "val": 180, "test": 360}
    for k in a:
        assert np.array_equal(a[k], b[k])
    everything = np.concatenate(list(a.values()))
    assert sorted(everything.tolist()) == list(range(len(labels)))  # disjoint and complete
    for k, fraction in (("train", 0.7), ("val", 0.1), ("test", 0.2)):
        counts = np.bincount(labels[a[k]], minlength=10)
        assert np.all(np.abs(counts - fraction * np.bincount(labels)) <= 1.5)  # stratified


def test_digits_batches_are_static_images_in_unit_range():
    from sklearn.datasets import load_digits

    dm = DigitsDataModule(batch_size=32)
    assert (dm.input_shape, dm.time_steps, dm.num_classes) == ((1, 8, 8), None, 10)
    dm.prepare_data()
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (1257, 180, 360)
    x, y = next(iter(dm.val_dataloader()))
    assert x.shape == (32, 1, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.long
    assert 0 <= x.min() and x.max() <= 1
    data = load_digits()
    first_val = digits_indices(data.target)["val"][0]
    np.testing.assert_allclose(x[0, 0].numpy(), data.images[first_val] / 16.0, rtol=1e-6)
