"""Stride-2 convolutions whose CPU passes run as im2col matrix products (:mod:`snnexp.kernels.strided_conv`),
switched on per model.

:func:`use_im2col_backward` turns every ``nn.Conv2d`` of a model with stride 2 and either a 3x3 kernel and padding 1
or a 1x1 kernel and no padding (no dilation or groups, zero padding) into a :class:`Stride2Conv2d`: the same module
with the same parameters and state dict. A 3x3 one keeps torch's forward and takes the im2col backward; a 1x1 one
(a ResNet shortcut) runs both passes as products on its even pixels; each where
:func:`snnexp.kernels.strided_conv.supports` says so (float32 CPU inputs, enough channels), torch's everywhere else.
A run turns its 3x3 ones into Winograd's first (:mod:`snnexp.models.winograd`, ``winograd: true``), whose stride-2 calls
without whole tiles take the same im2col backward; those left here are the 3x3 ones of a run with ``winograd: false``.
"""

from __future__ import annotations

import torch
from torch import nn

from snnexp.kernels import strided_conv
from snnexp.models.layers import retype


class Stride2Conv2d(nn.Conv2d):
    """An ``nn.Conv2d`` (3x3 with padding 1, or 1x1; stride 2) whose float32 CPU passes are matrix products over
    im2col columns: the backward for 3x3, both passes for 1x1."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # torch's convolution where the products do not apply
        if self.kernel_size == (1, 1):
            return strided_conv.conv1x1_stride2(x, self.weight, self.bias)
        return strided_conv.conv3x3_stride2(x, self.weight, self.bias)


def convertible(module: nn.Module) -> bool:
    """Whether ``module`` is a plain ``nn.Conv2d`` with stride 2 and a 3x3 kernel with padding 1 or a 1x1 one."""
    if type(module) is not nn.Conv2d:
        return False
    return ((module.kernel_size, module.padding) in (((3, 3), (1, 1)), ((1, 1), (0, 0))) and module.stride == (2, 2)
            and module.dilation == (1, 1) and module.groups == 1 and module.padding_mode == "zeros")


def use_im2col_backward(model: nn.Module) -> int:
    """Turn ``model``'s convertible convolutions into :class:`Stride2Conv2d` in place; returns how many."""
    return retype(model, convertible, Stride2Conv2d)
