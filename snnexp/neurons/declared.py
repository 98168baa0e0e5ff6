"""``DeclaredNeuron``: a neuron defined by its declaration alone (``snnexp.kernels.spec.NeuronSpec``). Its torch
reference evaluates the declared expressions step by step under autograd, and ``backend`` "auto" / "cupy" run
the kernels generated from the same declaration (``snnexp.kernels.generate``), so a new neuron is one file."""

from __future__ import annotations

import torch

from snnexp.kernels import expr
from snnexp.kernels.spec import NeuronSpec
from snnexp.neurons import functional as F
from snnexp.neurons.base import MultiStepNeuron

DECLARED: dict[str, type[DeclaredNeuron]] = {}  # kind -> class, for `python -m snnexp.neurons --check`


class DeclaredNeuron(MultiStepNeuron):
    """Subclasses set ``declaration`` and implement :meth:`values`; state is a dict of tensors by name."""

    declaration: NeuronSpec

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "declaration" in cls.__dict__:
            DECLARED.update({kind: cls for kind in cls.declaration.kinds})

    @property
    def kind(self) -> str:
        return self.declaration.kinds[0]

    def values(self) -> dict[str, float | torch.Tensor]:
        """Every declared parameter: a float, or the tensor of a learnable one (receives its gradient)."""
        raise NotImplementedError

    @classmethod
    def for_check(cls, detach_reset: bool, surrogate, backend: str) -> DeclaredNeuron:
        """An instance for the kernel check (defaults otherwise)."""
        return cls(detach_reset=detach_reset, surrogate=surrogate, backend=backend)

    # ------------------------------------------------------------------------------ torch reference

    def _env(self, x_t: torch.Tensor, state: dict) -> dict:
        env = {"x": x_t, **self.values(), **state, "kind": self.kind, "hard_reset": self.v_reset is not None}
        for name, text in self.declaration.lets.items():
            env[name] = expr.evaluate(text, env)
        return env

    def initial_state(self, x_t: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every state variable at rest, shaped like one step ``x_t``."""
        env = {"x": x_t, **self.values(), "kind": self.kind}
        for name, text in self.declaration.lets.items():
            if expr.names(text) <= set(env):
                env[name] = expr.evaluate(text, env)
        return {v: torch.zeros_like(x_t) + expr.evaluate(text, env) for v, text in self.declaration.init.items()}

    def step(self, x_t: torch.Tensor, state: dict | None = None) -> tuple[torch.Tensor, dict]:
        """``(X[t], state before) -> (S[t], state after)``, the declared expressions under autograd; the spike's
        backward is the surrogate's, and ``detach_reset`` stops the gradient through ``S[t]`` in the updates."""
        spec = self.declaration
        env = self._env(x_t, state if state is not None else self.initial_state(x_t))
        env["h"] = expr.evaluate(spec.charge, env)
        env["u"] = expr.evaluate(spec.fire, env)
        s = expr.evaluate(spec.spike, env, {"heaviside": lambda u: F.spike(u, self.surrogate)})
        env["s"] = s.detach() if self.detach_reset else s
        return s, {v: expr.evaluate(spec.reset[v], env) for v in spec.state}

    # ------------------------------------------------------------------------------ running it

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        """``x_seq [T, B, ...] -> spikes [T, B, ...]``, from rest; the generated kernels where ``backend`` allows."""
        from snnexp.kernels.variants import variant_of

        x_seq = self._check_input(x_seq)
        kernels = F.fused_kernels(self.backend, x_seq, self.surrogate)
        if kernels is None:
            return super().forward(x_seq)
        values = self.values()
        learnt = {n: v for n, v in values.items() if isinstance(v, torch.Tensor)}
        params = {n: float(v.detach().float().item()) if isinstance(v, torch.Tensor) else float(v)
                  for n, v in values.items()}
        variant = variant_of(self.kind, self.detach_reset, self.surrogate, x_seq.dtype,
                             hard_reset=self.v_reset is not None)
        return kernels.run(variant, x_seq, params, self.surrogate, learnt=learnt)
