"""Surrogate Module Learning: Reduce the Gradient Error Accumulation in Training Spiking Neural Networks
(Deng, Lin, Li, Gu; ICML 2023). Repo brain-intelligence-lab/surrogate_module_learning.

ANN surrogate branches read the time-averaged features at N taps and predict the class (logits a_i); f is
the SNN's time-mean logits, L the cross-entropy, sg the stop-gradient, p(z) = softmax(z / tau):

    L_hard = ( L(f) + alpha * sum_i L(a_i) ) / (N * alpha + 1)
    L_soft = sum_i [ KL(a_i || sg f) + KL(f || sg a_i) ] / (2N)        (at temperature tau, no tau^2 factor)
    L      = lambda * L_soft + (1 - lambda) * L_hard                     tau = 3, alpha = 0.5, lambda = 0.9

KL(z || sg w) is the distillation term that trains z towards the detached w, as the official code's
``KLDivLoss(log_softmax(z / tau), softmax(w / tau).detach())``: sum_c p(w)_c log(p(w)_c / p(z)_c), batch mean.

Branches (the demo's ResNet-18 branch, sized to each tap): Conv k7 s2 -> Conv k5 s2 -> Conv k3 s1, each
``branch_width`` channels with BN and LeakyReLU(0.01) -> AdaptiveAvgPool 2x2 -> FC(4 * width -> hidden) -> BN
-> FC(hidden -> classes). Our simplifications: a stride-2 conv keeps stride 1 once the map is below 4 px and a
kernel is capped at the smallest odd size covering the map; token taps ``[T, B, N, D]`` and vector taps get
the FC part only (mean over tokens first). Default taps: the stage taps at 3/8 and 6/8 of the model's depth
(ResNet-18's four stages: layer2, layer3, i.e. after the 4th and 6th BasicBlock, the stage ends closest to the
paper's 3rd and 6th; ResNet-19: layer1, layer2; VGGSNN: conv3, conv6; convnet: conv1), never the last stage.

Branches are training-only: they are the method's submodules (``method.branches``), never the SNN's; ``predict``
and evaluation use f only.
"""

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from snnexp.training.taps import probe_taps, resolve_taps
from snnexp.training.method import Method, accuracy

DEFAULT_DEPTHS = (3 / 8, 6 / 8)  # ResNet-18 demo: after the 3rd and 6th of 8 BasicBlocks


def surrogate_branch(shape: tuple[int, ...], num_classes: int, width: int = 256, hidden: int = 512) -> nn.Module:
    """The ANN branch for a tap of shape ``[T, B, ...]`` (it receives the time mean ``[B, ...]``)."""
    if len(shape) != 5:  # tokens or vectors: FC part only
        features = shape[-1]
        head = [nn.Flatten(1)] if len(shape) == 3 else [_TokenMean()]
        return nn.Sequential(*head, nn.Linear(features, hidden), nn.BatchNorm1d(hidden),
                             nn.LeakyReLU(0.01), nn.Linear(hidden, num_classes))
    layers, channels, size = [], shape[2], min(shape[3:])
    for kernel, stride in ((7, 2), (5, 2), (3, 1)):
        kernel = min(kernel, 2 * ((size - 1) // 2) + 1 if size > 1 else 1)
        stride = stride if size >= 4 else 1
        layers += [nn.Conv2d(channels, width, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(width),
                   nn.LeakyReLU(0.01)]
        channels, size = width, (size + 2 * (kernel // 2) - kernel) // stride + 1
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(2), nn.Flatten(1), nn.Linear(4 * width, hidden),
                         nn.BatchNorm1d(hidden), nn.LeakyReLU(0.01), nn.Linear(hidden, num_classes))


class _TokenMean(nn.Module):
    def forward(self, x):
        return x.mean(1)


def sml_loss(f: torch.Tensor, branches: list[torch.Tensor], target: torch.Tensor, tau: float, alpha: float,
             lamb: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SML's loss of the SNN logits ``f`` and branch logits ``a_i`` ``[B, C]``; returns (L, L_hard, L_soft)."""
    n = len(branches)
    hard = (F.cross_entropy(f, target) + alpha * sum(F.cross_entropy(a, target) for a in branches)) / (n * alpha + 1)

    def kl(z, w):  # KL(z || sg w): trains z towards the detached w
        return F.kl_div(F.log_softmax(z / tau, -1), F.softmax(w.detach() / tau, -1), reduction="batchmean")

    soft = sum(kl(a, f) + kl(f, a) for a in branches) / (2 * n)
    return lamb * soft + (1 - lamb) * hard, hard, soft


class SML(Method):
    """Surrogate Module Learning: training-only ANN branches at ``taps`` and the hard/soft SML loss."""

    def __init__(self, taps: Optional[list[str]] = None, tau: float = 3.0, alpha: float = 0.5, lamb: float = 0.9,
                 branch_width: int = 256, branch_hidden: int = 512):
        super().__init__()
        if not 0.0 <= lamb <= 1.0:
            raise ValueError(f"method.lamb must lie in [0, 1], got {lamb}")
        if tau <= 0 or alpha < 0:
            raise ValueError(f"method.tau must be positive and method.alpha non-negative; got {tau}, {alpha}")
        self.taps = None if taps is None else list(taps)
        self.tau = tau
        self.alpha = alpha
        self.lamb = lamb
        self.branch_width = branch_width
        self.branch_hidden = branch_hidden
        self._shapes = None

    def check(self, model, datamodule):
        self._shapes = probe_taps(model, datamodule)
        self._taps = resolve_taps("sml", self.taps, self._shapes, DEFAULT_DEPTHS, model)

    def setup(self, model, datamodule):
        if self._shapes is None:
            self.check(model, datamodule)
        self.branches = nn.ModuleDict({
            name: surrogate_branch(self._shapes[name], datamodule.num_classes, self.branch_width, self.branch_hidden)
            for name in self._taps
        })
        return model

    def training_step(self, module, batch):
        x, y = batch
        output = module(x)
        f = self.predict(output)
        a = [self.branches[name](output.taps[name].mean(0)) for name in self._taps]
        loss, hard, soft = sml_loss(f, a, y, self.tau, self.alpha, self.lamb)
        return loss, {"acc": accuracy(f, y), "loss_hard": hard.detach(), "loss_soft": soft.detach()}

    def loss(self, output, target):
        return F.cross_entropy(self.predict(output), target)
