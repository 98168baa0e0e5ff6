"""Surrogate gradients: the spike is a Heaviside step forward and a smooth bump backward.

With ``x = H - V_threshold`` (membrane charge minus threshold), every surrogate fires
``S = Heaviside(x)`` with ``Heaviside(0) = 1`` and back-propagates ``dS/dx := derivative(x)``.

A surrogate is a small plain object, not an ``nn.Module``: one instance may be shared by many neurons,
and its parameters (``alpha``, Dspike's ``width``) are ordinary attributes that a training method may
change between steps (evolving surrogates) without rebuilding or recompiling anything. The CUDA kernels
receive them as kernel arguments.

Each surrogate carries its derivative twice, side by side, so the two cannot drift apart unnoticed:
``derivative`` (torch) and ``cuda_snippet``, the same function as a C expression in ``x``, ``alpha``
(and ``width`` for Dspike), written so that it is also valid Python once ``expf``/``fabsf``/``tanhf``/
``fmaxf`` are mapped to their math counterparts (the tests evaluate it that way).

Parameterisations follow SpikingJelly (Sigmoid, ATan), TET (Triangle), STBP (Rectangle) and Dspike, so a
user's ``alpha`` means what it means there.
"""

from __future__ import annotations

import math

import torch


def heaviside(x: torch.Tensor) -> torch.Tensor:
    """``Heaviside(x) = 1 if x >= 0 else 0``, in ``x``'s dtype."""
    return (x >= 0).to(x.dtype)


class Surrogate:
    """Base class: forward is the Heaviside step, ``derivative`` is the surrogate gradient ``dS/dx``."""

    name: str = ""
    cuda_snippet: str = ""

    def __init__(self, alpha: float):
        alpha = float(alpha)
        if not (math.isfinite(alpha) and alpha > 0):
            raise ValueError(f"{type(self).__name__}: alpha must be a finite number > 0, got {alpha}")
        self.alpha = alpha

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``S = Heaviside(x)``, ``Heaviside(0) = 1``."""
        return heaviside(x)

    __call__ = forward

    def derivative(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def params(self) -> dict[str, float]:
        """The runtime parameters, as passed to the CUDA kernels."""
        return {"alpha": self.alpha}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"


class Sigmoid(Surrogate):
    """SpikingJelly's sigmoid: ``dS/dx = alpha * sigmoid(alpha x) * (1 - sigmoid(alpha x))``."""

    name = "sigmoid"
    cuda_snippet = "alpha / (1.0f + expf(-alpha * x)) * (1.0f - 1.0f / (1.0f + expf(-alpha * x)))"

    def __init__(self, alpha: float = 4.0):
        super().__init__(alpha)

    def derivative(self, x: torch.Tensor) -> torch.Tensor:
        sg = torch.sigmoid(self.alpha * x)
        return self.alpha * sg * (1.0 - sg)


class ATan(Surrogate):
    """SpikingJelly's arctan: ``dS/dx = (alpha / 2) / (1 + (pi/2 * alpha * x)^2)``."""

    name = "atan"
    cuda_snippet = (
        "alpha / 2.0f / (1.0f + (1.5707963267948966f * alpha * x) * (1.5707963267948966f * alpha * x))"
    )

    def __init__(self, alpha: float = 2.0):
        super().__init__(alpha)

    def derivative(self, x: torch.Tensor) -> torch.Tensor:
        return (self.alpha / 2.0) / (1.0 + (math.pi / 2.0 * self.alpha * x).square())


class Triangle(Surrogate):
    """TET's triangle, ``gamma = alpha``: ``dS/dx = (1 / gamma^2) * max(0, gamma - |x|)``."""

    name = "triangle"
    cuda_snippet = "fmaxf(0.0f, alpha - fabsf(x)) / (alpha * alpha)"

    def __init__(self, alpha: float = 1.0):
        super().__init__(alpha)

    def derivative(self, x: torch.Tensor) -> torch.Tensor:
        return (self.alpha - x.abs()).clamp(min=0.0) / (self.alpha * self.alpha)


class Rectangle(Surrogate):
    """STBP's rectangle of width ``a = alpha``: ``dS/dx = (1 / a) * 1[|x| < a / 2]``."""

    name = "rectangle"
    cuda_snippet = "(fabsf(x) < 0.5f * alpha) / alpha"

    def __init__(self, alpha: float = 1.0):
        super().__init__(alpha)

    def derivative(self, x: torch.Tensor) -> torch.Tensor:
        return (x.abs() < 0.5 * self.alpha).to(x.dtype) / self.alpha


class Dspike(Surrogate):
    """Dspike (Li et al., "Differentiable Spike", NeurIPS 2021), temperature ``b = alpha``, ``c = width``:

    ``dS/dx = b / (2 tanh(b c)) * (1 - tanh^2(b x))`` on ``|x| <= c``, else 0.
    """

    name = "dspike"
    cuda_snippet = (
        "(fabsf(x) <= width) * alpha / (2.0f * tanhf(alpha * width)) * (1.0f - tanhf(alpha * x) * tanhf(alpha * x))"
    )

    def __init__(self, alpha: float = 3.0, width: float = 1.0):
        super().__init__(alpha)
        width = float(width)
        if not (math.isfinite(width) and width > 0):
            raise ValueError(f"Dspike: width must be a finite number > 0, got {width}")
        self.width = width

    def params(self) -> dict[str, float]:
        return {"alpha": self.alpha, "width": self.width}

    def derivative(self, x: torch.Tensor) -> torch.Tensor:
        b, c = self.alpha, self.width
        bump = b / (2.0 * math.tanh(b * c)) * (1.0 - torch.tanh(b * x).square())
        return bump * (x.abs() <= c).to(x.dtype)


SURROGATES: dict[str, type[Surrogate]] = {
    cls.name: cls for cls in (Sigmoid, ATan, Triangle, Rectangle, Dspike)
}


def resolve(surrogate: Surrogate | str | None) -> Surrogate:
    """``None`` -> ``Sigmoid(alpha=4.0)``; a name (``"atan"``) -> that surrogate with its defaults;
    a surrogate object is returned as is."""
    if surrogate is None:
        return Sigmoid()
    if isinstance(surrogate, str):
        try:
            return SURROGATES[surrogate.lower()]()
        except KeyError:
            raise ValueError(
                f"unknown surrogate {surrogate!r}; expected one of {sorted(SURROGATES)} or a surrogate object"
            ) from None
    if not (callable(getattr(surrogate, "forward", None)) and callable(getattr(surrogate, "derivative", None))):
        raise TypeError(
            f"surrogate must have forward(x) and derivative(x) (see snnexp.neurons.surrogate), got {surrogate!r}"
        )
    return surrogate
