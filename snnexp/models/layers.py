"""Building blocks shared by every model: the time-folding wrapper, conv + norm, time-shared drop path and the
spiking-model base.

Layout is time-major: a spiking tensor is ``[T, B, ...]``, and a model reads T from its input's first
dimension (static inputs are turned into sequences by ``snnexp.models.encoders``). Stateless layers (conv, BN,
pooling, linear) run on the folded ``[T*B, ...]`` view (``SeqToBatch``), as in TET (Deng et al., ICLR 2022) and
SpikingJelly's multi-step mode, so BatchNorm statistics pool over time steps and batch alike.
"""

import contextlib
from collections import OrderedDict

import timm.layers
import torch
from torch import nn

from snnexp.models.binary import WeightsFn, real_weights
from snnexp.models.norm import NormLayer, batch_norm
from snnexp.models.output import Taps
from snnexp.models.registry import ModelConfigError


class SeqToBatch(nn.Module):
    """Apply a stateless ``module`` to every time step at once: ``[T, B, ...] -> [T*B, ...] -> [T, B, ...]``.

    BatchNorm inside sees all T steps as one batch, so its statistics pool over time (TET, SpikingJelly).
    """

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T, B = x.shape[:2]
        return self.module(x.flatten(0, 1)).unflatten(0, (T, B))


def conv_bn(in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, bias: bool = False, *,
            norm_layer: NormLayer = batch_norm, residual: bool = False,
            weights: WeightsFn = real_weights) -> SeqToBatch:
    """Conv2d (padding ``kernel_size // 2``, built through ``weights``) followed by
    ``norm_layer(out_channels, residual=residual)``, applied per time step."""
    conv = weights(nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=bias))
    return SeqToBatch(nn.Sequential(OrderedDict(conv=conv, bn=norm_layer(out_channels, residual=residual))))


class SeqDropPath(timm.layers.DropPath):
    """Stochastic depth on a residual branch ``[T, B, ...]``, per sample: timm's ``DropPath`` (one draw per entry
    of the first dimension) on the ``[B, T, ...]`` view, so a sample's branch is kept (scaled by
    ``1 / (1 - drop_prob)``) at every time step or dropped at every time step. The identity in eval mode."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.transpose(0, 1)).transpose(0, 1)


def drop_path(rate: float) -> nn.Module:
    """:class:`SeqDropPath` at ``rate``, or ``nn.Identity`` at 0 (timm's convention)."""
    return SeqDropPath(rate) if rate > 0 else nn.Identity()


class SpikingModel(nn.Module):
    """Base of every snnexp model. ``forward(x)`` takes a time-major sequence ``x: [T, B, *input_shape]`` and
    reads T from ``x.shape[0]``; a model holds no T of its own."""

    kept_taps: frozenset[str] | None = None  # the taps its forward records (None: all); see keep_taps

    def __init__(self, input_shape: tuple[int, ...], num_classes: int):
        super().__init__()
        self.input_shape = tuple(int(s) for s in input_shape)
        self.num_classes = int(num_classes)

    def new_taps(self) -> Taps:
        """An empty record of this forward's taps, which keeps only :attr:`kept_taps`."""
        return Taps(self.kept_taps)

    def check_sequence(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` when it has the rank of a sequence ``[T, B, *input_shape]``; else a ``ValueError`` that says how
        to encode a static batch."""
        if x.ndim != len(self.input_shape) + 2:
            shape = ", ".join(map(str, self.input_shape))
            raise ValueError(
                f"{type(self).__name__} takes a time-major sequence [T, B, {shape}] (T is read from its first "
                f"dimension); got a tensor of shape {tuple(x.shape)}. Static inputs [B, {shape}] are encoded into "
                f"[T, B, {shape}] with snnexp.models.encoders (e.g. DirectEncoder()(x, T)), or by calling the "
                f"LightningModule, which encodes them."
            )
        return x


def image_shape(input_shape, model: str) -> tuple[int, int, int]:
    """Check that ``input_shape`` is ``(C, H, W)``, as the image models need, and return it."""
    if len(input_shape) != 3:
        raise ModelConfigError(
            f"{model} needs image input of shape (C, H, W); the data gives input_shape={tuple(input_shape)}."
        )
    return tuple(int(s) for s in input_shape)


def retype(model: nn.Module, convertible, cls: type) -> int:
    """Turn every module of ``model`` for which ``convertible(module)`` holds into ``cls`` in place (a subclass with
    the same parameters and state dict, computing otherwise); returns how many."""
    converted = 0
    for module in model.modules():
        if convertible(module):
            module.__class__ = cls
            converted += 1
    return converted


def keep_taps(model: nn.Module, names) -> None:
    """Make every :class:`SpikingModel` in ``model`` record only the taps ``names`` (None: all of them) from now on."""
    kept = None if names is None else frozenset(names)
    for m in model.modules():
        if isinstance(m, SpikingModel):
            m.kept_taps = kept


@contextlib.contextmanager
def all_taps(model: nn.Module):
    """Every :class:`SpikingModel` in ``model`` records all its taps inside the block (probing their shapes)."""
    saved = [(m, m.kept_taps) for m in model.modules() if isinstance(m, SpikingModel)]
    keep_taps(model, None)
    try:
        yield
    finally:
        for m, kept in saved:
            m.kept_taps = kept

