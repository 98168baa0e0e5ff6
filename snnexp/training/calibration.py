"""Correcting a converted SNN layer by layer against its ANN, on a few training samples.

SNN Calibration (Li, Deng, Dong, Gong, Gu, ICML 2021; yhhhli/SNN_Calibration), per converted neuron in execution
order, with e = E[ANN activation] − E[SNN rate] per channel over the calibration samples:

- bias correction ("light"): the neuron's input gets + e at every step (the preceding layer's bias corrected);
- potential correction ("advanced", also dual-phase's membrane initialisation): its initial membrane gets + e·T,
  with e measured per neuron (each channel and position, averaged over the samples), as both repositories do;
- weight calibration: the weights of the layer feeding the neuron are tuned by BPTT (surrogate gradients through
  the IF neurons) so the neuron's rate matches the ANN activation: MSE (calibration) or, as dual-phase (Wang,
  Lian, Zhang, Tang et al. 2022) does, a KL divergence between the softmax over each sample's activations.

Each correction is measured after the ones before it, so later layers see the corrected earlier ones.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from snnexp.training.conversion import FOLDABLE, IFNeuron


def channel_mean(x: torch.Tensor) -> torch.Tensor:
    """Per-channel mean of a time-major ``[T, B, C, ...]`` tensor over time, samples and positions: ``[C]``."""
    return x.transpose(0, 2).reshape(x.shape[2], -1).mean(1)


def neurons_in_order(model: nn.Module, run: Callable[[], object]) -> tuple[list[str], dict[str, str]]:
    """The converted neurons in execution order, and for each the weighted layer executed last before it."""
    order: list[str] = []
    last_layer: list[str] = [""]
    feeding: dict[str, str] = {}

    def seen(name, module, args, output):
        if isinstance(module, IFNeuron):
            order.append(name)
            feeding.setdefault(name, last_layer[0])
        else:
            last_layer[0] = name

    handles = [m.register_forward_hook(lambda mod, a, o, name=name: seen(name, mod, a, o))
               for name, m in model.named_modules() if isinstance(m, (IFNeuron, *FOLDABLE))]
    try:
        with torch.no_grad():
            run()
    finally:
        for handle in handles:
            handle.remove()
    return list(dict.fromkeys(order)), feeding


class _Reached(Exception):
    """Stops a forward pass once the neuron being calibrated has fired (the rest is not needed)."""


def rate_at(model: nn.Module, name: str, run: Callable[[], object]) -> torch.Tensor:
    """The output of neuron ``name`` averaged over T, ``[B, C, ...]``, for one forward ``run()`` (the forward stops
    there); gradients flow when enabled."""
    captured = {}

    def capture(module, args, output):
        captured["rate"] = output.mean(0)
        raise _Reached

    handle = model.get_submodule(name).register_forward_hook(capture)
    try:
        run()
    except _Reached:
        pass
    finally:
        handle.remove()
    return captured["rate"]


@torch.no_grad()
def correct(model: nn.Module, order: list[str], ann_outputs: dict[str, torch.Tensor], run: Callable[[], object],
            T: int, bias: bool = True, potential: bool = False) -> dict[str, float]:
    """Bias and/or potential correction, layer by layer; returns each layer's mean |e| before correcting it."""
    errors = {}
    for name in order:
        neuron = model.get_submodule(name)
        target = channel_mean(ann_outputs[name])
        if bias:
            error = target - channel_mean(rate_at(model, name, run).unsqueeze(0))
            errors[name] = error.abs().mean().item()
            neuron.input_bias += error
        if potential:  # per neuron: the error of each position, averaged over the samples only
            error = ann_outputs[name].mean((0, 1)) - rate_at(model, name, run).mean(0)
            errors.setdefault(name, error.abs().mean().item())
            initial = neuron.initial
            if initial.dim() == 1 and error.dim() > 1:  # per channel so far
                initial = initial.reshape(-1, *[1] * (error.dim() - 1))
            neuron.initial = initial + error * T
    return errors


def calibrate_weights(model: nn.Module, order: list[str], feeding: dict[str, str],
                      ann_outputs: dict[str, torch.Tensor], run: Callable[[], object], iterations: int, lr: float,
                      loss: str = "mse") -> None:
    """Tune each neuron's feeding layer (weights and bias) so the neuron's rate matches the ANN activation."""
    params = list(model.parameters())
    trainable = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        for name in order:
            layer = model.get_submodule(feeding[name]) if feeding.get(name) else None
            if layer is None:
                continue
            tuned = [p for p in (layer.weight, layer.bias) if p is not None]
            for p in tuned:
                p.requires_grad_(True)
            optimizer = torch.optim.Adam(tuned, lr=lr)
            target = ann_outputs[name][0]
            for _ in range(iterations):
                with torch.enable_grad():
                    rate = rate_at(model, name, run)
                    error = _kl(rate, target) if loss == "kl" else F.mse_loss(rate, target)
                    optimizer.zero_grad(set_to_none=True)
                    error.backward()
                optimizer.step()
            for p in tuned:
                p.requires_grad_(False)
    finally:
        for p, flag in zip(params, trainable):
            p.requires_grad_(flag)


def _kl(rate: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """KL(softmax(target) ‖ softmax(rate)), the softmax over all of a sample's activations (channels and positions),
    the pointwise terms averaged over every entry (``nn.KLDivLoss``'s ``mean``), as the dual-phase repository does."""
    log_q = F.log_softmax(rate.flatten(1), dim=1)
    log_p = F.log_softmax(target.flatten(1), dim=1)
    return (log_p.exp() * (log_p - log_q)).mean()
