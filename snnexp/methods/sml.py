"""Surrogate Module Learning: Reduce the Gradient Error Accumulation in Training Spiking Neural Networks
(Deng, Lin, Li, Gu; ICML 2023). Repo brain-intelligence-lab/surrogate_module_learning.

ANN surrogate branches read the time-averaged features at N taps and predict the class (logits a_i); f is
the SNN's time-mean logits, L the cross-entropy, sg the stop-gradient, p(z) = softmax(z / tau):

    L_hard = ( L(f) + alpha * sum_i L(a_i) ) / (N * alpha + 1)
    L_soft = sum_i [ KL(a_i || sg f) + KL(f || sg a_i) ] / (2N)        (at temperature tau, no tau^2 factor)
    L      = lambda * L_soft + (1 - lambda) * L_hard                     tau = 3, alpha = 0.5, lambda = 0.9

KL(z || sg w) is the distillation term that trains z towards the detached w, as the official code's
``KLDivLoss(log_softmax(z / tau), softmax(w / tau).detach())``: sum_c p(w)_c log(p(w)_c / p(z)_c), batch mean.

Branches (:mod:`snnexp.training.sml_branches`), one per tap, each reading the time mean of its tap
``[T, B, C, *positions]``: a feature map gets the ResNet-18 demo's conv branch (``branch_width`` channels, FC
``branch_hidden``); tokens ``[T, B, C, N]`` get the official STMixer demo's non-spiking mixer encoder
(``token_branch=mixer``, encoder depths 3, 2, 1, 1, ... from the shallowest tap; for models that declare
their SML attachment points, i.e. STMixer) or the FC part alone (``token_branch=mlp``, ours, and for every
other ``[T, B, C, N]`` tap, e.g. PointNet's points); vectors get the FC part. Default taps: the model's own SML attachment points when
it declares them (``model.auxiliary_taps``: STMixer's patch embed and blocks 2, 4, 6, 8, as the demo), else the
stage taps at 3/8 and 6/8 of the depth (ResNet-18's four stages: layer2, layer3, i.e. after the 4th and 6th
BasicBlock, the stage ends closest to the paper's 3rd and 6th; ResNet-19: layer1, layer2; VGGSNN: conv3, conv6;
convnet: conv1), never the last stage.

Branches are training-only: they are the method's submodules (``method.branches``), never the SNN's; ``predict``
and evaluation use f only.
"""

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from snnexp.training.sml_branches import MixerBranch, conv_branch, mixer_depths, mlp_branch
from snnexp.training.taps import probe_taps, resolve_taps
from snnexp.training.method import Method, accuracy

DEFAULT_DEPTHS = (3 / 8, 6 / 8)  # ResNet-18 demo: after the 3rd and 6th of 8 BasicBlocks
TOKEN_BRANCHES = ("mixer", "mlp")


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
                 branch_width: int = 256, branch_hidden: int = 512, token_branch: str = "mixer"):
        super().__init__()
        if not 0.0 <= lamb <= 1.0:
            raise ValueError(f"method.lamb must lie in [0, 1], got {lamb}")
        if tau <= 0 or alpha < 0:
            raise ValueError(f"method.tau must be positive and method.alpha non-negative; got {tau}, {alpha}")
        if token_branch not in TOKEN_BRANCHES:
            raise ValueError(f"method.token_branch must be one of {list(TOKEN_BRANCHES)}, got {token_branch!r}")
        self.token_branch = token_branch
        self.taps = None if taps is None else list(taps)
        self.tau = tau
        self.alpha = alpha
        self.lamb = lamb
        self.branch_width = branch_width
        self.branch_hidden = branch_hidden
        self._shapes = None

    def check(self, model, datamodule):
        self._shapes = probe_taps(model, datamodule)
        requested = self.taps if self.taps is not None else getattr(model, "auxiliary_taps", None)
        self._taps = resolve_taps("sml", requested, self._shapes, DEFAULT_DEPTHS, model)
        # the mixer branch is the token models' own (STMixer declares its attachment points); point sets and other
        # 4-D taps get the FC branch
        self._mixer_heads = getattr(model, "num_heads", None) if hasattr(model, "auxiliary_taps") else None

    def setup(self, model, datamodule):
        if self._shapes is None:
            self.check(model, datamodule)
        token_taps = [name for name in self._taps if len(self._shapes[name]) == 4]
        depths = dict(zip(token_taps, mixer_depths(len(token_taps))))
        self.branches = nn.ModuleDict({name: self._branch(self._shapes[name], depths.get(name), datamodule.num_classes)
                                       for name in self._taps})
        return model

    def _branch(self, shape: tuple[int, ...], depth: Optional[int], num_classes: int) -> nn.Module:
        """The branch for a tap of ``shape`` ``[T, B, C, *positions]`` (it receives the time mean)."""
        if len(shape) == 5:
            return conv_branch(shape[2], min(shape[3:]), num_classes, self.branch_width, self.branch_hidden)
        if len(shape) == 4 and self.token_branch == "mixer" and self._mixer_heads:
            return MixerBranch(shape[2], shape[3], num_classes, self._mixer_heads, depth)
        return mlp_branch(shape[2], num_classes, self.branch_hidden)

    def taps_read(self):
        return frozenset(self._taps)

    def training_step(self, module, batch):
        x, y = batch
        output = module(x)
        f = self.predict(output)
        a = [self.branches[name](output.taps[name].mean(0)) for name in self._taps]
        loss, hard, soft = sml_loss(f, a, y, self.tau, self.alpha, self.lamb)
        return loss, {"acc": accuracy(f, y), "loss_hard": hard.detach(), "loss_soft": soft.detach()}

    def loss(self, output, target):
        return F.cross_entropy(self.predict(output), target)
