"""Neuron declarations: a neuron's dynamics written once (expressions of :mod:`snnexp.kernels.expr`), from which
:mod:`snnexp.kernels.generate` writes its fused CPU and CUDA code, and the registry of declared neurons and
surrogates.

One time step, from the state before it (names of ``state``) and the input ``x``::

    h = charge                         the membrane charge (stored by the CUDA forward, recomputed on the CPU)
    u = fire                           the surrogate's argument;  s = spike (default heaviside(u))
    state[i] = reset[i]                every state variable's update, from h, s and the state before

The backward needs the partial derivatives, declared as expressions (``sg`` is the surrogate at ``u``):
``dh[n]`` = dh/dn for n in ``x``, the state and the learnable parameters; ``ds[n]`` = ds/dn for n in ``h``, the
state and learnable parameters; ``dreset[i][n]`` = d state[i] / dn for n in ``h``, ``s``, the state and learnable
parameters. Missing entries are 0. ``detach_reset`` drops every ``dreset[i]["s"]``.

Neurons register their declaration when their module is imported; :func:`registered` imports ``snnexp.neurons``
(a plugin scan: this layer never imports the neurons by name) so that the tables list every declared neuron.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import import_module

from snnexp.kernels import expr

SWITCHES = {"decay_input": "DECAY", "hard_reset": "HARD"}  # compile-time switches a declaration may use
RESERVED = {"x", "h", "u", "s", "sg", "gs", "gh", "g", "p", "st", "level", "kind", "alpha", "width", "grad_out"}
MAX_LEVELS = 8  # a multi-level neuron keeps its levels' state in registers: at most this many


@dataclass(frozen=True)
class Param:
    """A runtime scalar of the neuron; ``learnable``: True, or an expression of ``kind`` / the switches saying
    where its gradient is wanted (the fused backward then accumulates dL/dparam)."""

    name: str
    learnable: bool | str = False


@dataclass(frozen=True)
class NeuronSpec:
    """One neuron (or family, ``kinds``) declared for the generator; see the module docstring."""

    name: str  # kernel prefix: snn::<name>_forward / _backward
    state: tuple[str, ...]  # state variables; the first is the membrane, recomputed from h in the CUDA backward
    params: tuple[Param, ...]
    charge: str
    fire: str
    reset: dict[str, str]
    init: dict[str, str]  # each state variable at rest
    dh: dict[str, str]
    ds: dict[str, str]
    dreset: dict[str, dict[str, str]]
    spike: str = "heaviside(u)"
    lets: dict[str, str] = field(default_factory=dict)  # named sub-expressions, usable everywhere
    kinds: tuple[str, ...] = ()  # family members (template argument KIND); default (name,)
    switches: tuple[str, ...] = ()  # of SWITCHES, in template-argument order
    switch_kinds: dict[str, tuple[str, ...]] = field(default_factory=dict)  # a switch that exists for some kinds
    fixed: dict[str, bool] = field(default_factory=dict)  # the Variant fields of switches it does not have
    levels: bool = False  # K independent copies (runtime ``levels``), output summed; ``level`` in expressions
    op: str = ""  # custom-op prefix (default: name)
    title: str = ""  # autograd Function suffix: FusedCpu<title>

    def __post_init__(self):
        for attr, default in (("kinds", (self.name,)), ("op", self.name), ("title", self.name.upper())):
            if not getattr(self, attr):
                object.__setattr__(self, attr, default)
        for text in self.expressions():
            expr.parse(text)
        taken = RESERVED & ({p.name for p in self.params} | set(self.state) | set(self.lets))
        if taken:
            raise ValueError(f"{self.name}: {sorted(taken)} are names of the generated code; rename them")
        membrane = self.state[0]
        reads = self.names_in(self.fire) | self.names_in(self.reset[membrane]) | self.names_in(self.spike)
        if membrane in reads:
            raise ValueError(f"{self.name}: fire, spike and the reset of {membrane!r} may not read {membrane!r} "
                             "(the backward recomputes it from the previous step's charge)")

    def expressions(self):
        yield from (self.charge, self.fire, self.spike, *self.reset.values(), *self.init.values(),
                    *self.lets.values(), *self.dh.values(), *self.ds.values())
        for partials in self.dreset.values():
            yield from partials.values()

    @property
    def learnable(self) -> tuple[Param, ...]:
        return tuple(p for p in self.params if p.learnable)

    @property
    def saved(self) -> tuple[str, ...]:
        """The state variables the CUDA forward stores (before each step) besides h: all but the membrane."""
        return self.state[1:]

    def names_in(self, text: str) -> set[str]:
        """The names an expression reads, through the lets it uses."""
        found = expr.names(text)
        for let in reversed(list(self.lets)):
            if let in found:
                found |= expr.names(self.lets[let])
        return found

    def reads(self, name: str) -> bool:
        """Whether the backward step reads ``name`` (e.g. ``x``)."""
        partials = [*self.dh.values(), *self.ds.values(), *(e for d in self.dreset.values() for e in d.values())]
        return any(name in self.names_in(e) for e in partials)

    def has_switch(self, switch: str, kind: str) -> bool:
        return switch in self.switches and kind in self.switch_kinds.get(switch, self.kinds)


_NEURONS: dict[str, NeuronSpec] = {}
_SURROGATES: dict[str, str] = {}


def register(spec: NeuronSpec) -> NeuronSpec:
    """Add a declaration (once per name; its kinds must be new)."""
    known = _NEURONS.get(spec.name)
    if known is not None and known != spec:
        raise ValueError(f"a different neuron is already declared as {spec.name!r}")
    taken = {k for s in _NEURONS.values() if s.name != spec.name for k in s.kinds}
    if taken & set(spec.kinds):
        raise ValueError(f"{spec.name}: kinds {sorted(taken & set(spec.kinds))} are declared by another neuron")
    _NEURONS[spec.name] = spec
    return spec


def register_surrogate(name: str, formula: str) -> None:
    """A surrogate's ``dS/dx`` formula (an expression in ``x``, ``alpha``, ``width``) for the kernels."""
    expr.parse(formula)
    _SURROGATES[name] = formula


def registered() -> tuple[NeuronSpec, ...]:
    """Every declared neuron, in registration order (snnexp.neurons imports the built-ins first)."""
    import_module("snnexp.neurons")
    return tuple(_NEURONS.values())


def surrogates() -> dict[str, str]:
    """name -> formula of every surrogate with a kernel, in kernel-code order."""
    import_module("snnexp.neurons")
    return dict(_SURROGATES)


def spec_of(kind: str) -> NeuronSpec:
    """The declaration that has ``kind`` among its members."""
    for spec in registered():
        if kind in spec.kinds:
            return spec
    raise KeyError(f"no declared neuron has kind {kind!r}")
