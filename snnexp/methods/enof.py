"""EnOF: Training Accurate Spiking Neural Networks via Enhancing the Output Feature Representation
(Guo, Peng, Liu, Chen, Zhang, Tong, Jie, Ma; NeurIPS 2024).

The trained ANN's classifier W_a (frozen) scores both the SNN's and the ANN's pre-classifier feature of the
same input (F_s: time mean of the SNN's ``features`` tap; F_a: the ANN teacher's), p(z) = softmax(z / tau):

    L_AF = tau^2 * KL( p(W_a F_a) || p(W_a F_s) )
    L    = CE(f, y) + beta * L_AF                         f = the SNN's time-mean logits

and the last spiking neuron before the classifier becomes a ReLU (RepAct), so the output feature is real-valued.
Our choices where the paper leaves one open (no code read): tau = 1 and beta = 1 by default, Hinton's tau^2
scaling; gradients reach F_s through the frozen W_a. The replaced neuron is located generically as the LAST
spiking neuron executed in a forward pass (hooks on every MultiStepNeuron during one probe forward): the one
producing ``features`` in ResNet-19 (its fc-neuron head), the last block's output neuron in ResNet-18/20/34,
conv8's neuron in VGGSNN, conv2's in convnet.
"""

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from snnexp.errors import IncompatibleError
from snnexp.training.surgery import last_neuron, replace_module
from snnexp.training.taps import probe_taps
from snnexp.training.method import Method, accuracy
from snnexp.training.teacher import load_teacher


def af_loss(student_features, teacher_features, classifier, tau: float) -> torch.Tensor:
    """L_AF = tau^2 KL(p(W_a F_a) || p(W_a F_s)), batch mean; ``classifier`` maps ``[B, F] -> [B, C]``."""
    z_s = classifier(student_features)
    with torch.no_grad():
        z_a = classifier(teacher_features)
    return tau ** 2 * F.kl_div(F.log_softmax(z_s / tau, -1), F.softmax(z_a / tau, -1), reduction="batchmean")


class EnOF(Method):
    """L_AF through the ANN's classifier plus CE, with the last spiking neuron replaced by ReLU."""

    def __init__(self, teacher_ckpt: Optional[str] = None, teacher_model: Optional[str] = None, beta: float = 1.0,
                 tau: float = 1.0, relu_last: bool = True):
        super().__init__()
        if beta < 0 or tau <= 0:
            raise ValueError(f"method.beta must be non-negative and method.tau positive; got {beta}, {tau}")
        self.teacher_ckpt = teacher_ckpt
        self.teacher_model = teacher_model
        self.beta = beta
        self.tau = tau
        self.relu_last = relu_last
        self._teacher = None
        self.replaced_neuron = None

    def check(self, model, datamodule):
        shapes = probe_taps(model, datamodule)
        if "features" not in shapes or not isinstance(getattr(model, "classifier", None), nn.Module):
            raise IncompatibleError(
                f"method=enof needs the pre-classifier feature (tap 'features') and a `classifier` layer, but model "
                f"{type(model).__name__} exposes taps {list(shapes)}; use a model with both (e.g. resnet19, vggsnn)"
            )

    def setup(self, model, datamodule):
        self._teacher = load_teacher(self.teacher_ckpt, model, datamodule, self.teacher_model, "enof")
        if "features" not in probe_taps(self._teacher.net, datamodule) or not hasattr(self._teacher.net, "classifier"):
            raise IncompatibleError(f"method.teacher_model={self.teacher_model} has no 'features' tap or classifier")
        if self.relu_last:
            self.replaced_neuron = last_neuron(model, datamodule)
            if self.replaced_neuron is not None:
                replace_module(model, self.replaced_neuron, nn.ReLU())
        return model

    def training_step(self, module, batch):
        x, y = batch
        output = module(x)
        f = self.predict(output)
        teacher = self._teacher(module.encode(x, T=1))
        f_s, f_a = output.taps["features"].mean(0), teacher.taps["features"].mean(0)
        if f_s.shape != f_a.shape:
            raise IncompatibleError(f"method=enof: the SNN's features {tuple(f_s.shape[1:])} and the teacher's "
                                    f"{tuple(f_a.shape[1:])} differ; L_AF needs the same feature size")
        classifier = self._teacher.net.classifier

        def head(v):
            return classifier(v.unsqueeze(0)).squeeze(0)  # the classifier runs per step on [T, B, F]

        l_af = af_loss(f_s, f_a, head, self.tau)
        loss = F.cross_entropy(f, y) + self.beta * l_af
        return loss, {"acc": accuracy(f, y), "loss_af": l_af.detach()}

    def loss(self, output, target):
        return F.cross_entropy(self.predict(output), target)
