"""3x3 stride-2 convolutions whose CPU backward runs as im2col matrix products (:mod:`snnexp.kernels.strided_conv`),
switched on per model.

:func:`use_im2col_backward` turns every ``nn.Conv2d`` of a model with a 3x3 kernel, stride 2 and padding 1 (no
dilation or groups, zero padding) into a :class:`Stride2Conv2d`: the same module with the same parameters and state
dict. Its forward is torch's convolution; its backward takes the im2col path where
:func:`snnexp.kernels.strided_conv.supports` says so (float32 CPU inputs, enough channels) and torch's everywhere
else.
"""

from __future__ import annotations

import torch
from torch import nn

from snnexp.kernels import strided_conv
from snnexp.models.layers import retype


class Stride2Conv2d(nn.Conv2d):
    """An ``nn.Conv2d`` (3x3, stride 2, padding 1) whose float32 CPU backward is two matrix products over im2col
    columns."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return strided_conv.conv3x3_stride2(x, self.weight, self.bias)  # torch's backward where it does not apply


def convertible(module: nn.Module) -> bool:
    """Whether ``module`` is a plain ``nn.Conv2d`` with a 3x3 kernel, stride 2 and padding 1."""
    return (type(module) is nn.Conv2d and module.kernel_size == (3, 3) and module.stride == (2, 2)
            and module.padding == (1, 1) and module.dilation == (1, 1) and module.groups == 1
            and module.padding_mode == "zeros")


def use_im2col_backward(model: nn.Module) -> int:
    """Turn ``model``'s convertible convolutions into :class:`Stride2Conv2d` in place; returns how many."""
    return retype(model, convertible, Stride2Conv2d)
