"""The ANN baseline: the same architecture with every spiking neuron replaced by ReLU.

It is the reference point of every SNN paper's table and the teacher that distillation, EnOF and contrastive
methods load. Static inputs run a single step (repeating an image T times through ReLUs changes nothing).
"""

import torch.nn.functional as F
from torch import nn

from snnexp.methods.base import Method
from snnexp.neurons import MultiStepNeuron

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "leaky_relu": nn.LeakyReLU}


def replace_neurons(model: nn.Module, make_activation) -> int:
    """Swap every spiking neuron in ``model`` for ``make_activation()`` in place; returns how many were swapped."""
    count = 0
    for name, child in model.named_children():
        if isinstance(child, MultiStepNeuron):
            setattr(model, name, make_activation())
            count += 1
        else:
            count += replace_neurons(child, make_activation)
    return count


class ANN(Method):
    """Train the model as an ANN: neurons become ``activation``, loss is CE on the time-averaged logits."""

    def __init__(self, activation: str = "relu", label_smoothing: float = 0.0):
        if activation not in ACTIVATIONS:
            raise ValueError(f"method.activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.activation = activation
        self.label_smoothing = label_smoothing

    def setup(self, model, datamodule):
        replace_neurons(model, ACTIVATIONS[self.activation])
        if datamodule.time_steps is None and hasattr(model, "T"):
            model.T = 1
        return model

    def loss(self, output, target):
        return F.cross_entropy(self.predict(output), target, label_smoothing=self.label_smoothing)
