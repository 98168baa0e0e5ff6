"""The value every snnexp model returns."""

from dataclasses import dataclass, field

import torch


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
    taps: dict[str, torch.Tensor] = field(default_factory=dict)
    aux: dict[str, torch.Tensor] = field(default_factory=dict)
