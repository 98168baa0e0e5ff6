"""Inputs and neuron constructors shared by the neuron and kernel tests."""

from __future__ import annotations

import torch

from snnexp.neurons import IF, LIF, PLIF


def make_neuron(kind, v_reset=0.0, decay_input=True, detach_reset=False, surrogate=None, tau=3.0, **kw):
    common = dict(v_reset=v_reset, detach_reset=detach_reset, surrogate=surrogate, **kw)
    if kind == "LIF":
        return LIF(tau=tau, decay_input=decay_input, **common)
    if kind == "PLIF":
        return PLIF(tau=tau, decay_input=decay_input, **common)
    return IF(**common)


def sample_input(shape=(8, 4, 5), dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (0.8 * torch.randn(shape, generator=g, dtype=torch.float64) + 0.5).to(dtype)


def scaled_input(shape=(8, 4, 6), scale=1.0, seed=0):
    """A float64 input around ``0.3 * scale`` that requires grad (the ternary, MLF and I-LIF tests)."""
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(shape, generator=g, dtype=torch.float64) + 0.3 * scale).requires_grad_()


def spikes_and_input_grad(fn, x, seed=1):
    """``fn(x)`` and ``d <y, w> / dx`` for a fixed random ``w``."""
    x = x.detach().clone().requires_grad_()
    y = fn(x)
    w = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed), dtype=y.dtype)
    (grad,) = torch.autograd.grad((y * w).sum(), x)
    return y.detach(), grad
