"""The multi-step neuron base class (snnexp/neurons/base.py): a subclass defining only ``charge`` unrolls the step."""

import torch

from helpers.neurons import sample_input
from snnexp.neurons import LIF, MultiStepNeuron


def test_base_class_forward_unrolls_the_step():
    class Unrolled(MultiStepNeuron):
        def charge(self, x, v):
            """``H[t] = V[t-1] + (X[t] - V[t-1]) / 2``."""
            return v + (x - v) / 2

    x = sample_input(dtype=torch.float32)
    assert torch.equal(Unrolled()(x), LIF(tau=2.0)(x))
