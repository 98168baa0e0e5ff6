"""Input encoders: turn a static batch ``[B, ...]`` (images, point clouds) into a time-major sequence
``[T, B, ...]`` for a spiking model, which takes sequences only and reads T from them.

    from snnexp.models.encoders import make_encoder
    encoder = make_encoder("direct")       # or "poisson"; the config key is the top-level encoder=...
    out = model(encoder(images, T=4))      # [B, 3, 32, 32] -> [4, B, 3, 32, 32] -> out.logits [4, B, C]

Encoders are stateless modules: T is an argument of every call, never an attribute, so the same encoder serves
a training T, an ANN baseline at T = 1 and a test-time sweep over T alike. Event data is already a sequence
and needs no encoder.
"""

import torch
from torch import nn

from snnexp.models.registry import ModelConfigError


def check_timesteps(T) -> int:
    """``T`` as an ``int`` when it is a positive integer (``4`` or ``4.0``); otherwise a ``ModelConfigError``."""
    try:
        valid = not isinstance(T, bool) and int(T) == T and T >= 1
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise ModelConfigError(f"The number of time steps T must be a positive integer, got {T!r}.")
    return int(T)


class DirectEncoder(nn.Module):
    """Direct coding: the analog input at every step, ``x_seq[t] = x`` for t = 0..T-1.

    The sequence is a view of ``x`` (``expand``: no copy); the first layer's time folding materialises it.
    """

    def forward(self, x: torch.Tensor, T: int) -> torch.Tensor:
        return x.unsqueeze(0).expand(check_timesteps(T), *x.shape)


class PoissonEncoder(nn.Module):
    """Rate (Poisson/Bernoulli) coding: ``x_seq[t] ~ Bernoulli(clamp(x, 0, 1))``, drawn independently per step
    and element; no gradient flows to ``x``."""

    def forward(self, x: torch.Tensor, T: int) -> torch.Tensor:
        p = x.detach().clamp(0, 1).unsqueeze(0).expand(check_timesteps(T), *x.shape)
        return torch.bernoulli(p)


ENCODERS = {"direct": DirectEncoder, "poisson": PoissonEncoder}


def make_encoder(name: str) -> nn.Module:
    """The input encoder called ``name`` (one of :data:`ENCODERS`)."""
    if name not in ENCODERS:
        raise ModelConfigError(
            f"Unknown input encoder {name!r}; valid encoders are {sorted(ENCODERS)} (set encoder=...)."
        )
    return ENCODERS[name]()
