"""Static image datasets through torchvision: CIFAR-10, CIFAR-100 and ImageNet. Batches ``[B, 3, H, W]``; the
model's input encoder repeats them over T.

CIFAR reads the python pickle batches (``cifar-10-batches-py/`` or ``cifar-100-python/`` under ``root``) with
torchvision's own reader. Validation is the test set, as in TET and the other papers reproduced here (there
is no official CIFAR validation split): report the last epoch, not the best validation epoch.
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import torchvision
from torch.utils.data import DataLoader, DistributedSampler
from torchvision import transforms as tv
from torchvision.datasets.utils import check_md5

from snnexp.data.augment import MixUpCutMix, image_augment_steps
from snnexp.data.base import SNNDataModule
from snnexp.errors import CorruptFileError, SnnexpError, dataset_not_found

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)  # TET's values
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


INTERPOLATIONS = ("nearest", "bilinear", "bicubic")


class ImageAugmentMixin:
    """Training augmentations shared by the static image datamodules beyond their geometric ones: torchvision's
    RandAugment or a timm policy (``auto_augment``), colour jitter, random erasing (per image) and MixUp/CutMix
    (per batch, applied with probability ``mixup_prob``; targets become probabilities). See
    :func:`snnexp.data.augment.image_augment_steps`."""

    def set_image_augment(self, randaugment: bool, random_erasing: float, mixup: float, cutmix: float,
                          mixup_prob: float = 1.0, auto_augment: str | None = None, color_jitter: float = 0.0,
                          interpolation: str = "bilinear") -> None:
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"data.interpolation must be one of {', '.join(INTERPOLATIONS)}; got {interpolation!r}")
        self.randaugment, self.random_erasing, self.mixup, self.cutmix = randaugment, random_erasing, mixup, cutmix
        self.mixup_prob, self.auto_augment, self.color_jitter = mixup_prob, auto_augment, color_jitter
        self.interpolation = interpolation
        if mixup > 0 or cutmix > 0:
            self.train_collate = MixUpCutMix(self.num_classes, mixup_alpha=mixup, cutmix_alpha=cutmix, prob=mixup_prob)

    def compose(self, steps: list, train: bool, mean, std):
        before, after = ([], [])
        if train:
            before, after = image_augment_steps(self.randaugment, self.random_erasing, self.auto_augment,
                                                self.color_jitter, self.input_shape[-1], mean, self.interpolation)
        return tv.Compose(steps + before + [tv.ToTensor(), tv.Normalize(mean, std)] + after)


class _CIFAR10Reader(torchvision.datasets.CIFAR10):
    """torchvision's CIFAR-10 reader with a presence-only integrity check (an md5 of ``None`` makes
    ``check_integrity`` test that the file exists). The datamodule verifies the md5 sums itself beforehand,
    so that it can name the file that fails; reading stays torchvision's."""

    train_list = [[name, None] for name, _ in torchvision.datasets.CIFAR10.train_list]
    test_list = [[name, None] for name, _ in torchvision.datasets.CIFAR10.test_list]
    meta = {**torchvision.datasets.CIFAR10.meta, "md5": None}


class _CIFAR100Reader(torchvision.datasets.CIFAR100):
    """Same as ``_CIFAR10Reader`` for CIFAR-100."""

    train_list = [[name, None] for name, _ in torchvision.datasets.CIFAR100.train_list]
    test_list = [[name, None] for name, _ in torchvision.datasets.CIFAR100.test_list]
    meta = {**torchvision.datasets.CIFAR100.meta, "md5": None}


class CIFAR10DataModule(ImageAugmentMixin, SNNDataModule):
    """CIFAR-10, 32x32 RGB, 10 classes, TET's augmentation (RandomCrop 32 pad 4, horizontal flip) and
    normalisation. ``verify_md5`` checks every batch file against torchvision's published md5 sums (on by
    default; a mismatch raises ``CorruptFileError`` naming the file)."""

    name = "cifar10"
    display_name = "CIFAR-10"
    num_classes = 10
    input_shape = (3, 32, 32)
    time_steps = None
    torchvision_class = torchvision.datasets.CIFAR10
    reader_class = _CIFAR10Reader
    url = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"

    def __init__(
        self,
        root: str = "data/cifar10",
        augment: bool = True,
        download: bool = False,
        verify_md5: bool = True,
        randaugment: bool = False,
        auto_augment: str | None = None,
        color_jitter: float = 0.0,
        random_erasing: float = 0.0,
        mixup: float = 0.0,
        cutmix: float = 0.0,
        mixup_prob: float = 1.0,
        interpolation: str = "bilinear",
        batch_size: int = 128,
        num_workers: int = 0,
        pin_memory: bool = False,
    ):
        super().__init__(batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory)
        self.set_image_augment(randaugment, random_erasing, mixup, cutmix, mixup_prob, auto_augment, color_jitter,
                               interpolation)
        root = Path(root).expanduser()
        # accept root pointing at the batches folder itself
        self.root = root.parent if root.name == self.torchvision_class.base_folder else root
        self.augment, self.download, self.verify_md5 = augment, download, verify_md5

    @property
    def folder(self) -> Path:
        return self.root / self.torchvision_class.base_folder

    def files(self) -> list[tuple[str, str]]:
        """``(file name, md5)`` of every file torchvision reads."""
        cls = self.torchvision_class
        return [tuple(f) for f in cls.train_list + cls.test_list] + [(cls.meta["filename"], cls.meta["md5"])]

    def check(self) -> None:
        """Raise ``DatasetNotFoundError`` if a file is missing, ``CorruptFileError`` if one fails its md5."""
        missing = [name for name, _ in self.files() if not (self.folder / name).is_file()]
        if missing:
            looked_for = f"{self.folder}/{{{','.join(n for n, _ in self.files())}}}; missing {', '.join(missing)}"
            raise dataset_not_found(self.display_name, self.root, looked_for, self.url)
        if self.verify_md5:
            for name, md5 in self.files():
                if not check_md5(str(self.folder / name), md5):
                    raise CorruptFileError(
                        f"{self.folder / name} does not match the md5 sum of the official {self.display_name} file; "
                        f"download it again from {self.url} (or set data.verify_md5=false for a re-packed copy)"
                    )

    def prepare_data(self) -> None:
        if self.download:
            self.torchvision_class(str(self.root), train=True, download=True)
        self.check()

    def transforms(self, train: bool):
        steps = [tv.RandomCrop(32, padding=4), tv.RandomHorizontalFlip()] if (train and self.augment) else []
        return self.compose(steps, train, CIFAR_MEAN, CIFAR_STD)

    def setup(self, stage: str | None = None) -> None:
        self.check()
        reader = self.reader_class
        try:
            self.train_set = reader(str(self.root), train=True, transform=self.transforms(train=True))
            self.test_set = reader(str(self.root), train=False, transform=self.transforms(train=False))
        except (pickle.UnpicklingError, EOFError, KeyError, ValueError) as err:
            raise CorruptFileError(
                f"cannot read {self.display_name} batches in {self.folder}: {type(err).__name__}: {err}"
            ) from err
        self.val_set = self.test_set


class CIFAR100DataModule(CIFAR10DataModule):
    """CIFAR-100 (fine labels), 100 classes, same augmentation and normalisation as CIFAR-10 (as TET)."""

    name = "cifar100"
    display_name = "CIFAR-100"
    num_classes = 100
    torchvision_class = torchvision.datasets.CIFAR100
    reader_class = _CIFAR100Reader
    url = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"

    def __init__(self, root: str = "data/cifar100", **kwargs):
        super().__init__(root=root, **kwargs)


class ImageNetDataModule(ImageAugmentMixin, SNNDataModule):
    """ImageNet-1k in the ImageFolder layout ``root/train/<wnid>/*.JPEG`` and ``root/val/<wnid>/*.JPEG``.

    Train: RandomResizedCrop(size, scale=crop_scale) + horizontal flip (+ the augmentations of
    :class:`ImageAugmentMixin`); evaluation: Resize + CenterCrop(size), the resize to ``size * 256 / 224`` (rounded)
    or, with ``crop_pct``, to ``floor(size / crop_pct)`` as timm; both resample with ``interpolation``. ImageNet
    mean/std. Validation = the official val set, which is also the test set (ImageNet's test labels are not
    public). ``num_classes`` is a parameter so a subset (e.g. ImageNet-100) can use the same module.

    ``repeated_aug=k`` (k > 1): repeated augmentation (Hoffer et al., CVPR 2020; DeiT) through timm's
    ``RepeatAugSampler``: each epoch draws ``len/k`` images (rounded down to a multiple of 256 when there are
    that many) and shows each ``k`` times under different augmentations, spread over the processes of a DDP run
    (each process sees ``len / world_size`` samples an epoch). The shuffle depends on the epoch only.
    """

    name = "imagenet"
    display_name = "ImageNet"
    time_steps = None
    url = "https://image-net.org/download-images.php"

    def __init__(
        self,
        root: str = "data/imagenet",
        size: int = 224,
        num_classes: int = 1000,
        augment: bool = True,
        crop_scale: tuple[float, float] = (0.08, 1.0),
        crop_pct: float | None = None,
        interpolation: str = "bilinear",
        randaugment: bool = False,
        auto_augment: str | None = None,
        color_jitter: float = 0.0,
        random_erasing: float = 0.0,
        mixup: float = 0.0,
        cutmix: float = 0.0,
        mixup_prob: float = 1.0,
        repeated_aug: int = 0,
        batch_size: int = 64,
        num_workers: int = 0,
        pin_memory: bool = False,
    ):
        super().__init__(batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory)
        self.root = Path(root).expanduser()
        self.size, self.num_classes, self.augment = size, num_classes, augment
        self.crop_scale, self.crop_pct, self.repeated_aug = tuple(crop_scale), crop_pct, repeated_aug
        self.input_shape = (3, size, size)
        self.set_image_augment(randaugment, random_erasing, mixup, cutmix, mixup_prob, auto_augment, color_jitter,
                               interpolation)

    def check(self) -> None:
        missing = [
            s for s in ("train", "val") if not (self.root / s).is_dir() or next((self.root / s).iterdir(), None) is None
        ]
        if missing:
            raise dataset_not_found(
                self.display_name, self.root, "train/<class>/*.JPEG and val/<class>/*.JPEG", self.url
            )

    def prepare_data(self) -> None:
        self.check()

    def transforms(self, train: bool):
        mode = tv.InterpolationMode(self.interpolation)
        if train and self.augment:
            steps = [tv.RandomResizedCrop(self.size, scale=self.crop_scale, interpolation=mode),
                     tv.RandomHorizontalFlip()]
        else:
            resize = int(round(self.size * 256 / 224)) if self.crop_pct is None else math.floor(self.size / self.crop_pct)
            steps = [tv.Resize(resize, interpolation=mode), tv.CenterCrop(self.size)]
        return self.compose(steps, train, IMAGENET_MEAN, IMAGENET_STD)

    def train_dataloader(self) -> DataLoader:
        if self.repeated_aug <= 1:
            return super().train_dataloader()
        trainer = self.trainer
        replicas, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        sampler = RepeatedAugSampler(self.train_set, self.repeated_aug, num_replicas=replicas, rank=rank)
        return DataLoader(self.train_set, batch_size=self.batch_size, sampler=sampler, num_workers=self.num_workers,
                          pin_memory=self.pin_memory, collate_fn=self.train_collate or self.collate_fn,
                          persistent_workers=self.num_workers > 0, drop_last=False)

    def setup(self, stage: str | None = None) -> None:
        self.check()
        self.train_set = torchvision.datasets.ImageFolder(
            str(self.root / "train"), transform=self.transforms(train=True)
        )
        self.test_set = torchvision.datasets.ImageFolder(str(self.root / "val"), transform=self.transforms(train=False))
        if len(self.train_set.classes) != self.num_classes:
            raise SnnexpError(
                f"{self.display_name} under {self.root} has {len(self.train_set.classes)} class folders in train/, "
                f"but the config says {self.num_classes}: set data.num_classes={len(self.train_set.classes)}"
            )
        self.val_set = self.test_set


class RepeatedAugSampler(DistributedSampler):
    """timm's ``RepeatAugSampler`` (repeated augmentation) for this process of ``num_replicas``.

    A ``DistributedSampler`` by type, so Lightning keeps it under DDP instead of putting its own distributed sampler
    in its place (the sampler already gives this process its share); Lightning calls ``set_epoch`` every epoch.
    """

    def __init__(self, dataset, num_repeats: int, num_replicas: int = 1, rank: int = 0):
        from timm.data.distributed_sampler import RepeatAugSampler

        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True)
        self.repeats = RepeatAugSampler(dataset, num_replicas=num_replicas, rank=rank, shuffle=True,
                                        num_repeats=num_repeats)

    def __iter__(self):
        return iter(self.repeats)

    def __len__(self) -> int:
        return len(self.repeats)

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.repeats.set_epoch(epoch)
