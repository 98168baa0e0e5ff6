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


def image_augment_steps(randaugment: bool, random_erasing: float, auto_augment: str | None = None,
                        color_jitter: float = 0.0, size: int = 224, mean=(0.485, 0.456, 0.406),
                        interpolation: str = "bilinear") -> tuple[list, list]:
    """Extra per-image training steps for static images, placed as timm's ``create_transform`` places them.

    Before ``ToTensor``, on the PIL image: torchvision's RandAugment (2 ops, magnitude 9) when ``randaugment``;
    timm's policy named by ``auto_augment`` (``rand-m9-mstd0.5-inc1``, ``augmix-...``, ``original``, ...; its
    geometric ops translate by up to 45% of ``size``, fill with ``mean`` and resample with ``interpolation``);
    colour jitter of brightness, contrast and saturation by ``color_jitter`` (a factor in [1 - j, 1 + j]). After
    ``Normalize``: random erasing with probability ``random_erasing``. timm's scripts drop the colour jitter when a
    policy is set; here each step runs when it is asked for. Returns ``(before_to_tensor, after_normalise)``.
    """
    from torchvision import transforms as tv

    if randaugment and auto_augment:
        raise ValueError(f"randaugment=true and auto_augment={auto_augment!r} are two RandAugments; choose one")
    before = [tv.RandAugment(num_ops=2, magnitude=9)] if randaugment else []
    if auto_augment:
        before.append(timm_auto_augment(auto_augment, size, mean, interpolation))
    if color_jitter > 0:
        before.append(tv.ColorJitter(brightness=color_jitter, contrast=color_jitter, saturation=color_jitter))
    after = [tv.RandomErasing(p=random_erasing, value="random")] if random_erasing > 0 else []
    return before, after


def timm_auto_augment(policy: str, size: int, mean, interpolation: str = "bilinear"):
    """timm's augmentation policy ``policy`` (a RandAugment, AugMix or AutoAugment string) with the hyperparameters
    timm's ``transforms_imagenet_train`` gives it."""
    from timm.data.auto_augment import augment_and_mix_transform, auto_augment_transform, rand_augment_transform
    from timm.data.transforms import str_to_pil_interp

    hparams = {"translate_const": int(size * 0.45), "img_mean": tuple(min(255, round(255 * m)) for m in mean),
               "interpolation": str_to_pil_interp(interpolation)}
    if policy.startswith("rand"):
        return rand_augment_transform(policy, hparams)
    if policy.startswith("augmix"):
        return augment_and_mix_transform(policy, {**hparams, "translate_pct": 0.3})
    return auto_augment_transform(policy, hparams)


class MixUpCutMix:
    """Batch-level MixUp (Zhang et al., ICLR 2018) and CutMix (Yun et al., ICCV 2019) through
    ``torchvision.transforms.v2``: a batch is mixed with probability ``prob`` (timm's ``mixup_prob``), by one of the
    enabled two with equal chance (timm's switch probability 0.5). Targets become class probabilities ``[B, C]``
    (one-hot for an unmixed batch), which the methods' cross-entropy accepts. Used as a collate function:
    ``collate(samples) -> (images, soft targets)``. Draws from torch's generator (seeded per worker).
    """

    def __init__(self, num_classes: int, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0, prob: float = 1.0):
        from torchvision.transforms import v2

        choices = []
        if mixup_alpha > 0:
            choices.append(v2.MixUp(alpha=mixup_alpha, num_classes=num_classes))
        if cutmix_alpha > 0:
            choices.append(v2.CutMix(alpha=cutmix_alpha, num_classes=num_classes))
        if not choices:
            raise ValueError("MixUpCutMix needs mixup_alpha > 0 or cutmix_alpha > 0")
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"the mixing probability must be in [0, 1]; got {prob}")
        self.transform = v2.RandomChoice(choices)
        self.num_classes, self.prob = num_classes, prob

    def __call__(self, samples):
        from torch.utils.data import default_collate

        images, labels = default_collate(samples)
        if self.prob < 1.0 and torch.rand(()) >= self.prob:
            return images, torch.nn.functional.one_hot(labels, self.num_classes).to(images.dtype)
        return self.transform(images, labels)
