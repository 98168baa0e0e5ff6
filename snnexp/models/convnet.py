"""A small spiking conv net for the offline 8x8 digits default and smoke tests.

Conv3x3(C -> width)-BN-neuron, Conv3x3(width -> 2*width, stride 2)-BN-neuron, flatten, Linear -> classes at
every step. Adapts to any channel count and resolution.
"""

from typing import Callable

import torch
from torch import nn

from snnexp.models.binary import WeightsFn, real_weights, weights_for
from snnexp.models.layers import SeqToBatch, SpikingModel, conv_bn, image_shape
from snnexp.models.norm import NormLayer, batch_norm, make_norm_layer
from snnexp.models.output import ModelOutput
from snnexp.models.registry import register_model


class ConvNet(SpikingModel):
    """Two conv-BN-neuron layers and a linear classifier. Taps: "conv1", "conv2", "features".

    ``norm_layer`` builds both BNs; ``hidden_weights`` builds conv2 (conv1 reads the input and the classifier
    gives the output: both keep real weights).
    """

    def __init__(self, *, neuron, input_shape, num_classes, width: int = 32, norm_layer: NormLayer = batch_norm,
                 hidden_weights: WeightsFn = real_weights):
        super().__init__(input_shape, num_classes)
        C, H, W = image_shape(input_shape, "convnet")
        self.conv1 = nn.Sequential(conv_bn(C, width, 3, 1, norm_layer=norm_layer), neuron())
        self.conv2 = nn.Sequential(conv_bn(width, 2 * width, 3, 2, norm_layer=norm_layer, weights=hidden_weights),
                                   neuron())
        self.num_features = 2 * width * ((H + 1) // 2) * ((W + 1) // 2)
        self.classifier = SeqToBatch(nn.Linear(self.num_features, num_classes))

    def forward(self, x: torch.Tensor) -> ModelOutput:
        c1 = self.conv1(self.check_sequence(x))
        c2 = self.conv2(c1)
        features = c2.flatten(2)
        taps = self.new_taps()
        taps["conv1"], taps["conv2"], taps["features"] = c1, c2, features
        return ModelOutput(logits=self.classifier(features), taps=taps)


@register_model("convnet")
def convnet(*, neuron: Callable[..., nn.Module], input_shape: tuple[int, ...], num_classes: int, width: int = 32,
            norm: str = "bn", binary_weights: bool = False) -> ConvNet:
    """Small spiking conv net (two conv layers, ``width`` and ``2*width`` channels) for digits and smoke tests."""
    return ConvNet(neuron=neuron, input_shape=input_shape, num_classes=num_classes, width=width,
                   norm_layer=make_norm_layer(norm, neuron), hidden_weights=weights_for(binary_weights))
