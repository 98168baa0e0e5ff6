"""Small stand-ins shared by the method tests: a tiny three-layer SNN and a stand-in for SNNModule (Dspike, IM-Loss),
and a model without taps with its data description (the methods that need taps)."""

from __future__ import annotations

import torch
from torch import nn

from snnexp.models.layers import SeqToBatch, SpikingModel
from snnexp.models.output import ModelOutput
from snnexp.neurons import LIF


class TinySNN(nn.Module):
    """Linear(3, 2) -> LIF -> Linear(2, 4) -> LIF -> Linear(4, 4) -> LIF -> Linear(4, 3), time-major."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = SeqToBatch(nn.Linear(3, 2)), SeqToBatch(nn.Linear(2, 4)), SeqToBatch(nn.Linear(4, 4))
        self.out = SeqToBatch(nn.Linear(4, 3))
        self.n1, self.n2, self.n3 = LIF(v_threshold=0.5), LIF(v_threshold=0.5), LIF(v_threshold=0.5)
        with torch.no_grad():  # strong enough weights that every layer fires
            g = torch.Generator().manual_seed(0)
            for fc in (self.fc1, self.fc2, self.fc3):
                fc.module.weight.copy_(torch.rand(fc.module.weight.shape, generator=g) * 1.3 - 0.3)
                fc.module.bias.fill_(0.2)

    def forward(self, x):
        s1 = self.n1(self.fc1(x))
        s2 = self.n2(self.fc2(s1))
        s3 = self.n3(self.fc3(s2))
        return ModelOutput(logits=self.out(s3))


class FakeModule(nn.Module):
    """Stands in for SNNModule: ``module(x)`` runs the model, ``current_epoch`` is settable."""

    def __init__(self, model):
        super().__init__()
        self.model, self.current_epoch = model, 0

    def forward(self, x):
        return self.model(x)


def tiny_batch(seed=0, T=4, B=16):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(T, B, 3, generator=g) * 2, torch.randint(0, 3, (B,), generator=g)


class NoTaps(SpikingModel):
    """A model exposing logits only: no stage taps, no features, no classifier."""

    def __init__(self):
        super().__init__((1, 8, 8), 10)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return ModelOutput(logits=self.fc(self.check_sequence(x).flatten(2)))


class TinyData:
    input_shape, num_classes, time_steps = (1, 8, 8), 10, None
