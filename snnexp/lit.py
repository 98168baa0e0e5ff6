"""SNNModule: the one generic LightningModule. Method-specific behaviour lives in the Method object."""

from __future__ import annotations

import contextlib
import math
from typing import Callable

import lightning as L
import torch
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from snnexp.errors import NonFiniteLossError, SnnexpError
from snnexp.metrics import E_AC_PJ, E_MAC_PJ, FiringRateMonitor, OperationCounter, operations_per_sample
from snnexp.models.layers import keep_taps
from snnexp.models.strided_conv import use_im2col_backward
from snnexp.models.winograd import use_winograd
from snnexp.neurons import MultiStepNeuron
from snnexp.optim import configure
from snnexp.training.method import Method
from snnexp.training.spike_packing import SpikePacking


class SNNModule(L.LightningModule):
    """Trains ``model`` with ``method``; logs loss, top-1/top-5 accuracy and per-layer firing rates.

    The module owns the input encoder: a static batch ``[B, *input_shape]`` becomes ``[T, B, ...]`` here and
    nowhere else (``encode``), with ``T`` the run's time steps (as the method asks for them: the ANN baseline
    runs one); a sequence ``[T, B, ...]`` (event frames) passes unchanged. ``timesteps(T)`` evaluates at
    another T. ``method`` is a submodule: its training-only extras train, move and checkpoint with the model.

    Metric names: ``train/loss``, ``val/loss``, ``val/acc``, ``val/acc5``, ``val/firing_rate`` (and
    ``val/firing_rate/<layer>``), ``test/acc``, ``test/acc5``, and ``test_T<n>/acc`` when evaluated at other T;
    accuracies are fractions in [0, 1]. Every evaluation pass also logs ``<split>/macs``, ``<split>/sops``
    (synaptic accumulates) and ``<split>/energy_mJ`` per sample (``energy``: picojoules per MAC and per AC), with
    the per-layer counts kept in ``last_operations[split]`` (:class:`snnexp.metrics.OperationCounter`).

    Under DDP every logged metric is the global one: epoch-level values are logged with ``sync_dist=True``, the
    accuracies are torchmetrics (which sync themselves) and the firing rates are summed over the processes before
    they are logged or kept in ``last_firing_rates`` (so ``summary.json`` holds the rates of the whole val set).
    """

    def __init__(self, model: nn.Module, method: Method, num_classes: int, optimizer: Callable,
                 scheduler: Callable | None, encoder: nn.Module, T: int, input_shape: tuple[int, ...],
                 energy: tuple[float, float] = (E_MAC_PJ, E_AC_PJ), pack_spikes: bool = True,
                 recompute_bn: bool = True, winograd: bool = True, im2col_backward: bool = True,
                 recompute_conv: str = "cheap"):
        super().__init__()
        self.model = model
        if winograd:  # 3x3 convolutions on the CPU by Winograd (stride 1 and 2): the same function, faster
            use_winograd(self.model)
        if im2col_backward:  # the other stride-2 convolutions: CPU matrix products over im2col columns
            use_im2col_backward(self.model)
        self.method = method
        keep_taps(self.model, method.taps_read() | {"features"})  # other feature maps are freed as the forward goes
        self.encoder = encoder
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.T = method.timesteps(T)
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.top5 = num_classes >= 10
        for split in ("val", "test"):
            setattr(self, f"{split}_acc", MulticlassAccuracy(num_classes, top_k=1, average="micro"))
            if self.top5:
                setattr(self, f"{split}_acc5", MulticlassAccuracy(num_classes, top_k=5, average="micro"))
        self.firing = FiringRateMonitor(self.model)
        self.operations = OperationCounter(self.model)
        self.energy_pj = tuple(energy)  # (per MAC, per AC)
        # BPTT memory: saved spikes as bits, saved BatchNorm outputs recomputed
        self.spike_packing = SpikePacking(self.model, enabled=pack_spikes, recompute=recompute_bn,
                                          recompute_conv=recompute_conv)
        self.last_operations: dict[str, dict] = {}  # "val" / "test" / "test_T<n>" -> operations_per_sample(...)
        self.test_prefix = "test"  # "test_T<n>" while evaluating at another number of time steps
        self.last_firing_rates: dict[str, float] = {}  # the last validation pass's, over every process
        self.test_firing_rates: dict[str, dict[str, float]] = {}  # test prefix -> rates of this process's test pass
        self._val_samples = 0  # validation samples this process saw this epoch: its weight in the global rates

    def encode(self, x: torch.Tensor, T: int | None = None) -> torch.Tensor:
        """``[B, *input_shape]`` -> ``[T, B, ...]`` through the encoder (``T`` defaults to the run's); a sequence
        ``[T, B, *input_shape]`` is returned as it is."""
        if x.ndim == len(self.input_shape) + 1:
            return self.encoder(x, T or self.T)
        return x

    def forward(self, x: torch.Tensor, T: int | None = None):
        return self.model(self.encode(x, T))

    @contextlib.contextmanager
    def timesteps(self, T: int):
        """Encode static inputs into ``T`` steps inside the block (testing the same weights at another T)."""
        trained, self.T = self.T, T
        try:
            yield self
        finally:
            self.T = trained

    # ---- training -------------------------------------------------------------------------------------
    def on_train_epoch_start(self):
        self.method.on_train_epoch_start(self.current_epoch, self.trainer.max_epochs)

    def on_train_start(self):
        # resuming in the middle of an epoch, Lightning skips on_train_epoch_start: enter the epoch's schedules here
        if self.trainer.fit_loop.restarted_mid_epoch:
            self.on_train_epoch_start()

    def training_step(self, batch, batch_idx):
        with self.spike_packing.saving():
            loss, logs = self.method.training_step(self, batch)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"the training loss became {loss.item()} at epoch {self.current_epoch}, step {self.global_step}; "
                "the run stops here and the last good checkpoint (checkpoints/last.ckpt) is kept. "
                "Try a lower optim.lr or gradient clipping (trainer.gradient_clip_val=1.0)."
            )
        batch_size = batch[1].shape[0]
        self.log("train/loss", loss, prog_bar=True, on_step=False, on_epoch=True, batch_size=batch_size,
                 sync_dist=True)
        for name, value in logs.items():
            self.log(f"train/{name}", value, on_step=False, on_epoch=True, batch_size=batch_size, sync_dist=True)
        return loss

    # ---- evaluation -----------------------------------------------------------------------------------
    def _evaluate(self, batch, split: str, prefix: str):
        x, y = batch
        encoded = self.encode(x)
        output = self.operations.forward(lambda: self.model(encoded), samples=y.shape[0])
        loss = self.method.loss(output, y)
        scores = self.method.predict(output)
        getattr(self, f"{split}_acc")(scores, y)
        self.log(f"{prefix}/loss", loss, batch_size=y.shape[0], sync_dist=True)
        self.log(f"{prefix}/acc", getattr(self, f"{split}_acc"), prog_bar=True, batch_size=y.shape[0])
        if self.top5:
            getattr(self, f"{split}_acc5")(scores, y)
            self.log(f"{prefix}/acc5", getattr(self, f"{split}_acc5"), batch_size=y.shape[0])

    def on_validation_epoch_start(self):
        self.method.on_evaluation_start(self)
        self.firing.start()
        self.operations.start()
        self._val_samples = 0

    def validation_step(self, batch, batch_idx):
        self._val_samples += batch[1].shape[0]
        self._evaluate(batch, "val", "val")

    def on_validation_epoch_end(self):
        rates = self._global_firing_rates(self.firing.stop(), self._val_samples)
        if rates:
            self.last_firing_rates = rates
            # already global: sync_dist only keeps Lightning from warning about an unsynced epoch-level value
            self.log("val/firing_rate", sum(rates.values()) / len(rates), sync_dist=True)
            for name, rate in rates.items():
                self.log(f"val/firing_rate/{name}", rate, sync_dist=True)
        self._log_operations("val")

    def _log_operations(self, prefix: str) -> None:
        """Per-sample MACs, SOPs and energy of this evaluation pass, summed over every process, logged and kept."""
        names = [name for name, _ in self.model.named_modules()]
        counted, sums = self.operations.stop()
        local = torch.zeros(len(names), len(OperationCounter.COLUMNS), dtype=torch.float64, device=self.device)
        for name, row in zip(counted, sums if sums is not None else []):
            local[names.index(name)] = row.to(self.device)
        samples = torch.tensor(float(self.operations.samples), dtype=torch.float64, device=self.device)
        local, samples = (self.trainer.strategy.reduce(t, reduce_op="sum") for t in (local, samples))
        keep = [i for i, row in enumerate(local.tolist()) if any(row)]
        result = operations_per_sample([names[i] for i in keep], local[keep] if keep else None, int(samples.item()),
                                       *self.energy_pj)
        if result["macs"] is None:
            return
        self.last_operations[prefix] = result
        for key in ("energy_mJ", "sops", "macs"):  # already global: sync_dist only keeps Lightning quiet
            self.log(f"{prefix}/{key}", result[key], sync_dist=True)

    def _global_firing_rates(self, rates: dict[str, float], samples: int) -> dict[str, float]:
        """This process's ``{layer: rate}`` over ``samples`` validation samples -> the rates over every process's
        samples. Each layer's spike count per sample is the same on every process, so weighting a process's rate
        by its samples gives the global spikes / neurons exactly. Every process reduces the same vector (all
        spiking layers in module order, zeros where it saw none), so the collective matches even when one process
        had no batches. One process: the same rates, in module order."""
        names = [name for name, module in self.model.named_modules() if isinstance(module, MultiStepNeuron)]
        local = torch.tensor([[rates[n] * samples, samples] if n in rates else [0.0, 0.0] for n in names],
                             dtype=torch.float64, device=self.device).reshape(-1, 2)
        totals = self.trainer.strategy.reduce(local, reduce_op="sum").tolist()
        return {name: spikes / count for name, (spikes, count) in zip(names, totals) if count > 0}

    def on_test_start(self):
        self.method.prepare_test(self)

    def on_test_epoch_start(self):
        self.method.on_evaluation_start(self)
        self.operations.start()
        self.firing.start()

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, "test", self.test_prefix)

    def on_test_epoch_end(self):
        self._log_operations(self.test_prefix)
        rates = self.firing.stop()  # one process's: the summary falls back on them only without validation
        if rates:
            self.test_firing_rates[self.test_prefix] = rates
            self.log(f"{self.test_prefix}/firing_rate", sum(rates.values()) / len(rates), sync_dist=True)
        for name, value in self.method.test_metrics().items():
            self.log(f"{self.test_prefix}/{name}", value, sync_dist=True)

    # ---- optimisation and checkpoints -----------------------------------------------------------------
    def configure_optimizers(self):
        max_epochs = self.trainer.max_epochs if self.trainer.max_epochs and self.trainer.max_epochs > 0 else 1
        return configure(self, self.optimizer_factory, self.scheduler_factory, max_epochs)

    def on_train_epoch_end(self):
        lr = self.trainer.optimizers[0].param_groups[0]["lr"]
        if math.isfinite(lr):
            self.log("train/lr", lr, sync_dist=True)  # the same on every process; synced to keep Lightning quiet

    def on_load_checkpoint(self, checkpoint):
        upgrade_checkpoint(checkpoint, self.method)


def upgrade_checkpoint(checkpoint: dict, method: Method) -> None:
    """Bring a checkpoint written before methods were modules to the current layout, or refuse it clearly.

    Then, a method's non-tensor state was saved under ``checkpoint["method_state"]`` and its training-only
    extras were wrapped with the SNN (``model.snn.*`` and ``model.extras.*``). Now the SNN is ``model.*``, the
    extras are the method's one child module (``method.branches.*``, ``method.heads.*``, ...) and the state is the
    method's extra state (``method._extra_state``).
    """
    old_state = checkpoint.pop("method_state", None)
    weights = checkpoint.get("state_dict", {})
    if old_state is None and not any(key.startswith("model.snn.") for key in weights):
        return
    children = [name for name, _ in method.named_children()]
    upgraded = {}
    for key, value in weights.items():
        if key.startswith("model.snn."):
            key = "model." + key[len("model.snn."):]
        elif key.startswith("model.extras."):
            if len(children) != 1:
                raise SnnexpError(
                    f"this checkpoint was written by an older snnexp (training-only extras under model.extras.*) "
                    f"and {type(method).__name__} has {len(children)} submodules to map them to; it cannot be "
                    "loaded. Start a new run."
                )
            key = f"method.{children[0]}." + key[len("model.extras."):]
        upgraded[key] = value
    if old_state and type(method).get_extra_state is not nn.Module.get_extra_state:
        upgraded.setdefault("method._extra_state", old_state)
    checkpoint["state_dict"] = upgraded
