"""The synthetic event data (snnexp/data/synthetic.py): deterministic in its own seed, time-major batches,
learnable labels."""

import torch

from snnexp.data import SyntheticDVSDataModule


def test_synthetic_dvs_is_deterministic_in_its_data_seed_and_batches_are_time_major():
    a, b, c = (
        SyntheticDVSDataModule(num_train=16, seed=1),
        SyntheticDVSDataModule(num_train=16, seed=1),
        SyntheticDVSDataModule(num_train=16, seed=2),
    )
    for dm in (a, b, c):
        dm.setup()
    torch.manual_seed(123)  # the run's seed does not change the data
    assert torch.equal(a.train_set[5][0], b.train_set[5][0])
    assert not torch.equal(a.train_set[5][0], c.train_set[5][0])
    assert a.input_shape == (2, 32, 32) and a.time_steps == 8 and a.num_classes == 4
    x, y = next(iter(a.train_dataloader()))
    assert x.shape == (8, 16, 2, 32, 32) and y.shape == (16,) and y.dtype == torch.long


def test_synthetic_dvs_labels_are_learnable_a_nearest_class_mean_classifier_gets_them():
    dm = SyntheticDVSDataModule(num_train=128, num_test=64)
    dm.setup()

    def stacked(ds):
        xs, ys = zip(*(ds[i] for i in range(len(ds))))
        return torch.stack(xs).flatten(1), torch.tensor(ys)

    xtr, ytr = stacked(dm.train_set)
    xte, yte = stacked(dm.test_set)
    assert torch.bincount(ytr).tolist() == [32, 32, 32, 32]
    means = torch.stack([xtr[ytr == c].mean(0) for c in range(4)])
    assert torch.cdist(means, means).fill_diagonal_(float("inf")).min() > 1.0  # class-conditional means differ
    accuracy = (torch.cdist(xte, means).argmin(1) == yte).float().mean()
    assert accuracy > 0.9
