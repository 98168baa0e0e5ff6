"""Model surgery shared by methods: swap spiking neurons for activations, replace one module by name, find the
last spiking neuron a forward pass runs."""

from __future__ import annotations

from typing import Callable, Optional

from torch import nn

from snnexp.neurons import MultiStepNeuron
from snnexp.training.taps import probe_taps


def replace_neurons(model: nn.Module, make_activation: Callable[[], nn.Module]) -> int:
    """Swap every spiking neuron in ``model`` for ``make_activation()`` in place; returns how many were swapped."""
    count = 0
    for name, child in model.named_children():
        if isinstance(child, MultiStepNeuron):
            setattr(model, name, make_activation())
            count += 1
        else:
            count += replace_neurons(child, make_activation)
    return count


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Put ``new`` in place of the submodule called ``name`` (a dotted path)."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def last_neuron(model: nn.Module, datamodule) -> Optional[str]:
    """Qualified name of the last spiking neuron executed in one forward pass of ``model`` (None if none)."""
    order: list[str] = []
    handles = [m.register_forward_hook(lambda mod, inp, out, name=name: order.append(name))
               for name, m in model.named_modules() if isinstance(m, MultiStepNeuron)]
    try:
        probe_taps(model, datamodule)
    finally:
        for h in handles:
            h.remove()
    return order[-1] if order else None
