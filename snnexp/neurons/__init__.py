"""Spiking neurons: time-major (``[T, B, ...]``), stateless, SpikingJelly's parameter names.

    from snnexp.neurons import LIF, IF, PLIF
    from snnexp.neurons.surrogate import Sigmoid, ATan, Triangle, Rectangle, Dspike
    spikes = LIF(tau=2.0, surrogate=ATan(alpha=2.0))(x_seq)
"""

from snnexp.neurons import functional, surrogate
from snnexp.neurons.base import MultiStepNeuron
from snnexp.neurons.lif import IF, LIF, PLIF

__all__ = ["MultiStepNeuron", "LIF", "IF", "PLIF", "surrogate", "functional"]
