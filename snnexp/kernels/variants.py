"""Every kernel variant, as data: neuron kind x reset x detach_reset x decay_input x surrogate x dtype.

A variant names one instantiation of the templated kernels in ``cuda/neuron_kernels.cu``; its NVRTC name
expressions are ``snn::multistep_forward<float, 1, true, true, false, 0>`` and the matching backward. IF has
no leak, so ``decay_input`` does not exist for it (it is always False there). The ternary and multi-level
neurons have one charge and reset (``H = decay V + X``, reset to 0): their variants vary detach_reset, the
surrogate and the dtype (``snn::ternary_backward<float, false, 3>``; the forward depends on the dtype alone).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

KINDS = {"if": 0, "lif": 1, "plif": 2}  # the LIF family: multistep_forward / multistep_backward
LEVEL_KINDS = {"ternary": "ternary", "mlf": "multilevel"}  # kernel name prefix of each
SURROGATE_KINDS = {"sigmoid": 0, "atan": 1, "triangle": 2, "rectangle": 3, "dspike": 4}
DTYPES = {torch.float32: "float", torch.float16: "__half", torch.bfloat16: "__nv_bfloat16"}
ARCHS = ("compute_80", "compute_90")
NVRTC_OPTIONS = ("-std=c++17", "--fmad=false")  # no FMA contraction: float32 spikes equal the torch reference


@dataclass(frozen=True)
class Variant:
    kind: str  # "if", "lif", "plif", "ternary", "mlf"
    hard_reset: bool
    detach_reset: bool
    decay_input: bool
    surrogate: str
    dtype: torch.dtype = torch.float32

    @property
    def template_args(self) -> str:
        """The backward kernel's template arguments (and the LIF family's forward's)."""
        b = lambda flag: "true" if flag else "false"  # noqa: E731
        if self.kind in LEVEL_KINDS:
            return f"{DTYPES[self.dtype]}, {b(self.detach_reset)}, {SURROGATE_KINDS[self.surrogate]}"
        return (
            f"{DTYPES[self.dtype]}, {KINDS[self.kind]}, {b(self.decay_input)}, {b(self.hard_reset)}, "
            f"{b(self.detach_reset)}, {SURROGATE_KINDS[self.surrogate]}"
        )

    @property
    def forward_name(self) -> str:
        if self.kind in LEVEL_KINDS:
            return f"snn::{LEVEL_KINDS[self.kind]}_forward<{DTYPES[self.dtype]}>"
        return f"snn::multistep_forward<{self.template_args}>"

    @property
    def backward_name(self) -> str:
        if self.kind in LEVEL_KINDS:
            return f"snn::{LEVEL_KINDS[self.kind]}_backward<{self.template_args}>"
        return f"snn::multistep_backward<{self.template_args}>"

    @property
    def name_expressions(self) -> tuple[str, str]:
        return self.forward_name, self.backward_name

    @property
    def label(self) -> str:
        dtype = str(self.dtype).removeprefix("torch.")
        if self.kind in LEVEL_KINDS:
            return f"{self.kind}/{'detach' if self.detach_reset else 'attach'}/{self.surrogate}/{dtype}"
        reset = "hard" if self.hard_reset else "soft"
        detach = "detach" if self.detach_reset else "attach"
        decay = "decay_input" if self.decay_input else "decay_v"
        return f"{self.kind}/{reset}/{detach}/{decay}/{self.surrogate}/{dtype}"


def variant_for(kind: str, v_reset, detach_reset: bool, decay_input: bool, surrogate, dtype) -> Variant:
    """The variant a neuron call needs (``v_reset=None`` is the soft reset)."""
    return Variant(
        kind=kind,
        hard_reset=v_reset is not None,
        detach_reset=bool(detach_reset),
        decay_input=bool(decay_input) and kind != "if",
        surrogate=surrogate.name,
        dtype=dtype,
    )


def has_kernel(dtype: torch.dtype, surrogate) -> bool:
    """Whether a kernel variant exists for this storage dtype and surrogate (a user-defined surrogate has none)."""
    return dtype in DTYPES and getattr(surrogate, "name", None) in SURROGATE_KINDS


def surrogate_scalars(surrogate) -> tuple[float, float]:
    """The surrogate's runtime kernel arguments ``(alpha, width)``; ``width`` is Dspike's (1.0 for the others)."""
    return float(surrogate.alpha), float(getattr(surrogate, "width", 1.0))


def level_variant(kind: str, detach_reset: bool, surrogate, dtype) -> Variant:
    """The variant a ternary (``kind="ternary"``) or multi-level (``"mlf"``) neuron call needs."""
    return Variant(kind, True, bool(detach_reset), False, surrogate.name, dtype)


def all_variants(dtypes=tuple(DTYPES)) -> list[Variant]:
    """Every variant, per dtype: LIF / IF / PLIF, 3 kinds (IF without decay_input) x 2 resets x 2 detach x
    5 surrogates = 100; ternary and multi-level, 2 detach x 5 surrogates each = 20."""
    out = []
    for dtype in dtypes:
        for kind, hard, detach, surrogate in itertools.product(KINDS, (False, True), (False, True), SURROGATE_KINDS):
            for decay in (False,) if kind == "if" else (True, False):
                out.append(Variant(kind, hard, detach, decay, surrogate, dtype))
        for kind, detach, surrogate in itertools.product(LEVEL_KINDS, (False, True), SURROGATE_KINDS):
            out.append(Variant(kind, True, detach, False, surrogate, dtype))
    return out


def nvrtc_options(arch: str, include_dirs=()) -> tuple[str, ...]:
    return (f"-arch={arch}", *NVRTC_OPTIONS, *(f"-I{d}" for d in include_dirs))
