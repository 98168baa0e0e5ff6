"""VGGSNN (snnexp/models/vgg.py): TET's layer list, with and without pooling."""

from helpers.models import StandInNeuron, bn, conv, count_params, linear
from snnexp.models import create_model


def test_vggsnn_matches_tet_layer_list():
    # TET (official code): Conv3x3(bias)-BN layers 2->64->128->256->256->512->512->512->512; Linear(512*3*3 -> 10).
    channels = [2, 64, 128, 256, 256, 512, 512, 512, 512]
    expected = sum(conv(a, b, 3, bias=True) + bn(b) for a, b in zip(channels, channels[1:]))
    expected += linear(512 * 3 * 3, 10)
    for name in ("vggsnn", "vggsnn_pool"):
        model = create_model(name, neuron=StandInNeuron, input_shape=(2, 48, 48), num_classes=10)
        assert count_params(model) == expected == 9_271_498
