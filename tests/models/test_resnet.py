"""Spiking ResNets (snnexp/models/resnet.py): exact architectures (parameter counts from the published layer lists),
the stem choice, zero-init residuals, and tdBN's alpha on the residual branches."""

import math
from functools import partial

import pytest
from torch import nn

from helpers.models import StandInNeuron, bn, build, conv, count_params, linear
from snnexp.models import create_model
from snnexp.models.norm import TDBatchNorm2d
from snnexp.models.resnet import BasicBlock
from snnexp.neurons import LIF


def basic_block(cin, cout):
    n = conv(cin, cout, 3) + bn(cout) + conv(cout, cout, 3) + bn(cout)
    return n + (conv(cin, cout, 1) + bn(cout) if cin != cout else 0)  # downsample only where shape changes


def test_resnet19_matches_tet_layer_list():
    # TET (official code): stem conv3x3 3->64-BN; 3 blocks at 128, 3 at 256, 2 at 512; head fc 512->256 -> fc -> 10.
    expected = conv(3, 64, 3) + bn(64)
    expected += basic_block(64, 128) + 2 * basic_block(128, 128)
    expected += basic_block(128, 256) + 2 * basic_block(256, 256)
    expected += basic_block(256, 512) + 1 * basic_block(512, 512)
    expected += linear(512, 256) + linear(256, 10)
    model = create_model("resnet19", neuron=StandInNeuron, input_shape=(3, 32, 32), num_classes=10)
    assert count_params(model) == expected == 12_630_858


def test_resnet18_and_34_match_torchvision_on_imagenet_shapes():
    # torchvision.models.resnet18 / resnet34 (1000 classes, 7x7 stem): 11,689,512 and 21,797,672 parameters.
    for name, expected in [("resnet18", 11_689_512), ("resnet34", 21_797_672)]:
        model = create_model(name, neuron=StandInNeuron, input_shape=(3, 224, 224), num_classes=1000)
        assert model.stem_kind == "imagenet"
        assert count_params(model) == expected


def test_resnet20_is_he_cifar_resnet20_with_projection_shortcuts():
    # He et al.'s ResNet-20 has 269,722 parameters with zero-padding shortcuts (option A); ours adds two
    # 1x1 conv + BN projections (16->32, 32->64).
    model = create_model("resnet20", neuron=StandInNeuron, input_shape=(3, 32, 32), num_classes=10)
    assert count_params(model) == 269_722 + conv(16, 32, 1) + bn(32) + conv(32, 64, 1) + bn(64)


def test_resnet_stem_auto_picks_cifar_up_to_64_px():
    assert build("resnet18", (3, 64, 64)).stem_kind == "cifar"
    assert build("resnet18", (2, 128, 128)).stem_kind == "imagenet"
    assert build("resnet18", (3, 128, 128), stem="cifar").stem_kind == "cifar"
    with pytest.raises(ValueError, match="stem"):
        build("resnet18", (3, 32, 32), stem="tiny")


def test_zero_init_residual_zeroes_the_last_bn_of_each_block():
    model = build("resnet20", (3, 32, 32), zero_init_residual=True)
    gammas = [m.conv2.module.bn.weight for m in model.modules() if isinstance(m, BasicBlock)]
    assert len(gammas) == 9 and all((g == 0).all() for g in gammas)


def test_tdbn_resnet_scales_residual_branches_by_inverse_sqrt2_and_uses_the_neuron_threshold():
    model = create_model("resnet19", neuron=partial(LIF, v_threshold=0.5), input_shape=(3, 8, 8), num_classes=10,
                         norm="tdbn")
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(isinstance(m, TDBatchNorm2d) and m.v_threshold == 0.5 for m in norms)
    # ResNet-19: 8 BasicBlocks, each with a residual BN on conv2, plus 3 downsampling shortcuts (64->128, 128->256, 256->512)
    alphas = sorted(round(m.alpha, 6) for m in norms)
    assert alphas.count(round(1 / math.sqrt(2), 6)) == 8 + 3
    assert alphas.count(1.0) == len(norms) - 11
