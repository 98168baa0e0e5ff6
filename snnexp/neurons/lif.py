"""LIF, IF and PLIF neurons (SpikingJelly's LIFNode, IFNode, ParametricLIFNode, multi-step).

    LIF   H[t] = V[t-1] + (X[t] - (V[t-1] - V_reset)) / tau         decay_input=True
          H[t] = V[t-1] - (V[t-1] - V_reset) / tau + X[t]           decay_input=False
    IF    H[t] = V[t-1] + X[t]
    PLIF  as LIF with 1 / tau = sigmoid(w), w learnt (Fang et al., ICCV 2021)

then ``S[t] = Heaviside(H[t] - V_threshold)`` and the soft or hard reset (see ``MultiStepNeuron``).
``V_reset`` is taken as 0 in the decay term when the reset is soft (``v_reset=None``). Papers that write
``u = 0.5 u + x`` mean LIF with ``tau=2, decay_input=False``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from snnexp.kernels.spec import NeuronSpec, Param, register
from snnexp.neurons import functional as F
from snnexp.neurons.base import MultiStepNeuron
from snnexp.neurons.surrogate import Surrogate

# The fused kernels' declaration of the family (snnexp/kernels/generate.py writes them from it); the torch
# reference is snnexp.neurons.functional.MultiStepNeuronFunction, which the tests hold the kernels to.
DECLARATION = register(NeuronSpec(
    name="multistep", op="neuron", title="Neuron", kinds=("if", "lif", "plif"),
    switches=("decay_input", "hard_reset"), switch_kinds={"decay_input": ("lif", "plif")},
    state=("v",), params=(Param("k", learnable='kind == "plif"'), Param("v_threshold"), Param("v_reset")),
    lets={"v_rest": "v_reset if hard_reset else 0.0"},
    init={"v": "v_rest"},
    charge='v + x if kind == "if" else (v + (x - (v - v_rest)) * k if decay_input else v - (v - v_rest) * k + x)',
    fire="h - v_threshold",
    reset={"v": "h * (1.0 - s) + v_reset * s if hard_reset else h - s * v_threshold"},
    dh={"x": 'k if kind != "if" and decay_input else 1.0', "v": '1.0 if kind == "if" else 1.0 - k',
        "k": "x - (v - v_rest) if decay_input else -(v - v_rest)"},
    ds={"h": "sg"},
    dreset={"v": {"h": "1.0 - s if hard_reset else 1.0", "s": "v_reset - h if hard_reset else -v_threshold"}},
))


class _Integrator(MultiStepNeuron):
    """The LIF family: the charge is fixed by the leak ``k`` (``None``: no leak) and ``decay_input``,
    so the whole sequence runs through one fused function (``backend``: torch, cupy or auto)."""

    decay_input: bool = False
    binary_spikes: bool = True  # emits 0 or 1: the spikes a layer saves for its backward may be kept as bits

    def leak(self) -> F.Leak:
        """``k`` in ``H[t] = V[t-1] + k (X[t] - (V[t-1] - V_reset))``; ``None`` for IF."""
        raise NotImplementedError

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        """``x_seq [T, B, ...] -> spikes [T, B, ...]``, starting from rest."""
        x_seq = self._check_input(x_seq)
        return F.multistep_neuron(
            x_seq, self.leak(), self.v_threshold, self.v_reset, self.decay_input, self.detach_reset,
            self.surrogate, self.backend,
        )


class LIF(_Integrator):
    """Leaky integrate-and-fire, time constant ``tau``.

    ``LIF(tau=2.0, decay_input=False)`` is the ``u = 0.5 u + x`` of many papers.
    """

    def __init__(
        self,
        tau: float = 2.0,
        v_threshold: float = 1.0,
        v_reset: float | None = 0.0,
        decay_input: bool = True,
        detach_reset: bool = False,
        surrogate: Surrogate | str | None = None,
        backend: str = "auto",
    ):
        super().__init__(v_threshold, v_reset, detach_reset, surrogate, backend)
        tau = float(tau)
        if not (math.isfinite(tau) and tau > 0):
            raise ValueError(f"LIF: tau must be a finite number > 0, got {tau}")
        self.tau = tau
        self.decay_input = bool(decay_input)

    def leak(self) -> float:
        """``k = 1 / tau``."""
        return 1.0 / self.tau

    def charge(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``H[t] = V[t-1] + (X[t] - (V[t-1] - V_reset)) / tau`` (decay_input=True) or
        ``H[t] = V[t-1] - (V[t-1] - V_reset) / tau + X[t]`` (decay_input=False)."""
        return F.charge(x, v, self.leak(), self.v_reset, self.decay_input)

    def extra_repr(self) -> str:
        return f"tau={self.tau}, decay_input={self.decay_input}, " + super().extra_repr()


class IF(_Integrator):
    """Integrate-and-fire: LIF without leak."""

    def __init__(
        self,
        v_threshold: float = 1.0,
        v_reset: float | None = 0.0,
        detach_reset: bool = False,
        surrogate: Surrogate | str | None = None,
        backend: str = "auto",
    ):
        super().__init__(v_threshold, v_reset, detach_reset, surrogate, backend)

    def leak(self) -> None:
        """No leak."""
        return None

    def charge(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``H[t] = V[t-1] + X[t]``."""
        return F.charge(x, v, None, self.v_reset, decay_input=False)


class PLIF(_Integrator):
    """Parametric LIF (Fang et al., "Incorporating Learnable Membrane Time Constant to Enhance Learning of
    Spiking Neural Networks", ICCV 2021): LIF whose decay ``k = 1 / tau = sigmoid(w)`` is learnt, one scalar
    ``w`` per layer, initialised to ``w = -log(tau - 1)`` so that ``1 / k = tau`` at the start (SpikingJelly calls
    this argument ``init_tau``; snnexp names it ``tau`` like LIF's so ``neuron=plif neuron.tau=3`` works).
    """

    def __init__(
        self,
        tau: float = 2.0,
        v_threshold: float = 1.0,
        v_reset: float | None = 0.0,
        decay_input: bool = True,
        detach_reset: bool = False,
        surrogate: Surrogate | str | None = None,
        backend: str = "auto",
    ):
        super().__init__(v_threshold, v_reset, detach_reset, surrogate, backend)
        tau = float(tau)
        if not (math.isfinite(tau) and tau > 1):
            raise ValueError(f"PLIF: tau (initial) must be a finite number > 1 (tau = 1 / sigmoid(w) > 1), got {tau}")
        self.w = nn.Parameter(torch.tensor(-math.log(tau - 1.0)))
        self.decay_input = bool(decay_input)

    @property
    def tau(self) -> float:
        """The current time constant ``1 / sigmoid(w)``."""
        return 1.0 / torch.sigmoid(self.w.detach()).item()

    def leak(self) -> torch.Tensor:
        """``k = sigmoid(w)``, differentiable in ``w``."""
        return torch.sigmoid(self.w)

    def charge(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``H[t] = V[t-1] + (X[t] - (V[t-1] - V_reset)) sigmoid(w)`` (decay_input=True) or
        ``H[t] = V[t-1] - (V[t-1] - V_reset) sigmoid(w) + X[t]`` (decay_input=False)."""
        return F.charge(x, v, self.leak().to(x.dtype), self.v_reset, self.decay_input)

    def extra_repr(self) -> str:
        return f"tau={self.tau:.4g} (learnt), decay_input={self.decay_input}, " + super().extra_repr()
