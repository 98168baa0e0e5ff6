"""Surrogate gradients (snnexp/neurons/surrogate.py): each derivative is the derivative of its primitive, closed
forms at landmarks, a Heaviside forward, the CUDA snippet computing the same derivative, and alpha changed at run time."""

from __future__ import annotations

import math
import re

import pytest
import torch

from helpers.neurons import sample_input
from snnexp.neurons import LIF
from snnexp.neurons.surrogate import SURROGATES, ATan, Dspike, Rectangle, Sigmoid, Triangle


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
    py = re.sub(r"(\d\.\d*)f\b", r"\1", snippet).replace("snn::maximum", "maximum")
    names = {"expf": math.exp, "fabsf": abs, "tanhf": math.tanh, "maximum": max}
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
