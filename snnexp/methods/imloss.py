"""IM-Loss: Information Maximization Loss for Spiking Neural Networks, with the Evolutionary Surrogate Gradient
(Guo, Chen, Zhang, Peng, Liu, Huang, Ma; NeurIPS 2022).

    L = CE( (1/T) sum_t O_t , y )  +  weight * IM,     IM = mean_{l in hidden layers} ( mean(S_l) - 0.5 / T )^2

S_l are the spikes of spiking layer l; the mean runs over every layer except the first and the last (the
simplified official release, yfguo91). ESG (not released; the paper's description): the sharpness
k of the surrogate grows over the epochs on an exponential schedule from a smooth to a sharp shape,

    k(e) = k_min * (k_max / k_min) ** (e / (E - 1)),   e = 0 .. E - 1,

applied as the ``alpha`` of every neuron's surrogate (its sharpness in SpikingJelly's parameterisation).
``esg=false`` keeps the configured surrogate fixed; ``weight=0`` leaves ESG alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from snnexp.errors import IncompatibleError
from snnexp.training.method import Method, accuracy
from snnexp.neurons import MultiStepNeuron


def esg_sharpness(epoch: int, max_epochs: int, k_min: float, k_max: float) -> float:
    """The ESG schedule: exponential growth from ``k_min`` (first epoch) to ``k_max`` (last epoch)."""
    progress = epoch / max(1, max_epochs - 1)
    return k_min * (k_max / k_min) ** min(1.0, progress)


class IMLoss(Method):
    """Cross-entropy plus the information-maximisation term on the hidden layers' firing, optionally with ESG."""

    def __init__(self, weight: float = 0.005, esg: bool = True, k_min: float = 1.0, k_max: float = 10.0,
                 label_smoothing: float = 0.0):
        super().__init__()
        if esg and not 0 < k_min <= k_max:
            raise ValueError(f"method.k_min and k_max must satisfy 0 < k_min <= k_max, got {k_min}, {k_max}")
        self.weight, self.esg, self.k_min, self.k_max = weight, esg, k_min, k_max
        self.label_smoothing = label_smoothing
        self.sharpness: float | None = None
        self._neurons: list[MultiStepNeuron] = []
        self._spikes: list[torch.Tensor] | None = None

    def check(self, model, datamodule) -> None:
        count = sum(isinstance(m, MultiStepNeuron) for m in model.modules())
        if count < 3:
            raise IncompatibleError(
                f"method=imloss averages the IM term over the spiking layers except the first and the last; "
                f"the model has {count}"
            )

    def setup(self, model, datamodule):
        self._neurons = [m for m in model.modules() if isinstance(m, MultiStepNeuron)]
        for neuron in self._neurons:
            neuron.register_forward_hook(self._record)
        return model

    def _record(self, module, inputs, output):
        if self._spikes is not None:
            self._spikes.append(output)

    def information_term(self, spikes: list[torch.Tensor]) -> torch.Tensor:
        """mean over hidden layers of (mean firing - 0.5 / T)^2, T = the spikes' first dimension."""
        hidden = spikes[1:-1]
        return torch.stack([(s.mean() - 0.5 / s.shape[0]) ** 2 for s in hidden]).mean()

    def training_step(self, module, batch):
        x, y = batch
        self._spikes = []
        try:
            output = module(x)
            spikes = self._spikes
        finally:
            self._spikes = None
        ce = self.loss(output, y)
        im = self.information_term(spikes)
        logs = {"acc": accuracy(self.predict(output), y), "ce": ce.detach(), "im": im.detach()}
        if self.sharpness is not None:
            logs["esg_k"] = torch.tensor(self.sharpness)
        return ce + self.weight * im, logs

    def loss(self, output, target):
        return F.cross_entropy(self.predict(output), target, label_smoothing=self.label_smoothing)

    def on_train_epoch_start(self, epoch: int, max_epochs: int) -> None:
        if not self.esg:
            return
        self.sharpness = esg_sharpness(epoch, max_epochs, self.k_min, self.k_max)
        for surrogate in {id(n.surrogate): n.surrogate for n in self._neurons}.values():
            surrogate.alpha = self.sharpness
