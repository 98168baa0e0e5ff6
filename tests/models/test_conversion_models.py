"""The conversion papers' CIFAR models (snnexp/models/vgg16.py, resnet20_calib in snnexp/models/resnet.py): parameter
counts from the official layer lists, BN right after its conv (foldable), a neuron wherever the ANN has a ReLU, and
time-major logits."""

import pytest
import torch
from torch import nn

from helpers.models import StandInNeuron, bn, conv, count_params, linear
from snnexp.models import create_model
from snnexp.models.registry import ModelConfigError

# SNN Calibration (yhhhli/SNN_Calibration, models/CIFAR/models/vgg.py, cfg "VGG16"); "M" is an AvgPool2d(2).
CALIBRATION_VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


def calibration_vgg16_params(classes):
    convs = [c for c in CALIBRATION_VGG16 if c != "M"]
    total = sum(conv(a, b, 3, bias=True) + bn(b) for a, b in zip([3, *convs], convs))
    return total + linear(512, classes)


def calibration_resnet20_params(classes):
    # models/CIFAR/models/resnet.py, resnet20: conv3x3 3->64 (no bias)-BN; BasicBlocks [3, 3, 3] at 64/128/256,
    # 1x1 conv + BN downsample where the shape changes; fc 256 -> classes.
    def block(cin, cout):
        n = conv(cin, cout, 3) + bn(cout) + conv(cout, cout, 3) + bn(cout)
        return n + (conv(cin, cout, 1) + bn(cout) if cin != cout else 0)

    total = conv(3, 64, 3) + bn(64)
    cin = 64
    for width in (64, 128, 256):
        total += block(cin, width) + 2 * block(width, width)
        cin = width
    return total + linear(256, classes)


def optimal_vgg16_params(classes):
    # Deng & Gu (Jackn0/snn_optimal_conversion_pipeline, models/VGG16.py): convs with bias, no BN, 1x1 third convs in
    # groups 3-5; fc1 512*2*2 -> 4096, fc2 4096 -> 4096, fc3 4096 -> classes.
    layers = [(3, 64, 3), (64, 64, 3), (64, 128, 3), (128, 128, 3), (128, 256, 3), (256, 256, 3), (256, 256, 1),
              (256, 512, 3), (512, 512, 3), (512, 512, 1), (512, 512, 3), (512, 512, 3), (512, 512, 1)]
    total = sum(conv(a, b, k, bias=True) for a, b, k in layers)
    return total + linear(2048, 4096) + linear(4096, 4096) + linear(4096, classes)


@pytest.mark.parametrize("classes", [10, 100])
@pytest.mark.parametrize("name, expected", [
    ("vgg16", calibration_vgg16_params),
    ("resnet20_calib", calibration_resnet20_params),
    ("vgg16_optimal", optimal_vgg16_params),
])
def test_parameter_counts_match_the_official_layer_lists(name, expected, classes):
    model = create_model(name, neuron=StandInNeuron, input_shape=(3, 32, 32), num_classes=classes)
    assert count_params(model) == expected(classes)


def test_official_counts_for_cifar10():
    # the layer lists above, summed once by hand, so a change to a layer list shows up here too
    assert calibration_vgg16_params(10) == 14_728_266
    assert calibration_resnet20_params(10) == 4_327_754
    assert optimal_vgg16_params(10) == 35_211_082


@pytest.mark.parametrize("name", ["vgg16", "resnet20_calib", "vgg16_optimal"])
def test_forward_gives_per_step_logits(name):
    model = create_model(name, neuron=StandInNeuron, input_shape=(3, 32, 32), num_classes=10)
    out = model(torch.randn(2, 2, 3, 32, 32))
    assert out.logits.shape == (2, 2, 10)
    assert torch.allclose(model.classifier(out.taps["features"]), out.logits)


@pytest.mark.parametrize("name, relus", [("vgg16", 13), ("resnet20_calib", 19), ("vgg16_optimal", 15)])
def test_a_neuron_wherever_the_ann_has_a_relu(name, relus):
    # VGG-16: one ReLU per conv (13), Deng & Gu's also after fc1 and fc2; ResNet-20: stem + 2 per block (1 + 18)
    model = create_model(name, neuron=StandInNeuron, input_shape=(3, 32, 32), num_classes=10)
    assert sum(isinstance(m, StandInNeuron) for m in model.modules()) == relus


@pytest.mark.parametrize("name", ["vgg16", "resnet20_calib"])
def test_every_batchnorm_follows_its_conv_in_one_sequential(name):
    model = create_model(name, neuron=StandInNeuron, input_shape=(3, 32, 32), num_classes=10)
    pairs = [m for m in model.modules() if isinstance(m, nn.Sequential) and len(m) == 2
             and isinstance(m[0], nn.Conv2d) and type(m[1]) is nn.BatchNorm2d]
    assert len(pairs) == sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) > 0


def test_conversion_vggs_pool_with_averages_only():
    for name in ("vgg16", "vgg16_optimal"):
        model = create_model(name, neuron=StandInNeuron, input_shape=(3, 32, 32), num_classes=10)
        assert any(isinstance(m, nn.AvgPool2d) for m in model.modules())
        assert not any(isinstance(m, (nn.MaxPool2d, nn.Dropout)) for m in model.modules())


def test_vgg16_needs_32_px():
    with pytest.raises(ModelConfigError, match="at least 32x32"):
        create_model("vgg16", neuron=StandInNeuron, input_shape=(3, 16, 16), num_classes=10)
