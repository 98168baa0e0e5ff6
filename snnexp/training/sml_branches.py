"""The ANN branches of Surrogate Module Learning (Deng, Lin, Li, Gu; ICML 2023): each reads the time mean of one
tap ``[T, B, C, *positions]`` and predicts the class. Used by :mod:`snnexp.methods.sml`.

* :func:`conv_branch`, for feature maps ``[T, B, C, H, W]`` (the ResNet-18 demo's branch, sized to each tap):
  Conv k7 s2 -> Conv k5 s2 -> Conv k3 s1, each ``width`` channels with BN and LeakyReLU(0.01) ->
  AdaptiveAvgPool 2x2 -> FC(4 * width -> hidden) -> BN -> LeakyReLU -> FC(hidden -> classes). Our
  simplifications: a stride-2 conv keeps stride 1 once the map is below 4 px, and a kernel is capped at the
  smallest odd size covering the map.
* :func:`mlp_branch`, for tokens/points ``[T, B, C, N]`` or vectors ``[T, B, C]``: the FC part alone, after the
  mean over the positions (ours).
* :class:`MixerBranch`, for tokens ``[T, B, C, N]``: the official STMixer demo's surrogate module
  (brain-intelligence-lab/STMixer_demo, ``SurrogateModule``), a non-spiking mixer encoder: Conv1d 1x1 (C -> C,
  no bias) -> BN -> GELU, then ``layers`` STMixer blocks whose neurons are GELUs (x += TokenMixer(x);
  x += FFN(x), ratio 4), mean over tokens, Linear -> classes; Conv1d and Linear weights Kaiming-normal
  (fan_out). The official module groups its ``[T*B]`` input as ``[B, T]`` before the time mean while the
  network is ``[T, B]``-major; the demo trains at T = 1, where the two agree. Here the mean is over T.
"""

from __future__ import annotations

import torch
from torch import nn

from snnexp.models.layers import SeqToBatch
from snnexp.models.stmixer import Block


def conv_branch(channels: int, size: int, num_classes: int, width: int = 256, hidden: int = 512) -> nn.Module:
    """The ResNet-18 demo's branch for a ``channels``-channel map of (smallest) side ``size``; input ``[B, C, H, W]``."""
    layers = []
    for kernel, stride in ((7, 2), (5, 2), (3, 1)):
        kernel = min(kernel, 2 * ((size - 1) // 2) + 1 if size > 1 else 1)
        stride = stride if size >= 4 else 1
        layers += [nn.Conv2d(channels, width, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(width),
                   nn.LeakyReLU(0.01)]
        channels, size = width, (size + 2 * (kernel // 2) - kernel) // stride + 1
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(2), nn.Flatten(1), nn.Linear(4 * width, hidden),
                         nn.BatchNorm1d(hidden), nn.LeakyReLU(0.01), nn.Linear(hidden, num_classes))


class PositionMean(nn.Module):
    """``[B, C, *positions] -> [B, C]``: the mean over every axis after the channels (none for ``[B, C]``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(2).mean(2) if x.dim() > 2 else x


def mlp_branch(channels: int, num_classes: int, hidden: int = 512) -> nn.Module:
    """Mean over the positions -> FC(C -> hidden) -> BN -> LeakyReLU(0.01) -> FC(hidden -> classes)."""
    return nn.Sequential(PositionMean(), nn.Linear(channels, hidden), nn.BatchNorm1d(hidden), nn.LeakyReLU(0.01),
                         nn.Linear(hidden, num_classes))


class MixerBranch(nn.Module):
    """The official STMixer surrogate module (see the module docstring); input ``[B, C, N]``."""

    def __init__(self, channels: int, tokens: int, num_classes: int, heads: int, layers: int):
        super().__init__()
        self.proj = SeqToBatch(nn.Sequential(nn.Conv1d(channels, channels, 1, bias=False), nn.BatchNorm1d(channels),
                                             nn.GELU()))
        self.blocks = nn.Sequential(*[Block(channels, tokens, heads, 4.0, nn.GELU) for _ in range(layers)])
        self.head = nn.Linear(channels, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv1d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.proj(x.unsqueeze(0)))  # the blocks run on time-major [1, B, C, N]
        return self.head(x[0].mean(-1))


def mixer_depths(count: int) -> list[int]:
    """Encoder layers of the official STMixer branches, shallowest tap first: ``max(L - i, 1)`` for branch i, with
    ``L = min(3, count)`` (the demo's 3, 2, 1, 1, 1 for depth 10; 1 for depth 2)."""
    top = min(3, count)
    return [max(top - i, 1) for i in range(count)]
