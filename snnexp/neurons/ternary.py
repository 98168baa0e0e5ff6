"""Ternary Spike (Guo et al., "Ternary Spike: Learning Ternary Spikes for Spiking Neural Networks", AAAI 2024;
code yfguo91/Ternary-Spike, ``models/spike_layer.py``).

    charge  H[t] = decay V[t-1] + X[t]                               (decay 0.25: LIF with tau = 4/3,
                                                                      decay_input=False)
    fire    S[t] = sign(H[t]) Heaviside(|H[t]| - V_threshold)         S in {-1, 0, +1}
            dS/dH := surrogate.derivative(|H[t]| - V_threshold)      (``d|H|/dH = sign(H)`` cancels the sign)
    reset   V[t] = H[t] (1 - |S[t]|)                                 (hard reset to 0 for either sign)
    output  O[t] = a S[t]                                            a: one trainable amplitude per layer, init 1

The official code fires ``sign(u)`` where ``|u| >= 0.5`` and back-propagates the straight-through estimator
of ``clamp(u, -1, 1)``, i.e. ``dS/du = 1`` on ``|u| <= 1``. Here that is the default surrogate
``Rectangle(alpha=2 V_threshold)``: ``dS/dH = 1 / (2 V_threshold)`` on ``0 < |H| < 2 V_threshold``, which at the
paper's ``V_threshold = 0.5`` is exactly 1 on ``|H| < 1`` (the boundaries ``|H| = 1`` and ``H = 0`` have
measure zero and differ: ours gives 0 there). The gradient flows through ``S`` in the reset, as in the
official code (``detach_reset=False``). The released code fixes ``a = 1``; the paper learns it (default here).

``backend``: "auto" runs the fused kernels (CuPy on CUDA tensors, the C++ extension on float32 CPU tensors; see
``snnexp.kernels``), "torch" the unrolled reference below, "cupy" the CUDA kernels only.

For inference, :func:`fold_ternary_amplitudes` moves every ``a`` into the weights of the next layer, so the
network runs on unit ternary spikes with the same outputs.
"""

from __future__ import annotations

import torch
from torch import nn

from snnexp.errors import SnnexpError
from snnexp.kernels.spec import NeuronSpec, Param, register
from snnexp.neurons import functional as F
from snnexp.neurons.base import MultiStepNeuron
from snnexp.neurons.surrogate import Rectangle, Surrogate

# The fused kernels' declaration (snnexp/kernels/generate.py writes them from it); the reference is the unrolled
# Ternary.step below. d|S|/dS = sign(S), and ds/dh = sign(H)^2 sg = sg where H != 0.
DECLARATION = register(NeuronSpec(
    name="ternary", title="Ternary", fixed={"hard_reset": True},
    state=("v",), params=(Param("decay"), Param("v_threshold")),
    init={"v": "0.0"},
    charge="decay * v + x",
    fire="abs(h) - v_threshold",
    spike="sign(h) * heaviside(u)",
    reset={"v": "h * (1.0 - abs(s))"},
    dh={"x": "1.0", "v": "decay"},
    ds={"h": "sg if h != 0.0 else 0.0"},
    dreset={"v": {"h": "1.0 - abs(s)", "s": "-h * sign(s)"}},
))


class Ternary(MultiStepNeuron):
    """Ternary spiking neuron: spikes in ``{-a, 0, +a}`` with a trainable per-layer amplitude ``a``."""

    def __init__(
        self,
        decay: float = 0.25,
        v_threshold: float = 0.5,
        amplitude: float = 1.0,
        learn_amplitude: bool = True,
        detach_reset: bool = False,
        surrogate: Surrogate | str | None = None,
        backend: str = "auto",
    ):
        if surrogate is None:  # the paper's clipped straight-through estimator
            surrogate = Rectangle(alpha=2.0 * float(v_threshold))
        super().__init__(v_threshold, 0.0, detach_reset, surrogate, backend)
        if self.v_threshold <= 0:
            raise ValueError(f"Ternary: v_threshold must be > 0, got {self.v_threshold}")
        decay = float(decay)
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"Ternary: decay must be in [0, 1], got {decay}")
        self.decay = decay
        a = torch.tensor(float(amplitude))
        if learn_amplitude:
            self.amplitude = nn.Parameter(a)
        else:
            self.register_buffer("amplitude", a)

    def charge(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``H[t] = decay V[t-1] + X[t]``."""
        return self.decay * v + x

    def fire(self, h: torch.Tensor) -> torch.Tensor:
        """``S[t] = sign(H[t]) Heaviside(|H[t]| - V_threshold)``; backward
        ``dS/dH = surrogate.derivative(|H[t]| - V_threshold)``."""
        return F.spike(h.abs() - self.v_threshold, self.surrogate) * h.sign().detach()

    def reset(self, h: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """``V[t] = H[t] (1 - |S[t]|)``; ``detach_reset`` stops the gradient through ``S[t]`` here only."""
        s = s.detach() if self.detach_reset else s
        return h * (1.0 - s.abs())

    def step(self, x_t: torch.Tensor, v: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(X[t], V[t-1]) -> (a S[t], V[t])``; ``v=None`` starts from rest (0)."""
        if v is None:
            v = self.initial_state(x_t)
        h = self.charge(x_t, v)
        s = self.fire(h)
        return s * self.amplitude.to(s.dtype), self.reset(h, s)

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        """``x_seq [T, B, ...] -> a S [T, B, ...]``, from rest; fused kernels where ``backend`` allows."""
        x_seq = self._check_input(x_seq)
        kernels = F.fused_kernels(self.backend, x_seq, self.surrogate)
        if kernels is None:
            return super().forward(x_seq)
        s = kernels.ternary(x_seq, self.decay, self.v_threshold, self.detach_reset, self.surrogate)
        return s * self.amplitude.to(s.dtype)

    def extra_repr(self) -> str:
        return (
            f"decay={self.decay}, v_threshold={self.v_threshold}, amplitude={self.amplitude.item():.4g}, "
            f"learn_amplitude={isinstance(self.amplitude, nn.Parameter)}, detach_reset={self.detach_reset}, "
            f"surrogate={self.surrogate!r}, backend={self.backend!r}"
        )


WEIGHT_LAYERS = (nn.Linear, nn.modules.conv._ConvNd)


@torch.no_grad()
def fold_ternary_amplitudes(model: nn.Module) -> list[tuple[str, str]]:
    """Re-parameterise for inference: fold each :class:`Ternary` neuron's amplitude ``a`` into the next weight
    layer (``W <- a W``, bias unchanged) and set ``a = 1``, so the network runs on unit spikes ``{-1, 0, 1}``.

    The rule: the *next weight layer* of a neuron is the first ``nn.Linear`` / ``nn.Conv{1,2,3}d`` (bare or
    inside a ``SeqToBatch``) after it in ``model.named_modules()`` order, provided no other spiking neuron
    comes first (a neuron in between is non-linear: nothing to fold into). That is exact when the neuron's
    spikes reach that layer, and only that layer, through operations that are linear and weight-free in the
    spikes (zero padding, average pooling, flatten, dropout in eval); a BatchNorm *after* that layer is fine.
    It holds for plain chains (``nn.Sequential`` stacks, VGGSNN, the heads of most models). It does not hold
    where a spike tensor fans out, e.g. into a ResNet block's conv branch *and* its identity shortcut: check
    such models with their outputs before relying on the fold (the amplitude there cannot be moved into
    weights exactly). Since ``a`` is a scalar, scaling the whole weight is right for any linear layer.

    Returns the ``(neuron name, layer name)`` pairs folded. Raises ``SnnexpError`` if a neuron with ``a != 1``
    has no weight layer to fold into (the model is then left partly folded: fold a copy).
    """
    modules = list(model.named_modules())
    folded = []
    for i, (name, module) in enumerate(modules):
        if not isinstance(module, Ternary):
            continue
        a = module.amplitude
        target = next(((n, m) for n, m in modules[i + 1:] if isinstance(m, (*WEIGHT_LAYERS, MultiStepNeuron))),
                      (None, None))
        layer_name, layer = target
        if not isinstance(layer, WEIGHT_LAYERS):
            if a.item() != 1.0:
                raise SnnexpError(
                    f"fold_ternary_amplitudes: the Ternary neuron {name!r} has amplitude {a.item():.4g} but no "
                    "Linear/Conv layer before the next spiking neuron (or the end) to fold it into; keep its "
                    "amplitude (do not fold this model)"
                )
            continue
        layer.weight.mul_(a.to(layer.weight.dtype))
        a.fill_(1.0)
        folded.append((name, layer_name))
    return folded
