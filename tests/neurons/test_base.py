"""The multi-step neuron base class (snnexp/neurons/base.py): a subclass defining only ``charge`` unrolls the step."""

import pytest
import torch

from helpers.neurons import sample_input, scaled_input
from snnexp.neurons import ILIF, LIF, MLF, MultiStepNeuron, Ternary


def test_base_class_forward_unrolls_the_step():
    class Unrolled(MultiStepNeuron):
        def charge(self, x, v):
            """``H[t] = V[t-1] + (X[t] - V[t-1]) / 2``."""
            return v + (x - v) / 2

    x = sample_input(dtype=torch.float32)
    assert torch.equal(Unrolled()(x), LIF(tau=2.0)(x))


@pytest.mark.parametrize("make", [ILIF, MLF, Ternary], ids=lambda c: c.__name__)
def test_streaming_steps_match_the_sequence_forward(make):
    neuron = make().double()
    assert isinstance(neuron, MultiStepNeuron)
    x = scaled_input(scale=2.0).detach()
    v, outs = None, []
    for x_t in x:
        s, v = neuron.step(x_t, v)
        outs.append(s)
    torch.testing.assert_close(torch.stack(outs), neuron(x))
