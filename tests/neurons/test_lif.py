"""LIF / IF / PLIF (snnexp/neurons/lif.py) against an independent unrolled reference in every reset mode and with
every surrogate, at float64 and float32; stateless, streaming, low precision, parameter checks, repr."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from helpers.neurons import make_neuron, sample_input
from snnexp.neurons import IF, LIF, PLIF
from snnexp.neurons.surrogate import SURROGATES, ATan, Dspike, Sigmoid, Triangle

# --------------------------------------------------------------------------------------- the reference
# Written from the equations (SpikingJelly's LIFNode / IFNode / ParametricLIFNode), sharing no code with
# snnexp: an unrolled autograd loop whose spike uses the surrogate formulas below.


REFERENCE_DERIVATIVE = {
    "sigmoid": lambda x, a, c: a * torch.sigmoid(a * x) * (1 - torch.sigmoid(a * x)),
    "atan": lambda x, a, c: (a / 2) / (1 + (math.pi / 2 * a * x) ** 2),
    "triangle": lambda x, a, c: torch.relu(a - x.abs()) / a**2,
    "rectangle": lambda x, a, c: torch.where(x.abs() < a / 2, 1 / a, 0.0).to(x.dtype),
    "dspike": lambda x, a, c: torch.where(
        x.abs() <= c, a / (2 * math.tanh(a * c)) * (1 - torch.tanh(a * x) ** 2), 0.0
    ).to(x.dtype),
}


class ReferenceSpike(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, name, alpha, width):
        ctx.save_for_backward(x)
        ctx.args = (name, alpha, width)
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        name, alpha, width = ctx.args
        return grad * REFERENCE_DERIVATIVE[name](x, alpha, width), None, None, None


def reference_neuron(x_seq, kind, leak, v_threshold, v_reset, decay_input, detach_reset, surrogate):
    """``leak``: tau (LIF), the parameter w (PLIF), unused (IF)."""
    rest = 0.0 if v_reset is None else v_reset
    v = torch.full_like(x_seq[0], rest)
    spikes = []
    for x in x_seq:
        if kind == "IF":
            h = v + x
        elif kind == "LIF":
            h = v + (x - (v - rest)) / leak if decay_input else v - (v - rest) / leak + x
        else:
            k = torch.sigmoid(leak)
            h = v + (x - (v - rest)) * k if decay_input else v - (v - rest) * k + x
        s = ReferenceSpike.apply(h - v_threshold, surrogate.name, surrogate.alpha, getattr(surrogate, "width", 0.0))
        s_reset = s.detach() if detach_reset else s
        v = h - s_reset * v_threshold if v_reset is None else h * (1 - s_reset) + v_reset * s_reset
        spikes.append(s)
    return torch.stack(spikes)


COMBINATIONS = [
    (kind, v_reset, detach_reset, decay_input, name)
    for kind, v_reset, detach_reset, decay_input, name in itertools.product(
        ["LIF", "IF", "PLIF"], [None, 0.0, -0.3], [False, True], [True, False], sorted(SURROGATES)
    )
    if not (kind == "IF" and not decay_input)  # IF has no decay term
]


@pytest.mark.parametrize("kind,v_reset,detach_reset,decay_input,surrogate_name", COMBINATIONS)
def test_lif_matches_unrolled_reference_for_all_reset_modes(kind, v_reset, detach_reset, decay_input, surrogate_name):
    neuron = make_neuron(kind, v_reset, decay_input, detach_reset, SURROGATES[surrogate_name](), backend="torch")
    neuron.double()
    x = sample_input().requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    w_ref = neuron.w.detach().clone().requires_grad_() if kind == "PLIF" else None
    leak = {"LIF": 3.0, "IF": None, "PLIF": w_ref}[kind]
    upstream = sample_input(seed=1)

    spikes = neuron(x)
    expected = reference_neuron(x_ref, kind, leak, 1.0, v_reset, decay_input, detach_reset, neuron.surrogate)
    assert torch.equal(spikes, expected)
    assert 0 < spikes.mean() < 1

    (spikes * upstream).sum().backward()
    (expected * upstream).sum().backward()
    assert x.grad.abs().sum() > 0
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-10, atol=1e-12)
    if kind == "PLIF":
        torch.testing.assert_close(neuron.w.grad, w_ref.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", ["LIF", "IF", "PLIF"])
@pytest.mark.parametrize("v_reset", [None, 0.0])
def test_float32_matches_reference_at_float_precision(kind, v_reset):
    neuron = make_neuron(kind, v_reset, tau=2.0, surrogate=ATan())
    x = sample_input((6, 32, 16), dtype=torch.float32).requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    w_ref = neuron.w.detach().clone().requires_grad_() if kind == "PLIF" else None
    leak = {"LIF": 2.0, "IF": None, "PLIF": w_ref}[kind]

    spikes = neuron(x)
    expected = reference_neuron(x_ref, kind, leak, 1.0, v_reset, True, False, neuron.surrogate)
    assert torch.equal(spikes, expected)
    spikes.sum().backward()
    expected.sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-5, atol=1e-6)
    if kind == "PLIF":
        torch.testing.assert_close(neuron.w.grad, w_ref.grad, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------- the module


@pytest.mark.parametrize("kind", ["LIF", "IF", "PLIF"])
def test_neuron_is_stateless_between_calls(kind):
    neuron = make_neuron(kind)
    x = sample_input(dtype=torch.float32)
    first = neuron(x)
    neuron(sample_input(dtype=torch.float32, seed=3) * 5)
    assert torch.equal(neuron(x), first)


@pytest.mark.parametrize("kind", ["LIF", "IF", "PLIF"])
def test_non_contiguous_input_gives_the_same_spikes_and_gradients(kind):
    neuron = make_neuron(kind)
    batch_major = sample_input((4, 8, 10), dtype=torch.float32)
    views = [batch_major.transpose(0, 1), batch_major.transpose(0, 1)[:, :, ::2]]
    for view in views:
        assert not view.is_contiguous()
        x = view.detach().requires_grad_()
        x_dense = view.contiguous().requires_grad_()
        out, out_dense = neuron(x), neuron(x_dense)
        assert torch.equal(out, out_dense)
        out.sum().backward()
        out_dense.sum().backward()
        torch.testing.assert_close(x.grad, x_dense.grad)


@pytest.mark.parametrize("kind", ["LIF", "IF", "PLIF"])
def test_single_time_step(kind):
    neuron = make_neuron(kind, surrogate=Triangle())
    x = sample_input((1, 3, 4)).requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    neuron.double()
    leak = neuron.w.detach() if kind == "PLIF" else 3.0
    out = neuron(x)
    expected = reference_neuron(x_ref, kind, leak, 1.0, 0.0, True, False, neuron.surrogate)
    assert out.shape == x.shape and torch.equal(out, expected)
    out.sum().backward()
    expected.sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad)


@pytest.mark.parametrize("kind", ["LIF", "IF", "PLIF"])
@pytest.mark.parametrize("v_reset,detach_reset", [(0.0, False), (None, True), (-0.3, True)])
def test_streaming_step_equals_multistep_forward(kind, v_reset, detach_reset):
    neuron = make_neuron(kind, v_reset, detach_reset=detach_reset, surrogate=Dspike())
    neuron.double()
    x = sample_input().requires_grad_()
    x_stream = x.detach().clone().requires_grad_()

    spikes = neuron(x)
    v, streamed = None, []
    for x_t in x_stream:
        s_t, v = neuron.step(x_t, v)
        streamed.append(s_t)
    streamed = torch.stack(streamed)
    assert torch.equal(spikes, streamed)

    w_grads = []
    for out, inp in ((spikes, x), (streamed, x_stream)):
        if kind == "PLIF":
            neuron.w.grad = None
        (out * sample_input(seed=2)).sum().backward()
        if kind == "PLIF":
            w_grads.append(neuron.w.grad.clone())
    torch.testing.assert_close(x.grad, x_stream.grad)
    if kind == "PLIF":
        torch.testing.assert_close(w_grads[0], w_grads[1])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_inputs_compute_in_their_dtype(dtype):
    for neuron in (LIF(), PLIF()):
        x = sample_input(dtype=dtype).requires_grad_()
        out = neuron(x)
        assert out.dtype == dtype
        out.float().sum().backward()
        assert x.grad.dtype == dtype
    assert PLIF().w.dtype == torch.float32


def test_unknown_backend_and_invalid_parameters_raise_value_errors():
    with pytest.raises(ValueError, match="torch, cupy, auto"):
        LIF(backend="triton")
    with pytest.raises(ValueError, match="tau"):
        LIF(tau=0.0)
    with pytest.raises(ValueError, match="tau"):
        PLIF(tau=1.0)
    with pytest.raises(ValueError, match="v_reset"):
        IF(v_threshold=0.5, v_reset=0.5)
    with pytest.raises(ValueError, match="soft reset"):
        LIF(v_threshold=-1.0, v_reset=None)
    with pytest.raises(ValueError, match="unknown surrogate"):
        LIF(surrogate="sigmod")
    with pytest.raises(ValueError, match="alpha"):
        Sigmoid(alpha=0.0)
    with pytest.raises(ValueError, match=r"\[T, B, \.\.\.\]"):
        LIF()(torch.ones(5))


def test_surrogate_given_by_name_and_repr_show_parameters():
    neuron = LIF(tau=2.0, v_reset=None, surrogate="atan")
    assert isinstance(neuron.surrogate, ATan) and neuron.surrogate.alpha == 2.0
    assert repr(neuron) == (
        "LIF(tau=2.0, decay_input=True, v_threshold=1.0, v_reset=None, detach_reset=False, "
        "surrogate=ATan(alpha=2.0), backend='auto')"
    )
    assert PLIF(tau=4.0).tau == pytest.approx(4.0)
