"""Pictures of the spiking activity during training: ``callbacks=spike_plots`` (off by default).

Every ``every_n_epochs`` epochs, on the first validation batch, the callback records the output ``[T, B, ...]`` of
every spiking layer (each ``MultiStepNeuron`` of the model; forward hooks attached for that batch only) and logs

- ``spikes/<layer>``: a raster of ``neurons_per_layer`` neurons of the batch's first sample (time step x neuron,
  evenly spaced over the layer's neurons; graded outputs such as ternary or multi-level spikes show their value);
- ``firing_rates``: a bar chart of each layer's mean firing rate over the validation set
  (``SNNModule.last_firing_rates``; the recorded batch's rates where the module has none),

as images to every TensorBoard (``add_image``) and wandb (``log_image``) logger of the run, at the global step.
"""

from __future__ import annotations

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from snnexp.neurons import MultiStepNeuron


class SpikePlots(Callback):
    """Spike rasters per spiking layer and a per-layer firing-rate bar chart, logged as images."""

    def __init__(self, every_n_epochs: int = 1, neurons_per_layer: int = 32):
        if every_n_epochs < 1 or neurons_per_layer < 1:
            raise ValueError(f"spike_plots needs every_n_epochs >= 1 and neurons_per_layer >= 1, got "
                             f"{every_n_epochs} and {neurons_per_layer}; set callbacks.spike_plots.every_n_epochs="
                             "and callbacks.spike_plots.neurons_per_layer= to positive integers")
        self.every_n_epochs = every_n_epochs
        self.neurons_per_layer = neurons_per_layer
        self._handles: list = []
        self._spikes: dict[str, torch.Tensor] = {}  # layer -> [T, neurons_per_layer] of the first sample
        self._sizes: dict[str, int] = {}  # layer -> its neurons per sample

    def _due(self, trainer) -> bool:
        return not trainer.sanity_checking and trainer.current_epoch % self.every_n_epochs == 0

    # ---- recording: the first validation batch only ---------------------------------------------------
    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if batch_idx == 0 and dataloader_idx == 0 and self._due(trainer):
            self._spikes, self._sizes = {}, {}
            for name, module in pl_module.model.named_modules():
                if isinstance(module, MultiStepNeuron):
                    self._handles.append(module.register_forward_hook(self._record(name)))

    def _record(self, name: str):
        def record(module, inputs, output):
            if name in self._spikes or not isinstance(output, torch.Tensor) or output.ndim < 2:
                return  # a layer called again in the same forward: its first call is the picture
            first = output.detach()[:, 0].reshape(output.shape[0], -1).float()  # [T, neurons]
            count = min(self.neurons_per_layer, first.shape[1])
            picked = torch.linspace(0, first.shape[1] - 1, count, device=first.device).round().long()
            self._spikes[name] = first[:, picked].cpu()
            self._sizes[name] = first.shape[1]

        return record

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self._detach()

    def on_exception(self, trainer, pl_module, exception):
        self._detach()

    def _detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    # ---- logging: after the module has its firing rates of the whole validation set ------------------
    def on_validation_end(self, trainer, pl_module):
        self._detach()
        if not self._due(trainer) or not trainer.is_global_zero:
            self._spikes = {}
            return
        images = {f"spikes/{name}": raster(name, spikes, self._sizes[name]) for name, spikes in self._spikes.items()}
        rates = dict(getattr(pl_module, "last_firing_rates", None) or {})
        if not rates:
            rates = {name: float(spikes.abs().mean()) for name, spikes in self._spikes.items()}
        if rates:
            images["firing_rates"] = firing_rate_bars(rates, trainer.current_epoch)
        self._spikes = {}
        if images:
            log_images(trainer.loggers, images, trainer.global_step)


def raster(layer: str, spikes: torch.Tensor, size: int) -> np.ndarray:
    """``spikes`` ``[T, neurons]`` of one layer (of ``size`` neurons) as an RGB image (``[H, W, 3]``, uint8):
    neurons down, time steps across."""
    values = spikes.t().numpy()
    fig, ax = _figure(width=max(3.0, 1.5 + 0.35 * values.shape[1]), height=max(2.5, 0.6 + 0.09 * values.shape[0]))
    vmax = max(float(np.abs(values).max()), 1.0)
    image = ax.imshow(values, aspect="auto", interpolation="nearest", cmap="gray_r",
                      vmin=min(0.0, float(values.min())), vmax=vmax)
    if values.min() < 0 or vmax > 1:  # ternary or multi-level outputs: say what the shades mean
        fig.colorbar(image, ax=ax)
    ax.set_xlabel("time step")
    ax.set_ylabel("neuron")
    ax.set_xticks(range(values.shape[1]))
    ax.set_title(f"{layer}: {values.shape[0]} of {size} neurons, first sample", fontsize=9)
    return _pixels(fig)


def firing_rate_bars(rates: dict[str, float], epoch: int) -> np.ndarray:
    """``{layer: mean firing rate}`` as a bar chart (RGB ``[H, W, 3]``, uint8), layers in model order."""
    fig, ax = _figure(width=max(4.0, 1.0 + 0.45 * len(rates)), height=3.5)
    ax.bar(range(len(rates)), list(rates.values()), color="tab:blue")
    ax.set_xticks(range(len(rates)), list(rates), rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("spikes per neuron per step")
    ax.set_title(f"firing rate per layer (validation, epoch {epoch})", fontsize=9)
    return _pixels(fig)


def _figure(width: float, height: float):
    """A matplotlib figure on the Agg canvas (no pyplot, no display, no global state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=80, layout="tight")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _pixels(fig) -> np.ndarray:
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def log_images(loggers, images: dict[str, np.ndarray], step: int) -> None:
    """``{tag: RGB [H, W, 3] uint8}`` to every TensorBoard and wandb logger in ``loggers``."""
    from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

    for lg in loggers:
        if isinstance(lg, TensorBoardLogger):
            for tag, image in images.items():
                lg.experiment.add_image(tag, image, global_step=step, dataformats="HWC")
        elif isinstance(lg, WandbLogger):
            for tag, image in images.items():
                lg.log_image(key=tag, images=[image], step=step)
