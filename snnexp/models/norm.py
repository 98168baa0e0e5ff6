"""Normalisation layers, chosen when a model is built: plain BatchNorm, or threshold-dependent batch
normalisation (tdBN) of STBP-tdBN (Zheng, Wu, Deng, Hu, Li; AAAI 2021).

    tdBN(x) = lambda * alpha * V_th * (x - mu) / sqrt(sigma^2 + eps) + beta

with statistics over (B, T, H, W): snnexp runs BN on the time-folded ``[T*B, ...]`` view (``SeqToBatch``), so
plain BatchNorm statistics already pool over T. alpha = 1, except 1/sqrt(2) for the normalisations whose output
is added to a residual (the two summands then keep the pre-activation variance near V_th^2). No official
code was released; the placement of alpha follows the paper's text.

The ``norm_layer`` protocol. A model class takes one ``norm_layer`` and calls it wherever it builds a BN:

    norm_layer(num_features, *, dims=2, residual=False) -> nn.Module

``dims`` is 2 for ``[N, C, H, W]`` maps (a ``BatchNorm2d``) and 1 for ``[N, C, L]`` or ``[N, C]`` (a
``BatchNorm1d``). ``residual=True`` marks a normalisation whose output joins a residual sum before a neuron
(ResNet's second BN and shortcut BN, the Spike-driven Transformer's attention-projection and MLP-fc2 BNs,
STMixer's token-mixer and FFN fc2 BNs); the model says so, the norm decides what it means: :func:`batch_norm`
ignores it, :func:`tdbn` sets alpha = 1/sqrt(2). A model factory's ``norm="bn" | "tdbn"`` (the config key
``model.norm``) becomes a ``norm_layer`` through :func:`make_norm_layer`, which fixes tdBN's V_th to the
threshold of the model's neuron.
"""

from __future__ import annotations

import functools
import math
from typing import Callable

import torch
from torch import nn

from snnexp.models.registry import ModelConfigError

NORMS = ("bn", "tdbn")
RESIDUAL_ALPHA = 1 / math.sqrt(2)

NormLayer = Callable[..., nn.Module]  # norm_layer(num_features, *, dims=2, residual=False)


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


_BN = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d}
_TD = {1: TDBatchNorm1d, 2: TDBatchNorm2d}


def _check_dims(dims: int) -> int:
    if dims not in _BN:
        raise ValueError(f"norm_layer: dims must be 1 (BatchNorm1d) or 2 (BatchNorm2d), got {dims!r}")
    return dims


def batch_norm(num_features: int, *, dims: int = 2, residual: bool = False) -> nn.Module:
    """Plain ``BatchNorm1d`` / ``BatchNorm2d``; ``residual`` changes nothing."""
    return _BN[_check_dims(dims)](num_features)


def tdbn(num_features: int, *, dims: int = 2, residual: bool = False, v_threshold: float = 1.0) -> nn.Module:
    """tdBN with alpha = 1/sqrt(2) on a residual branch, 1 elsewhere, and the neurons' threshold ``v_threshold``."""
    alpha = RESIDUAL_ALPHA if residual else 1.0
    return _TD[_check_dims(dims)](num_features, alpha=alpha, v_threshold=v_threshold)


def neuron_threshold(neuron: Callable[..., nn.Module]) -> float:
    """V_th of the neurons ``neuron()`` builds (1.0 when it is not a ``MultiStepNeuron``): tdBN's V_th."""
    from snnexp.neurons import MultiStepNeuron

    probe = neuron()
    return float(probe.v_threshold) if isinstance(probe, MultiStepNeuron) else 1.0


def make_norm_layer(norm: str, neuron: Callable[..., nn.Module]) -> NormLayer:
    """The ``norm_layer`` for the config value ``model.norm`` of a model whose spiking layers ``neuron`` builds."""
    if norm not in NORMS:
        raise ModelConfigError(f"Unknown norm {norm!r}; valid norms are {list(NORMS)} (set model.norm=...).")
    if norm == "bn":
        return batch_norm
    return functools.partial(tdbn, v_threshold=neuron_threshold(neuron))


def warm_start_running_stats(model: nn.Module) -> int:
    """Make every BatchNorm's running statistics a plain average of the batches seen while there are fewer than
    1/momentum of them, and the usual exponential average after; returns how many BatchNorms were changed.

    PyTorch starts the running mean and variance at 0 and 1 and moves them by ``momentum`` (0.1) per batch, so
    after n batches the (0, 1) start still weighs 0.9^n: 0.35 after 10 batches, 0.03 after 32. Where a layer's
    real variance is far from 1 (a conv over sparse event frames: ~0.05), eval mode then normalises with a
    variance several times too large, the neurons fall silent and validation sits at chance for the first
    epochs. Here batch n (from 1) is weighted by ``max(momentum, 1/n)``: the first batch replaces the start
    values, and from batch 1/momentum on the update is PyTorch's own, so long runs are unchanged. A momentum of
    ``None`` (a cumulative average, e.g. MTT's recalibration) is left alone.
    """
    changed = 0
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats \
                and module.momentum is not None:
            module.warm_start_momentum = module.momentum
            module.register_forward_pre_hook(_warm_start_momentum)
            changed += 1
    return changed


def _warm_start_momentum(module: nn.modules.batchnorm._BatchNorm, inputs) -> None:
    """Before a training forward: the weight of this batch in the running statistics, max(momentum, 1/n)."""
    if module.training and module.momentum is not None:
        module.momentum = max(module.warm_start_momentum, 1.0 / (int(module.num_batches_tracked) + 1))
