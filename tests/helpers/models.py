"""Shared by the model tests: a stand-in neuron, builders, direct coding, and parameter counts from layer lists."""

from __future__ import annotations

import functools

import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from helpers.runs import compose_config
from snnexp.models import create_model
from snnexp.models.encoders import DirectEncoder
from snnexp.neurons import IF, LIF, PLIF

B, T, C = 2, 2, 5


class StandInNeuron(nn.Module):
    """Multi-step LIF (u <- 0.5 u + x, fire at 1, hard reset) with a sigmoid straight-through gradient."""

    def __init__(self, v_threshold: float = 1.0):
        super().__init__()
        self.v_threshold = v_threshold

    def forward(self, x):
        v, spikes = torch.zeros_like(x[0]), []
        for x_t in x:
            v = 0.5 * v + x_t
            sg = torch.sigmoid(4 * (v - self.v_threshold))
            s = (v >= self.v_threshold).float() + sg - sg.detach()
            v = v * (1 - s.detach())
            spikes.append(s)
        return torch.stack(spikes)


def real_lif():
    try:
        from snnexp.neurons import LIF
    except ImportError:
        pytest.skip("snnexp.neurons.LIF is not available yet")
    return functools.partial(LIF, tau=2.0)


def build(name, shape, neuron=StandInNeuron, **kw):
    return create_model(name, neuron=neuron, input_shape=shape, num_classes=C, **kw)


def seq(x, steps=T):
    """The static batch ``x`` repeated at ``steps`` time steps (direct coding)."""
    return DirectEncoder()(x, steps)


def count_params(model):
    return sum(p.numel() for p in model.parameters())


# ---- parameter counts of published layer lists ------------------------------------------------------------------

def conv(cin, cout, k, bias=False):
    return cin * cout * k * k + (cout if bias else 0)


def bn(c):
    return 2 * c


def linear(fin, fout, bias=True):
    return fin * fout + (fout if bias else 0)


# ---- the transformer-family models (Spike-driven Transformer, STMixer) ----------------------------------------

TOKEN_NEURONS = {
    "lif": functools.partial(LIF, tau=2.0, detach_reset=True),
    "if": functools.partial(IF, detach_reset=True),
    "plif": functools.partial(PLIF, tau=2.0, detach_reset=True),
}


def build_named(name, input_shape, num_classes=C, neuron=TOKEN_NEURONS["lif"]):
    """Compose ``model=name`` exactly as the CLI does (schema-checked) and instantiate it as snnexp.train does."""
    cfg = compose_config([f"model={name}"])
    return instantiate(cfg.model, neuron=neuron, input_shape=tuple(input_shape), num_classes=num_classes)
