"""Standard direct training (SDT): surrogate-gradient BPTT on the cross-entropy of the time-combined output.

    combine=logits:       L = CE( (1/T) sum_t O_t , y )                        prediction (1/T) sum_t O_t
    combine=log_softmax:  L = NLL( (1/T) sum_t log_softmax(O_t) , y )          prediction the same average
    [ + transform_reg * mean ||A A^T - I||_F ]

``logits`` (the default) averages the per-step logits, as TET's baseline and most SNN codebases do.
``log_softmax`` averages the per-step log-probabilities and trains with NLL on them, as the official Spiking
PointNet (Ren et al., NeurIPS 2023) does: at T > 1 the two give different losses and can disagree in prediction.
Label smoothing ε and soft (MixUp/CutMix) targets q enter NLL as cross-entropy against
``(1 - ε) q + ε / C``, as ``F.cross_entropy`` does for logits.

The optional regulariser is PointNet's feature-transform term on ``aux["feature_transform"]`` (Spiking PointNet
weights it 0.001); Spiking PointNet's single-step training is this method at T=1 with a multi-T evaluation
(``eval.timesteps``), a preset rather than a method of its own.
"""

import torch
import torch.nn.functional as F

from snnexp.errors import IncompatibleError
from snnexp.training.method import Method

COMBINES = ("logits", "log_softmax")


def log_likelihood_loss(log_probs: torch.Tensor, target: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean over the batch of ``-sum_c q_c s_c`` for scores ``s`` (averaged log-probabilities), ``q`` the one-hot
    (or soft) target smoothed as ``(1 - ε) q + ε / C``; NLL for class indices and ε = 0."""
    classes = log_probs.shape[-1]
    q = target.to(log_probs.dtype) if target.dim() > 1 else F.one_hot(target, classes).to(log_probs.dtype)
    q = q * (1 - label_smoothing) + label_smoothing / classes
    return -(q * log_probs).sum(-1).mean()


class SDT(Method):
    """Cross-entropy on the time-combined output (the usual baseline of TET's Table 1)."""

    def __init__(self, label_smoothing: float = 0.0, transform_reg: float = 0.0, combine: str = "logits"):
        super().__init__()
        if combine not in COMBINES:
            raise ValueError(f"method.combine must be one of {list(COMBINES)}, got {combine!r}")
        self.label_smoothing = label_smoothing
        self.transform_reg = transform_reg
        self.combine = combine

    def check(self, model, datamodule) -> None:
        if self.transform_reg > 0 and getattr(model, "feature_transform", None) is None:
            raise IncompatibleError(
                f"method.transform_reg={self.transform_reg} regularises a PointNet feature transform, which "
                f"{type(model).__name__} does not have (use model=pointnet with model.feature_transform=true, "
                "or method.transform_reg=0)"
            )

    def predict(self, output):
        if self.combine == "log_softmax":
            return F.log_softmax(output.logits, -1).mean(0)
        return output.logits.mean(0)

    def loss(self, output, target):
        scores = self.predict(output)
        if self.combine == "log_softmax":
            loss = log_likelihood_loss(scores, target, self.label_smoothing)
        else:
            loss = F.cross_entropy(scores, target, label_smoothing=self.label_smoothing)
        if self.transform_reg > 0:
            from snnexp.models.pointnet import feature_transform_regularizer

            loss = loss + self.transform_reg * feature_transform_regularizer(output.aux["feature_transform"])
        return loss
