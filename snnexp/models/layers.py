"""Building blocks shared by every model: time-folding wrapper, input encoders, the spiking-model base.

Layout is time-major: a spiking tensor is ``[T, B, ...]``. Stateless layers (conv, BN, pooling, linear) run
on the folded ``[T*B, ...]`` view (``SeqToBatch``), as in TET (Deng et al., ICLR 2022) and SpikingJelly's
multi-step mode, so BatchNorm statistics pool over time steps and batch alike.
"""

from collections import OrderedDict

import torch
from torch import nn

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


def conv_bn(in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
            bias: bool = False) -> SeqToBatch:
    """Conv2d (padding ``kernel_size // 2``) followed by BatchNorm2d, applied per time step."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=bias)
    return SeqToBatch(nn.Sequential(OrderedDict(conv=conv, bn=nn.BatchNorm2d(out_channels))))


class DirectEncoder(nn.Module):
    """Direct coding: the analog input is fed unchanged at every step, ``[B, ...] -> [T, B, ...]``."""

    def __init__(self, T: int):
        super().__init__()
        self.T = T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(0).repeat(self.T, *([1] * x.ndim))

    def extra_repr(self) -> str:
        return f"T={self.T}"


class PoissonEncoder(nn.Module):
    """Rate (Poisson/Bernoulli) coding: at each step a spike fires with probability ``clamp(x, 0, 1)``."""

    def __init__(self, T: int):
        super().__init__()
        self.T = T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = x.detach().clamp(0, 1).unsqueeze(0).expand(self.T, *x.shape)
        return torch.bernoulli(p)

    def extra_repr(self) -> str:
        return f"T={self.T}"


ENCODERS = {"direct": DirectEncoder, "poisson": PoissonEncoder}


def make_encoder(name: str, T: int) -> nn.Module:
    """Build the input encoder called ``name`` with ``T`` steps."""
    if name not in ENCODERS:
        raise ModelConfigError(
            f"Unknown input encoder {name!r}; valid encoders are {sorted(ENCODERS)} (set model.encoder=...)."
        )
    return ENCODERS[name](_check_T(T))


def _check_T(T) -> int:
    if int(T) != T or T < 1:
        raise ModelConfigError(f"The number of time steps T must be a positive integer, got {T!r}.")
    return int(T)


class SpikingModel(nn.Module):
    """Base of every snnexp model: turns the input into a ``[T, B, ...]`` sequence.

    A static input ``[B, *input_shape]`` goes through the encoder (T steps); a sequence
    ``[T, B, *input_shape]`` (e.g. event frames) is used as is. ``model.T`` sets the encoder's steps, e.g.
    1 for an ANN baseline or many values in a test-time sweep.
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, T: int, encoder: str):
        super().__init__()
        self.input_shape = tuple(int(s) for s in input_shape)
        self.num_classes = int(num_classes)
        self.encoder = make_encoder(encoder, T)

    @property
    def T(self) -> int:
        return self.encoder.T

    @T.setter
    def T(self, value: int) -> None:
        self.encoder.T = _check_T(value)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        n = len(self.input_shape)
        if x.ndim == n + 1:
            return self.encoder(x)
        if x.ndim == n + 2:
            return x
        raise ValueError(
            f"{type(self).__name__} expects a static batch [B, {', '.join(map(str, self.input_shape))}] or a "
            f"sequence [T, B, ...] of it; got a tensor of shape {tuple(x.shape)}."
        )


def image_shape(input_shape, model: str) -> tuple[int, int, int]:
    """Check that ``input_shape`` is ``(C, H, W)``, as the image models need, and return it."""
    if len(input_shape) != 3:
        raise ModelConfigError(
            f"{model} needs image input of shape (C, H, W); the data gives input_shape={tuple(input_shape)}."
        )
    return tuple(int(s) for s in input_shape)
