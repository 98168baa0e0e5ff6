"""The frozen ANN teacher of the distillation methods (``kd``, ``enof``, ``contrastive``).

A teacher is the checkpoint of a ``method=ann`` run (Lightning checkpoint, state_dict keys ``model.*``), loaded
with ``weights_only=True`` and refused in one line when damaged (:mod:`snnexp.checkpoints`). By
default it has the student's architecture: a deep copy of the student with every spiking neuron replaced by
ReLU. ``teacher_model=<name>`` builds any registered model instead (every ``conf/model`` option is one), with
its default hyperparameters and the datamodule's shapes. On static data it runs one time step, as
``method=ann`` trains it.

:class:`FrozenTeacher` holds it outside the module tree: never a submodule, so it stays out of the optimiser
and of checkpoints; frozen (``requires_grad=False``), always in eval mode, moved to the input's device on use.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from snnexp.checkpoints import load_checkpoint
from snnexp.errors import IncompatibleError, SnnexpError
from snnexp.training.surgery import replace_neurons


TEACHER_REMEDY = ("train the teacher again with `python -m snnexp method=ann model=<m> data=<d>`, or point "
                  "method.teacher_ckpt= at another checkpoint of it (checkpoints/best-*.ckpt or last.ckpt)")


class FrozenTeacher:
    """A frozen network called without gradients in eval mode; a plain object, so ``nn.Module`` never registers
    it (not in ``parameters()``, ``state_dict()`` or ``.to()``: it follows the input's device instead)."""

    def __init__(self, net: nn.Module):
        net.eval()
        for p in net.parameters():
            p.requires_grad_(False)
        self.net = net

    def __call__(self, x: torch.Tensor):
        if next(self.net.parameters()).device != x.device:
            self.net.to(x.device)
        self.net.eval()
        with torch.no_grad():
            return self.net(x)


def load_teacher(ckpt: str | None, student: nn.Module, datamodule, teacher_model: str | None = None,
                 method: str = "kd") -> FrozenTeacher:
    """Build the ANN teacher, load ``ckpt`` into it and freeze it."""
    if not ckpt:
        raise SnnexpError(
            f"method={method} needs an ANN teacher: set method.teacher_ckpt=/path/to/checkpoints/best.ckpt of a "
            "run `python -m snnexp method=ann model=<m> data=<d>` (same model and data as the student)"
        )
    path = Path(ckpt)
    if not path.is_file():
        raise SnnexpError(
            f"method.teacher_ckpt={ckpt}: no checkpoint at {path}. Train the teacher first with "
            "`python -m snnexp method=ann model=<m> data=<d>` and pass its checkpoints/<best>.ckpt or last.ckpt"
        )
    weights = _teacher_weights(path, ckpt)
    teacher = _build_teacher(student, datamodule, teacher_model)
    try:
        teacher.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        name = teacher_model or f"the student's architecture ({type(student).__name__})"
        raise IncompatibleError(
            f"method.teacher_ckpt={ckpt} does not fit {name}: {str(err).splitlines()[0]} ... Train the teacher "
            "with the same model, data and model options (method=ann), or set method.teacher_model=<its model>"
        ) from err
    return FrozenTeacher(teacher)


def _teacher_weights(path: Path, ckpt: str) -> dict:
    """The ``model.*`` weights of the checkpoint, prefix removed; the file is checked and loaded weights-only first,
    so a damaged or foreign file is refused in one line before any model is built."""
    state = load_checkpoint(path, f"method.teacher_ckpt={ckpt}", TEACHER_REMEDY, required=())
    weights = state.get("state_dict", state)  # a Lightning checkpoint, or a bare state_dict of model.* keys
    weights = {k[len("model."):]: v for k, v in weights.items() if isinstance(k, str) and k.startswith("model.")}
    if not weights:
        raise IncompatibleError(f"method.teacher_ckpt={ckpt} holds no model weights (keys model.*); is it a "
                                "checkpoint of a `python -m snnexp method=ann ...` run?")
    return weights


def _build_teacher(student: nn.Module, datamodule, teacher_model: str | None) -> nn.Module:
    """The teacher's ANN: a copy of the student or the named model, every spiking neuron replaced by ReLU."""
    if teacher_model is None:
        teacher = copy.deepcopy(student)
    else:
        from functools import partial

        from snnexp.models import create_model
        from snnexp.neurons import LIF

        teacher = create_model(teacher_model, neuron=partial(LIF), input_shape=tuple(datamodule.input_shape),
                               num_classes=datamodule.num_classes)
    replace_neurons(teacher, nn.ReLU)
    return teacher
