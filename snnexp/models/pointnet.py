"""Spiking PointNet (Ren et al., "Spiking PointNet: Spiking Neural Networks for Point Clouds", NeurIPS 2023;
DayongRen/Spiking-PointNet), the PointNet classifier of Qi et al. (CVPR 2017) with every ReLU a spiking neuron.

Layer by layer, as the official ``pointnet_cls.get_model`` / ``pointnet_utils`` build it (all convs are 1x1
``Conv1d`` with bias, each followed by ``BatchNorm1d``; ``N`` points):

    input T-Net  (3x3)    conv C->64->128->1024 (BN, neuron each), max over N, fc 1024->512->256 (BN, neuron
                          each), fc 256->9, + identity                      (C = 3, or 6 with normals)
    x[:3] <- A_in^T-transformed xyz (normals, if any, pass through)
    conv C->64, BN, neuron
    feature T-Net (64x64) same as the input T-Net on 64 channels, fc 256->64*64, + identity
    x <- A_feat-transformed 64-d point features                            (tap "point_features")
    conv 64->128, BN, neuron; conv 128->1024, BN (no neuron), max over N    (tap "global_features")
    fc 1024->512, BN, neuron; fc 512->256, dropout 0.4, BN, neuron          (tap "features")
    fc 256->k                                                               (logits [T, B, k])

Time-major throughout: the model takes ``[T, B, C, N]`` (the points repeated T times, e.g. by
``snnexp.models.encoders.DirectEncoder``; the official setting trains at T = 1), and the official prediction is
the mean over T (as snnexp's methods do). BatchNorm pools over time, batch and points,
like the official ``SpikeBatchNorm``. ``ModelOutput.aux["feature_transform"]`` is the 64x64 matrix A averaged
over T, ``[B, 64, 64]`` (the official loss regularises the time-mean), for the loss term
``0.001 * mean_b ||A A^T - I||_F`` (:func:`feature_transform_regularizer`).

``norm="tdbn"`` builds every BatchNorm1d as tdBN (``snnexp.models.norm``; PointNet has no residual sums). With
binary weights the layers that read the points (the input T-Net's first conv and conv1) and the classifier keep
real weights.

Membrane-potential perturbation (MPR): each neuron starts every forward from ``V[-1] = V_rest + u0``,
``u0 ~ U(0, 0.5)`` drawn afresh per element and per call, in training and in evaluation alike (the official
``LIFAct`` does so whenever it spikes). snnexp neurons are stateless and their fused ``forward`` starts from
rest, so :class:`PerturbedNeuron` unrolls the neuron's own explicit-state API, ``step(x_t, v)``, from the
perturbed initial potential. This is exact for every ``MultiStepNeuron`` (LIF, IF, PLIF, ...): adding ``u0``
to the first input instead would be right only for IF, since LIF scales the input by ``1/tau`` when
``decay_input=True`` and leaks ``V[-1]`` otherwise. The price is plain autograd instead of the fused kernel.
"""

from collections import OrderedDict
from typing import Callable

import torch
from torch import nn

from snnexp.models.binary import WeightsFn, real_weights, weights_for
from snnexp.models.layers import SeqToBatch, SpikingModel
from snnexp.models.norm import NormLayer, batch_norm, make_norm_layer
from snnexp.models.output import ModelOutput
from snnexp.models.registry import ModelConfigError, register_model

MPR_HIGH = 0.5  # u0 ~ U(0, MPR_HIGH): the official range (its firing threshold is also 0.5)


class PerturbedNeuron(nn.Module):
    """``neuron`` started from a random membrane potential: ``V[-1] = V_rest + U(0, high)`` at every call,
    then ``(S[t], V[t]) = neuron.step(X[t], V[t-1])`` for t = 0..T-1 (the neuron's own charge/fire/reset).
    If a method later swaps the wrapped neuron for an activation (``method=ann``), the activation runs as is."""

    def __init__(self, neuron: nn.Module, high: float = MPR_HIGH):
        super().__init__()
        if not (callable(getattr(neuron, "step", None)) and callable(getattr(neuron, "initial_state", None))):
            raise ModelConfigError(
                f"model.membrane_perturbation=true needs a neuron with the explicit-state API step(x_t, v) and "
                f"initial_state(x_t) (snnexp.neurons.MultiStepNeuron); {type(neuron).__name__} has none. "
                f"Set model.membrane_perturbation=false or pick another neuron."
            )
        self.neuron = neuron
        self.high = float(high)

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        if not hasattr(self.neuron, "step"):  # swapped for an activation (method=ann): no membrane to perturb
            return self.neuron(x_seq)
        x_seq = getattr(self.neuron, "_check_input", lambda x: x)(x_seq)
        v = self.neuron.initial_state(x_seq[0]) + torch.rand_like(x_seq[0]) * self.high
        spikes = []
        for x_t in x_seq:
            s, v = self.neuron.step(x_t, v)
            spikes.append(s)
        return torch.stack(spikes)

    def extra_repr(self) -> str:
        return f"u0 ~ U(0, {self.high})"


def conv_bn1d(in_channels: int, out_channels: int, *, norm_layer: NormLayer = batch_norm,
              weights: WeightsFn = real_weights) -> SeqToBatch:
    """Pointwise ``Conv1d(kernel 1, bias)`` (built through ``weights``) + a 1-d ``norm_layer`` on
    ``[T, B, C, N]``."""
    conv = weights(nn.Conv1d(in_channels, out_channels, 1))
    return SeqToBatch(nn.Sequential(OrderedDict(conv=conv, bn=norm_layer(out_channels, dims=1))))


def fc_bn(in_features: int, out_features: int, dropout: float = 0.0, *, norm_layer: NormLayer = batch_norm,
          weights: WeightsFn = real_weights) -> SeqToBatch:
    """``Linear`` (built through ``weights``) [+ ``Dropout``] + a 1-d ``norm_layer`` on ``[T, B, F]`` (the
    official order: fc, dropout, BN)."""
    layers = OrderedDict(fc=weights(nn.Linear(in_features, out_features)))
    if dropout > 0:
        layers["dropout"] = nn.Dropout(dropout)
    layers["bn"] = norm_layer(out_features, dims=1)
    return SeqToBatch(nn.Sequential(layers))


def max_over_points(x: torch.Tensor) -> torch.Tensor:
    """``[T, B, C, N] -> [T, B, C]``: PointNet's symmetric function.

    ``torch.max(x, dim).values`` as the official model takes it: the backward sends the whole gradient to one
    point per channel. ``amax`` would split it evenly among tied maxima, and inside the T-Nets and before the
    feature max the inputs are binary spikes, where ties are the rule: the parameter gradients would differ from
    the official model's completely although the forward pass is the same."""
    return x.max(dim=-1).values


def apply_transform(x: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Per-point ``p @ A``: ``x [T, B, k, N]``, ``A [T, B, k, k]`` -> ``(x^T A)^T [T, B, k, N]``."""
    return torch.matmul(x.transpose(-1, -2), matrix).transpose(-1, -2)


class TransformNet(nn.Module):
    """PointNet's T-Net predicting a ``k x k`` matrix (official ``STN3d`` for k=3, ``STNkd`` for k=64):
    conv in->64->128->1024 (BN, neuron), max over points, fc 1024->512->256 (BN, neuron), fc 256->k*k,
    plus the identity. ``[T, B, C, N] -> [T, B, k, k]``.

    Every Conv/Linear is built through ``weights``, except the first conv when ``reads_input`` (the input
    T-Net's, which reads the points, keeps real weights)."""

    def __init__(self, in_channels: int, k: int, neuron: Callable[[], nn.Module], norm_layer: NormLayer = batch_norm,
                 weights: WeightsFn = real_weights, reads_input: bool = False):
        super().__init__()
        self.k = k
        first = real_weights if reads_input else weights
        self.convs = nn.Sequential(conv_bn1d(in_channels, 64, norm_layer=norm_layer, weights=first), neuron(),
                                   conv_bn1d(64, 128, norm_layer=norm_layer, weights=weights), neuron(),
                                   conv_bn1d(128, 1024, norm_layer=norm_layer, weights=weights), neuron())
        self.fcs = nn.Sequential(fc_bn(1024, 512, norm_layer=norm_layer, weights=weights), neuron(),
                                 fc_bn(512, 256, norm_layer=norm_layer, weights=weights), neuron())
        self.out = SeqToBatch(weights(nn.Linear(256, k * k)))
        self.register_buffer("identity", torch.eye(k), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fcs(max_over_points(self.convs(x)))
        return self.out(x).unflatten(-1, (self.k, self.k)) + self.identity


class SpikingPointNet(SpikingModel):
    """PointNet classifier with spiking neurons (see the module docstring for the layer list and taps).

    ``norm_layer`` builds every BN; ``hidden_weights`` builds every Conv/Linear but the input T-Net's first conv,
    conv1 and the classifier, which keep real weights.
    """

    def __init__(self, *, neuron, input_shape, num_classes, use_normals=False, feature_transform=True,
                 membrane_perturbation=False, dropout=0.4, norm_layer: NormLayer = batch_norm,
                 hidden_weights: WeightsFn = real_weights):
        super().__init__(input_shape, num_classes)
        if len(self.input_shape) != 2:
            raise ModelConfigError(
                f"PointNet needs point clouds of shape (channels, points); the data gives "
                f"input_shape={self.input_shape} (use data=modelnet40 or data=modelnet10)."
            )
        channels = 6 if use_normals else 3
        if self.input_shape[0] != channels:
            raise ModelConfigError(
                f"PointNet with model.use_normals={bool(use_normals)} expects {channels} input channels, but the "
                f"data gives {self.input_shape[0]}: set model.use_normals and data.use_normals alike."
            )
        self.use_normals = bool(use_normals)
        self.membrane_perturbation = bool(membrane_perturbation)

        def make_neuron() -> nn.Module:
            n = neuron()
            return PerturbedNeuron(n) if membrane_perturbation else n

        hidden = dict(norm_layer=norm_layer, weights=hidden_weights)
        self.input_transform = TransformNet(channels, 3, make_neuron, **hidden, reads_input=True)
        self.conv1 = nn.Sequential(conv_bn1d(channels, 64, norm_layer=norm_layer), make_neuron())
        self.feature_transform = TransformNet(64, 64, make_neuron, **hidden) if feature_transform else None
        self.conv2 = nn.Sequential(conv_bn1d(64, 128, **hidden), make_neuron())
        self.conv3 = conv_bn1d(128, 1024, **hidden)  # no neuron before the max-pool, as the official encoder
        self.head = nn.Sequential(fc_bn(1024, 512, **hidden), make_neuron(), fc_bn(512, 256, dropout, **hidden),
                                  make_neuron())
        self.num_features = 256
        self.classifier = SeqToBatch(nn.Linear(256, num_classes))

    def forward(self, x: torch.Tensor) -> ModelOutput:
        x = self.check_sequence(x)  # [T, B, C, N]
        a_in = self.input_transform(x)
        xyz = apply_transform(x[:, :, :3], a_in)
        x = torch.cat([xyz, x[:, :, 3:]], dim=2) if self.use_normals else xyz
        x = self.conv1(x)
        aux = {}
        if self.feature_transform is not None:
            a_feat = self.feature_transform(x)
            x = apply_transform(x, a_feat)
            aux["feature_transform"] = a_feat.mean(0)  # [B, 64, 64], the time-mean the official loss uses
        taps = self.new_taps()
        taps["point_features"] = x
        x = max_over_points(self.conv3(self.conv2(x)))
        taps["global_features"] = x
        features = self.head(x)
        taps["features"] = features
        return ModelOutput(logits=self.classifier(features), taps=taps, aux=aux)


def feature_transform_regularizer(matrix: torch.Tensor) -> torch.Tensor:
    """PointNet's orthogonality loss ``mean ||A A^T - I||_F`` over every leading dimension of ``A [..., k, k]``
    (the official ``feature_transform_reguliarzer``; Spiking PointNet weights it by 0.001)."""
    eye = torch.eye(matrix.shape[-1], dtype=matrix.dtype, device=matrix.device)
    return torch.linalg.matrix_norm(matrix @ matrix.transpose(-1, -2) - eye).mean()


# The factory spells out its keyword arguments: snnexp.config derives the model config schema from them.

@register_model("pointnet")
def pointnet(*, neuron: Callable[..., nn.Module], input_shape: tuple[int, ...], num_classes: int,
             use_normals: bool = False, feature_transform: bool = True, membrane_perturbation: bool = False,
             dropout: float = 0.4, norm: str = "bn", binary_weights: bool = False) -> SpikingPointNet:
    """Spiking PointNet classifier (Ren et al., NeurIPS 2023): input and feature T-Nets, conv 64->128->1024,
    max over points, fc 512->256 (dropout 0.4) -> classes. ``input_shape`` is ``(3 or 6, num_points)``;
    ``membrane_perturbation`` starts every neuron from ``U(0, 0.5)`` at each forward."""
    return SpikingPointNet(neuron=neuron, input_shape=input_shape, num_classes=num_classes, use_normals=use_normals,
                           feature_transform=feature_transform, membrane_perturbation=membrane_perturbation,
                           dropout=dropout, norm_layer=make_norm_layer(norm, neuron),
                           hidden_weights=weights_for(binary_weights))
