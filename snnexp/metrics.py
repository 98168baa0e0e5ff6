"""Measurements of a spiking network beyond accuracy: per-layer firing rates."""

from __future__ import annotations

import torch
from torch import nn

from snnexp.neurons import MultiStepNeuron


class FiringRateMonitor:
    """Averages each spiking neuron's output (spikes per neuron per time step) between ``start`` and ``stop``.

    Layers are named by their module path in the model (e.g. ``layer1.0.neuron1``). Forward hooks are attached
    only while monitoring, so training runs without them. Sums stay on the tensors' device and are read once, in
    ``stop``: a per-batch ``.item()`` would wait for the GPU once per layer per batch.
    """

    def __init__(self, model: nn.Module):
        self.model = model
        self._handles: list = []
        self._sums: dict[str, torch.Tensor] = {}
        self._counts: dict[str, int] = {}

    def start(self) -> None:
        self.stop()
        self._sums, self._counts = {}, {}
        for name, module in self.model.named_modules():
            if isinstance(module, MultiStepNeuron):
                self._handles.append(module.register_forward_hook(self._hook(name)))

    def _hook(self, name: str):
        def record(module, inputs, output):
            total = output.detach().abs().sum(dtype=torch.float64)
            self._sums[name] = self._sums[name] + total if name in self._sums else total
            self._counts[name] = self._counts.get(name, 0) + output.numel()

        return record

    def stop(self) -> dict[str, float]:
        """Detach the hooks and return ``{layer: mean firing rate}`` since ``start`` (one device read)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        names = [name for name in self._sums if self._counts[name]]
        if not names:
            return {}
        sums = torch.stack([self._sums[name] for name in names]).tolist()
        return {name: total / self._counts[name] for name, total in zip(names, sums)}
