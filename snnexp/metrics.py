"""Measurements of a spiking network beyond accuracy: per-layer firing rates."""

from __future__ import annotations

from torch import nn

from snnexp.neurons import MultiStepNeuron


class FiringRateMonitor:
    """Averages each spiking neuron's output (spikes per neuron per time step) between ``start`` and ``stop``.

    Layers are named by their module path in the model (e.g. ``layer1.0.neuron1``). Forward hooks are attached
    only while monitoring, so training runs without them.
    """

    def __init__(self, model: nn.Module):
        self.model = model
        self._handles: list = []
        self._sums: dict[str, float] = {}
        self._counts: dict[str, int] = {}

    def start(self) -> None:
        self.stop()
        self._sums, self._counts = {}, {}
        for name, module in self.model.named_modules():
            if isinstance(module, MultiStepNeuron):
                self._handles.append(module.register_forward_hook(self._hook(name)))

    def _hook(self, name: str):
        def record(module, inputs, output):
            out = output.detach()
            self._sums[name] = self._sums.get(name, 0.0) + out.float().abs().sum().item()
            self._counts[name] = self._counts.get(name, 0) + out.numel()

        return record

    def stop(self) -> dict[str, float]:
        """Detach the hooks and return ``{layer: mean firing rate}`` since ``start``."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        return {name: self._sums[name] / self._counts[name] for name in self._sums if self._counts[name]}

