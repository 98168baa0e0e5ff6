"""Standard direct training (SDT): surrogate-gradient BPTT on the cross-entropy of the time-averaged output.

    L = CE( (1/T) sum_t O_t , y )  [ + transform_reg * mean ||A A^T - I||_F ]

The optional second term is PointNet's feature-transform regulariser on ``aux["feature_transform"]`` (Spiking
PointNet, Ren et al., NeurIPS 2023, weights it 0.001); Spiking PointNet's single-step training is this method
at T=1 with a multi-T evaluation (``eval.timesteps``), a preset rather than a method of its own.
"""

import torch.nn.functional as F

from snnexp.errors import IncompatibleError
from snnexp.training.method import Method


class SDT(Method):
    """Cross-entropy on the mean over T of the per-step logits (the usual baseline of TET's Table 1)."""

    def __init__(self, label_smoothing: float = 0.0, transform_reg: float = 0.0):
        super().__init__()
        self.label_smoothing = label_smoothing
        self.transform_reg = transform_reg

    def check(self, model, datamodule) -> None:
        if self.transform_reg > 0 and getattr(model, "feature_transform", None) is None:
            raise IncompatibleError(
                f"method.transform_reg={self.transform_reg} regularises a PointNet feature transform, which "
                f"{type(model).__name__} does not have (use model=pointnet with model.feature_transform=true, "
                "or method.transform_reg=0)"
            )

    def loss(self, output, target):
        loss = F.cross_entropy(self.predict(output), target, label_smoothing=self.label_smoothing)
        if self.transform_reg > 0:
            from snnexp.models.pointnet import feature_transform_regularizer

            loss = loss + self.transform_reg * feature_transform_regularizer(output.aux["feature_transform"])
        return loss
