"""The training-method interface: everything a paper changes about training lives in a Method subclass.

A method is an ``nn.Module`` held by the LightningModule (``module.method``) beside the SNN (``module.model``).
Its trainable extras (SML branches, shortcut heads, projections) are its own submodules, so device moves,
``state_dict``, checkpoints, the optimiser and DDP see them through PyTorch and Lightning; the SNN never holds
them, so evaluation, ``summary.json``'s parameter count and exports see the bare SNN. State that is not a
tensor (an evolving surrogate's temperature, a balance coefficient) goes through ``get_extra_state``.
A frozen teacher is held outside the module tree (:class:`snnexp.training.teacher.FrozenTeacher`).
"""

from __future__ import annotations

import torch
from torch import nn

from snnexp.models.output import ModelOutput


def accuracy(scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Top-1 accuracy; ``target`` is class indices or (MixUp/CutMix) class probabilities."""
    labels = target if target.dim() == 1 else target.argmax(-1)
    return (scores.argmax(-1) == labels).float().mean()


class Method(nn.Module):
    """Base class of the training methods (``method=<name>``).

    The LightningModule (:class:`snnexp.lit.SNNModule`) is generic: it calls these hooks and never asks which
    method it runs. The default is standard training: forward, ``loss``, prediction = mean of logits over T.
    """

    def model_options(self) -> dict:
        """Keyword arguments the model must be built with (e.g. ``{"norm": "tdbn"}``), over the model config."""
        return {}

    def timesteps(self, T: int) -> int:
        """Time steps a static input is encoded into for this method (the ANN baseline runs one step)."""
        return T

    def check(self, model: nn.Module, datamodule) -> None:
        """Refuse, with :class:`snnexp.errors.IncompatibleError`, a model or dataset this method cannot use."""

    def setup(self, model: nn.Module, datamodule) -> nn.Module:
        """Build the method's training-only submodules (or a teacher) for ``model``; may change ``model`` in
        place (e.g. swap neurons) and returns it."""
        return model

    def taps_read(self) -> frozenset[str]:
        """The taps of the model's output that :meth:`training_step` reads, besides ``"features"`` (always kept);
        the training forward records no others (:func:`snnexp.models.layers.keep_taps`)."""
        return frozenset()

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

    def trains(self) -> bool:
        """False when the method needs no training (e.g. converting a given ANN checkpoint): the run only tests."""
        return True

    def prepare_test(self, module) -> None:
        """Before each test pass, after the tested weights are loaded (e.g. convert the trained ANN into an SNN)."""

    def test_metrics(self) -> dict[str, float]:
        """Extra numbers logged with every test pass, as ``<test prefix>/<key>`` (e.g. the ANN's own accuracy)."""
        return {}

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in vars(self).items()
                         if not k.startswith("_") and k != "training" and not isinstance(v, (nn.Module, torch.Tensor)))
