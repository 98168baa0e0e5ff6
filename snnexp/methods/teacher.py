"""The frozen ANN teacher of the distillation methods (``kd``, ``enof``, ``contrastive``).

A teacher is the checkpoint of a ``method=ann`` run (Lightning checkpoint, state_dict keys ``model.*``). By
default it has the student's architecture: a deep copy of the student with every spiking neuron replaced by
ReLU (T = 1 on static data, as the ``ann`` method trains it). ``teacher_model=<name>`` builds another registered
model instead, with its default hyperparameters and the datamodule's shapes.

The teacher is never a submodule of the trained model: it stays out of the optimiser and of checkpoints, is
frozen (``requires_grad=False``) and always in eval mode; the methods keep it on themselves and move it to
the student's device at the first training step.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from snnexp.errors import IncompatibleError, SnnexpError
from snnexp.methods.ann import replace_neurons


def load_teacher(ckpt: str | None, student: nn.Module, datamodule, teacher_model: str | None = None,
                 method: str = "kd") -> nn.Module:
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
    if teacher_model is None:
        teacher = copy.deepcopy(student)
    else:
        from functools import partial

        from snnexp.models import create_model
        from snnexp.neurons import LIF

        teacher = create_model(teacher_model, neuron=partial(LIF), input_shape=tuple(datamodule.input_shape),
                               num_classes=datamodule.num_classes, T=getattr(student, "T", 1))
    replace_neurons(teacher, nn.ReLU)
    if datamodule.time_steps is None and hasattr(teacher, "T"):
        teacher.T = 1
    state = torch.load(path, map_location="cpu", weights_only=False)
    weights = state.get("state_dict", state)
    weights = {k[len("model."):]: v for k, v in weights.items() if k.startswith("model.")}
    if not weights:
        raise IncompatibleError(f"method.teacher_ckpt={ckpt} holds no model weights (keys model.*); is it a "
                                "checkpoint of a `python -m snnexp method=ann ...` run?")
    try:
        teacher.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        name = teacher_model or f"the student's architecture ({type(student).__name__})"
        raise IncompatibleError(
            f"method.teacher_ckpt={ckpt} does not fit {name}: {str(err).splitlines()[0]} ... Train the teacher "
            "with the same model, data and model options (method=ann), or set method.teacher_model=<its model>"
        ) from err
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def run_teacher(teacher: nn.Module, x: torch.Tensor):
    """The teacher's output on ``x`` (no gradient, eval mode, on ``x``'s device)."""
    if next(teacher.parameters()).device != x.device:
        teacher.to(x.device)
    teacher.eval()
    with torch.no_grad():
        return teacher(x)
