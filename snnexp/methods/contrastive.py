"""Enhancing Representation of Spiking Neural Networks via Similarity-Sensitive Contrastive Learning
(Zhang et al.; AAAI 2024).

At each chosen layer l, the SNN's feature of sample i (time mean, global-average-pooled, projected when the
ANN's width differs: s_i = P_l(pool(mean_t S_l[t, i]))) is pulled towards the frozen ANN teacher's feature of
the same sample (a_i = pool(A_l[i])) and pushed from the other samples' in the batch (InfoNCE, cosine
similarity sim, temperature tau):

    L_l  = -(1/B) sum_i log( exp(sim(s_i, a_i) / tau) / sum_j exp(sim(s_i, a_j) / tau) )
    L    = CE(f, y) + beta * sum_l w_l L_l

Our choices where the paper leaves one open (no code read): layers = every stage tap (all taps but
``features``); layer weights w_l proportional to depth, w_l = l / sum_k k (deeper layers are more semantic),
overridable with ``layer_weights``; tau = 0.1, beta = 0.1; features pooled over space (and tokens) so any
resolution compares; a projection Linear(C_snn -> C_ann) only where the widths differ (a named
``teacher_model``), training-only submodules of the method (``method.projections``).
"""

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from snnexp.errors import IncompatibleError
from snnexp.training.taps import channels_of, pooled, probe_taps, stage_taps
from snnexp.training.method import Method, accuracy
from snnexp.training.teacher import load_teacher


def info_nce(s: torch.Tensor, a: torch.Tensor, tau: float) -> torch.Tensor:
    """InfoNCE of ``s [B, D]`` against ``a [B, D]``: positives on the diagonal, cosine similarity / tau."""
    logits = F.normalize(s, dim=-1) @ F.normalize(a, dim=-1).t() / tau
    return F.cross_entropy(logits, torch.arange(s.shape[0], device=s.device))


class Contrastive(Method):
    """Layer-wise InfoNCE between SNN and ANN features plus CE."""

    def __init__(self, teacher_ckpt: Optional[str] = None, teacher_model: Optional[str] = None,
                 taps: Optional[list[str]] = None, layer_weights: Optional[list[float]] = None,
                 tau: float = 0.1, beta: float = 0.1):
        super().__init__()
        if tau <= 0 or beta < 0:
            raise ValueError(f"method.tau must be positive and method.beta non-negative; got {tau}, {beta}")
        self.teacher_ckpt = teacher_ckpt
        self.teacher_model = teacher_model
        self.taps = None if taps is None else list(taps)
        self.layer_weights = None if layer_weights is None else [float(w) for w in layer_weights]
        self.tau = tau
        self.beta = beta
        self._teacher = None
        self._shapes = None

    def check(self, model, datamodule):
        self._shapes = probe_taps(model, datamodule)
        taps = self.taps if self.taps is not None else stage_taps(self._shapes)
        missing = [t for t in taps if t not in self._shapes]
        if not taps or missing:
            raise IncompatibleError(
                f"method=contrastive needs intermediate feature taps {taps or '(stage outputs)'} but model "
                f"{type(model).__name__} exposes {list(self._shapes)}; use a model with stages "
                "(e.g. resnet19, vggsnn) or set method.taps to some of its taps"
            )
        if self.layer_weights is not None and len(self.layer_weights) != len(taps):
            raise IncompatibleError(f"method.layer_weights has {len(self.layer_weights)} entries for "
                                    f"{len(taps)} taps {taps}; give one weight per tap")
        self._taps = list(taps)
        n = len(taps)
        self._weights = self.layer_weights or [(i + 1) / (n * (n + 1) / 2) for i in range(n)]

    def setup(self, model, datamodule):
        if self._shapes is None:
            self.check(model, datamodule)
        self._teacher = load_teacher(self.teacher_ckpt, model, datamodule, self.teacher_model, "contrastive")
        teacher_shapes = probe_taps(self._teacher.net, datamodule)
        missing = [t for t in self._taps if t not in teacher_shapes]
        if missing:
            raise IncompatibleError(f"method=contrastive: the teacher ({self.teacher_model}) lacks the taps {missing}; "
                                    f"it has {list(teacher_shapes)}; set method.taps to taps both models expose")
        self.projections = nn.ModuleDict()
        for name in self._taps:
            c_s, c_a = channels_of(self._shapes[name]), channels_of(teacher_shapes[name])
            self.projections[name] = nn.Identity() if c_s == c_a else nn.Linear(c_s, c_a)
        return model

    def taps_read(self):
        return frozenset(self._taps)

    def training_step(self, module, batch):
        x, y = batch
        output = module(x)
        f = self.predict(output)
        teacher = self._teacher(module.encode(x, T=1))
        terms = [info_nce(self.projections[n](pooled(output.taps[n])), pooled(teacher.taps[n]), self.tau) for n in self._taps]
        contrast = sum(w * t for w, t in zip(self._weights, terms))
        loss = F.cross_entropy(f, y) + self.beta * contrast
        return loss, {"acc": accuracy(f, y), "loss_contrast": contrast.detach()}

    def loss(self, output, target):
        return F.cross_entropy(self.predict(output), target)
