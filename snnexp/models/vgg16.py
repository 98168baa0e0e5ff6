"""VGG-16 of the ANN-to-SNN conversion papers, CIFAR layouts: the ANN is trained with ``neuron`` slots as its
ReLUs (``method=convert`` puts the ANN activation there), then the same weights run as an SNN.

``vgg16``: SNN Calibration (Li, Deng, Dong, Gong, Gu; ICML 2021; yhhhli/SNN_Calibration,
models/CIFAR/models/vgg.py with ``use_bn``): 13 Conv3x3(bias)-BN-neuron layers in five groups,
64 64 | 128 128 | 256 256 256 | 512 512 512 | 512 512 512, AvgPool2d(2) after every group (the official layer
list writes "M", and builds an average pool for it, as conversion needs), then one Linear(512*h*w -> classes).
At 32 px the last group ends at 1x1. No dropout: the official model uses Dropout(0.25) only in place of BN,
when trained without BN.

``vgg16_optimal``: Deng & Gu's VGG-16 (Optimal Conversion, ICLR 2021; Jackn0/snn_optimal_conversion_pipeline,
models/VGG16.py): no BN; the third conv of groups 3-5 is 1x1; AvgPool2d(2) after groups 1-4 only; then
Linear(512*h*w -> 4096)-neuron, Linear(4096 -> 4096)-neuron, Linear(4096 -> classes). At 32 px: 512*2*2 features.

Every conv (and its BN) is ``SeqToBatch(Sequential(conv=..., bn=...))`` followed by its neuron, so a conversion
can fold each BN into the conv before it. Variants are rows of ``VARIANTS``; the class is shared.
"""

from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from snnexp.models.layers import SeqToBatch, SpikingModel, image_shape
from snnexp.models.norm import NormLayer, batch_norm, make_norm_layer
from snnexp.models.output import ModelOutput
from snnexp.models.registry import ModelConfigError, register_model


@dataclass(frozen=True)
class VGGSpec:
    groups: tuple[tuple[tuple[int, int], ...], ...]  # per group, (out_channels, kernel_size) of each conv
    pooled_groups: int  # the first this-many groups end with AvgPool2d(2)
    hidden: tuple[int, ...] = ()  # widths of the Linear-neuron layers before the classifier
    batch_norm: bool = True
    calibration_init: bool = False  # SNN Calibration's initialisation (see SpikingVGG16)


def _group(channels: int, *kernels: int) -> tuple[tuple[int, int], ...]:
    return tuple((channels, k) for k in kernels)


VARIANTS = {
    "vgg16": VGGSpec(
        groups=(_group(64, 3, 3), _group(128, 3, 3), _group(256, 3, 3, 3), _group(512, 3, 3, 3),
                _group(512, 3, 3, 3)),
        pooled_groups=5, batch_norm=True, calibration_init=True),
    "vgg16_optimal": VGGSpec(
        groups=(_group(64, 3, 3), _group(128, 3, 3), _group(256, 3, 3, 1), _group(512, 3, 3, 1),
                _group(512, 3, 3, 1)),
        pooled_groups=4, hidden=(4096, 4096), batch_norm=False),
}


def conv_layer(in_channels: int, out_channels: int, kernel_size: int, norm_layer: NormLayer | None) -> SeqToBatch:
    """Conv2d (bias, stride 1, padding ``kernel_size // 2``), then BN when ``norm_layer`` is given, per time step."""
    layers = OrderedDict(conv=nn.Conv2d(in_channels, out_channels, kernel_size, 1, kernel_size // 2, bias=True))
    if norm_layer is not None:
        layers["bn"] = norm_layer(out_channels)
    return SeqToBatch(nn.Sequential(layers))


class SpikingVGG16(SpikingModel):
    """Groups of conv[-BN]-neuron layers with average pooling between them, [Linear-neuron layers,] a Linear
    classifier, all per step. Taps: "block1".."block5" (each group's last spikes, before its pool) and
    "features" (the classifier's input), so ``logits == model.classifier(taps["features"])``.

    ``calibration_init``: SNN Calibration's initialisation: conv weights N(0, 2 / (k*k*out_channels)) (Kaiming,
    fan-out), BN weight 1 and bias 0, Linear weights N(0, (1 / in_features)^2) and bias 0 (the official code
    draws the Linear weights with standard deviation 1/n, not 1/sqrt(n)). Otherwise PyTorch's defaults, as
    Deng & Gu's VGG-16.
    """

    def __init__(self, spec: VGGSpec, *, neuron, input_shape, num_classes, norm_layer: NormLayer = batch_norm):
        super().__init__(input_shape, num_classes)
        C, H, W = image_shape(input_shape, "VGG-16")
        h, w = H >> spec.pooled_groups, W >> spec.pooled_groups
        if h < 1 or w < 1:
            raise ModelConfigError(
                f"this VGG-16 halves the resolution {spec.pooled_groups} times and needs inputs of at least "
                f"{2 ** spec.pooled_groups}x{2 ** spec.pooled_groups}; got {H}x{W}."
            )
        self.pooled_groups = spec.pooled_groups
        self.blocks = nn.ModuleDict()
        for i, group in enumerate(spec.groups, start=1):
            layers = []
            for out_channels, kernel_size in group:
                layers += [conv_layer(C, out_channels, kernel_size, norm_layer if spec.batch_norm else None),
                           neuron()]
                C = out_channels
            self.blocks[f"block{i}"] = nn.Sequential(*layers)
        self.pool = SeqToBatch(nn.AvgPool2d(2))
        features = C * h * w
        head = []
        for width in spec.hidden:
            head += [SeqToBatch(nn.Linear(features, width)), neuron()]
            features = width
        self.head = nn.Sequential(*head)
        self.num_features = features
        self.classifier = SeqToBatch(nn.Linear(features, num_classes))

        if spec.calibration_init:
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                elif isinstance(m, nn.BatchNorm2d):
                    nn.init.ones_(m.weight)
                    nn.init.zeros_(m.bias)
                elif isinstance(m, nn.Linear):
                    nn.init.normal_(m.weight, 0.0, 1.0 / m.in_features)
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        x = self.check_sequence(x)
        taps = self.new_taps()
        for i, (name, block) in enumerate(self.blocks.items(), start=1):
            x = block(x)
            taps[name] = x
            if i <= self.pooled_groups:
                x = self.pool(x)
        features = self.head(x.flatten(2))
        taps["features"] = features
        return ModelOutput(logits=self.classifier(features), taps=taps)


# Factories spell out their keyword arguments: snnexp.config derives the model config schema from them.

@register_model("vgg16")
def vgg16(*, neuron: Callable[..., nn.Module], input_shape: tuple[int, ...], num_classes: int,
          norm: str = "bn") -> SpikingVGG16:
    """SNN Calibration's CIFAR VGG-16 (Li et al., ICML 2021): 13 Conv3x3(bias)-BN-neuron layers, AvgPool2d(2)
    after each of the 5 groups, Linear(512*h*w -> classes); inputs of at least 32x32."""
    return SpikingVGG16(VARIANTS["vgg16"], neuron=neuron, input_shape=input_shape, num_classes=num_classes,
                        norm_layer=make_norm_layer(norm, neuron))


@register_model("vgg16_optimal")
def vgg16_optimal(*, neuron: Callable[..., nn.Module], input_shape: tuple[int, ...],
                  num_classes: int) -> SpikingVGG16:
    """Deng & Gu's CIFAR VGG-16 (Optimal Conversion, ICLR 2021): 13 Conv(bias)-neuron layers without BN (1x1
    convs last in groups 3-5), AvgPool2d(2) after groups 1-4, fc 4096-4096 with neurons, Linear -> classes;
    inputs of at least 16x16."""
    return SpikingVGG16(VARIANTS["vgg16_optimal"], neuron=neuron, input_shape=input_shape, num_classes=num_classes)
