"""Spiking ResNets with BasicBlocks: ResNet-18/34 (He et al., CVPR 2016), TET's ResNet-19 (Deng et al.,
ICLR 2022; first in Zheng et al., AAAI 2021), He et al.'s CIFAR ResNet-20 and SNN Calibration's wider ResNet-20
(Li et al., ICML 2021).

A block is conv-BN-neuron-conv-BN, plus the shortcut (identity, or 1x1 conv + BN where the shape changes),
then a neuron: the residual joins before the neuron, so every block emits spikes (TET's code). The block's
second BN and the shortcut BN feed that sum: they are built with ``norm_layer(..., residual=True)``. Variants
are rows of ``VARIANTS``; the class is shared.
"""

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from snnexp.models.binary import WeightsFn, init_weight_, real_weights, weights_for
from snnexp.models.layers import SeqToBatch, SpikingModel, conv_bn, image_shape
from snnexp.models.norm import NormLayer, batch_norm, make_norm_layer
from snnexp.models.output import ModelOutput
from snnexp.models.recompute import residual_add
from snnexp.models.registry import ModelConfigError, register_model


@dataclass(frozen=True)
class ResNetSpec:
    blocks: tuple[int, ...]  # BasicBlocks per stage
    widths: tuple[int, ...]  # channels per stage
    strides: tuple[int, ...]  # stride of each stage's first block
    stem_width: int
    hidden: int | None = None  # TET's ResNet-19 head: pool -> fc(hidden) -> neuron -> fc(classes)


VARIANTS = {
    "resnet18": ResNetSpec((2, 2, 2, 2), (64, 128, 256, 512), (1, 2, 2, 2), stem_width=64),
    "resnet34": ResNetSpec((3, 4, 6, 3), (64, 128, 256, 512), (1, 2, 2, 2), stem_width=64),
    "resnet19": ResNetSpec((3, 3, 2), (128, 256, 512), (1, 2, 2), stem_width=64, hidden=256),
    "resnet20": ResNetSpec((3, 3, 3), (16, 32, 64), (1, 2, 2), stem_width=16),
    "resnet20_calib": ResNetSpec((3, 3, 3), (64, 128, 256), (1, 2, 2), stem_width=64),
}

STEMS = ("auto", "cifar", "imagenet")


class BasicBlock(nn.Module):
    """out = neuron(BN(conv(neuron(BN(conv(x))))) + shortcut(x)); every conv built through ``weights``."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, neuron: Callable[..., nn.Module],
                 norm_layer: NormLayer = batch_norm, weights: WeightsFn = real_weights):
        super().__init__()
        self.conv1 = conv_bn(in_channels, out_channels, 3, stride, norm_layer=norm_layer, weights=weights)
        self.sn1 = neuron()
        # conv2's BN and the shortcut's BN are summed before sn2: residual branches (tdBN: alpha 1/sqrt(2))
        self.conv2 = conv_bn(out_channels, out_channels, 3, 1, norm_layer=norm_layer, residual=True, weights=weights)
        if stride != 1 or in_channels != out_channels:
            self.shortcut = conv_bn(in_channels, out_channels, 1, stride, norm_layer=norm_layer, residual=True,
                                    weights=weights)
        else:
            self.shortcut = nn.Identity()
        self.sn2 = neuron()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.sn1(self.conv1(x)))
        return self.sn2(residual_add(out, self.shortcut(x)))  # the sum the neuron saves: recomputable


class SpikingResNet(SpikingModel):
    """Stem -> stages of BasicBlocks -> global average pool -> [fc -> neuron ->] classifier, all per step.

    Stem "cifar": conv3x3 stride 1 - BN - neuron; "imagenet": conv7x7 stride 2 - BN - neuron - maxpool 3/2;
    "auto": cifar when the input is at most 64 px, imagenet above. Taps: "layer1".."layerN" (stage outputs)
    and "features", the classifier's input, so ``logits == model.classifier(taps["features"])``.

    ``norm_layer`` builds every BN; ``hidden_weights`` builds every Conv/Linear but the stem conv (it reads the
    input) and the classifier (the output), which keep real weights.
    """

    def __init__(self, spec: ResNetSpec, *, neuron, input_shape, num_classes, stem: str = "auto",
                 zero_init_residual: bool = False, norm_layer: NormLayer = batch_norm,
                 hidden_weights: WeightsFn = real_weights):
        super().__init__(input_shape, num_classes)
        C, H, W = image_shape(input_shape, "ResNet")
        if stem not in STEMS:
            raise ModelConfigError(f"Unknown ResNet stem {stem!r}; valid stems are {list(STEMS)} (set model.stem=...).")
        if stem == "auto":
            stem = "cifar" if max(H, W) <= 64 else "imagenet"
        self.stem_kind = stem

        if stem == "cifar":
            self.stem = nn.Sequential(conv_bn(C, spec.stem_width, 3, 1, norm_layer=norm_layer), neuron())
        else:
            self.stem = nn.Sequential(conv_bn(C, spec.stem_width, 7, 2, norm_layer=norm_layer), neuron(),
                                      SeqToBatch(nn.MaxPool2d(3, 2, 1)))

        self.stages = nn.ModuleDict()
        channels = spec.stem_width
        for i, (n, width, stride) in enumerate(zip(spec.blocks, spec.widths, spec.strides)):
            blocks = []
            for j in range(n):
                blocks.append(BasicBlock(channels, width, stride if j == 0 else 1, neuron, norm_layer,
                                         hidden_weights))
                channels = width
            self.stages[f"layer{i + 1}"] = nn.Sequential(*blocks)

        self.pool = SeqToBatch(nn.AdaptiveAvgPool2d(1))
        if spec.hidden is not None:
            self.head = nn.Sequential(SeqToBatch(hidden_weights(nn.Linear(channels, spec.hidden))), neuron())
            channels = spec.hidden
        else:
            self.head = nn.Identity()
        self.num_features = channels
        self.classifier = SeqToBatch(nn.Linear(channels, num_classes))

        if zero_init_residual:  # each block starts as the identity on its shortcut (Goyal et al., 2017)
            for m in self.modules():
                if isinstance(m, BasicBlock):
                    nn.init.zeros_(m.conv2.module.bn.weight)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        x = self.stem(self.check_sequence(x))
        taps = self.new_taps()
        for name, stage in self.stages.items():
            x = stage(x)
            taps[name] = x
        features = self.head(self.pool(x).flatten(2))
        taps["features"] = features
        return ModelOutput(logits=self.classifier(features), taps=taps)


def _resnet(variant: str, *, neuron, norm: str, binary_weights: bool, **kwargs) -> SpikingResNet:
    return SpikingResNet(VARIANTS[variant], neuron=neuron, norm_layer=make_norm_layer(norm, neuron),
                         hidden_weights=weights_for(binary_weights), **kwargs)


# Factories spell out their keyword arguments: snnexp.config derives the model config schema from them.

@register_model("resnet18")
def resnet18(*, neuron: Callable[..., nn.Module], input_shape: tuple[int, ...], num_classes: int,
             stem: str = "auto", zero_init_residual: bool = False, norm: str = "bn",
             binary_weights: bool = False) -> SpikingResNet:
    """Spiking ResNet-18 (He et al., CVPR 2016): BasicBlocks [2, 2, 2, 2] at 64..512 channels, fc head."""
    return _resnet("resnet18", neuron=neuron, input_shape=input_shape, num_classes=num_classes, stem=stem,
                   zero_init_residual=zero_init_residual, norm=norm, binary_weights=binary_weights)


@register_model("resnet34")
def resnet34(*, neuron: Callable[..., nn.Module], input_shape: tuple[int, ...], num_classes: int,
             stem: str = "auto", zero_init_residual: bool = False, norm: str = "bn",
             binary_weights: bool = False) -> SpikingResNet:
    """Spiking ResNet-34 (He et al., CVPR 2016): BasicBlocks [3, 4, 6, 3] at 64..512 channels, fc head."""
    return _resnet("resnet34", neuron=neuron, input_shape=input_shape, num_classes=num_classes, stem=stem,
                   zero_init_residual=zero_init_residual, norm=norm, binary_weights=binary_weights)


@register_model("resnet19")
def resnet19(*, neuron: Callable[..., nn.Module], input_shape: tuple[int, ...], num_classes: int,
             stem: str = "auto", zero_init_residual: bool = False, norm: str = "bn",
             binary_weights: bool = False) -> SpikingResNet:
    """TET's ResNet-19 (Deng et al., ICLR 2022; Gus-Lab/temporal_efficient_training): stem conv3x3 -> 64,
    BasicBlocks 3 x 128 (stride 1), 3 x 256 (stride 2), 2 x 512 (stride 2), 1x1 conv+BN downsample,
    head avg pool -> fc 512->256 -> neuron -> fc -> classes. ``features`` are the 256 spikes before the last fc.
    """
    return _resnet("resnet19", neuron=neuron, input_shape=input_shape, num_classes=num_classes, stem=stem,
                   zero_init_residual=zero_init_residual, norm=norm, binary_weights=binary_weights)


@register_model("resnet20")
def resnet20(*, neuron: Callable[..., nn.Module], input_shape: tuple[int, ...], num_classes: int,
             stem: str = "auto", zero_init_residual: bool = False, norm: str = "bn",
             binary_weights: bool = False) -> SpikingResNet:
    """He et al.'s CIFAR ResNet-20 (CVPR 2016, Sec. 4.2): conv3x3 -> 16, 3 stages of 3 BasicBlocks at
    16/32/64 channels, avg pool, fc. Where the shape changes the shortcut is a 1x1 conv + BN (He's option B)
    instead of the paper's parameter-free zero padding (option A), like the rest of this family.
    """
    return _resnet("resnet20", neuron=neuron, input_shape=input_shape, num_classes=num_classes, stem=stem,
                   zero_init_residual=zero_init_residual, norm=norm, binary_weights=binary_weights)


@register_model("resnet20_calib")
def resnet20_calib(*, neuron: Callable[..., nn.Module], input_shape: tuple[int, ...], num_classes: int,
                   stem: str = "auto", zero_init_residual: bool = False, norm: str = "bn",
                   binary_weights: bool = False) -> SpikingResNet:
    """SNN Calibration's CIFAR ResNet-20 (Li et al., ICML 2021; yhhhli/SNN_Calibration,
    models/CIFAR/models/resnet.py with ``use_bn``): He's layout at 4x the width, conv3x3 -> 64 - BN - neuron,
    3 stages of 3 BasicBlocks at 64/128/256 channels (strides 1/2/2), 1x1 conv + BN shortcuts where the shape
    changes, avg pool, fc 256 -> classes. The official initialisation: conv weights N(0, 2 / (k*k*out_channels)),
    fc weights N(0, (1 / in_features)^2) and fc bias 0 (BN keeps weight 1, bias 0).
    """
    model = _resnet("resnet20_calib", neuron=neuron, input_shape=input_shape, num_classes=num_classes, stem=stem,
                    zero_init_residual=zero_init_residual, norm=norm, binary_weights=binary_weights)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                init_weight_(m, nn.init.kaiming_normal_, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                init_weight_(m, nn.init.normal_, 0.0, 1.0 / m.in_features)
                nn.init.zeros_(m.bias)
    return model
