"""Threshold-dependent batch normalisation (tdBN), STBP-tdBN (Zheng, Wu, Deng, Hu, Li; AAAI 2021).

    tdBN(x) = lambda * alpha * V_th * (x - mu) / sqrt(sigma^2 + eps) + beta

with statistics over (B, T, H, W): snnexp runs BN on the time-folded ``[T*B, ...]`` view (``SeqToBatch``), so
plain BatchNorm statistics already pool over T. alpha = 1, except 1/sqrt(2) for the normalisations whose output
is added to a residual (the two summands then keep the pre-activation variance near V_th^2). No official
code was released; the placement of alpha follows the paper's text.

Every model factory takes ``norm="bn" | "tdbn"`` and ends with :func:`apply_norm`; layers that feed a residual
sum are tagged ``residual_branch = True`` by the model that builds them.
"""

from __future__ import annotations

import math

import torch
from torch import nn

NORMS = ("bn", "tdbn")


class _TDNorm:
    """The tdBN forward from BatchNorm's own (statistics, momentum, eval mode all unchanged): BN gives
    ``gamma * x_hat + beta``; tdBN is ``alpha * V_th * gamma * x_hat + beta``."""

    alpha: float
    v_threshold: float

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        scale = self.alpha * self.v_threshold
        if self.bias is None:
            return out * scale
        beta = self.bias.view(1, -1, *[1] * (x.dim() - 2))
        return (out - beta) * scale + beta

    def extra_repr(self) -> str:
        return super().extra_repr() + f", alpha={self.alpha:.4g}, v_threshold={self.v_threshold}"


class TDBatchNorm1d(_TDNorm, nn.BatchNorm1d):
    def __init__(self, num_features: int, alpha: float = 1.0, v_threshold: float = 1.0, **kwargs):
        super().__init__(num_features, **kwargs)
        self.alpha, self.v_threshold = alpha, v_threshold


class TDBatchNorm2d(_TDNorm, nn.BatchNorm2d):
    def __init__(self, num_features: int, alpha: float = 1.0, v_threshold: float = 1.0, **kwargs):
        super().__init__(num_features, **kwargs)
        self.alpha, self.v_threshold = alpha, v_threshold


_TD = {nn.BatchNorm1d: TDBatchNorm1d, nn.BatchNorm2d: TDBatchNorm2d}


def _threshold_of(model: nn.Module) -> float:
    """The firing threshold of the model's first spiking neuron (1.0 when it has none)."""
    from snnexp.neurons import MultiStepNeuron

    for module in model.modules():
        if isinstance(module, MultiStepNeuron):
            return float(module.v_threshold)
    return 1.0


def apply_norm(model: nn.Module, norm: str = "bn") -> nn.Module:
    """Return ``model`` with its normalisation set to ``norm``: "bn" leaves it, "tdbn" swaps every BatchNorm
    for a tdBN with the same parameters and statistics (alpha 1/sqrt(2) on layers tagged ``residual_branch``)."""
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; expected one of {list(NORMS)} (model.norm=...)")
    if norm == "tdbn":
        _convert(model, _threshold_of(model))
    return model


def _convert(parent: nn.Module, v_threshold: float) -> None:
    for name, child in parent.named_children():
        cls = _TD.get(type(child))
        if cls is None:
            _convert(child, v_threshold)
            continue
        alpha = 1 / math.sqrt(2) if getattr(child, "residual_branch", False) else 1.0
        td = cls(child.num_features, alpha=alpha, v_threshold=v_threshold, eps=child.eps, momentum=child.momentum,
                 affine=child.affine, track_running_stats=child.track_running_stats)
        td.load_state_dict(child.state_dict())
        setattr(parent, name, td)
