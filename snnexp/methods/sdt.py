"""Standard direct training (SDT): surrogate-gradient BPTT on the cross-entropy of the time-averaged output.

    L = CE( (1/T) sum_t O_t , y )
"""

import torch.nn.functional as F

from snnexp.methods.base import Method


class SDT(Method):
    """Cross-entropy on the mean over T of the per-step logits (the usual baseline of TET's Table 1)."""

    def __init__(self, label_smoothing: float = 0.0):
        self.label_smoothing = label_smoothing

    def loss(self, output, target):
        return F.cross_entropy(self.predict(output), target, label_smoothing=self.label_smoothing)
