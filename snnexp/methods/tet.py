"""Temporal Efficient Training of Spiking Neural Network via Gradient Re-weighting (Deng et al., ICLR 2022).

    L_TET = (1 - lambda) * (1/T) sum_t CE(O_t, y)  +  lambda * MSE(O, phi)

O are the per-step logits ``[T, B, C]`` and phi a tensor full of ``phi`` (1.0 in the official code); the MSE
term regularises the output distribution. lambda = 1e-3 for CIFAR10-DVS, 0 for CIFAR. Prediction is the mean
over T, as in standard training.
"""

import torch
import torch.nn.functional as F

from snnexp.training.method import Method


class TET(Method):
    """TET loss: cross-entropy at every time step plus the MSE regulariser towards phi."""

    def __init__(self, lamb: float = 1e-3, phi: float = 1.0):
        super().__init__()
        if not 0.0 <= lamb <= 1.0:
            raise ValueError(f"method.lamb must lie in [0, 1], got {lamb}")
        self.lamb = lamb
        self.phi = phi

    def loss(self, output, target):
        logits = output.logits  # [T, B, C]
        T = logits.shape[0]
        targets = target.repeat(T, *[1] * (target.dim() - 1))  # class indices [B] or probabilities [B, C]
        per_step_ce = F.cross_entropy(logits.flatten(0, 1), targets)  # mean over T and B
        if self.lamb == 0:
            return per_step_ce
        mse = F.mse_loss(logits, torch.full_like(logits, self.phi))
        return (1 - self.lamb) * per_step_ce + self.lamb * mse
