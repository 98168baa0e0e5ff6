"""Adaptive-threshold LIF, ALIF (the adaptive neuron of Bellec, Salaj, Subramoney, Legenstein and Maass, "Long
short-term memory and learning-to-learn in networks of spiking neurons", NeurIPS 2018, LSNN), with a learnt
adaptation strength ``beta``:

    charge  H[t] = V[t-1] + (X[t] - V[t-1]) / tau
    fire    B[t] = V_threshold + beta A[t-1],   S[t] = Heaviside(H[t] - B[t])
    reset   V[t] = H[t] - S[t] B[t]                 (soft reset by the threshold that fired, as in LSNN)
            A[t] = rho A[t-1] + S[t]                (A[-1] = V[-1] = 0)

So the threshold at step t is ``V_threshold + beta (rho A[t-2] + S[t-1])``, the brief's ``b_t = b0 + beta a_t``
with ``a_t = rho a_{t-1} + s_{t-1}``. LSNN writes ``A = rho A + (1 - rho) S``; here that ``(1 - rho)`` is part of
``beta``. ``rho = exp(-1 / tau_adapt)``. ``beta`` is one learnt scalar per layer (``learn_beta=False`` fixes it);
its gradient is computed by the fused backward. Everything below the declaration is generic (``DeclaredNeuron``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from snnexp.kernels.spec import NeuronSpec, Param, register
from snnexp.neurons.declared import DeclaredNeuron
from snnexp.neurons.surrogate import Surrogate

DECLARATION = register(NeuronSpec(
    name="alif", title="ALIF",
    state=("v", "a"),
    params=(Param("k"), Param("v_threshold"), Param("beta", learnable=True), Param("rho")),
    lets={"b": "v_threshold + beta * a"},
    init={"v": "0.0", "a": "0.0"},
    charge="v + (x - v) * k",
    fire="h - b",
    reset={"v": "h - s * b", "a": "rho * a + s"},
    # partial derivatives for the fused backward (the tests check them against autograd of the lines above)
    dh={"x": "k", "v": "1.0 - k"},
    ds={"h": "sg", "a": "-beta * sg", "beta": "-a * sg"},
    dreset={"v": {"h": "1.0", "s": "-b", "a": "-s * beta", "beta": "-s * a"}, "a": {"a": "rho", "s": "1.0"}},
))


class ALIF(DeclaredNeuron):
    """Adaptive LIF: membrane time constant ``tau``, threshold ``v_threshold + beta A`` rising by ``beta`` per spike
    and decaying by ``rho`` per step; ``beta`` learnt."""

    declaration = DECLARATION
    binary_spikes = True  # S[t] is 0 or 1: saved spikes may be kept as bits

    def __init__(
        self,
        tau: float = 2.0,
        v_threshold: float = 1.0,
        beta: float = 0.2,
        rho: float = 0.9,
        learn_beta: bool = True,
        detach_reset: bool = False,
        surrogate: Surrogate | str | None = None,
        backend: str = "auto",
    ):
        super().__init__(v_threshold, None, detach_reset, surrogate, backend)
        tau, rho = float(tau), float(rho)
        if not (math.isfinite(tau) and tau > 0):
            raise ValueError(f"ALIF: tau must be a finite number > 0, got {tau}")
        if not 0.0 <= rho <= 1.0:
            raise ValueError(f"ALIF: rho must be in [0, 1], got {rho}")
        self.tau, self.rho = tau, rho
        beta = torch.tensor(float(beta))
        if learn_beta:
            self.beta = nn.Parameter(beta)
        else:
            self.register_buffer("beta", beta)

    def values(self) -> dict[str, float | torch.Tensor]:
        beta = self.beta if isinstance(self.beta, nn.Parameter) else float(self.beta)
        return {"k": 1.0 / self.tau, "v_threshold": self.v_threshold, "beta": beta, "rho": self.rho}

    def extra_repr(self) -> str:
        return (f"tau={self.tau}, v_threshold={self.v_threshold}, beta={self.beta.item():.4g}, rho={self.rho}, "
                f"learn_beta={isinstance(self.beta, nn.Parameter)}, detach_reset={self.detach_reset}, "
                f"surrogate={self.surrogate!r}, backend={self.backend!r}")
