"""Measurements of a spiking network beyond accuracy: per-layer firing rates, synaptic operations and energy."""

from __future__ import annotations

import functools
from typing import Callable

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

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
            # spikes per neuron and step: a converted IF neuron emits its threshold per spike
            total = output.detach().abs().sum(dtype=torch.float64) / getattr(module, "spike_amplitude", 1.0)
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
TOLERANCE = 1e-3  # relative: a level within this of a whole number is that number (float32 rounding)
MAX_SPIKE_UNITS = 64  # distinct spike magnitudes tracked (ternary and converted neurons: one per layer)


def magnitude_stats(x: torch.Tensor, max_divisor: int = 4) -> torch.Tensor:
    """``[nonzero count, smallest nonzero magnitude, largest magnitude, grid]`` of ``x`` (float64, on its device):
    ``grid`` is the smallest k <= ``max_divisor`` such that every entry is a whole multiple of (smallest nonzero
    magnitude / k), 0 when there is none (levels 2 and 3 of a multi-level neuron without a 1 give k = 2)."""
    magnitude = x.detach().abs()
    nonzero = magnitude != 0
    unit = torch.where(nonzero, magnitude, torch.full_like(magnitude, float("inf"))).amin()
    grid = torch.zeros((), dtype=torch.float64, device=x.device)
    for k in range(max_divisor, 0, -1):  # the last one that fits is the smallest
        levels = magnitude * (k / unit)
        fits = (((levels - levels.round()).abs() <= TOLERANCE) | ~nonzero).all()
        grid = torch.where(fits, torch.tensor(float(k), dtype=torch.float64, device=x.device), grid)
    return torch.stack([nonzero.sum(dtype=torch.float64), unit.double(), magnitude.amax().double(), grid])


def is_spike_input(stats: list[float], units: list[float], max_level: float) -> bool:
    """Whether an input with :func:`magnitude_stats` ``stats`` is spikes: silent, or every entry a whole multiple,
    at most ``max_level``, of one of ``units``, the magnitudes the model's spiking neurons emit (1 for binary spikes,
    the amplitude of ternary ones, 1 or 1/D for multi-level ones). An image, an average of spikes or an ANN's
    activations is not."""
    count, unit, largest, grid = stats
    if count == 0:
        return True
    if grid == 0:
        return False
    for spike in (u for u in units if u > 0):
        multiple = unit / grid / spike  # the input's grid step in spikes: must be whole
        if abs(multiple - round(multiple)) <= TOLERANCE and round(multiple) >= 1 \
                and largest / spike <= max_level + TOLERANCE:
            return True
    return False


class OperationCounter:
    """Counts each layer's multiply-accumulates (MACs) and synaptic accumulates (ACs) on evaluation passes.

    The first batch after :meth:`start` calibrates, on the side: PyTorch's FLOP formulas
    (``torch.utils.flop_counter.flop_registry``, credited to the innermost running module by :class:`_FlopsByModule`)
    give each module's own MACs, kept as MACs per input element,
    so any layer built on convolutions or matrix products is counted without code of its own; hooks on the spiking
    neurons give the magnitudes spikes take, and each layer's input is found to be spikes or not
    (:func:`is_spike_input`). Then every batch costs one nonzero count per layer: a layer whose input is spikes
    costs one accumulate per nonzero input entry and outgoing connection (its MACs times the input's firing rate,
    summed over T: the Spike-driven Transformer paper's accounting), a layer whose input is analog (the encoding
    layer on static images, an ANN) costs its MACs. Modules that add their nonzero inputs without weights
    (``adds_nonzero_inputs = True``, e.g. the spike-driven self-attention's token sum) cost one accumulate per
    nonzero input. Hooks exist only between :meth:`start` and :meth:`stop`, so training runs without them; counts
    stay on the device until :meth:`stop`.
    """

    COLUMNS = ("macs", "acs", "spike_elements", "spike_nonzero", "analog_elements", "dense_macs")

    def __init__(self, model: nn.Module):
        self.model = model
        self._handles: list = []
        self._active = False
        self._layers: dict[str, tuple[float, bool]] = {}  # name -> (MACs per input element, input is spikes)
        self._counts: dict[str, list] = {}  # name -> [nonzero input entries (device), input entries]
        self.samples = 0

    def start(self) -> None:
        """Begin an evaluation pass (its first batch calibrates)."""
        self.stop()
        self._active, self._layers, self._counts, self.samples = True, {}, {}, 0

    def forward(self, run: Callable[[], object], samples: int):
        """``run()``, the model's forward on one evaluation batch of ``samples`` samples, counted."""
        self.samples += samples
        if self._active and not self._handles:
            return self._calibrate(run)
        return run()

    def stop(self) -> tuple[list[str], torch.Tensor | None]:
        """Detach the hooks; return the layer names and their summed :attr:`COLUMNS` (``[layers, 6]`` float64)."""
        for handle in self._handles:
            handle.remove()
        self._handles, self._active = [], False
        names = [name for name in self._layers if name in self._counts]
        if not names:
            return [], None
        nonzero = torch.stack([torch.as_tensor(self._counts[n][0], dtype=torch.float64) for n in names]).cpu()
        rows = []
        for name, count in zip(names, nonzero.tolist()):
            per_element, spikes = self._layers[name]
            elements = self._counts[name][1]
            if per_element == 0.0:  # a weightless sum of its nonzero inputs: one accumulate each
                rows.append([0.0, count, elements, count, 0.0, 0.0])
            elif spikes:
                rows.append([0.0, per_element * count, elements, count, 0.0, per_element * elements])
            else:
                rows.append([per_element * elements, 0.0, 0.0, 0.0, elements, per_element * elements])
        return names, torch.tensor(rows, dtype=torch.float64)

    # ---- internals ----------------------------------------------------------------------------------------
    def _calibrate(self, run: Callable[[], object]):
        """Run the first batch counting each module's own FLOPs (:class:`_FlopsByModule`) with its inputs'
        statistics taken where it computed; keep the modules that compute, count this batch, attach the hooks."""
        # not the weight parametrizations (binarised weights): they run inside a layer's weight lookup
        modules = {n: m for n, m in self.model.named_modules() if "parametrizations" not in n.split(".")}
        stack: list[str] = []
        flops = _FlopsByModule(stack)
        seen: dict[str, list[tuple[torch.Tensor, int]]] = {}
        pending: dict[str, list] = {}
        spikes: list[torch.Tensor] = []

        def before(name, module, args):
            pending.setdefault(name, []).append((_first_float(args), flops.counts.get(name, 0)))
            stack.append(name)

        def after(name, module, args, output):
            stack.pop()
            x, flops_before = pending[name].pop()
            computes = flops.counts.get(name, 0) > flops_before or getattr(module, "adds_nonzero_inputs", False)
            if x is not None and computes:  # only layers that compute pay for the statistics, once per pass
                stats = magnitude_stats(_sample(x))  # spikes or not: decided on a sample; the count is exact
                stats[0] = torch.count_nonzero(x.detach())
                seen.setdefault(name, []).append((stats, x.numel()))

        def record_spikes(module, args, output):
            spikes.append(magnitude_stats(output, max_divisor=1))

        handles = []
        for name, module in modules.items():
            handles.append(module.register_forward_pre_hook(functools.partial(before, name)))
            handles.append(module.register_forward_hook(functools.partial(after, name)))
            if isinstance(module, MultiStepNeuron):
                handles.append(module.register_forward_hook(record_spikes))
        try:  # Python dispatch modes see nothing in inference mode (Lightning's test loop): step out of it
            with torch.inference_mode(False), torch.no_grad(), flops:
                output = run()
        finally:
            for handle in handles:
                handle.remove()
        units, max_level = _spike_magnitudes(spikes)
        for name, calls in seen.items():
            weightless = getattr(modules[name], "adds_nonzero_inputs", False)
            stats = torch.stack([s for s, _ in calls]).tolist()  # one host read per layer, once per pass
            elements = sum(numel for _, numel in calls)
            per_element = 0.0 if weightless else flops.counts[name] / 2 / elements  # FLOPs count a MAC as 2
            self._layers[name] = (per_element, all(is_spike_input(s, units, max_level) for s in stats))
            self._counts[name] = [sum(s[0] for s in stats), elements]
            self._handles.append(modules[name].register_forward_pre_hook(functools.partial(self._record, name)))
        return output

    def _record(self, name: str, module: nn.Module, args) -> None:
        x = _first_float(args)
        if x is not None:
            counts = self._counts[name]
            counts[0] = counts[0] + torch.count_nonzero(x.detach())
            counts[1] += x.numel()


def _sample(x: torch.Tensor, size: int = 1 << 16) -> torch.Tensor:
    """About ``size`` of the nonzero entries of ``x``, evenly strided: enough to tell spikes from analog values, at
    little cost (zeros say nothing, and a sparse input's strided sample could be all zeros)."""
    flat = x.detach().reshape(-1)
    flat = flat[flat != 0]
    if flat.numel() == 0:
        return x.new_zeros(1)
    return flat[:: max(1, flat.numel() // size)]


def _first_float(args) -> torch.Tensor | None:
    return next((a for a in args if isinstance(a, torch.Tensor) and a.is_floating_point()), None)


def _spike_magnitudes(stats: list[torch.Tensor]) -> tuple[list[float], float]:
    """The distinct magnitudes the neurons emitted (their smallest nonzero outputs) and the largest level."""
    found = [(unit, largest / unit) for count, unit, largest, _ in (torch.stack(stats).tolist() if stats else [])
             if count > 0]
    units = sorted({float(f"{unit:.6g}") for unit, _ in found})[:MAX_SPIKE_UNITS]  # relative: θ may be tiny
    return units, max([round(level) for _, level in found] or [1])


class _FlopsByModule(TorchDispatchMode):
    """FLOPs of every operator PyTorch's FLOP counter knows (convolutions, matrix products, attention), credited
    to the innermost module running (the top of ``stack``, kept by the counter's hooks)."""

    def __init__(self, stack: list[str]):
        super().__init__()
        self.stack = stack
        self.counts: dict[str, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None and self.stack:
            name = self.stack[-1]
            self.counts[name] = self.counts.get(name, 0) + formula(*args, **kwargs, out_val=out)
        return out


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
