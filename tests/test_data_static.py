"""Static datasets: digits' fixed split, CIFAR-10/100 python pickle batches read by torchvision's reader, and
ImageNet's ImageFolder layout. Each dataset is written in its real on-disk format by the test."""

import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as tv

from snnexp.data import CIFAR10DataModule, CIFAR100DataModule, DigitsDataModule, ImageNetDataModule
from snnexp.data.digits import digits_indices
from snnexp.errors import CorruptFileError, DatasetNotFoundError, SnnexpError

# ---- digits --------------------------------------------------------------------------------------------------


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


# ---- CIFAR ---------------------------------------------------------------------------------------------------


def cifar_image(index):
    """A [3, 32, 32] uint8 image whose pixels encode (index, channel, row, column), to check the layout."""
    c, h, w = np.meshgrid(np.arange(3), np.arange(32), np.arange(32), indexing="ij")
    return ((index * 7 + c * 50 + h * 3 + w) % 256).astype(np.uint8)


def pickle_to(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def write_cifar10(root, per_batch=4):
    """cifar-10-batches-py/: data_batch_1..5 and test_batch ({data: uint8 [N, 3072] as R, G, B planes, labels,
    filenames, batch_label}) and batches.meta ({label_names, num_cases_per_batch, num_vis})."""
    folder = root / "cifar-10-batches-py"
    index = 0
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        ids = range(index, index + per_batch)
        index += per_batch
        pickle_to(
            folder / name,
            {
                "batch_label": name,
                "labels": [i % 10 for i in ids],
                "data": np.stack([cifar_image(i).reshape(-1) for i in ids]),
                "filenames": [f"img_{i}.png" for i in ids],
            },
        )
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    pickle_to(folder / "batches.meta", {"label_names": names, "num_cases_per_batch": per_batch, "num_vis": 3072})
    return folder


def write_cifar100(root, n=6):
    """cifar-100-python/: train and test ({data, fine_labels, coarse_labels, filenames, batch_label}) and meta."""
    folder = root / "cifar-100-python"
    for name, offset in (("train", 0), ("test", 100)):
        ids = range(offset, offset + n)
        pickle_to(
            folder / name,
            {
                "batch_label": name,
                "fine_labels": [(i * 13) % 100 for i in ids],
                "coarse_labels": [i % 20 for i in ids],
                "data": np.stack([cifar_image(i).reshape(-1) for i in ids]),
                "filenames": [f"img_{i}.png" for i in ids],
            },
        )
    pickle_to(
        folder / "meta",
        {"fine_label_names": [f"c{i}" for i in range(100)], "coarse_label_names": [f"s{i}" for i in range(20)]},
    )
    return folder


MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)


def test_cifar10_reads_the_pickle_batches_through_torchvision(tmp_path):
    write_cifar10(tmp_path)
    dm = CIFAR10DataModule(root=str(tmp_path), augment=False, verify_md5=False, batch_size=5)
    assert (dm.input_shape, dm.time_steps, dm.num_classes) == ((3, 32, 32), None, 10)
    dm.prepare_data()
    dm.setup()
    assert len(dm.train_set) == 20 and len(dm.test_set) == 4 and dm.val_set is dm.test_set
    x, y = dm.train_set[6]
    raw = cifar_image(6) / 255.0
    expected = (raw - np.array(MEAN)[:, None, None]) / np.array(STD)[:, None, None]
    np.testing.assert_allclose(x.numpy(), expected, atol=1e-5)  # channel, row and column land where they belong
    assert y == 6
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (5, 3, 32, 32) and y.dtype == torch.long
    x, y = dm.test_set[0]
    assert y == 20 % 10


def test_cifar10_training_augmentation_is_tets(tmp_path):
    write_cifar10(tmp_path)
    dm = CIFAR10DataModule(root=str(tmp_path / "cifar-10-batches-py"), verify_md5=False)  # root may name the folder
    dm.setup()
    steps = dm.train_set.transform.transforms
    assert [type(s) for s in steps] == [tv.RandomCrop, tv.RandomHorizontalFlip, tv.ToTensor, tv.Normalize]
    assert steps[0].size == (32, 32) and steps[0].padding == 4
    assert tuple(steps[3].mean) == MEAN and tuple(steps[3].std) == STD
    assert [type(s) for s in dm.test_set.transform.transforms] == [tv.ToTensor, tv.Normalize]


def test_cifar10_files_that_fail_the_official_md5_are_named(tmp_path):
    # Files made here cannot carry the official md5 sums: the check is exercised through its failure path.
    write_cifar10(tmp_path)
    with pytest.raises(CorruptFileError, match="data_batch_1.*verify_md5=false"):
        CIFAR10DataModule(root=str(tmp_path)).prepare_data()


def test_cifar10_missing_or_unreadable_batches_are_reported(tmp_path):
    folder = write_cifar10(tmp_path)
    (folder / "test_batch").unlink()
    with pytest.raises(DatasetNotFoundError, match="missing test_batch"):
        CIFAR10DataModule(root=str(tmp_path), verify_md5=False).prepare_data()
    write_cifar10(tmp_path)
    (folder / "data_batch_3").write_bytes(b"\x80\x04not a pickle")
    with pytest.raises(CorruptFileError, match="cifar-10-batches-py"):
        CIFAR10DataModule(root=str(tmp_path), verify_md5=False).setup()


def test_cifar100_reads_fine_labels(tmp_path):
    write_cifar100(tmp_path)
    dm = CIFAR100DataModule(root=str(tmp_path), verify_md5=False, augment=False)
    assert dm.num_classes == 100 and dm.input_shape == (3, 32, 32)
    dm.setup()
    assert len(dm.train_set) == 6 and len(dm.test_set) == 6
    assert [dm.train_set[i][1] for i in range(6)] == [(i * 13) % 100 for i in range(6)]
    with pytest.raises(CorruptFileError, match="cifar-100-python/train"):
        CIFAR100DataModule(root=str(tmp_path)).prepare_data()


# ---- ImageNet ------------------------------------------------------------------------------------------------


def write_imagefolder(root, classes=("n01440764", "n01443537"), per_class=3):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(
                    root / split / c / f"{i}.JPEG", format="JPEG"
                )


def test_imagenet_reads_an_imagefolder_at_the_requested_size(tmp_path):
    write_imagefolder(tmp_path)
    dm = ImageNetDataModule(root=str(tmp_path), size=32, num_classes=2, batch_size=4)
    assert dm.input_shape == (3, 32, 32) and dm.time_steps is None
    dm.prepare_data()
    dm.setup()
    assert len(dm.train_set) == 6 and dm.val_set is dm.test_set
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 32, 32) and set(y.tolist()) <= {0, 1}
    steps = dm.test_set.transform.transforms
    assert isinstance(steps[0], tv.Resize) and steps[0].size == 37 and steps[1].size == (32, 32)
    x, _ = dm.test_set[0]
    assert x.shape == (3, 32, 32)


def test_imagenet_with_a_different_number_of_classes_says_which_override(tmp_path):
    write_imagefolder(tmp_path)
    with pytest.raises(SnnexpError, match="data.num_classes=2"):
        ImageNetDataModule(root=str(tmp_path), num_classes=1000).setup()


def test_cifar_mixup_cutmix_give_probability_targets_and_mixed_images(tmp_path):
    write_cifar10(tmp_path)
    dm = CIFAR10DataModule(root=str(tmp_path), augment=False, verify_md5=False, mixup=0.8, cutmix=1.0,
                           randaugment=True, random_erasing=0.25, batch_size=8)
    dm.setup()
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 3, 32, 32) and y.shape == (8, 10)
    torch.testing.assert_close(y.sum(-1), torch.ones(8))
    assert (y.max(-1).values < 1).any()  # some targets are mixtures of two classes
    x_val, y_val = next(iter(dm.val_dataloader()))
    assert y_val.dtype == torch.long  # evaluation is never mixed
    names = [type(t).__name__ for t in dm.transforms(train=True).transforms]
    assert names == ["RandAugment", "ToTensor", "Normalize", "RandomErasing"]
    assert [type(t).__name__ for t in dm.transforms(train=False).transforms] == ["ToTensor", "Normalize"]
