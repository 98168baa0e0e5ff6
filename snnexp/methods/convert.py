"""ANN→SNN conversion as a method: train (or load) the ANN, convert it before testing, test the SNN at T.

``method=convert`` trains the model as an ANN with ``activation`` (``clip``: optimal conversion, Deng & Gu,
ICLR 2021; ``qcfs``: Bu et al., ICLR 2022; ``relu``: thresholds from data, SNN Calibration, Li et al., ICML 2021)
in place of every spiking neuron, one step per static input. Before the first test pass it folds BN, takes each
layer's threshold (``threshold``: the trained θ, or ``max`` / ``percentile`` / ``mse`` from ``calib_samples``
training samples), puts an IF neuron there (soft reset, spike amplitude θ, the θ/(2T) ``shift``), applies
``calibration`` (none | light: bias | advanced: bias and potential, plus ``weight_calibration``) and tests at the
run's T; ``eval.timesteps`` tests the same converted weights at other T. ``test/ann_acc`` is the ANN's own
accuracy. ``ann_ckpt`` skips training: the weights of a ``method=ann`` or ``method=convert`` checkpoint of the
same model.
"""

from __future__ import annotations

import copy
import logging

import torch
import torch.nn.functional as F
from torch import nn

from snnexp.errors import IncompatibleError, SnnexpError
from snnexp.models.binary import BinaryWeight
from snnexp.neurons import IF, LIF, PLIF, MultiStepNeuron
from snnexp.training import calibration
from snnexp.training.conversion import (ACTIVATIONS, CONVERTIBLE, IFNeuron, activation_inputs_outputs,
                                        fold_batchnorm, make_activation, threshold_from, unfolded_norms)
from snnexp.training.method import Method
from snnexp.training.surgery import replace_module, replace_neurons

log = logging.getLogger(__name__)

THRESHOLDS = ("trained", "max", "percentile", "mse")
CALIBRATIONS = ("none", "light", "advanced")


class Convert(Method):
    """Train an ANN with a conversion-friendly activation; convert it into an IF-neuron SNN before testing."""

    def __init__(self, activation: str = "clip", levels: int = 8, threshold_init: float | None = None,
                 learn_threshold: bool = True, threshold: str = "trained", percentile: float = 99.99,
                 shift: bool = True, calibration: str = "none", weight_calibration: bool = False,
                 calib_samples: int = 256, calib_iterations: int = 100, calib_lr: float = 1e-4,
                 ann_ckpt: str | None = None, label_smoothing: float = 0.0):
        super().__init__()
        _one_of("activation", activation, ACTIVATIONS)
        _one_of("threshold", threshold, THRESHOLDS)
        _one_of("calibration", calibration, CALIBRATIONS)
        if threshold == "trained" and activation == "relu":
            raise ValueError("method.threshold=trained needs a trained clip or qcfs threshold; with "
                             "method.activation=relu take it from data: method.threshold=max|percentile|mse")
        if calib_samples < 1:
            raise ValueError(f"method.calib_samples must be at least 1, got {calib_samples}")
        self.activation, self.levels, self.threshold_init = activation, int(levels), threshold_init
        self.learn_threshold, self.threshold, self.percentile = learn_threshold, threshold, float(percentile)
        self.shift, self.calibration, self.weight_calibration = shift, calibration, weight_calibration
        self.calib_samples, self.calib_iterations, self.calib_lr = calib_samples, calib_iterations, calib_lr
        self.ann_ckpt, self.label_smoothing = ann_ckpt, label_smoothing
        self.snn_T = 1
        self.ann_acc: float | None = None
        self.converted = False
        self._iterations = calib_iterations

    # ---- the ANN phase --------------------------------------------------------------------------------------
    def timesteps(self, T: int) -> int:
        self.snn_T = int(T)  # the SNN's T after conversion; the ANN trains on one step
        return 1

    def check(self, model: nn.Module, datamodule) -> None:
        reasons = [f"{type(m).__name__}: {m.conversion_blocker}" for m in model.modules()
                   if getattr(m, "conversion_blocker", None)]
        reasons += sorted({f"{type(m).__name__} neurons: their spikes are not binary, no ReLU gives their rate"
                           for m in model.modules() if isinstance(m, MultiStepNeuron)
                           and not isinstance(m, (LIF, IF, PLIF))})
        if any(isinstance(m, BinaryWeight) for m in model.modules()):
            reasons.append("model.binary_weights=true: binarised weights cannot absorb folded BatchNorm")
        unfoldable = unfolded_norms(_folded_copy(model))
        if unfoldable:
            reasons.append(f"normalisation layers that cannot be folded into a conv or linear layer "
                           f"({', '.join(unfoldable[:3])}; conversion needs plain BatchNorm right after one)")
        if getattr(datamodule, "time_steps", None) is not None:
            reasons.append("the data are event sequences; conversion feeds a static image at every step")
        if reasons:
            raise IncompatibleError(f"method={self._name()} cannot convert this model: " + "; ".join(reasons))

    def setup(self, model: nn.Module, datamodule) -> nn.Module:
        replace_neurons(model, lambda: make_activation(self.activation, self.levels, self.threshold_init,
                                                        self.learn_threshold))
        if self.ann_ckpt:
            _load_ann_weights(model, self.ann_ckpt)
        return model

    def trains(self) -> bool:
        return not self.ann_ckpt

    def loss(self, output, target):
        return F.cross_entropy(self.predict(output), target, label_smoothing=self.label_smoothing)

    # ---- conversion, before the first test pass --------------------------------------------------------------
    def prepare_test(self, module) -> None:
        if self.converted:
            return
        with torch.inference_mode(False):  # Lightning tests in inference mode; weight calibration needs autograd
            self._convert(module)

    def _convert(self, module) -> None:
        datamodule = module.trainer.datamodule
        model = module.model.eval()
        fold_batchnorm(model)
        remaining = unfolded_norms(model)
        if remaining:
            raise IncompatibleError(f"method={self._name()}: these normalisation layers cannot be folded into a "
                                    f"conv or linear layer: {', '.join(remaining[:4])}")
        self.ann_acc = _accuracy(model, datamodule.test_dataloader(), module, T=1,
                                 batches=_test_batches(module.trainer))
        smoke_test = bool(module.trainer.fast_dev_run)  # a smoke test calibrates on one batch, one step per layer
        x = _samples(datamodule.train_dataloader(), 1 if smoke_test else self.calib_samples, module.device)
        self._iterations = 1 if smoke_test else self.calib_iterations
        ann = copy.deepcopy(model)
        ann_outputs = activation_inputs_outputs(ann, lambda: ann(module.encode(x, 1)))
        self._put_neurons(model, ann_outputs)
        run = lambda: model(module.encode(x, self.snn_T))  # noqa: E731
        self._calibrate(model, ann_outputs, run)
        module.T = self.snn_T
        self.converted = True
        log.info("converted the ANN (test accuracy %.4f) into an SNN of %d IF neurons at T=%d", self.ann_acc,
                 len(ann_outputs), self.snn_T)

    def _put_neurons(self, model: nn.Module, ann_outputs: dict[str, torch.Tensor]) -> None:
        for name, output in ann_outputs.items():
            activation = model.get_submodule(name)
            theta = float(activation.threshold.detach()) if self.threshold == "trained" else None
            if theta is None or not 0 < theta < float("inf"):  # data thresholds, or a trained one gone non-positive
                theta = threshold_from(output, "max" if self.threshold == "trained" else self.threshold, self.snn_T,
                                       self.percentile, self.shift)
            neuron = IFNeuron(theta, self.shift, channels=output.shape[2] if output.dim() > 2 else None)
            replace_module(model, name, neuron.to(output.device))
        leftover = [n for n, m in model.named_modules() if isinstance(m, CONVERTIBLE)]
        if leftover:
            raise IncompatibleError(f"method={self._name()}: activations never reached by a forward pass cannot be "
                                    f"converted: {', '.join(leftover[:4])}")

    def _calibrate(self, model, ann_outputs, run) -> None:
        if self.calibration == "none":
            return
        order, feeding = calibration.neurons_in_order(model, run)
        calibration.correct(model, order, ann_outputs, run, self.snn_T, bias=True,
                            potential=self.calibration == "advanced")
        if self.weight_calibration:
            calibration.calibrate_weights(model, order, feeding, ann_outputs, run, self._iterations,
                                          self.calib_lr, loss="mse")

    def test_metrics(self) -> dict[str, float]:
        return {} if self.ann_acc is None else {"ann_acc": self.ann_acc}

    def _name(self) -> str:
        return "convert"


def _folded_copy(model: nn.Module) -> nn.Module:
    folded = copy.deepcopy(model)
    fold_batchnorm(folded)
    return folded


def _one_of(key: str, value: str, options) -> None:
    if value not in options:
        raise ValueError(f"method.{key} must be one of {list(options)}, got {value!r}")


def _samples(loader, count: int, device) -> torch.Tensor:
    """The first ``count`` training inputs (static, ``[count, ...]``)."""
    taken, total = [], 0
    for x, _ in loader:
        taken.append(x)
        total += x.shape[0]
        if total >= count:
            break
    return torch.cat(taken)[:count].to(device).clone()  # a normal tensor, even when read in inference mode


def _test_batches(trainer) -> float:
    """How many test batches the trainer tests (``limit_test_batches`` applied), infinity when unknown."""
    counts = getattr(trainer, "num_test_batches", None) or []
    return float(sum(counts)) if counts else float("inf")


@torch.no_grad()
def _accuracy(model: nn.Module, loader, module, T: int, batches: float = float("inf")) -> float:
    """Top-1 accuracy of ``model`` over the first ``batches`` batches of ``loader``, inputs encoded into T steps."""
    correct = total = 0
    for i, (x, y) in enumerate(loader):
        if i >= batches:
            break
        x, y = x.to(module.device), y.to(module.device)
        scores = module.method.predict(model(module.encode(x, T)))
        correct += (scores.argmax(-1) == y).sum().item()
        total += y.shape[0]
    return correct / max(total, 1)


def _load_ann_weights(model: nn.Module, path: str) -> None:
    """The ``model.*`` weights of a Lightning checkpoint into ``model``; activation thresholds a ReLU checkpoint
    lacks keep their initial values."""
    from snnexp.checkpoints import load_checkpoint

    checkpoint = load_checkpoint(path, "method.ann_ckpt", "pass the checkpoint of an ANN run of the same model "
                                 "(method=ann or method=convert)")
    weights = {k[len("model."):]: v for k, v in checkpoint.get("state_dict", {}).items() if k.startswith("model.")}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    missing = [k for k in missing if not k.endswith("threshold")]
    if missing or unexpected:
        raise SnnexpError(f"method.ann_ckpt={path} does not fit this model: missing {missing[:3]}, unexpected "
                          f"{unexpected[:3]} (train the ANN with the same model and options)")
