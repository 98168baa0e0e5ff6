"""Taps for the methods that read intermediate features (SML branches, shortcut heads, contrastive
projections): probing a model's tap shapes, the default tap choice, pooling a tap to ``[B, C]``."""

from __future__ import annotations

import torch
from torch import nn

from snnexp.errors import IncompatibleError
from snnexp.models.layers import all_taps


def probe_taps(model: nn.Module, datamodule, batch: int = 2, T: int = 1) -> dict[str, tuple[int, ...]]:
    """Shape ``[T, B, ...]`` of every tap of ``model``, from one forward pass on zeros ``[T, batch, *input_shape]``
    (no gradient, eval mode)."""
    x = torch.zeros(T, batch, *datamodule.input_shape)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), all_taps(model):
            out = model(x)
    finally:
        model.train(was_training)
    return {name: tuple(t.shape) for name, t in out.taps.items()}


def stage_taps(shapes: dict[str, tuple[int, ...]]) -> list[str]:
    """The intermediate taps in forward order: every tap but ``features`` (the classifier's input)."""
    return [name for name in shapes if name != "features"]


def taps_at_fractions(stages: list[str], fractions: tuple[float, ...]) -> list[str]:
    """Stage taps at the given fractions of the depth, deduplicated, never the last stage (it feeds the
    classifier); e.g. fractions (3/8, 6/8) of ResNet-18's four stages give layer2 and layer3."""
    n = len(stages)
    picked = []
    for f in fractions:
        i = min(max(1, round(f * n)), n - 1)  # 1-based position, last stage excluded
        if i >= 1 and stages[i - 1] not in picked:
            picked.append(stages[i - 1])
    return picked


def resolve_taps(method: str, requested, shapes: dict[str, tuple[int, ...]], fractions, model: nn.Module) -> list[str]:
    """The taps a method uses: ``requested`` (checked against the model) or the default at ``fractions``."""
    available = stage_taps(shapes)
    if requested is not None:
        taps = list(requested)
        missing = [t for t in taps if t not in shapes]
        if missing or not taps:
            raise IncompatibleError(
                f"method={method} reads the taps {taps} but model {type(model).__name__} exposes "
                f"{list(shapes)}; set method.taps to some of them"
            )
        return taps
    taps = taps_at_fractions(available, fractions)
    if not taps:
        raise IncompatibleError(
            f"method={method} needs intermediate feature taps (stage outputs) before the classifier, but model "
            f"{type(model).__name__} exposes only {list(shapes) or 'none'}; use a model with stages "
            "(e.g. model=resnet19, vggsnn or convnet)"
        )
    return taps


def pooled(tap: torch.Tensor) -> torch.Tensor:
    """Time mean of a tap ``[T, B, C, *positions]``, then the mean over its positions (pixels, tokens, points):
    ``[B, C]``. Taps are channels-first in every model (:class:`snnexp.models.output.ModelOutput`)."""
    x = tap.mean(0)
    return x.flatten(2).mean(2) if x.dim() > 2 else x


def channels_of(shape: tuple[int, ...]) -> int:
    """Channels ``C`` of a tap shape ``[T, B, C, *positions]``: the width of :func:`pooled`'s output."""
    return int(shape[2])
