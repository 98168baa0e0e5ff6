"""Augmentations of event frames ``[T, P, H, W]``."""

from __future__ import annotations

import torch


class TETAugment:
    """TET's CIFAR10-DVS training augmentation (Deng et al., ICLR 2022, ``data_loaders.DVSCifar10``).

    With probability ``flip_p`` flip horizontally (the W axis), then roll H and W circularly by integers drawn
    uniformly from ``[-max_shift, max_shift]``. One flip decision and one shift per sample, the same for every
    time step, so motion stays coherent. Draws from torch's generator, which the DataLoader seeds per worker.
    """

    def __init__(self, flip_p: float = 0.5, max_shift: int = 5):
        self.flip_p = flip_p
        self.max_shift = max_shift

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        if torch.rand(()) < self.flip_p:
            frames = frames.flip(-1)
        dh, dw = torch.randint(-self.max_shift, self.max_shift + 1, (2,)).tolist()
        return torch.roll(frames, shifts=(dh, dw), dims=(-2, -1))

    def __repr__(self) -> str:
        return f"TETAugment(flip_p={self.flip_p}, max_shift={self.max_shift})"


def image_augment_steps(randaugment: bool, random_erasing: float) -> tuple[list, list]:
    """Extra per-image training steps for static images, as timm's ``create_transform`` places them:
    RandAugment (2 ops, magnitude 9) on the PIL image, random erasing (probability ``random_erasing``) on the
    normalised tensor. Returns ``(before_to_tensor, after_normalise)`` lists of torchvision transforms."""
    from torchvision import transforms as tv

    before = [tv.RandAugment(num_ops=2, magnitude=9)] if randaugment else []
    after = [tv.RandomErasing(p=random_erasing, value="random")] if random_erasing > 0 else []
    return before, after


class MixUpCutMix:
    """Batch-level MixUp (Zhang et al., ICLR 2018) and CutMix (Yun et al., ICCV 2019) through
    ``torchvision.transforms.v2``: each batch gets one of the enabled two with equal chance (timm's switch
    probability 0.5). Targets become class probabilities ``[B, C]``, which the methods' cross-entropy accepts.
    Used as a collate function: ``collate(samples) -> (mixed images, soft targets)``.
    """

    def __init__(self, num_classes: int, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0):
        from torchvision.transforms import v2

        choices = []
        if mixup_alpha > 0:
            choices.append(v2.MixUp(alpha=mixup_alpha, num_classes=num_classes))
        if cutmix_alpha > 0:
            choices.append(v2.CutMix(alpha=cutmix_alpha, num_classes=num_classes))
        if not choices:
            raise ValueError("MixUpCutMix needs mixup_alpha > 0 or cutmix_alpha > 0")
        self.transform = v2.RandomChoice(choices)

    def __call__(self, samples):
        from torch.utils.data import default_collate

        images, labels = default_collate(samples)
        return self.transform(images, labels)
