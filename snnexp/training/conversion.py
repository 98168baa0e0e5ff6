"""ANN→SNN conversion: the ANN's conversion-friendly activations, BatchNorm folding, the converted IF neuron and
per-layer thresholds.

- Optimal conversion (Deng & Gu, ICLR 2021; Jackn0/snn_optimal_conversion_pipeline): train with ``clip(x, 0, θ)``;
  IF neurons with soft reset, spike amplitude θ and a θ/(2T) shift (an initial membrane of θ/2).
- QCFS (Bu et al., ICLR 2022): quantisation-clip-floor-shift ``θ/L · clip(floor(x L/θ + 1/2), 0, L)`` with a
  trainable θ; the SNN at T = L steps then reproduces it exactly for constant inputs.
- SNN Calibration (Li, Deng, Dong, Gong, Gu, ICML 2021; yhhhli/SNN_Calibration): thresholds from data, the max or
  the MSE grid search θ = max·(1 − 0.01 i); see :mod:`snnexp.training.calibration` for the corrections.

The converted network keeps the model's own layers (convolutions with BN folded in) and puts an :class:`IFNeuron`
where each activation was, so it is an snnexp model like any other: firing rates, operation counts and
``eval.timesteps`` work unchanged. The last layer stays analog: its per-step outputs are averaged.
"""

from __future__ import annotations

import torch
from torch import nn

from snnexp.neurons import MultiStepNeuron
from snnexp.neurons import functional as F
from snnexp.neurons.surrogate import Rectangle


class Clip(nn.Module):
    """``clip(x, 0, θ)`` with one θ per layer, trainable (PACT-style gradient) or fixed."""

    def __init__(self, threshold: float = 1.0, learn: bool = True):
        super().__init__()
        self.threshold = nn.Parameter(torch.tensor(float(threshold)), requires_grad=learn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.minimum(torch.relu(x), self.threshold)


class QCFS(nn.Module):
    """Quantisation-clip-floor-shift (Bu et al., ICLR 2022): ``θ/L · clip(floor(x L/θ + 1/2), 0, L)``; the floor
    passes the gradient straight through, θ is trainable."""

    def __init__(self, levels: int = 8, threshold: float = 8.0, learn: bool = True):
        super().__init__()
        self.levels = int(levels)
        self.threshold = nn.Parameter(torch.tensor(float(threshold)), requires_grad=learn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scaled = x * self.levels / self.threshold + 0.5
        floored = scaled + (torch.floor(scaled) - scaled).detach()  # straight-through floor
        return torch.clamp(floored, 0, self.levels) * self.threshold / self.levels


ACTIVATIONS = ("relu", "clip", "qcfs")
CONVERTIBLE = (Clip, QCFS, nn.ReLU)


def make_activation(name: str, levels: int = 8, threshold: float | None = None, learn: bool = True) -> nn.Module:
    """The ANN's activation in place of every spiking neuron (``method.activation``)."""
    if name == "clip":
        return Clip(1.0 if threshold is None else threshold, learn)
    if name == "qcfs":
        return QCFS(levels, 8.0 if threshold is None else threshold, learn)
    if name == "relu":
        return nn.ReLU()
    raise ValueError(f"method.activation must be one of {list(ACTIVATIONS)}, got {name!r}")


class IFNeuron(MultiStepNeuron):
    """The converted neuron: integrate-and-fire with reset by subtraction, emitting θ per spike.

    ``v[t] = v[t-1] + x[t] + input_bias``; ``s[t] = H(v[t] - θ)``; ``v[t] -= θ s[t]``; output ``θ s[t]``, from
    ``v[-1] = initial`` (θ/2 with the shift, plus any potential correction). ``input_bias`` is per channel
    (dimension 2 of ``[T, B, C, ...]``); ``initial`` is per channel until a potential correction makes it per neuron
    (``[C, ...]``, one sample's shape), as both the calibration and the dual-phase repositories keep it. The
    surrogate gradient serves BPTT weight calibration.
    """

    def __init__(self, threshold: float, shift: bool = True, channels: int | None = None):
        # the rectangle of width θ: the θ-sized output passes a gradient of 1 within θ/2 of the threshold
        super().__init__(v_threshold=float(threshold), v_reset=None, surrogate=Rectangle(alpha=float(threshold)),
                         backend="torch")
        self.spike_amplitude = float(threshold)
        size = (channels,) if channels else ()
        self.register_buffer("initial", torch.full(size, float(threshold) / 2 if shift else 0.0))
        self.register_buffer("input_bias", torch.zeros(size))

    def _broadcast(self, value: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        """A scalar, per-channel ``[C]`` or per-neuron ``[C, ...]`` value shaped to broadcast over one step
        ``[B, C, ...]``."""
        if value.dim() == step.dim() - 1:
            return value.unsqueeze(0)
        return value.reshape(1, -1, *[1] * (step.dim() - 2)) if value.dim() else value

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        theta = self.v_threshold
        bias = self._broadcast(self.input_bias, x_seq[0])
        v = self._broadcast(self.initial, x_seq[0]).expand_as(x_seq[0]).clone()
        spikes = []
        for x in x_seq:
            v = v + x + bias
            s = F.spike(v - theta, self.surrogate)
            v = v - theta * s
            spikes.append(theta * s)
        return torch.stack(spikes)

    def extra_repr(self) -> str:
        return f"threshold={self.v_threshold:.4g}"


# ---- BatchNorm folding ----------------------------------------------------------------------------------------

FOLDABLE = (nn.Conv1d, nn.Conv2d, nn.Linear)


@torch.no_grad()
def fold_batchnorm(model: nn.Module) -> int:
    """Fold every plain BatchNorm that follows a conv or linear layer in an ``nn.Sequential`` (dropout between them
    allowed: the identity in eval mode) into that layer (``W' = W γ/σ``, ``b' = (b − μ) γ/σ + β`` with σ = sqrt(var + eps)) and put ``nn.Identity`` in its place;
    returns how many were folded. The network computes the same function in eval mode."""
    folded = 0
    for parent in model.modules():
        if not isinstance(parent, nn.Sequential):
            continue
        layer = None  # the last conv/linear, with only eval-mode identities (dropout) after it
        for bn_name, bn in list(parent.named_children()):
            if isinstance(bn, FOLDABLE):
                layer = bn
                continue
            if isinstance(bn, (nn.Dropout, nn.Identity)):
                continue
            if layer is not None and type(bn) in (nn.BatchNorm1d, nn.BatchNorm2d):
                scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
                layer.weight.mul_(scale.reshape(-1, *[1] * (layer.weight.dim() - 1)))
                bias = layer.bias if layer.bias is not None else torch.zeros_like(bn.running_mean)
                new_bias = (bias - bn.running_mean) * scale + bn.bias
                if layer.bias is None:
                    layer.bias = nn.Parameter(new_bias)
                else:
                    layer.bias.copy_(new_bias)
                setattr(parent, bn_name, nn.Identity())
                folded += 1
            layer = None
    return folded


def unfolded_norms(model: nn.Module) -> list[str]:
    """Names of the normalisation layers left (ones that cannot be folded: not plain BN after a conv/linear)."""
    return [name for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._NormBase)]


# ---- thresholds -----------------------------------------------------------------------------------------------

def quantised(x: torch.Tensor, theta: float, T: int, shift: bool = True) -> torch.Tensor:
    """What an IF neuron with threshold θ and T steps gives for a constant input ``x``:
    ``θ/T · clip(floor(x T/θ + 1/2), 0, T)`` with the θ/2 shift, ``θ/T · clip(floor(x T/θ), 0, T)`` without."""
    return torch.clamp(torch.floor(x * T / theta + (0.5 if shift else 0.0)), 0, T) * theta / T


def threshold_from(activations: torch.Tensor, rule: str, T: int, percentile: float = 99.99,
                   shift: bool = True, candidates: int = 95) -> float:
    """One layer's θ from its ANN activations: ``max``; a ``percentile`` of the positive ones; or ``mse``, the
    θ = max·(1 − 0.01 i), i < ``candidates`` (95, as the calibration repository searches), whose T-step
    quantisation by the neurons that will run (:func:`quantised`, with or without the ``shift``) is closest to them.
    """
    a = activations.detach().double().flatten()
    top = a.max().item()
    if top <= 0:
        return 1.0  # a silent layer: any positive threshold keeps it silent
    if rule == "max":
        return top
    if rule == "percentile":
        positive = a[a > 0]
        return torch.quantile(positive[: 1 << 24], percentile / 100).item()
    if rule == "mse":
        errors = [((quantised(a, top * (1 - 0.01 * i), T, shift) - a) ** 2).mean().item() for i in range(candidates)]
        return top * (1 - 0.01 * min(range(candidates), key=errors.__getitem__))
    raise ValueError(f"method.threshold must be trained, max, percentile or mse; got {rule!r}")


def activation_inputs_outputs(model: nn.Module, run) -> dict[str, torch.Tensor]:
    """``{activation name: its output}`` for one forward ``run()``, in execution order."""
    outputs: dict[str, torch.Tensor] = {}
    handles = [m.register_forward_hook(lambda mod, args, out, name=name: outputs.setdefault(name, out.detach()))
               for name, m in model.named_modules() if isinstance(m, CONVERTIBLE)]
    try:
        run()
    finally:
        for handle in handles:
            handle.remove()
    return outputs
