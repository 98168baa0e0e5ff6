"""The ANN baseline (snnexp/methods/ann.py): every neuron becomes a ReLU and static inputs run one step."""

from torch import nn

from snnexp.methods import ANN


class _Tiny(nn.Module):
    def __init__(self, neuron):
        super().__init__()
        self.fc = nn.Linear(3, 2)
        self.block = nn.Sequential(neuron())
        self.act = neuron()


def test_ann_replaces_every_neuron_with_relu_and_runs_one_step():
    from snnexp.neurons import LIF, MultiStepNeuron

    model = _Tiny(LIF)

    class StaticData:
        time_steps = None

    ANN().setup(model, StaticData())
    assert not any(isinstance(m, MultiStepNeuron) for m in model.modules())
    assert isinstance(model.act, nn.ReLU) and isinstance(model.block[0], nn.ReLU)
    assert ANN().timesteps(4) == 1  # static inputs run one step
