"""Towards Generalization across Time Steps in SNNs: Mixed Time-step Training (MTT)
(Du, Wu, Deng, Gu; ICLR 2025; code: brain-intelligence-lab/temporal_flexibility_in_SNN).

One trained network runs at any T (the temporal-flexibility curve: ``eval.timesteps=[1,2,...]``).
Every training iteration draws, ``draws`` = 3 times, a time resolution for the encoder/stem and for every stage

    tau^(d) = (T_0, T_1, ..., T_S),   T_s ~ U{t_min, ..., t_max} independently,   d = 1..draws

runs the network with stage s at T_s, its input converted from T_{s-1} steps by the communication module
C_{T_{s-1} -> T_s} (:mod:`snnexp.training.mixed_time`: repeat steps to expand, sum contiguous evenly spaced groups
to contract), and takes one optimiser step on

    L = (1/draws) sum_d CE( (1/T_S) sum_t logits_t(x; tau^(d)), y )        (``reduction=mean``)

i.e. gradients accumulated over the draws. Before every evaluation BatchNorm statistics are recalibrated at
the evaluation T: running stats reset, ``recalibration_batches`` training batches forwarded in train mode
without gradients, with cumulative averaging (momentum None), so mu = (1/K) sum_k mean_k, var = (1/K) sum_k
var_k (unbiased). At evaluation every stage keeps the incoming T: the whole network runs at the input's T.

Facts from the official code, and the choices that are ours:
  * the official code draws one T per residual block (``group_block_num`` blocks per draw, default 1) and the
    stem shares the first block's T; here T is drawn per *stage* of ``model.stages`` and the stem (the encoder,
    for static input) gets its own draw, whose step count stage 1 converts. Sequence (event) input keeps the
    data's T in the stem; the stages are still drawn;
  * the official code sums the draws' gradients (``reduction=sum``, one backward per draw); the default here
    is their mean (``reduction=mean``), i.e. the official gradient / draws; the forward graphs of all draws
    are held until the single backward (memory grows with ``draws``);
  * official defaults: T in {1..6}, 3 draws, 10 calibration batches, plain CE; t_max defaults to 4 here to
    match the project's default T=4 (the official code evaluates at T = t_max, so set ``T=${method.t_max}``);
  * the official calibration leaves momentum at None; here it is restored afterwards, and the modules' own
    train/eval flags are restored (the official code recalibrates only when t_min != t_max; here always,
    ``recalibration_batches=0`` disables it).
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from snnexp.errors import IncompatibleError
from snnexp.training.method import Method, accuracy
from snnexp.training.mixed_time import MixedTimeStage

log = logging.getLogger(__name__)

REDUCTIONS = ("mean", "sum")


class MTT(Method):
    """Mixed time-step training: per-stage random T over several draws per step, BN recalibration at eval."""

    def __init__(self, t_min: int = 1, t_max: int = 4, draws: int = 3, recalibration_batches: int = 10,
                 reduction: str = "mean", label_smoothing: float = 0.0):
        super().__init__()
        if not 1 <= t_min <= t_max:
            raise ValueError(f"method.t_min and method.t_max need 1 <= t_min <= t_max, got {t_min}, {t_max}")
        if draws < 1:
            raise ValueError(f"method.draws must be at least 1, got {draws}")
        if recalibration_batches < 0:
            raise ValueError(f"method.recalibration_batches must be >= 0 (0 disables), got {recalibration_batches}")
        if reduction not in REDUCTIONS:
            raise ValueError(f"method.reduction must be one of {list(REDUCTIONS)}, got {reduction!r}")
        self.t_min, self.t_max, self.draws = t_min, t_max, draws
        self.recalibration_batches = recalibration_batches
        self.reduction = reduction
        self.label_smoothing = label_smoothing
        self.last_draws: list[list[int]] = []  # (T_stem, T_stage1, ..., T_stageS) of each draw of the last step

    # ---- model --------------------------------------------------------------------------------------------
    def check(self, model, datamodule) -> None:
        stages = getattr(model, "stages", None)
        if not (isinstance(stages, nn.ModuleDict) and len(stages)
                and all(isinstance(s, nn.Sequential) for s in stages.values())):
            raise IncompatibleError(
                f"method=mtt runs every stage of the network at its own number of time steps, so it needs a model "
                f"with `stages` (an nn.ModuleDict of nn.Sequential stages, each mapping [T, B, ...] to "
                f"[T, B, ...]); {type(model).__name__} has none. Use a ResNet (model=resnet19, resnet18, resnet20, "
                f"resnet34)."
            )

    def timesteps(self, T: int) -> int:
        if not self.t_min <= T <= self.t_max:
            log.warning("method=mtt trains at T in [%d, %d] but evaluates at T=%d", self.t_min, self.t_max, T)
        return T

    def setup(self, model, datamodule):
        for name in list(model.stages.keys()):
            if not isinstance(model.stages[name], MixedTimeStage):
                model.stages[name] = MixedTimeStage(model.stages[name])
        return model

    @staticmethod
    def stages(model) -> list[MixedTimeStage]:
        return [s for s in model.stages.values() if isinstance(s, MixedTimeStage)]

    # ---- training -----------------------------------------------------------------------------------------
    def sample(self, count: int) -> list[int]:
        """``count`` time resolutions drawn uniformly from {t_min..t_max} (global torch RNG, seeded by the run)."""
        return torch.randint(self.t_min, self.t_max + 1, (count,)).tolist()

    def loss(self, output, target):
        return F.cross_entropy(self.predict(output), target, label_smoothing=self.label_smoothing)

    def training_step(self, module, batch):
        x, y = batch
        stages = self.stages(module.model)
        losses, correct, self.last_draws = [], [], []
        try:
            for _ in range(self.draws):
                Ts = self.sample(len(stages) + 1)
                for stage, T in zip(stages, Ts[1:]):
                    stage.T = T
                self.last_draws.append(Ts)
                output = module(x, T=Ts[0])  # the stem's T; a sequence input keeps the data's own T
                losses.append(self.loss(output, y))
                correct.append(accuracy(self.predict(output), y))
        finally:
            for stage in stages:
                stage.T = None
        total = torch.stack(losses)
        loss = total.mean() if self.reduction == "mean" else total.sum()
        drawn = torch.tensor(self.last_draws, dtype=torch.float32)
        return loss, {"acc": torch.stack(correct).mean(), "mtt_T_mean": drawn.mean()}

    # ---- evaluation: BatchNorm recalibration at the evaluation T ------------------------------------------
    def on_evaluation_start(self, module) -> None:
        if self.recalibration_batches == 0:
            return
        datamodule = _train_datamodule(module)
        if datamodule is None:  # not attached to a trainer with a datamodule (unit tests, bare dataloaders)
            return
        device = next(module.model.parameters()).device
        self.recalibrate(module, datamodule.train_dataloader(), device)

    @torch.no_grad()
    def recalibrate(self, model: nn.Module, loader, device=None) -> int:
        """Reset every BatchNorm's running stats in ``model`` (the LightningModule: it encodes static inputs at
        the evaluation T) and re-estimate them as the cumulative average over the first
        ``recalibration_batches`` batches of ``loader`` (train mode, no gradients); returns the batches used."""
        norms = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
        if not norms:
            return 0
        modes = [(m, m.training) for m in model.modules()]
        momenta = [bn.momentum for bn in norms]
        for bn in norms:
            bn.reset_running_stats()
            bn.momentum = None
        model.train()
        used = 0
        try:
            for batch in loader:
                if used >= self.recalibration_batches:
                    break
                x = batch[0] if isinstance(batch, (tuple, list)) else batch
                model(x.to(device) if device is not None else x)
                used += 1
        finally:
            for bn, momentum in zip(norms, momenta):
                bn.momentum = momentum
            for m, training in modes:
                m.training = training
        return used


def _train_datamodule(module):
    """The datamodule of the trainer ``module`` is attached to, set up for fitting; None when there is none."""
    try:
        trainer = module.trainer
    except (AttributeError, RuntimeError):
        return None
    datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
    if datamodule is None:
        return None
    if getattr(datamodule, "train_set", False) is None:  # e.g. a datamodule rebuilt for testing at another T
        datamodule.setup("fit")
    return datamodule
