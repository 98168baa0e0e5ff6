"""The ANN baseline: the same architecture with every spiking neuron replaced by ReLU.

It is the reference point of every SNN paper's table and the teacher that distillation, EnOF and contrastive
methods load. Static inputs run a single step (repeating an image T times through ReLUs changes nothing).
"""

import torch.nn.functional as F
from torch import nn

from snnexp.training.method import Method
from snnexp.training.surgery import replace_neurons

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "leaky_relu": nn.LeakyReLU}


class ANN(Method):
    """Train the model as an ANN: neurons become ``activation``, loss is CE on the time-averaged logits."""

    def __init__(self, activation: str = "relu", label_smoothing: float = 0.0):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"method.activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.activation = activation
        self.label_smoothing = label_smoothing

    def timesteps(self, T: int) -> int:
        return 1

    def setup(self, model, datamodule):
        replace_neurons(model, ACTIVATIONS[self.activation])
        return model

    def loss(self, output, target):
        return F.cross_entropy(self.predict(output), target, label_smoothing=self.label_smoothing)
