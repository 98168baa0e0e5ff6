"""The value every snnexp model returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


class Taps(dict):
    """A model's taps as its forward records them: a name outside ``kept`` (None: every name) is dropped as it comes,
    so a feature map that no method reads is freed once the next layer has used it instead of living to the end of
    the forward (ResNet-19's stage outputs at T=8: 112 MiB at a training step's peak; VGGSNN keeps every layer's)."""

    def __init__(self, kept: frozenset[str] | None = None):
        super().__init__()
        self.kept = kept

    def __setitem__(self, name: str, value: torch.Tensor) -> None:
        if self.kept is None or name in self.kept:
            super().__setitem__(name, value)

    def __missing__(self, name: str):
        raise KeyError(f"the tap {name!r} was not kept in this forward: a training run keeps only the taps its "
                       f"method declares in taps_read() (kept: {sorted(self.kept or ())}); a method that reads "
                       f"{name!r} must list it there")


@dataclass
class ModelOutput:
    """What a model returns.

    logits: per-time-step class scores ``[T, B, C]`` (methods such as TET need every step).
    taps:   named intermediate features, e.g. each stage's output and ``"features"``, the pre-classifier
            feature; methods that distil or add auxiliary heads read them. One layout for every model, channels
            first: ``[T, B, C, *positions]`` (positions: ``H, W`` of a feature map, ``N`` tokens or points, or none
            for a feature vector ``[T, B, C]``); ``snnexp.training.taps`` pools them accordingly.
    aux:    named auxiliary outputs a method may add to its loss (e.g. PointNet's feature transform).
    """

    logits: torch.Tensor
    taps: dict[str, torch.Tensor] = field(default_factory=Taps)
    aux: dict[str, torch.Tensor] = field(default_factory=dict)
