"""Multi-level firing neuron (Feng, Liu, Tang et al., "Multi-Level Firing with Spiking DS-ResNet: Enabling
Better and Deeper Directly-Trained Spiking Neural Networks", IJCAI 2022; official code: ``MLF_unit``).

K levels, each an independent membrane ``V_k`` charged by the same input, firing at its own threshold
``theta_k = V_threshold + k * level_spacing`` (k = 0..K-1), with its surrogate centred on that threshold:

    charge  H_k[t] = decay V_k[t-1] + X[t]                           (decay 0.25: LIF with tau = 4/3,
                                                                      decay_input=False)
    fire    S_k[t] = Heaviside(H_k[t] - theta_k)                     dS_k/dH_k := surrogate.derivative(H_k - theta_k)
    reset   V_k[t] = H_k[t] (1 - S_k[t])                             (hard reset to 0, per level)
    output  O[t]   = sum_k S_k[t]                                    in {0, 1, ..., K}, same shape as X

The official code has K = 3, thresholds 0.6 / 1.6 / 2.6 (``V_threshold = 0.6``, spacing ``a = 1``) and the
rectangular surrogate of width ``a`` at every level (``Rectangle(alpha=1)``, the default here), so the levels'
surrogates tile ``[V_threshold - a/2, V_threshold + (K - 1/2) a]``: the useful gradient range grows with K.
Differences we chose: the framework's ``Heaviside(0) = 1`` (the code fires at ``u > theta``; measure zero);
the gradient flows through ``S_k`` in the reset as in the code (``detach_reset=False``).

``backend``: "auto" runs the fused kernels (CuPy on CUDA tensors, the C++ extension on float32 CPU tensors; see
``snnexp.kernels``) for up to ``SNN_MAX_LEVELS = 8`` levels, "torch" the unrolled reference, "cupy" the CUDA
kernels only.

State for :meth:`MLF.step`: ``V`` has a leading level axis, ``[K, *X[t].shape]``.
"""

from __future__ import annotations

import torch

from snnexp.kernels.spec import MAX_LEVELS, NeuronSpec, Param, register
from snnexp.neurons import functional as F
from snnexp.neurons.base import MultiStepNeuron
from snnexp.neurons.surrogate import Rectangle, Surrogate

MAX_FUSED_LEVELS = MAX_LEVELS  # the fused kernels keep the levels in registers: more run on the unrolled reference

# The fused kernels' declaration, one level (snnexp/kernels/generate.py writes them from it); the reference is the
# unrolled MLF.step below.
DECLARATION = register(NeuronSpec(
    name="multilevel", title="MultiLevel", kinds=("mlf",), levels=True, fixed={"hard_reset": True},
    state=("v",), params=(Param("decay"), Param("v_threshold"), Param("level_spacing")),
    init={"v": "0.0"},
    charge="decay * v + x",
    fire="h - (v_threshold + level_spacing * level)",
    reset={"v": "h * (1.0 - s)"},
    dh={"x": "1.0", "v": "decay"},
    ds={"h": "sg"},
    dreset={"v": {"h": "1.0 - s", "s": "-h"}},
))


class MLF(MultiStepNeuron):
    """Multi-level firing: K parallel LIF levels with staggered thresholds; emits the sum of level spikes."""

    def __init__(
        self,
        decay: float = 0.25,
        v_threshold: float = 0.6,
        levels: int = 3,
        level_spacing: float = 1.0,
        detach_reset: bool = False,
        surrogate: Surrogate | str | None = None,
        backend: str = "auto",
    ):
        if surrogate is None:  # the official rectangle of width a = level_spacing
            surrogate = Rectangle(alpha=float(level_spacing))
        super().__init__(v_threshold, 0.0, detach_reset, surrogate, backend)
        if self.v_threshold <= 0:
            raise ValueError(f"MLF: v_threshold must be > 0, got {self.v_threshold}")
        levels, level_spacing, decay = int(levels), float(level_spacing), float(decay)
        if levels < 1:
            raise ValueError(f"MLF: levels must be >= 1, got {levels}")
        if not level_spacing > 0:
            raise ValueError(f"MLF: level_spacing must be > 0, got {level_spacing}")
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"MLF: decay must be in [0, 1], got {decay}")
        self.decay, self.levels, self.level_spacing = decay, levels, level_spacing

    def thresholds(self, like: torch.Tensor) -> torch.Tensor:
        """``theta_k = V_threshold + k level_spacing``, shaped ``[K, 1, ..., 1]`` to broadcast over ``like``."""
        theta = self.v_threshold + self.level_spacing * torch.arange(self.levels, dtype=like.dtype, device=like.device)
        return theta.view(-1, *([1] * (like.dim() - 1)))

    def initial_state(self, x_t: torch.Tensor) -> torch.Tensor:
        """``V_k[-1] = 0`` for every level: ``[K, *x_t.shape]``."""
        return x_t.new_zeros((self.levels, *x_t.shape))

    def charge(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``H_k[t] = decay V_k[t-1] + X[t]`` (``v``: ``[K, ...]``, ``x`` broadcast over the levels)."""
        return self.decay * v + x.unsqueeze(0)

    def fire(self, h: torch.Tensor) -> torch.Tensor:
        """``S_k[t] = Heaviside(H_k[t] - theta_k)``; backward ``surrogate.derivative(H_k[t] - theta_k)``."""
        return F.spike(h - self.thresholds(h), self.surrogate)

    def reset(self, h: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """``V_k[t] = H_k[t] (1 - S_k[t])``; ``detach_reset`` stops the gradient through ``S_k[t]`` here only."""
        return h * (1.0 - (s.detach() if self.detach_reset else s))

    def step(self, x_t: torch.Tensor, v: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(X[t], V[t-1] [K, ...]) -> (sum_k S_k[t], V[t] [K, ...])``; ``v=None`` starts from rest."""
        if v is None:
            v = self.initial_state(x_t)
        h = self.charge(x_t, v)
        s = self.fire(h)
        return s.sum(0), self.reset(h, s)

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        """``x_seq [T, B, ...] -> sum_k S_k [T, B, ...]``, from rest; fused kernels where ``backend`` allows."""
        x_seq = self._check_input(x_seq)
        kernels = F.fused_kernels(self.backend, x_seq, self.surrogate) if self.levels <= MAX_FUSED_LEVELS else None
        if kernels is None:
            return super().forward(x_seq)
        return kernels.multilevel(x_seq, self.levels, self.decay, self.v_threshold, self.level_spacing,
                                  self.detach_reset, self.surrogate)

    def extra_repr(self) -> str:
        return (
            f"decay={self.decay}, v_threshold={self.v_threshold}, levels={self.levels}, "
            f"level_spacing={self.level_spacing}, detach_reset={self.detach_reset}, surrogate={self.surrogate!r}, "
            f"backend={self.backend!r}"
        )
