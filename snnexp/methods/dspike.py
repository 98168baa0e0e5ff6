"""Differentiable Spike: Rethinking Gradient-Descent for Training Spiking Neural Networks
(Li, Guo, Zhang, Deng, Hai, Gu; NeurIPS 2021).

Surrogate (x = u - V_th):   dS/dx = b / (2 tanh(b c)) * (1 - tanh^2(b x))   on |x| <= c, else 0
Evolving temperature: at the start of every epoch, on one training batch, pick

    b <- argmax_{b' in {b - db, b, b + db}}  cos( g_surrogate(b'), g_finite_difference )

where both are gradients of the loss with respect to the first layer's weights W. Loss: cross-entropy on the
time-averaged logits, as standard training.

No official code was released; the choices below are ours:
  * the finite-difference gradient is taken along ``directions`` orthonormal random directions d_k of W's
    space (central differences, step ``fd_step * ||W|| / sqrt(numel W)``, i.e. a small relative change of W);
    the cosine compares the projections [g(b') . d_k]_k with the differences [FD_k]_k. With as many directions
    as W has entries this is the exact cosine; with fewer it estimates it on a random subspace;
  * the probes run the network in eval mode (no BatchNorm statistics change, no dropout);
  * b starts at ``b0 = 3``, moves by ``delta_b = 0.5`` and stays in ``[b_min, b_max]``; c = ``width`` = 1.
The method installs one shared Dspike surrogate in every spiking neuron, whatever ``neuron/surrogate`` says.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from snnexp.errors import IncompatibleError
from snnexp.training.method import Method
from snnexp.neurons import MultiStepNeuron
from snnexp.neurons.surrogate import Dspike as DspikeSurrogate


def first_weight(model: torch.nn.Module) -> torch.nn.Parameter:
    """The first layer's weight: the first parameter with at least two dimensions, in registration order."""
    for parameter in model.parameters():
        if parameter.dim() >= 2 and parameter.requires_grad:
            return parameter
    raise IncompatibleError("method=dspike needs a model with a weight layer (conv or linear)")


def orthonormal_directions(numel: int, count: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` orthonormal directions in R^numel (rows), from the QR decomposition of a Gaussian matrix."""
    count = min(count, numel)
    gaussian = torch.randn(numel, count, generator=generator, dtype=torch.float64)
    q, _ = torch.linalg.qr(gaussian)
    return q.T.contiguous()


class Dspike(Method):
    """Cross-entropy training with the Dspike surrogate whose temperature b is re-chosen every epoch."""

    def __init__(self, b0: float = 3.0, delta_b: float = 0.5, width: float = 1.0, b_min: float = 0.5,
                 b_max: float = 10.0, directions: int = 16, fd_step: float = 1e-2, seed: int = 0,
                 label_smoothing: float = 0.0):
        super().__init__()
        if not 0 < b_min <= b0 <= b_max:
            raise ValueError(f"method.b0 must lie in [b_min, b_max] = [{b_min}, {b_max}], got {b0}")
        self.b, self.delta_b, self.b_min, self.b_max = b0, delta_b, b_min, b_max
        self.directions, self.fd_step, self.seed = directions, fd_step, seed
        self.label_smoothing = label_smoothing
        self.surrogate = DspikeSurrogate(alpha=b0, width=width)
        self.last_similarities: dict[float, float] = {}
        self._searched_epoch: int | None = None

    def check(self, model, datamodule) -> None:
        if not any(isinstance(m, MultiStepNeuron) for m in model.modules()):
            raise IncompatibleError("method=dspike tunes the surrogate of spiking neurons; the model has none")

    def setup(self, model, datamodule):
        for module in model.modules():
            if isinstance(module, MultiStepNeuron):
                module.surrogate = self.surrogate
        return model

    def loss(self, output, target):
        return F.cross_entropy(self.predict(output), target, label_smoothing=self.label_smoothing)

    def training_step(self, module, batch):
        if self._searched_epoch != module.current_epoch:
            self._searched_epoch = module.current_epoch
            self.search_temperature(module, batch, module.current_epoch)
        loss, logs = super().training_step(module, batch)
        logs["dspike_b"] = torch.tensor(self.b)
        return loss, logs

    # ---- the temperature search ----------------------------------------------------------------------------
    def candidates(self) -> list[float]:
        values = [self.b - self.delta_b, self.b, self.b + self.delta_b]
        return sorted({min(max(v, self.b_min), self.b_max) for v in values})

    def search_temperature(self, module, batch, epoch: int) -> float:
        """Set ``self.b`` to the candidate whose surrogate gradient best matches the finite difference."""
        x, y = batch
        weight = first_weight(module.model)
        was_training = module.training
        module.eval()
        try:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            dirs = orthonormal_directions(weight.numel(), self.directions, generator).to(weight)
            fd = self.finite_differences(module, x, y, weight, dirs)
            similarities = {}
            for b in self.candidates():
                self.surrogate.alpha = b
                with torch.enable_grad():
                    (grad,) = torch.autograd.grad(self.loss(module(x), y), weight)
                projected = dirs @ grad.reshape(-1)
                similarities[b] = F.cosine_similarity(projected, fd, dim=0, eps=1e-12).item()
        finally:
            module.train(was_training)
        self.b = max(similarities, key=lambda b: (similarities[b], -abs(b - self.b)))
        self.surrogate.alpha = self.b
        self.last_similarities = similarities
        return self.b

    @torch.no_grad()
    def finite_differences(self, module, x, y, weight, dirs) -> torch.Tensor:
        """Central differences of the loss along each direction: (L(W + h d) - L(W - h d)) / 2h."""
        h = self.fd_step * weight.norm().item() / math.sqrt(weight.numel()) or self.fd_step
        original = weight.detach().clone()
        diffs = []
        for d in dirs:
            step = h * d.reshape(weight.shape)
            weight.copy_(original + step)
            plus = self.loss(module(x), y)
            weight.copy_(original - step)
            minus = self.loss(module(x), y)
            diffs.append((plus - minus) / (2 * h))
        weight.copy_(original)
        return torch.stack(diffs).to(dirs.dtype)

    def get_extra_state(self) -> dict:
        return {"b": self.b}

    def set_extra_state(self, state: dict) -> None:
        if "b" in state:
            self.b = state["b"]
            self.surrogate.alpha = self.b
