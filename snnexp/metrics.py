"""Measurements of a spiking network beyond accuracy: per-layer firing rates, synaptic operations and energy."""

from __future__ import annotations

import contextlib
import functools
from typing import Callable

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
        self._attach()

    def _attach(self) -> None:
        for name, module in self.model.named_modules():
            if isinstance(module, MultiStepNeuron):
                self._handles.append(module.register_forward_hook(self._hook(name)))

    @contextlib.contextmanager
    def paused(self):
        """Forward passes inside the block are not counted (e.g. an extra calibration pass)."""
        attached = bool(self._handles)
        for handle in self._handles:
            handle.remove()
        self._handles = []
        try:
            yield
        finally:
            if attached:
                self._attach()

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


# ---- synaptic operations and energy ---------------------------------------------------------------------------

E_MAC_PJ = 4.6  # energy of one 32-bit multiply-accumulate at 45 nm (Horowitz, ISSCC 2014), as SNN papers use it
E_AC_PJ = 0.9  # one 32-bit accumulate (an input spike's synaptic operation)
MAX_SPIKE_UNITS = 16  # distinct spike magnitudes tracked (ternary neurons learn one amplitude per layer)


def spike_input_stats(x: torch.Tensor, units: list[float], max_level: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(is_spikes, nonzero)`` of a layer's input, as 0-d device tensors (no host sync).

    The input is spikes when every entry is a whole multiple, at most ``max_level``, of one of ``units``: the
    magnitudes the model's spiking neurons emit (1 for binary spikes, the amplitude of ternary ones, 1 or 1/D for
    multi-level ones, with their largest level). An image, an average of spikes or an ANN's activations is not.
    An all-zero input counts as (silent) spikes.
    """
    magnitude = x.detach().abs()
    count = (magnitude != 0).sum(dtype=torch.float64)
    is_spikes = count == 0
    for unit in units:
        levels = magnitude / unit
        whole = ((levels - levels.round()).abs() <= 1e-3).all() & (levels.amax() <= max_level + 1e-3)
        is_spikes = is_spikes | whole
    return is_spikes, count


class OperationCounter:
    """Counts each layer's multiply-accumulates (MACs) and synaptic accumulates (ACs) on evaluation passes.

    The first batch after :meth:`start` runs once more, unseen, to calibrate: PyTorch's FLOP counter
    (:class:`torch.utils.flop_counter.FlopCounterMode`) gives each module's own MACs, kept as MACs per input element,
    so any layer built on convolutions or matrix products is counted without code of its own; hooks on the spiking
    neurons give the magnitudes spikes take. Then, batch by batch, a layer whose input is spikes
    (:func:`spike_input_stats`) costs one accumulate per nonzero input entry and outgoing connection (its MACs
    times the input's firing rate, summed over T: the Spike-driven Transformer paper's accounting), and a layer
    whose input is analog (the encoding layer on static images, an ANN) costs its MACs. Modules that add their
    nonzero inputs without weights (``adds_nonzero_inputs = True``, e.g. the spike-driven self-attention's token
    sum) cost one accumulate per nonzero input. Hooks exist only between :meth:`start` and :meth:`stop`, so
    training runs without them; sums stay on the device until :meth:`stop`.
    """

    COLUMNS = ("macs", "acs", "spike_elements", "spike_nonzero", "analog_elements", "dense_macs")

    def __init__(self, model: nn.Module):
        self.model = model
        self._handles: list = []
        self._active = False
        self._per_element: dict[str, float] | None = None
        self._units: list[float] = []
        self._max_level = 1.0
        self._sums: dict[str, list] = {}
        self.samples = 0

    # ---- the evaluation pass ------------------------------------------------------------------------------
    def start(self) -> None:
        """Begin an evaluation pass (the next batch calibrates)."""
        self.stop()
        self._active, self._per_element, self._sums, self.samples = True, None, {}, 0

    @property
    def calibrating(self) -> bool:
        """True when the next :meth:`forward` first runs the batch once more to calibrate (see :meth:`calibrate`)."""
        return self._active and self._per_element is None

    def forward(self, run: Callable[[], object], samples: int):
        """``run()``, the model's forward on one evaluation batch of ``samples`` samples, counted."""
        if self.calibrating:
            self.calibrate(run)
        self.samples += samples
        return run()

    def calibrate(self, run: Callable[[], object]) -> None:
        """Run ``run()`` once, uncounted, to learn each module's own MACs per input element (FLOP counter) and the
        magnitudes of the model's spikes; then attach the counting hooks. Other monitors should pause meanwhile."""
        self._calibrate(run)
        modules = dict(self.model.named_modules())
        for name in self._per_element:
            self._handles.append(modules[name].register_forward_pre_hook(functools.partial(self._record, name)))

    def stop(self) -> tuple[list[str], torch.Tensor | None]:
        """Detach the hooks; return the layer names and their summed :attr:`COLUMNS` (``[layers, 6]`` float64)."""
        for handle in self._handles:
            handle.remove()
        self._handles, self._active = [], False
        names = list(self._sums)
        if not names:
            return [], None
        return names, torch.stack([torch.stack([torch.as_tensor(v, dtype=torch.float64, device=self._sums[n][0].device)
                                                for v in self._sums[n]]) for n in names])

    # ---- calibration --------------------------------------------------------------------------------------
    def _calibrate(self, run: Callable[[], object]) -> None:
        """Each module's own MACs per input element, and the spike magnitudes of the model's neurons."""
        from torch.utils.flop_counter import FlopCounterMode

        modules = dict(self.model.named_modules())
        elements: dict[str, int] = {}
        spikes: list[tuple[torch.Tensor, torch.Tensor]] = []

        def count_elements(name, module, args):
            x = _first_float(args)
            if x is not None:
                elements[name] = elements.get(name, 0) + x.numel()

        def spike_magnitudes(module, args, output):
            magnitude = output.detach().abs()
            unit = torch.where(magnitude != 0, magnitude, torch.full_like(magnitude, float("inf"))).amin()
            spikes.append((unit, magnitude.amax()))

        handles = [m.register_forward_pre_hook(functools.partial(count_elements, n)) for n, m in modules.items()]
        handles += [m.register_forward_hook(spike_magnitudes) for m in modules.values()
                    if isinstance(m, MultiStepNeuron)]
        try:
            with FlopCounterMode(display=False) as flops:
                run()
        finally:
            for handle in handles:
                handle.remove()
        own = _own_macs(self.model, flops.get_flop_counts())
        self._per_element = {name: own[name] / elements[name] for name in modules
                             if own.get(name, 0) > 0 and elements.get(name)}
        self._per_element.update({name: 0.0 for name, m in modules.items()
                                  if getattr(m, "adds_nonzero_inputs", False)})
        found = [(u, m / u) for u, m in torch.tensor([[u, m] for u, m in spikes] or [[0.0, 0.0]],
                                                     dtype=torch.float64).tolist() if 0 < u < float("inf")]
        self._units = sorted({round(u, 6) for u, _ in found})[:MAX_SPIKE_UNITS]
        self._max_level = max([round(level) for _, level in found] or [1])

    # ---- counting -----------------------------------------------------------------------------------------
    def _record(self, name: str, module: nn.Module, args) -> None:
        x = _first_float(args)
        if x is None:
            return
        is_spikes, nonzero = spike_input_stats(x, self._units, self._max_level)
        per_element, numel = self._per_element[name], x.numel()
        spikes = is_spikes.to(torch.float64)
        if per_element == 0.0:  # a weightless sum of its nonzero inputs: one accumulate each
            row = [nonzero * 0, nonzero, spikes * numel, spikes * nonzero, (1 - spikes) * numel, nonzero * 0]
        else:
            row = [(1 - spikes) * per_element * numel, spikes * per_element * nonzero, spikes * numel,
                   spikes * nonzero, (1 - spikes) * numel, nonzero * 0 + per_element * numel]
        sums = self._sums.get(name)
        self._sums[name] = row if sums is None else [a + b for a, b in zip(sums, row)]


def _first_float(args) -> torch.Tensor | None:
    return next((a for a in args if isinstance(a, torch.Tensor) and a.is_floating_point()), None)


def _own_macs(model: nn.Module, counts: dict[str, dict]) -> dict[str, float]:
    """``{module name: MACs of its own operations}`` from FlopCounterMode's per-module FLOPs, which include every
    module called inside (containers that are never called, like ``nn.ModuleDict``, have no entry)."""
    root = type(model).__name__
    total = {key: sum(ops.values()) / 2 for key, ops in counts.items()}  # the FLOP counter counts a MAC as 2
    own = {}
    for name, _ in model.named_modules():
        key = f"{root}.{name}" if name else root
        inside = [k for k in total if k.startswith(key + ".")]
        nearest = [k for k in inside if not any(k.startswith(other + ".") for other in inside)]
        own[name] = total.get(key, 0.0) - sum(total[k] for k in nearest)
    return own


def operations_per_sample(names: list[str], totals: torch.Tensor | None, samples: int,
                          e_mac_pj: float = E_MAC_PJ, e_ac_pj: float = E_AC_PJ) -> dict:
    """Per-sample totals and per-layer counts from :meth:`OperationCounter.stop`'s sums (over ``samples``).

    ``{"energy_mJ", "sops", "macs", "dense_macs", "layers": {layer: {"macs", "acs", "dense_macs", "input_rate",
    "spiking_input"}}}``: SOPs are the accumulates; energy is ``e_mac_pj * MACs + e_ac_pj * ACs`` in millijoules;
    ``dense_macs`` is what the same layers cost as an ANN (every input a MAC).
    """
    if totals is None or samples <= 0:
        return {"energy_mJ": None, "sops": None, "macs": None, "dense_macs": None, "layers": {}}
    layers = {}
    for name, (macs, acs, spike_elements, spike_nonzero, analog_elements, dense) in zip(names, totals.tolist()):
        layers[name] = {"macs": macs / samples, "acs": acs / samples, "dense_macs": dense / samples,
                        "input_rate": spike_nonzero / spike_elements if spike_elements else None,
                        "spiking_input": analog_elements == 0}
    macs, acs, dense = (sum(layer[k] for layer in layers.values()) for k in ("macs", "acs", "dense_macs"))
    return {"energy_mJ": (e_mac_pj * macs + e_ac_pj * acs) * 1e-9, "sops": acs, "macs": macs, "dense_macs": dense,
            "layers": layers}
