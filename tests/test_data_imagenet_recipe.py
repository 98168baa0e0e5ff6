"""The ImageNet datamodule's options for the Spike-driven Transformer recipe (timm's training pipeline): repeated
augmentation, evaluation crop_pct, crop scale and resampling, timm RandAugment policies, colour jitter and the
probability of mixing a batch. On a tiny ImageFolder written here."""

import math
import types

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DistributedSampler
from torchvision import transforms as tv

from snnexp.data import ImageNetDataModule
from snnexp.data.augment import MixUpCutMix
from snnexp.data.vision import RepeatedAugSampler


def write_imagefolder(root, classes=("n01440764", "n01443537"), per_class=3):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(
                    root / split / c / f"{i}.JPEG", format="JPEG")


def _datamodule(root, **options):
    dm = ImageNetDataModule(root=str(root), size=32, num_classes=2, batch_size=4, **options)
    dm.setup()
    return dm


def _repeated(epoch, n, repeats):
    """Each image of an epoch's permutation (seeded by the epoch) ``repeats`` times in a row."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(epoch)).tolist()
    return [i for i in order for _ in range(repeats)]


# ---- repeated augmentation ----------------------------------------------------------------------------------------


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
    plain = _datamodule(tmp_path).train_dataloader()  # for contrast: Lightning puts its own sampler in
    assert connector._prepare_dataloader(plain, shuffle=True, mode=RunningStage.TRAINING) is not plain


def test_without_repeats_the_loader_shuffles_as_before(tmp_path):
    write_imagefolder(tmp_path)
    loader = _datamodule(tmp_path).train_dataloader()
    assert isinstance(loader.sampler, torch.utils.data.RandomSampler)


# ---- transforms ---------------------------------------------------------------------------------------------------


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


# ---- mixing probability -------------------------------------------------------------------------------------------


def _samples(n=8, classes=4):
    return [(torch.rand(3, 8, 8), i % classes) for i in range(n)]


def test_mixup_prob_mixes_that_fraction_of_batches():
    torch.manual_seed(0)
    mix = MixUpCutMix(4, mixup_alpha=0.2, cutmix_alpha=1.0, prob=0.6)
    mixed = 0
    for _ in range(500):
        x, y = mix(_samples())
        assert y.shape == (8, 4)
        torch.testing.assert_close(y.sum(-1), torch.ones(8))
        mixed += bool((y.max(-1).values < 1).any())
    assert abs(mixed / 500 - 0.6) < 0.07  # a mixed batch has some non-one-hot target (lambda < 1 almost surely)


def test_an_unmixed_batch_keeps_its_images_and_one_hot_targets():
    samples = _samples()
    x, y = MixUpCutMix(4, mixup_alpha=0.2, prob=0.0)(samples)
    torch.testing.assert_close(x, torch.stack([s[0] for s in samples]))
    torch.testing.assert_close(y, torch.nn.functional.one_hot(torch.tensor([s[1] for s in samples]), 4).float())


def test_the_datamodule_passes_mixup_prob_to_its_training_batches(tmp_path):
    write_imagefolder(tmp_path)
    dm = _datamodule(tmp_path, mixup=0.2, cutmix=1.0, mixup_prob=0.0)
    x, y = next(iter(dm.train_dataloader()))
    assert y.shape == (4, 2) and set(y.flatten().tolist()) <= {0.0, 1.0}
    assert dm.train_collate.prob == 0.0
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ImageNetDataModule(root=str(tmp_path), num_classes=2, mixup=0.2, mixup_prob=1.5)
