"""VGGSNN, TET's network for CIFAR10-DVS (Deng et al., ICLR 2022; Gus-Lab/temporal_efficient_training).

Eight Conv3x3(bias)-BN-neuron layers 64, 128, 256, 256, 512, 512, 512, 512, halving the resolution after
layers 2/4/6/8, then one Linear(512*h*w -> classes) at every time step. ``vggsnn`` halves with stride-2
convolutions in those layers (TET's ``VGGSNNwoAP``, used by its DVS scripts); ``vggsnn_pool`` with
AvgPool2d(2) after them (TET's ``VGGSNN``). At 48 px both end at 3x3.
"""

from typing import Callable

import torch
from torch import nn

from snnexp.models.binary import WeightsFn, init_weight_, real_weights, weights_for
from snnexp.models.layers import SeqToBatch, SpikingModel, conv_bn, image_shape
from snnexp.models.norm import NormLayer, batch_norm, make_norm_layer
from snnexp.models.output import ModelOutput
from snnexp.models.registry import ModelConfigError, register_model

CHANNELS = (64, 128, 256, 256, 512, 512, 512, 512)
DOWNSAMPLE_AFTER = (2, 4, 6, 8)  # 1-based layer numbers


class VGGSNN(SpikingModel):
    """TET's VGGSNN. Taps: "conv1".."conv8" (each layer's spikes, before any pooling) and "features"
    (the flattened last layer), so ``logits == model.classifier(taps["features"])``.

    ``norm_layer`` builds every BN; ``hidden_weights`` builds conv2..conv8 (conv1 reads the input and the
    classifier gives the output: both keep real weights).
    """

    def __init__(self, *, neuron, input_shape, num_classes, pool: bool, norm_layer: NormLayer = batch_norm,
                 hidden_weights: WeightsFn = real_weights):
        super().__init__(input_shape, num_classes)
        C, H, W = image_shape(input_shape, "VGGSNN")
        h, w = H, W
        self.layers = nn.ModuleDict()
        for i, out_channels in enumerate(CHANNELS, start=1):
            halve = i in DOWNSAMPLE_AFTER
            stride = 2 if halve and not pool else 1
            weights = real_weights if i == 1 else hidden_weights
            self.layers[f"conv{i}"] = nn.Sequential(
                conv_bn(C, out_channels, 3, stride, bias=True, norm_layer=norm_layer, weights=weights), neuron())
            C = out_channels
            if halve:  # conv3x3 stride 2 padding 1 gives ceil(n / 2); AvgPool2d(2) gives floor(n / 2)
                h, w = (h // 2, w // 2) if pool else ((h + 1) // 2, (w + 1) // 2)
        if h < 1 or w < 1:
            raise ModelConfigError(
                f"vggsnn_pool halves the resolution 4 times and needs inputs of at least 16x16; "
                f"got {H}x{W}. Use vggsnn (stride-2 convolutions) or a larger input."
            )
        self.pool = SeqToBatch(nn.AvgPool2d(2)) if pool else None
        self.num_features = C * h * w
        self.classifier = SeqToBatch(nn.Linear(self.num_features, num_classes))

        for m in self.modules():  # TET's initialisation
            if isinstance(m, nn.Conv2d):
                init_weight_(m, nn.init.kaiming_normal_, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> ModelOutput:
        x = self.check_sequence(x)
        taps = self.new_taps()
        for i, (name, layer) in enumerate(self.layers.items(), start=1):
            x = layer(x)
            taps[name] = x
            if self.pool is not None and i in DOWNSAMPLE_AFTER:
                x = self.pool(x)
        features = x.flatten(2)
        taps["features"] = features
        return ModelOutput(logits=self.classifier(features), taps=taps)


@register_model("vggsnn")
def vggsnn(*, neuron: Callable[..., nn.Module], input_shape: tuple[int, ...], num_classes: int, norm: str = "bn",
           binary_weights: bool = False) -> VGGSNN:
    """TET's VGGSNN for DVS data with stride-2 convolutions in layers 2/4/6/8 (``VGGSNNwoAP``)."""
    return VGGSNN(neuron=neuron, input_shape=input_shape, num_classes=num_classes, pool=False,
                  norm_layer=make_norm_layer(norm, neuron), hidden_weights=weights_for(binary_weights))


@register_model("vggsnn_pool")
def vggsnn_pool(*, neuron: Callable[..., nn.Module], input_shape: tuple[int, ...], num_classes: int, norm: str = "bn",
                binary_weights: bool = False) -> VGGSNN:
    """TET's VGGSNN with AvgPool2d(2) after layers 2/4/6/8 (``VGGSNN``); inputs of at least 16x16."""
    return VGGSNN(neuron=neuron, input_shape=input_shape, num_classes=num_classes, pool=True,
                  norm_layer=make_norm_layer(norm, neuron), hidden_weights=weights_for(binary_weights))
