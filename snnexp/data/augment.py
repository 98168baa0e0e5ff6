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
