"""Spiking neurons: time-major (``[T, B, ...]``), stateless, SpikingJelly's parameter names.

    from snnexp.neurons import LIF, IF, PLIF
    from snnexp.neurons.surrogate import Sigmoid, ATan, Triangle, Rectangle, Dspike
    spikes = LIF(tau=2.0, surrogate=ATan(alpha=2.0))(x_seq)

Beyond binary spikes: ``Ternary`` ({-a, 0, a}; ``fold_ternary_amplitudes`` for inference), ``MLF`` (sum of
K level spikes) and ``ILIF`` (integer counts up to D; ``expand_to_binary`` for spike-driven inference).

Every other module of this package is imported too (sorted by name), so that each neuron declared for the fused
kernels (``snnexp.kernels.spec``) is registered whatever the caller imported: a new neuron is its own file.
"""

import pkgutil
from importlib import import_module

from snnexp.neurons import functional, surrogate
from snnexp.neurons.base import MultiStepNeuron
from snnexp.neurons.lif import IF, LIF, PLIF  # registered first, in this order: the kernels' kind codes 0..4
from snnexp.neurons.ternary import Ternary, fold_ternary_amplitudes  # noqa: I001
from snnexp.neurons.mlf import MLF
from snnexp.neurons.ilif import ILIF, expand_to_binary

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _module not in ("__main__", "check"):
        import_module(f"{__name__}.{_module}")

__all__ = [
    "MultiStepNeuron", "LIF", "IF", "PLIF", "Ternary", "MLF", "ILIF", "fold_ternary_amplitudes", "expand_to_binary",
    "surrogate", "functional",
]
