"""ReverB's real-valued spike (Guo et al., "ReverB-SNN: Reversing Bit of the Weight and Activation for Spiking
Neural Networks", ICML 2025): a LIF neuron that, when it fires, emits its membrane potential instead of 1.

    charge  H[t] = V[t-1] + (X[t] - (V[t-1] - V_reset)) / tau      (LIF; decay_input=False: V[t-1](1-1/tau) + X[t])
    fire    S[t] = Heaviside(H[t] - V_threshold)
    output  O[t] = S[t] H[t]                                       (the paper: O = U if U >= V_th else 0)
    reset   as LIF (hard by default: V[t] = H[t] (1 - S[t]) + V_reset S[t])

Backward through ``O = S H`` by the product rule: ``dO/dH = S + H surrogate'(H - V_th)``. The binary weights
that go with it are ``model.binary_weights=true`` (``snnexp.models.binary``). Ours, where the text we could read
is silent (no official code found): the reset (LIF's, on the binary ``S``), and the defaults in
``conf/neuron/reverb.yaml`` (tau 2 with ``decay_input=false``, i.e. ``U = 0.5 U + X``; V_th 1).
"""

from __future__ import annotations

import torch

from snnexp.neurons.base import MultiStepNeuron
from snnexp.neurons.lif import LIF


class ReverBLIF(LIF):
    """LIF with real-valued spikes ``O[t] = S[t] H[t]``; unrolled in plain autograd (no fused backend)."""

    binary_spikes = False  # O[t] = S[t] H[t] is real-valued

    def step(self, x_t: torch.Tensor, v: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(X[t], V[t-1]) -> (O[t], V[t])`` with ``O[t] = S[t] H[t]``; the reset uses the binary ``S[t]``."""
        if v is None:
            v = self.initial_state(x_t)
        h = self.charge(x_t, v)
        s = self.fire(h)
        return s * h, self.reset(h, s)

    forward = MultiStepNeuron.forward
