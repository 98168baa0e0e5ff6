"""Static image datasets (snnexp/data/vision.py): CIFAR-10/100 python pickle batches read by torchvision's reader,
ImageNet's ImageFolder layout, each written in its real on-disk format by the test; and the ImageNet datamodule's
options for the Spike-driven Transformer recipe (timm's training pipeline): repeated augmentation, evaluation
crop_pct, crop scale and resampling, timm RandAugment policies, colour jitter and the probability of mixing a
batch."""

import math
import types

import numpy as np
import pytest
import torch
from torch.utils.data import DistributedSampler
from torchvision import transforms as tv

from helpers.formats import cifar_image, write_cifar10, write_cifar100, write_imagefolder
from snnexp.data import CIFAR10DataModule, CIFAR100DataModule, ImageNetDataModule
from snnexp.data.vision import RepeatedAugSampler
from snnexp.errors import CorruptFileError, DatasetNotFoundError, SnnexpError


# ---- CIFAR ---------------------------------------------------------------------------------------------------


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


# ---- ImageNet ------------------------------------------------------------------------------------------------


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


def _datamodule(root, **options):
    dm = ImageNetDataModule(root=str(root), size=32, num_classes=2, batch_size=4, **options)
    dm.setup()
    return dm


def _repeated(epoch, n, repeats):
    """Each image of an epoch's permutation (seeded by the epoch) ``repeats`` times in a row."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(epoch)).tolist()
    return [i for i in order for _ in range(repeats)]


# ---- ImageNet: repeated augmentation ------------------------------------------------------------------------


def test_repeated_augmentation_shows_each_drawn_image_k_times_in_one_process(tmp_path):
    write_imagefolder(tmp_path)
    dm = _datamodule(tmp_path, repeated_aug=3)
    loader = dm.train_dataloader()
    sampler = loader.sampler
    assert isinstance(sampler, RepeatedAugSampler) and isinstance(sampler, DistributedSampler)
    assert len(sampler) == len(dm.train_set) == 6  # an epoch as long as without repeats
    assert list(sampler) == _repeated(0, 6, 3)[:6]  # two images, three augmentations each
    sampler.set_epoch(1)
    assert list(sampler) == _repeated(1, 6, 3)[:6]
    x, y = next(iter(loader))
    assert x.shape == (4, 3, 32, 32) and y.shape == (4,)
    assert sum(1 for _ in loader) == 2  # 6 samples in batches of 4


def test_repeated_augmentation_spreads_the_repeats_over_ddp_processes(tmp_path):
    write_imagefolder(tmp_path)
    seen = []
    for rank in (0, 1):
        dm = _datamodule(tmp_path, repeated_aug=3)
        dm.trainer = types.SimpleNamespace(world_size=2, global_rank=rank)
        sampler = dm.train_dataloader().sampler
        assert (sampler.num_replicas, sampler.rank, len(sampler)) == (2, rank, 3)
        seen.append(list(sampler))
    sequence = _repeated(0, 6, 3)
    assert seen == [sequence[0::2][:3], sequence[1::2][:3]]  # the copies of an image go to different processes


def test_lightning_keeps_the_repeated_augmentation_sampler_under_ddp(tmp_path):
    import lightning as L
    from lightning.pytorch.trainer.states import RunningStage

    write_imagefolder(tmp_path)
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, default_root_dir=tmp_path)
    connector = trainer._data_connector
    repeated = _datamodule(tmp_path, repeated_aug=3).train_dataloader()
    assert connector._prepare_dataloader(repeated, shuffle=True, mode=RunningStage.TRAINING) is repeated
    plain = _datamodule(tmp_path).train_dataloader()  # the (seed, epoch) order is a DistributedSampler too: kept
    assert connector._prepare_dataloader(plain, shuffle=True, mode=RunningStage.TRAINING) is plain


def test_without_repeats_the_loader_shuffles_by_seed_and_epoch(tmp_path):
    from snnexp.data.order import ResumableSampler

    write_imagefolder(tmp_path)
    torch.manual_seed(3)
    loader = _datamodule(tmp_path).train_dataloader()
    assert isinstance(loader.sampler, ResumableSampler)
    orders = []
    for epoch in (0, 1):
        loader.sampler.set_epoch(epoch)
        orders.append(list(loader.sampler))
    assert sorted(orders[0]) == list(range(len(loader.dataset))) and orders[0] != orders[1]
    torch.manual_seed(3)
    again = _datamodule(tmp_path).train_dataloader().sampler
    again.set_epoch(1)
    assert list(again) == orders[1]  # the same run seed and epoch: the same order


# ---- ImageNet: transforms -----------------------------------------------------------------------------------


def test_crop_pct_scale_and_bicubic_resampling_follow_timm(tmp_path):
    write_imagefolder(tmp_path)
    dm = _datamodule(tmp_path, crop_pct=0.95, crop_scale=[0.2, 1.0], interpolation="bicubic")
    resize, crop = dm.test_set.transform.transforms[:2]
    assert resize.size == math.floor(32 / 0.95) == 33 and crop.size == (32, 32)
    assert resize.interpolation == tv.InterpolationMode.BICUBIC
    train_crop = dm.train_set.transform.transforms[0]
    assert isinstance(train_crop, tv.RandomResizedCrop) and train_crop.scale == (0.2, 1.0)
    assert train_crop.interpolation == tv.InterpolationMode.BICUBIC
    full = ImageNetDataModule(root=str(tmp_path), size=224, num_classes=2, crop_pct=0.95)
    assert full.transforms(train=False).transforms[0].size == 235  # the official evaluation: 235 -> 224
    default = ImageNetDataModule(root=str(tmp_path), size=224, num_classes=2)
    assert default.transforms(train=False).transforms[0].size == 256
    x, _ = dm.test_set[0]
    assert x.shape == (3, 32, 32)


def test_timm_randaugment_policy_and_colour_jitter_run_on_the_training_images(tmp_path):
    from timm.data.auto_augment import RandAugment

    write_imagefolder(tmp_path)
    dm = _datamodule(tmp_path, auto_augment="rand-m5-mstd0.5-inc1", color_jitter=0.4, interpolation="bicubic")
    steps = dm.train_set.transform.transforms
    assert [type(t).__name__ for t in steps] == ["RandomResizedCrop", "RandomHorizontalFlip", "RandAugment",
                                                "ColorJitter", "ToTensor", "Normalize"]
    policy = steps[2]
    assert isinstance(policy, RandAugment) and policy.num_layers == 2
    assert {op.magnitude for op in policy.ops} == {5} and {op.magnitude_std for op in policy.ops} == {0.5}
    assert policy.ops[0].hparams["translate_const"] == int(32 * 0.45)
    assert steps[3].brightness == (0.6, 1.4) and steps[3].contrast == (0.6, 1.4) and steps[3].saturation == (0.6, 1.4)
    torch.manual_seed(0)
    x, y = dm.train_set[0]
    assert x.shape == (3, 32, 32) and torch.isfinite(x).all()
    assert [type(t).__name__ for t in dm.test_set.transform.transforms] == ["Resize", "CenterCrop", "ToTensor",
                                                                           "Normalize"]


def test_two_randaugments_or_an_unknown_resampling_are_refused(tmp_path):
    with pytest.raises(ValueError, match="choose one"):
        write_imagefolder(tmp_path)
        _datamodule(tmp_path, randaugment=True, auto_augment="rand-m9-mstd0.5-inc1")
    with pytest.raises(ValueError, match="data.interpolation must be one of nearest, bilinear, bicubic"):
        ImageNetDataModule(root=str(tmp_path), interpolation="random")


# ---- ImageNet: mixing probability ---------------------------------------------------------------------------


def test_the_datamodule_passes_mixup_prob_to_its_training_batches(tmp_path):
    write_imagefolder(tmp_path)
    dm = _datamodule(tmp_path, mixup=0.2, cutmix=1.0, mixup_prob=0.0)
    x, y = next(iter(dm.train_dataloader()))
    assert y.shape == (4, 2) and set(y.flatten().tolist()) <= {0.0, 1.0}
    assert dm.train_collate.prob == 0.0
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ImageNetDataModule(root=str(tmp_path), num_classes=2, mixup=0.2, mixup_prob=1.5)
