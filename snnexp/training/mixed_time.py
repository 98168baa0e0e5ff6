"""MTT's communication module: converts a spike sequence from one number of time steps to another between stages.

With ``n = min(T_in, T_out)`` and ``m = max(T_in, T_out)``, the ``m`` steps of the longer side are cut into
``n`` contiguous groups with boundaries

    b_k = round_half_down(k * m / n),   k = 0..n        (b_0 = 0, b_n = m),   group k = [b_k, b_{k+1})

(the official code's ``round(k*m/n - 1e-5)``; for any T the groups differ in size by at most one step, so a
T that does not divide the other is handled). Then

    expand   (T_in < T_out):  y[t] = x[k]                      for every t in group k   (repeat step k)
    contract (T_in > T_out):  y[k] = sum_{t in group k} x[t]                            (sum the group)

E.g. 2 -> 4: [x0, x0, x1, x1]; 4 -> 2: [x0 + x1, x2 + x3]; 2 -> 3: [x0, x1, x1]; 3 -> 2: [x0, x1 + x2].
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn


def group_index(fewer: int, more: int) -> list[int]:
    """For each of the ``more`` steps of the longer side, the index (0..fewer-1) of the group it belongs to."""
    if not 1 <= fewer <= more:
        raise ValueError(f"need 1 <= fewer <= more, got fewer={fewer}, more={more}")
    # round_half_down(k*m/n) = floor((2*k*m + n - 1) / (2*n)), exactly, in integers
    bounds = [(2 * k * more + fewer - 1) // (2 * fewer) for k in range(fewer + 1)]
    return [k for k in range(fewer) for _ in range(bounds[k], bounds[k + 1])]


def convert_time(x: torch.Tensor, out_T: int) -> torch.Tensor:
    """Map a time-major sequence ``x [T_in, B, ...]`` to ``[out_T, B, ...]`` (repeat to expand, sum to contract)."""
    in_T = x.shape[0]
    if in_T == out_T:
        return x
    if in_T < out_T:
        index = torch.tensor(group_index(in_T, out_T), device=x.device)
        return x.index_select(0, index)
    index = torch.tensor(group_index(out_T, in_T), device=x.device)
    return x.new_zeros((out_T, *x.shape[1:])).index_add(0, index, x)


class MixedTimeStage(nn.Sequential):
    """A stage (``nn.Sequential``) that first converts its input to ``self.T`` steps with :func:`convert_time`.

    ``T = None`` (the default, and always outside an MTT training step) keeps the incoming number of steps, so
    the network runs at the encoder's T. Built from the stage's own children, so parameter names
    (``stages.layer1.0.conv1...``) stay those of the unwrapped model and checkpoints remain interchangeable.
    """

    def __init__(self, stage: nn.Sequential):
        super().__init__(OrderedDict(stage.named_children()))
        self.T: int | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.T is not None:
            x = convert_time(x, self.T)
        return super().forward(x)

    def extra_repr(self) -> str:
        return f"T={self.T}"
