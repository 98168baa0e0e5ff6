"""Surrogate gradients: the spike is a Heaviside step forward and a smooth bump backward.

With ``x = H - V_threshold`` (membrane charge minus threshold), every surrogate fires
``S = Heaviside(x)`` with ``Heaviside(0) = 1`` and back-propagates ``dS/dx := derivative(x)``.

A surrogate is a small plain object, not an ``nn.Module``: one instance may be shared by many neurons,
and its parameters (``alpha``, Dspike's ``width``) are ordinary attributes that a training method may
change between steps (evolving surrogates) without rebuilding or recompiling anything. The CUDA kernels
receive them as kernel arguments.

Each surrogate writes its derivative once, as ``formula``: an expression in ``x``, ``alpha`` (and ``width`` for
Dspike) of the declaration language (:mod:`snnexp.kernels.expr`). ``derivative`` evaluates it with torch; the
generated kernels compile its C translation, ``cuda_snippet``.

Parameterisations follow SpikingJelly (Sigmoid, ATan), TET (Triangle), STBP (Rectangle) and Dspike, so a
user's ``alpha`` means what it means there.
"""

from __future__ import annotations

import math

import torch

from snnexp.kernels import expr
from snnexp.kernels.spec import register_surrogate


def heaviside(x: torch.Tensor) -> torch.Tensor:
    """``Heaviside(x) = 1 if x >= 0 else 0``, in ``x``'s dtype."""
    return (x >= 0).to(x.dtype)


class Surrogate:
    """Base class: forward is the Heaviside step, ``derivative`` is the surrogate gradient ``dS/dx``."""

    name: str = ""
    formula: str = ""  # dS/dx in x, alpha (, width): the declaration language, evaluated by torch and compiled to C

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.formula:
            cls.cuda_snippet = expr.to_c(cls.formula)

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
        """``dS/dx``: the formula, evaluated with torch."""
        if not self.formula:
            raise NotImplementedError(f"{type(self).__name__} defines neither a formula nor derivative()")
        return expr.evaluate(self.formula, {"x": x, "width": 1.0, **self.params()})

    def params(self) -> dict[str, float]:
        """The runtime parameters, as passed to the CUDA kernels."""
        return {"alpha": self.alpha}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"


class Sigmoid(Surrogate):
    """SpikingJelly's sigmoid: ``dS/dx = alpha * sigmoid(alpha x) * (1 - sigmoid(alpha x))``."""

    name = "sigmoid"
    formula = "alpha * sigmoid(alpha * x) * (1.0 - sigmoid(alpha * x))"

    def __init__(self, alpha: float = 4.0):
        super().__init__(alpha)


class ATan(Surrogate):
    """SpikingJelly's arctan: ``dS/dx = (alpha / 2) / (1 + (pi/2 * alpha * x)^2)``."""

    name = "atan"
    formula = "alpha / 2.0 / (1.0 + (pi / 2.0 * alpha * x) ** 2)"

    def __init__(self, alpha: float = 2.0):
        super().__init__(alpha)


class Triangle(Surrogate):
    """TET's triangle, ``gamma = alpha``: ``dS/dx = (1 / gamma^2) * max(0, gamma - |x|)``."""

    name = "triangle"
    formula = "maximum(0.0, alpha - abs(x)) / (alpha * alpha)"

    def __init__(self, alpha: float = 1.0):
        super().__init__(alpha)


class Rectangle(Surrogate):
    """STBP's rectangle of width ``a = alpha``: ``dS/dx = (1 / a) * 1[|x| < a / 2]``."""

    name = "rectangle"
    formula = "(abs(x) < 0.5 * alpha) / alpha"

    def __init__(self, alpha: float = 1.0):
        super().__init__(alpha)


class Dspike(Surrogate):
    """Dspike (Li et al., "Differentiable Spike", NeurIPS 2021), temperature ``b = alpha``, ``c = width``:

    ``dS/dx = b / (2 tanh(b c)) * (1 - tanh^2(b x))`` on ``|x| <= c``, else 0.
    """

    name = "dspike"
    formula = "(abs(x) <= width) * alpha / (2.0 * tanh(alpha * width)) * (1.0 - tanh(alpha * x) ** 2)"

    def __init__(self, alpha: float = 3.0, width: float = 1.0):
        super().__init__(alpha)
        width = float(width)
        if not (math.isfinite(width) and width > 0):
            raise ValueError(f"Dspike: width must be a finite number > 0, got {width}")
        self.width = width

    def params(self) -> dict[str, float]:
        return {"alpha": self.alpha, "width": self.width}


SURROGATES: dict[str, type[Surrogate]] = {
    cls.name: cls for cls in (Sigmoid, ATan, Triangle, Rectangle, Dspike)
}
for _cls in SURROGATES.values():  # the kernels' surrogate codes, in this order
    register_surrogate(_cls.name, _cls.formula)


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
