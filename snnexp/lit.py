"""SNNModule: the one generic LightningModule. Method-specific behaviour lives in the Method object."""

from __future__ import annotations

import math

import lightning as L
import torch
from torchmetrics.classification import MulticlassAccuracy

from snnexp.errors import NonFiniteLossError
from snnexp.methods.auxiliary import export_model
from snnexp.methods.base import Method
from snnexp.metrics import FiringRateMonitor


def build_optimizer(params, cfg) -> torch.optim.Optimizer:
    """SGD, Adam or AdamW from the ``optim`` config node."""
    name = cfg.name.lower()
    if name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               weight_decay=cfg.weight_decay)
    if name in ("adam", "adamw"):
        cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
        return cls(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    raise ValueError(f"optim.name must be one of sgd, adam, adamw; got {cfg.name!r}")


def build_scheduler(optimizer, cfg, max_epochs: int):
    """Per-epoch schedule from the ``scheduler`` node: optional linear warm-up, then cosine / step / constant."""
    name = cfg.name.lower()
    warmup = max(0, min(cfg.warmup_epochs, max_epochs - 1))
    remaining = max(1, max_epochs - warmup)
    if name == "cosine":
        main = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=remaining, eta_min=cfg.min_lr)
    elif name == "step":
        main = torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.gamma)
    elif name == "none":
        main = torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    else:
        raise ValueError(f"scheduler.name must be one of cosine, step, none; got {cfg.name!r}")
    if warmup == 0:
        return main
    ramp = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=cfg.warmup_start_factor, total_iters=warmup)
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [ramp, main], milestones=[warmup])


class SNNModule(L.LightningModule):
    """Trains ``model`` with ``method``; logs loss, top-1/top-5 accuracy and per-layer firing rates.

    Metric names: ``train/loss``, ``val/loss``, ``val/acc``, ``val/acc5``, ``val/firing_rate`` (and
    ``val/firing_rate/<layer>``), ``test/acc``, ``test/acc5``, and ``test_T<n>/acc`` when evaluated at other T;
    accuracies are fractions in [0, 1].
    """

    def __init__(self, model: torch.nn.Module, method: Method, num_classes: int, optim, scheduler):
        super().__init__()
        self.model = model
        self.method = method
        self.optim_cfg = optim
        self.scheduler_cfg = scheduler
        self.num_classes = num_classes
        self.top5 = num_classes >= 10
        for split in ("val", "test"):
            setattr(self, f"{split}_acc", MulticlassAccuracy(num_classes, top_k=1, average="micro"))
            if self.top5:
                setattr(self, f"{split}_acc5", MulticlassAccuracy(num_classes, top_k=5, average="micro"))
        self.firing = FiringRateMonitor(export_model(self.model))  # layer names as in the bare SNN
        self.test_prefix = "test"  # "test_T<n>" while evaluating at another number of time steps
        self.last_firing_rates: dict[str, float] = {}

    def forward(self, x):
        return self.model(x)

    # ---- training -------------------------------------------------------------------------------------
    def on_train_epoch_start(self):
        self.method.on_train_epoch_start(self.current_epoch, self.trainer.max_epochs)

    def training_step(self, batch, batch_idx):
        loss, logs = self.method.training_step(self, batch)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"the training loss became {loss.item()} at epoch {self.current_epoch}, step {self.global_step}; "
                "the run stops here and the last good checkpoint (checkpoints/last.ckpt) is kept. "
                "Try a lower optim.lr or gradient clipping (trainer.gradient_clip_val=1.0)."
            )
        batch_size = batch[1].shape[0]
        self.log("train/loss", loss, prog_bar=True, on_step=False, on_epoch=True, batch_size=batch_size)
        for name, value in logs.items():
            self.log(f"train/{name}", value, on_step=False, on_epoch=True, batch_size=batch_size)
        return loss

    # ---- evaluation -----------------------------------------------------------------------------------
    def _evaluate(self, batch, split: str, prefix: str):
        x, y = batch
        output = self(x)
        loss = self.method.loss(output, y)
        scores = self.method.predict(output)
        getattr(self, f"{split}_acc")(scores, y)
        self.log(f"{prefix}/loss", loss, batch_size=y.shape[0])
        self.log(f"{prefix}/acc", getattr(self, f"{split}_acc"), prog_bar=True, batch_size=y.shape[0])
        if self.top5:
            getattr(self, f"{split}_acc5")(scores, y)
            self.log(f"{prefix}/acc5", getattr(self, f"{split}_acc5"), batch_size=y.shape[0])

    def on_validation_epoch_start(self):
        self.method.on_evaluation_start(self)
        self.firing.start()

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch, "val", "val")

    def on_validation_epoch_end(self):
        rates = self.firing.stop()
        if rates:
            self.last_firing_rates = rates
            self.log("val/firing_rate", sum(rates.values()) / len(rates))
            for name, rate in rates.items():
                self.log(f"val/firing_rate/{name}", rate)

    def on_test_epoch_start(self):
        self.method.on_evaluation_start(self)

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, "test", self.test_prefix)

    # ---- optimisation and checkpoints -----------------------------------------------------------------
    def configure_optimizers(self):
        optimizer = build_optimizer(self.model.parameters(), self.optim_cfg)
        max_epochs = self.trainer.max_epochs if self.trainer.max_epochs and self.trainer.max_epochs > 0 else 1
        scheduler = build_scheduler(optimizer, self.scheduler_cfg, max_epochs)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    def on_train_epoch_end(self):
        lr = self.trainer.optimizers[0].param_groups[0]["lr"]
        if math.isfinite(lr):
            self.log("train/lr", lr)

    def on_save_checkpoint(self, checkpoint):
        checkpoint["method_state"] = self.method.state_dict()

    def on_load_checkpoint(self, checkpoint):
        self.method.load_state_dict(checkpoint.get("method_state", {}))
