"""The training-method interface: everything a paper changes about training lives in a Method subclass."""

from __future__ import annotations

import torch
from torch import nn

from snnexp.models.output import ModelOutput


def accuracy(scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Top-1 accuracy; ``target`` is class indices or (MixUp/CutMix) class probabilities."""
    labels = target if target.dim() == 1 else target.argmax(-1)
    return (scores.argmax(-1) == labels).float().mean()


class Method:
    """Base class of the training methods (``method=<name>``).

    The LightningModule (:class:`snnexp.lit.SNNModule`) is generic: it calls these hooks and never asks which
    method it runs. The default is standard training: forward, ``loss``, prediction = mean of logits over T.
    """

    def check(self, model: nn.Module, datamodule) -> None:
        """Refuse, with :class:`snnexp.errors.IncompatibleError`, a model or dataset this method cannot use."""

    def setup(self, model: nn.Module, datamodule) -> nn.Module:
        """Return the module to train (e.g. with added heads, a teacher, or neurons swapped)."""
        return model

    def training_step(self, module, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One training step: returns the loss and extra scalars to log under ``train/``."""
        x, y = batch
        output = module(x)
        loss = self.loss(output, y)
        return loss, {"acc": accuracy(self.predict(output), y)}

    def loss(self, output: ModelOutput, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def predict(self, output: ModelOutput) -> torch.Tensor:
        """Class scores ``[B, C]`` used for accuracy: the mean of the per-step logits over T."""
        return output.logits.mean(0)

    def on_train_epoch_start(self, epoch: int, max_epochs: int) -> None:
        """Per-epoch schedules (evolving surrogates, decaying balance coefficients) go here."""

    def on_evaluation_start(self, module) -> None:
        """Before each validation or test pass (e.g. recalibrate BatchNorm statistics at the evaluation T)."""

    def state_dict(self) -> dict:
        """State a method keeps across epochs (saved in checkpoints)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"
