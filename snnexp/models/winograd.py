"""3x3 convolutions by Winograd's algorithms on the CPU (:mod:`snnexp.kernels.winograd`: F(4x4, 3x3) for stride 1,
a polyphase F(3x3, 2x2) for stride 2), switched on per model.

:func:`use_winograd` turns every ``nn.Conv2d`` of a model that can run that way (3x3, stride 1 or 2, padding 1, no
dilation or groups, zero padding) into a :class:`WinogradConv2d`: the same module with the same parameters and
state dict, whose forward takes the Winograd path where :func:`snnexp.kernels.winograd.supports` says it is faster
(float32 CPU inputs, enough channels, ...) and torch's convolution everywhere else.
"""

from __future__ import annotations

import torch
from torch import nn

from snnexp.kernels import winograd
from snnexp.models.layers import retype


class WinogradConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` (3x3, stride 1 or 2, padding 1) that convolves float32 CPU batches by Winograd; a stride-2
    call that Winograd does not take (its output not whole 3x3 tiles, ...) takes the im2col backward."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return winograd.conv3x3(x, self.weight, self.bias, self.stride[0])  # see there for where Winograd applies


def convertible(module: nn.Module) -> bool:
    """Whether ``module`` is a plain ``nn.Conv2d`` that one of the Winograd algorithms computes."""
    return (type(module) is nn.Conv2d and module.kernel_size == (3, 3) and module.stride in ((1, 1), (2, 2))
            and module.padding == (1, 1) and module.dilation == (1, 1) and module.groups == 1
            and module.padding_mode == "zeros")


def use_winograd(model: nn.Module) -> int:
    """Turn ``model``'s convertible convolutions into :class:`WinogradConv2d` in place; returns how many."""
    return retype(model, convertible, WinogradConv2d)
