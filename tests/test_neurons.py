"""Spiking neurons: LIF / IF / PLIF against an independent unrolled reference, surrogates, backends, memory."""

from __future__ import annotations

import itertools
import math
import re

import pytest
import torch

import snnexp.kernels
from snnexp.errors import SnnexpError
from snnexp.neurons import IF, LIF, PLIF, MultiStepNeuron
from snnexp.neurons.surrogate import SURROGATES, ATan, Dspike, Rectangle, Sigmoid, Triangle

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


# ------------------------------------------------------------------------------------------- surrogates


def primitive(name, x, a, c):
    """A function whose derivative is the surrogate (on the surrogate's support)."""
    if name == "sigmoid":
        return torch.sigmoid(a * x)
    if name == "atan":
        return torch.atan(math.pi / 2 * a * x) / math.pi + 0.5
    if name == "triangle":  # support |x| < a
        return (a * x - x * x.abs() / 2) / a**2 + 0.5
    if name == "rectangle":  # support |x| < a / 2
        return x / a + 0.5
    return torch.tanh(a * x) / (2 * math.tanh(a * c)) + 0.5  # dspike, support |x| <= c


@pytest.mark.parametrize("name", sorted(SURROGATES))
@pytest.mark.parametrize("alpha", [0.5, 1.0, 4.0])
def test_surrogate_derivative_is_the_derivative_of_its_primitive(name, alpha):
    surrogate = SURROGATES[name](alpha=alpha)
    width = getattr(surrogate, "width", 0.0)
    support = {"triangle": alpha, "rectangle": alpha / 2, "dspike": width}.get(name, 10.0)
    x = torch.linspace(-0.999 * support, 0.999 * support, 201, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(primitive(name, x, alpha, width).sum(), x)
    torch.testing.assert_close(surrogate.derivative(x.detach()), grad)

    outside = torch.tensor([-1.5 * support, 1.5 * support], dtype=torch.float64)
    if name in ("triangle", "rectangle", "dspike"):
        assert torch.equal(surrogate.derivative(outside), torch.zeros(2, dtype=torch.float64))


def test_surrogate_closed_forms_at_landmarks():
    x = torch.tensor([0.0])
    assert Sigmoid(alpha=4.0).derivative(x).item() == pytest.approx(1.0)  # alpha / 4
    assert ATan(alpha=2.0).derivative(x).item() == pytest.approx(1.0)  # alpha / 2
    assert Triangle(alpha=0.5).derivative(x).item() == pytest.approx(2.0)  # 1 / gamma
    assert Triangle(alpha=0.5).derivative(torch.tensor([0.5])).item() == 0.0
    assert Rectangle(alpha=0.5).derivative(x).item() == pytest.approx(2.0)  # 1 / a
    assert Rectangle(alpha=0.5).derivative(torch.tensor([0.25])).item() == 0.0  # open interval
    b, c = 3.0, 0.5
    at_edge = b / (2 * math.tanh(b * c)) * (1 - math.tanh(b * c) ** 2)
    assert Dspike(alpha=b, width=c).derivative(torch.tensor([c])).item() == pytest.approx(at_edge)
    assert Dspike(alpha=b, width=c).derivative(torch.tensor([c + 1e-3])).item() == 0.0


@pytest.mark.parametrize("name", sorted(SURROGATES))
def test_surrogate_forward_is_heaviside_with_h0_equal_1(name):
    surrogate = SURROGATES[name]()
    x = torch.tensor([-1.0, -1e-7, 0.0, 1e-7, 1.0])
    assert torch.equal(surrogate.forward(x), torch.tensor([0.0, 0.0, 1.0, 1.0, 1.0]))
    assert surrogate.name == name


def evaluate_c(snippet, x, alpha, width=0.0):
    """Evaluate a CUDA snippet as Python: float literals lose their ``f``, C math maps to ``math``."""
    py = re.sub(r"(\d\.\d*)f\b", r"\1", snippet)
    names = {"expf": math.exp, "fabsf": abs, "tanhf": math.tanh, "fmaxf": max}
    return float(eval(py, names, {"x": x, "alpha": alpha, "width": width}))


@pytest.mark.parametrize("name", sorted(SURROGATES))
def test_cuda_snippet_computes_the_same_derivative(name):
    surrogate = SURROGATES[name](alpha=1.7)
    width = getattr(surrogate, "width", 0.0)
    xs = [i / 20 for i in range(-60, 61)]
    expected = surrogate.derivative(torch.tensor(xs, dtype=torch.float64))
    got = torch.tensor([evaluate_c(surrogate.cuda_snippet, x, 1.7, width) for x in xs], dtype=torch.float64)
    torch.testing.assert_close(got, expected)


def test_surrogate_alpha_changes_at_runtime_without_rebuilding():
    neuron = LIF(surrogate=Sigmoid(alpha=4.0))
    x = sample_input(dtype=torch.float32)
    grads = []
    for alpha in (4.0, 1.0):
        neuron.surrogate.alpha = alpha
        x_ = x.clone().requires_grad_()
        neuron(x_).sum().backward()
        grads.append(x_.grad)
    assert not torch.allclose(grads[0], grads[1])
    assert repr(Dspike(alpha=2.0, width=0.5)) == "Dspike(alpha=2.0, width=0.5)"
    assert set(SURROGATES) == {"sigmoid", "atan", "triangle", "rectangle", "dspike"}


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


def test_base_class_forward_unrolls_the_step():
    class Unrolled(MultiStepNeuron):
        def charge(self, x, v):
            """``H[t] = V[t-1] + (X[t] - V[t-1]) / 2``."""
            return v + (x - v) / 2

    x = sample_input(dtype=torch.float32)
    assert torch.equal(Unrolled()(x), LIF(tau=2.0)(x))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_inputs_compute_in_their_dtype(dtype):
    for neuron in (LIF(), PLIF()):
        x = sample_input(dtype=dtype).requires_grad_()
        out = neuron(x)
        assert out.dtype == dtype
        out.float().sum().backward()
        assert x.grad.dtype == dtype
    assert PLIF().w.dtype == torch.float32


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
