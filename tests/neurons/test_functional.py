"""The multi-step neuron function (snnexp/neurons/functional.py): backend choice and its errors, the torch
backend's memory (it saves H, not a graph per step), and the torch backend on CUDA."""

from __future__ import annotations

import math

import pytest
import torch

import snnexp.kernels
from helpers.neurons import make_neuron, sample_input
from snnexp.errors import SnnexpError
from snnexp.neurons import LIF


# ------------------------------------------------------------------------------------ backends, errors


def test_cupy_backend_on_cpu_raises_a_clear_error(monkeypatch):
    x = sample_input(dtype=torch.float32)
    with pytest.raises(SnnexpError, match=r"snnexp\[cuda\]|CUDA tensors"):
        LIF(backend="cupy")(x)
    # with kernels available, CPU tensors are still refused with a message naming the fix
    monkeypatch.setattr(snnexp.kernels, "cupy_available", lambda: True, raising=False)
    with pytest.raises(SnnexpError, match="CUDA tensors only.*backend=torch"):
        LIF(backend="cupy")(x)


def test_auto_backend_uses_torch_on_cpu(monkeypatch):
    monkeypatch.setattr(snnexp.kernels, "cupy_available", lambda: True, raising=False)
    x = sample_input(dtype=torch.float32)
    assert torch.equal(LIF(backend="auto")(x), LIF(backend="torch")(x))


# ------------------------------------------------------------------------------------------------ memory


def saved_tensors_during_forward(neuron, x):
    shapes = []

    def pack(t):
        shapes.append(tuple(t.shape))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = neuron(x)
    out.sum().backward()  # backward works from what was saved
    return shapes


@pytest.mark.parametrize("kind,decay_input", [("LIF", True), ("IF", True), ("PLIF", False), ("PLIF", True)])
def test_torch_backend_saves_only_h_not_a_graph_per_step(kind, decay_input):
    neuron = make_neuron(kind, decay_input=decay_input, backend="torch")
    counts = []
    for T in (2, 16):
        x = sample_input((T, 4, 6), dtype=torch.float32).requires_grad_()
        shapes = saved_tensors_during_forward(neuron, x)
        full = [s for s in shapes if s == tuple(x.shape)]
        assert all(math.prod(s) in (1, x.numel()) for s in shapes)  # [T, ...] tensors or scalars only
        # H; PLIF with decay_input=True also keeps a reference to its input X for dL/dk
        assert len(full) == (2 if (kind, decay_input) == ("PLIF", True) else 1)
        counts.append(len(shapes))
    assert counts[0] == counts[1]  # independent of T


# --------------------------------------------------------------------------------------------------- GPU


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("kind", ["LIF", "IF", "PLIF"])
def test_torch_backend_on_cuda_matches_cpu(kind):
    cpu = make_neuron(kind, backend="torch")
    gpu = make_neuron(kind, backend="torch").cuda()
    x = sample_input(dtype=torch.float32).requires_grad_()
    x_gpu = x.detach().cuda().requires_grad_()
    out, out_gpu = cpu(x), gpu(x_gpu)
    assert torch.equal(out, out_gpu.cpu())
    out.sum().backward()
    out_gpu.sum().backward()
    torch.testing.assert_close(x.grad, x_gpu.grad.cpu(), rtol=1e-5, atol=1e-6)
