"""Every kernel variant, as data derived from the neuron declarations (:mod:`snnexp.kernels.spec`): kind x the
declaration's switches (reset, decay_input) x detach_reset x surrogate x dtype.

A variant names one instantiation of the generated templated kernels; its NVRTC name expressions are the forward
``snn::<neuron>_forward<float, KIND?, switches...>`` and the backward, which adds ``DETACH, SG``: e.g.
``snn::multistep_backward<float, 1, true, true, false, 0>`` or ``snn::ternary_backward<float, true, 3>`` (the
ternary forward, ``snn::ternary_forward<float>``, depends on the dtype alone). A switch a kind lacks (IF has no
decay_input) is always False there; a declaration without a switch has its ``fixed`` value (or False).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

from snnexp.kernels.spec import NeuronSpec, registered, spec_of, surrogates

DTYPES = {torch.float32: "float", torch.float16: "__half", torch.bfloat16: "__nv_bfloat16"}
ARCHS = ("compute_80", "compute_90")
NVRTC_OPTIONS = ("-std=c++17", "--fmad=false")  # no FMA contraction: float32 spikes equal the torch reference


def kind_codes() -> dict[str, int]:
    """Every declared kind and its code, in registration order (LIF family 0-2, ternary 3, multi-level 4, ...)."""
    return {kind: i for i, kind in enumerate(k for spec in registered() for k in spec.kinds)}


def surrogate_kinds() -> dict[str, int]:
    """Every surrogate with a kernel and its code (the template argument SG)."""
    return {name: i for i, name in enumerate(surrogates())}


def __getattr__(name: str):
    """``KINDS`` and ``SURROGATE_KINDS``: the tables above, read when first asked for (the declarations register
    when ``snnexp.neurons`` is imported)."""
    if name == "KINDS":
        return kind_codes()
    if name == "SURROGATE_KINDS":
        return surrogate_kinds()
    raise AttributeError(name)


@dataclass(frozen=True)
class Variant:
    kind: str  # a declared kind: "if", "lif", "plif", "ternary", "mlf", ...
    hard_reset: bool
    detach_reset: bool
    decay_input: bool
    surrogate: str
    dtype: torch.dtype = torch.float32

    @property
    def spec(self) -> NeuronSpec:
        return spec_of(self.kind)

    def switch_args(self) -> list[str]:
        spec = self.spec
        out = [str(spec.kinds.index(self.kind))] if len(spec.kinds) > 1 else []
        return out + ["true" if getattr(self, switch) else "false" for switch in spec.switches]

    @property
    def template_args(self) -> str:
        """The backward kernel's template arguments."""
        detach = "true" if self.detach_reset else "false"
        return ", ".join([DTYPES[self.dtype], *self.switch_args(), detach, str(surrogate_kinds()[self.surrogate])])

    @property
    def forward_name(self) -> str:
        return f"snn::{self.spec.name}_forward<{', '.join([DTYPES[self.dtype], *self.switch_args()])}>"

    @property
    def backward_name(self) -> str:
        return f"snn::{self.spec.name}_backward<{self.template_args}>"

    @property
    def name_expressions(self) -> tuple[str, str]:
        return self.forward_name, self.backward_name

    @property
    def switches(self) -> int:
        """The runtime switches as the CPU entry points take them: bit i = the declaration's i-th switch."""
        return sum(int(getattr(self, switch)) << i for i, switch in enumerate(self.spec.switches))

    @property
    def label(self) -> str:
        spec, dtype = self.spec, str(self.dtype).removeprefix("torch.")
        parts = [self.kind]
        if "hard_reset" in spec.switches:
            parts.append("hard" if self.hard_reset else "soft")
        parts.append("detach" if self.detach_reset else "attach")
        if "decay_input" in spec.switches:
            parts.append("decay_input" if self.decay_input else "decay_v")
        return "/".join(parts + [self.surrogate, dtype])


def variant_of(kind: str, detach_reset: bool, surrogate, dtype, **switches) -> Variant:
    """The variant of a call of ``kind``; ``switches``: ``hard_reset`` / ``decay_input`` where declared."""
    spec = spec_of(kind)
    values = {s: bool(spec.fixed.get(s, False)) for s in ("hard_reset", "decay_input")}
    for switch in spec.switches:
        values[switch] = bool(switches.get(switch, False)) and spec.has_switch(switch, kind)
    return Variant(kind=kind, detach_reset=bool(detach_reset), surrogate=getattr(surrogate, "name", surrogate),
                   dtype=dtype, **values)


def variant_for(kind: str, v_reset, detach_reset: bool, decay_input: bool, surrogate, dtype) -> Variant:
    """The variant a LIF / IF / PLIF call needs (``v_reset=None`` is the soft reset)."""
    return variant_of(kind, detach_reset, surrogate, dtype, hard_reset=v_reset is not None, decay_input=decay_input)


def level_variant(kind: str, detach_reset: bool, surrogate, dtype) -> Variant:
    """The variant a ternary (``kind="ternary"``) or multi-level (``"mlf"``) neuron call needs."""
    return variant_of(kind, detach_reset, surrogate, dtype)


def has_kernel(dtype: torch.dtype, surrogate) -> bool:
    """Whether a kernel variant exists for this storage dtype and surrogate (a user-defined surrogate has none)."""
    return dtype in DTYPES and getattr(surrogate, "name", None) in surrogate_kinds()


def surrogate_scalars(surrogate) -> tuple[float, float]:
    """The surrogate's runtime kernel arguments ``(alpha, width)``; ``width`` is Dspike's (1.0 for the others)."""
    return float(surrogate.alpha), float(getattr(surrogate, "width", 1.0))


def spec_variants(spec: NeuronSpec, dtypes=tuple(DTYPES)) -> list[Variant]:
    """Every variant of one declaration, per dtype: kinds x its switches (where a kind has them) x detach x
    surrogates."""
    out = []
    for dtype, kind in itertools.product(dtypes, spec.kinds):
        axes = [(False, True) if spec.has_switch(s, kind) else (False,) for s in spec.switches]
        for values in itertools.product(*axes):
            on = dict(zip(spec.switches, values))
            for detach, surrogate in itertools.product((False, True), surrogates()):
                out.append(variant_of(kind, detach, surrogate, dtype, **on))
    return out


def all_variants(dtypes=tuple(DTYPES)) -> list[Variant]:
    """Every variant of every declared neuron, per dtype (LIF / IF / PLIF: 3 kinds, IF without decay_input, x 2
    resets x 2 detach x 5 surrogates = 100; ternary and multi-level, 2 detach x 5 surrogates each = 20; ...)."""
    return [v for dtype in dtypes for spec in registered() for v in spec_variants(spec, (dtype,))]


def nvrtc_options(arch: str, include_dirs=()) -> tuple[str, ...]:
    return (f"-arch={arch}", *NVRTC_OPTIONS, *(f"-I{d}" for d in include_dirs))
