"""The value every snnexp model returns."""

from dataclasses import dataclass, field

import torch


@dataclass
class ModelOutput:
    """What a model returns.

    logits: per-time-step class scores ``[T, B, C]`` (methods such as TET need every step).
    taps:   named intermediate features (``[T, B, ...]``), e.g. each stage's output and ``"features"``, the
            pre-classifier feature; methods that distil or add auxiliary heads read them.
    aux:    named auxiliary outputs a method may add to its loss (e.g. PointNet's feature transform).
    """

    logits: torch.Tensor
    taps: dict[str, torch.Tensor] = field(default_factory=dict)
    aux: dict[str, torch.Tensor] = field(default_factory=dict)
