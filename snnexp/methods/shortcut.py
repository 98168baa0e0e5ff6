"""Take A Shortcut Back: Mitigating the Gradient Vanishing for Training Spiking Neural Networks
(Guo et al.; NeurIPS 2024). No code was released; the choices below are ours.

Training-only shortcut heads h_i carry the output of shallow stages straight to the classification, so the
loss gradient reaches the early layers without crossing every spiking layer. With f the SNN's time-mean
logits, N heads, CE the cross-entropy and e = 0 .. E-1 the epoch:

    L(e)    = CE(f, y) + beta(e) * (1/N) * sum_i CE(h_i, y)
    beta(e) = beta0 * (1 + cos(pi * e / (E - 1))) / 2      (schedule=cosine; E = max_epochs)
            = beta0 * (1 - e / (E - 1))                     (schedule=linear)
            = beta0                                         (schedule=constant)

so the shallow heads dominate early and the last epoch trains the SNN alone (beta = 0). Our choices: each head
is the time mean of its tap -> global average pool -> Linear(C -> classes) (the lightest head that reaches the
output); default taps are the stage outputs at 1/4, 1/2, 3/4 of the depth, never the last stage (ResNet-19:
layer1, layer2; ResNet-18/34: layer1..layer3; VGGSNN: conv2, conv4, conv6; convnet: conv1); beta0 = 1.
Heads are the method's submodules (``method.heads``), never the SNN's: absent from evaluation and exports.
"""

import math
from typing import Optional

import torch.nn.functional as F
from torch import nn

from snnexp.training.taps import channels_of, pooled, probe_taps, resolve_taps
from snnexp.training.method import Method, accuracy

DEFAULT_DEPTHS = (1 / 4, 1 / 2, 3 / 4)
SCHEDULES = ("cosine", "linear", "constant")


def balance(epoch: int, max_epochs: int, beta0: float, schedule: str) -> float:
    """beta(e): the shortcut heads' loss weight at ``epoch`` (0-based) of ``max_epochs``."""
    if schedule == "constant":
        return beta0
    progress = min(1.0, epoch / max(1, max_epochs - 1))
    if schedule == "linear":
        return beta0 * (1.0 - progress)
    return beta0 * 0.5 * (1.0 + math.cos(math.pi * progress))


class Shortcut(Method):
    """Shortcut heads from shallow stages to the output, weighted by a decaying balance coefficient."""

    def __init__(self, taps: Optional[list[str]] = None, beta0: float = 1.0, schedule: str = "cosine"):
        super().__init__()
        if schedule not in SCHEDULES:
            raise ValueError(f"method.schedule must be one of {list(SCHEDULES)}, got {schedule!r}")
        if beta0 < 0:
            raise ValueError(f"method.beta0 must be non-negative, got {beta0}")
        self.taps = None if taps is None else list(taps)
        self.beta0 = beta0
        self.schedule = schedule
        self.beta = beta0
        self._shapes = None

    def check(self, model, datamodule):
        self._shapes = probe_taps(model, datamodule)
        self._taps = resolve_taps("shortcut", self.taps, self._shapes, DEFAULT_DEPTHS, model)

    def setup(self, model, datamodule):
        if self._shapes is None:
            self.check(model, datamodule)
        self.heads = nn.ModuleDict({name: nn.Linear(channels_of(self._shapes[name]), datamodule.num_classes)
                                    for name in self._taps})
        return model

    def on_train_epoch_start(self, epoch, max_epochs):
        self.beta = balance(epoch, max_epochs, self.beta0, self.schedule)

    def taps_read(self):
        return frozenset(self._taps)

    def training_step(self, module, batch):
        x, y = batch
        output = module(x)
        f = self.predict(output)
        shortcut = sum(F.cross_entropy(self.heads[n](pooled(output.taps[n])), y) for n in self._taps) / len(self._taps)
        loss = F.cross_entropy(f, y) + self.beta * shortcut
        return loss, {"acc": accuracy(f, y), "loss_shortcut": shortcut.detach(), "beta": self.beta}

    def loss(self, output, target):
        return F.cross_entropy(self.predict(output), target)

    def get_extra_state(self):
        return {"beta": self.beta}

    def set_extra_state(self, state):
        self.beta = state.get("beta", self.beta)
