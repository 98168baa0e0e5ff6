"""Spiking neurons: time-major (``[T, B, ...]``), stateless, SpikingJelly's parameter names.

    from snnexp.neurons import LIF, IF, PLIF
    from snnexp.neurons.surrogate import Sigmoid, ATan, Triangle, Rectangle, Dspike
    spikes = LIF(tau=2.0, surrogate=ATan(alpha=2.0))(x_seq)

Beyond binary spikes: ``Ternary`` ({-a, 0, a}; ``fold_ternary_amplitudes`` for inference), ``MLF`` (sum of
K level spikes) and ``ILIF`` (integer counts up to D; ``expand_to_binary`` for spike-driven inference).
"""

from snnexp.neurons import functional, surrogate
from snnexp.neurons.base import MultiStepNeuron
from snnexp.neurons.ilif import ILIF, expand_to_binary
from snnexp.neurons.lif import IF, LIF, PLIF
from snnexp.neurons.mlf import MLF
from snnexp.neurons.ternary import Ternary, fold_ternary_amplitudes

__all__ = [
    "MultiStepNeuron", "LIF", "IF", "PLIF", "Ternary", "MLF", "ILIF", "fold_ternary_amplitudes", "expand_to_binary",
    "surrogate", "functional",
]
