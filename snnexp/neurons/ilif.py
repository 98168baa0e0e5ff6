"""Integer-valued LIF, I-LIF (Luo et al., "Integer-Valued Training and Spike-Driven Inference Spiking Neural
Network for High-performance and Energy-efficient Object Detection" (SpikeYOLO), ECCV 2024; official code:
``mem_update`` with ``MultiSpike4``).

Training emits integer spike counts up to ``D``; inference expands each count into ``D`` binary sub-steps
(:func:`expand_to_binary`), so the next layer's synaptic operations are additions only.

    charge  H[t] = decay V[t-1] + X[t]                               (decay 0.25: LIF with tau = 4/3,
                                                                      decay_input=False)
    fire    N[t] = round(clip(H[t], 0, D))                           integer count in {0, ..., D}
            dN/dH := 1 on 0 <= H[t] <= D, else 0                     (straight-through, as in the code)
            S[t]  = N[t] / D   (normalise=True)   or   N[t]          dS/dH scales with it (1 / D)
    reset   V[t] = H[t] - N[t]                                       soft reset by the count, gradient
                                                                     stopped through N (``detach_reset=True``)

The code's update ``mem[t] = (mem[t-1] - spike[t-1].detach()) * 0.25 + x[t]`` is this charge after this
reset. ``round`` is ``torch.round`` (halves to even), as in the code. ``normalise=True`` (default) is the
"normalised integer" output of the project's brief; the code's ``MultiSpike4`` emits the raw count (set
``normalise=false``). I-LIF's gradient is the straight-through estimator above, not a surrogate: methods
that swap or tune ``neuron.surrogate`` (dspike, ESG) have no effect on it.
"""

from __future__ import annotations

import torch

from snnexp.neurons.base import MultiStepNeuron


class _IntegerSpike(torch.autograd.Function):
    """``N = round(clip(H, 0, D))`` forward; ``dN/dH = 1[0 <= H <= D]`` backward (saves only ``H``)."""

    @staticmethod
    def forward(ctx, h: torch.Tensor, D: int) -> torch.Tensor:
        ctx.save_for_backward(h)
        ctx.D = D
        return torch.round(torch.clamp(h, 0, D))

    @staticmethod
    def backward(ctx, grad):
        (h,) = ctx.saved_tensors
        return grad * ((h >= 0) & (h <= ctx.D)).to(grad.dtype), None


class ILIF(MultiStepNeuron):
    """Integer-valued LIF: emits ``round(clip(H, 0, D))`` (divided by ``D`` if ``normalise``)."""

    def __init__(
        self,
        decay: float = 0.25,
        D: int = 4,
        normalise: bool = True,
        detach_reset: bool = True,
    ):
        super().__init__(1.0, None, detach_reset, None, backend="torch")
        decay, D = float(decay), int(D)
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"ILIF: decay must be in [0, 1], got {decay}")
        if D < 1:
            raise ValueError(f"ILIF: D (the largest spike count) must be >= 1, got {D}")
        self.decay, self.D, self.normalise = decay, D, bool(normalise)

    def charge(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``H[t] = decay V[t-1] + X[t]``."""
        return self.decay * v + x

    def fire(self, h: torch.Tensor) -> torch.Tensor:
        """``N[t] = round(clip(H[t], 0, D))``, straight-through on ``[0, D]``: the integer count."""
        return _IntegerSpike.apply(h, self.D)

    def reset(self, h: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """``V[t] = H[t] - N[t]`` (``s`` is the count ``N``); ``detach_reset`` stops the gradient through it."""
        return h - (s.detach() if self.detach_reset else s)

    def step(self, x_t: torch.Tensor, v: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(X[t], V[t-1]) -> (S[t], V[t])``, ``S = N / D`` if ``normalise`` else ``N``; ``v=None``: rest (0)."""
        if v is None:
            v = self.initial_state(x_t)
        h = self.charge(x_t, v)
        n = self.fire(h)
        return (n / self.D if self.normalise else n), self.reset(h, n)

    def extra_repr(self) -> str:
        return f"decay={self.decay}, D={self.D}, normalise={self.normalise}, detach_reset={self.detach_reset}"


def expand_to_binary(spikes: torch.Tensor, D: int, normalised: bool = False) -> torch.Tensor:
    """Spike-driven inference: integer counts ``[T, ...]`` in ``{0..D}`` -> binary spikes ``[T*D, ...]``.

    Step ``t`` becomes the ``D`` sub-steps ``t*D .. t*D + D-1``; sub-step ``d`` fires iff ``d < N[t]``, so each
    group of ``D`` sums to ``N[t]`` and any linear layer ``f`` (no bias) gives ``sum_d f(B[t*D + d]) = f(N[t])``
    (with a bias ``b``: ``f(N[t]) + (D - 1) b``). ``normalised=True`` takes ``I-LIF(normalise=True)`` outputs
    ``N / D`` and returns the binary spikes of the counts ``N = round(S D)``.
    """
    D = int(D)
    counts = torch.round(spikes * D) if normalised else spikes
    if not torch.equal(counts, torch.round(counts)) or (counts < 0).any() or (counts > D).any():
        raise ValueError(
            f"expand_to_binary: expected integer spike counts in [0, {D}]"
            + (" (after multiplying by D: normalised=True)" if normalised else " (pass normalised=True for N / D)")
        )
    sub = torch.arange(D, device=spikes.device).view(1, D, *([1] * (spikes.dim() - 1)))
    binary = (sub < counts.unsqueeze(1)).to(spikes.dtype)  # [T, D, ...]
    return binary.flatten(0, 1)
