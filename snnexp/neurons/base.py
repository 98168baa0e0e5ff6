"""``MultiStepNeuron``: the base of every spiking neuron, time-major and stateless."""

from __future__ import annotations

import math

import torch
from torch import nn

from snnexp.neurons import functional as F
from snnexp.neurons.surrogate import Surrogate, resolve


class MultiStepNeuron(nn.Module):
    """A spiking neuron over a time-major sequence: ``x_seq [T, B, ...] -> spikes [T, B, ...]``.

    Each time step is three separate steps, each method carrying its equation:

        charge  H[t] = f(V[t-1], X[t])                   (the subclass's leak / integration)
        fire    S[t] = Heaviside(H[t] - V_threshold)     (surrogate gradient backward)
        reset   V[t] = H[t] - S[t] V_threshold            soft, ``v_reset=None``
                V[t] = H[t] (1 - S[t]) + V_reset S[t]     hard

    Stateless: every ``forward`` starts from rest, ``V[-1] = V_reset`` (0 for the soft reset), so there is
    no ``reset_net()`` to forget. To stream one step at a time, carry the state explicitly with :meth:`step`.

    The base ``forward`` unrolls :meth:`step` under plain autograd; subclasses with a fused implementation
    (LIF, IF, PLIF, Ternary, MLF: see ``snnexp.neurons.functional``) override it and honour ``backend``.
    """

    binary_spikes: bool = False  # True where every output is 0 or 1 (snnexp.training.spike_packing keeps them as bits)

    def __init__(
        self,
        v_threshold: float = 1.0,
        v_reset: float | None = 0.0,
        detach_reset: bool = False,
        surrogate: Surrogate | str | None = None,
        backend: str = "auto",
    ):
        super().__init__()
        name = type(self).__name__
        v_threshold = float(v_threshold)
        if not math.isfinite(v_threshold):
            raise ValueError(f"{name}: v_threshold must be finite, got {v_threshold}")
        if v_reset is None:
            if v_threshold <= 0:
                raise ValueError(
                    f"{name}: the soft reset (v_reset=None) subtracts v_threshold, which must then be > 0; "
                    f"got v_threshold={v_threshold}"
                )
        else:
            v_reset = float(v_reset)
            if not (math.isfinite(v_reset) and v_reset < v_threshold):
                raise ValueError(
                    f"{name}: v_reset must be finite and below v_threshold, got v_reset={v_reset}, "
                    f"v_threshold={v_threshold} (v_reset=None selects the soft reset)"
                )
        F.check_backend(backend)
        self.v_threshold = v_threshold
        self.v_reset = v_reset
        self.detach_reset = bool(detach_reset)
        self.surrogate = resolve(surrogate)
        self.backend = backend

    # ------------------------------------------------------------------------------ the three steps

    def charge(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``H[t] = f(V[t-1], X[t])``: the membrane charge before firing (defined by each neuron)."""
        raise NotImplementedError

    def fire(self, h: torch.Tensor) -> torch.Tensor:
        """``S[t] = Heaviside(H[t] - V_threshold)``, ``Heaviside(0) = 1``; backward ``surrogate.derivative``."""
        return F.spike(h - self.v_threshold, self.surrogate)

    def reset(self, h: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """Soft (``v_reset=None``): ``V[t] = H[t] - S[t] V_threshold``;
        hard: ``V[t] = H[t] (1 - S[t]) + V_reset S[t]``. ``detach_reset`` stops the gradient through
        ``S[t]`` here only (the spike output keeps its gradient)."""
        return F.reset(h, s.detach() if self.detach_reset else s, self.v_threshold, self.v_reset)

    # ------------------------------------------------------------------------------ running it

    def initial_state(self, x_t: torch.Tensor) -> torch.Tensor:
        """The resting potential ``V[-1] = V_reset`` (0 for the soft reset), shaped like one step ``x_t``."""
        return F.resting_potential(x_t, self.v_reset)

    def step(self, x_t: torch.Tensor, v: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One time step with explicit state, for streaming: ``(X[t], V[t-1]) -> (S[t], V[t])``.

        ``v=None`` starts from rest. Plain autograd: gradients flow through the returned state too.
        """
        if v is None:
            v = self.initial_state(x_t)
        h = self.charge(x_t, v)
        s = self.fire(h)
        return s, self.reset(h, s)

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        """``x_seq [T, B, ...] -> spikes [T, B, ...]``, starting from rest."""
        x_seq = self._check_input(x_seq)
        v, spikes = None, []
        for x_t in x_seq:
            s, v = self.step(x_t, v)
            spikes.append(s)
        return torch.stack(spikes)

    def _check_input(self, x_seq: torch.Tensor) -> torch.Tensor:
        if x_seq.dim() < 2:
            raise ValueError(
                f"{type(self).__name__} expects a time-major sequence [T, B, ...], got shape {tuple(x_seq.shape)}"
            )
        return x_seq if x_seq.is_floating_point() else x_seq.to(torch.get_default_dtype())

    def extra_repr(self) -> str:
        return (
            f"v_threshold={self.v_threshold}, v_reset={self.v_reset}, detach_reset={self.detach_reset}, "
            f"surrogate={self.surrogate!r}, backend={self.backend!r}"
        )
