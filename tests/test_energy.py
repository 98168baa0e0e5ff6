"""Synaptic operations and energy (snnexp/metrics.py ``OperationCounter``): exact MAC and AC counts on a hand-built
network with known spikes, ANN runs (all MACs), and ResNet-19 / Spike-driven Transformer, whose MACs as ANNs equal
a count written here from their layer lists."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from torch import nn

from helpers.runs import SHORT, run_and_summarise
from snnexp.metrics import E_AC_PJ, E_MAC_PJ, OperationCounter, is_spike_input, magnitude_stats, operations_per_sample
from snnexp.models import create_model
from snnexp.neurons import LIF, MultiStepNeuron

T, B = 3, 4


class KnownSpikes(MultiStepNeuron):
    """A spiking layer that ignores its input and emits ``pattern``, set before each batch."""

    pattern: torch.Tensor

    def forward(self, x):
        return self.pattern


class TwoLayers(nn.Module):
    """fc1 reads the (analog) input; fc2 reads the known spikes."""

    def __init__(self):
        super().__init__()
        self.fc1, self.spikes, self.fc2 = nn.Linear(6, 5), KnownSpikes(), nn.Linear(5, 3)

    def forward(self, x):
        return self.fc2(self.spikes(self.fc1(x)))


def count(model: nn.Module, inputs: list[torch.Tensor], patterns: list[torch.Tensor] | None = None,
          batch_dim: int = 1, **energy) -> dict:
    """One evaluation pass over ``inputs`` (``[T, B, ...]``: samples along ``batch_dim``), per-sample counts;
    ``patterns``: the spikes ``model.spikes`` emits at each batch."""
    counter = OperationCounter(model)
    counter.start()
    for i, x in enumerate(inputs):
        if patterns is not None:
            model.spikes.pattern = patterns[i]
        counter.forward(lambda: model(x), samples=x.shape[batch_dim])
    names, totals = counter.stop()
    assert not any(m._forward_pre_hooks for m in model.modules())  # nothing left attached after an evaluation pass
    return operations_per_sample(names, totals, counter.samples, **energy)


def pattern(kind: str, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    on = (torch.rand(T, B, 5, generator=g) < 0.3).float()
    if kind == "ternary":  # {-a, 0, a}
        return 0.5 * on * torch.where(torch.rand(T, B, 5, generator=g) < 0.5, -1.0, 1.0)
    if kind == "multi-level":  # {0, 1, 2, 3}: a nonzero entry is one synaptic event, whatever its level
        return on * torch.randint(1, 4, (T, B, 5), generator=g).float()
    return on


@pytest.mark.parametrize("kind", ["binary", "ternary", "multi-level"])
def test_two_layers_with_known_spikes_count_exact_macs_and_accumulates(kind):
    spikes = [pattern(kind, 0), pattern(kind, 1)]
    inputs = [torch.randn(T, B, 6), torch.randn(T, B, 6)]
    ops = count(TwoLayers(), inputs, spikes)
    nonzero = sum(int(s.count_nonzero()) for s in spikes)
    samples = 2 * B
    assert ops["layers"]["fc1"] == {"macs": T * 6 * 5, "acs": 0.0, "dense_macs": T * 6 * 5, "input_rate": None,
                                    "spiking_input": False}
    fc2 = ops["layers"]["fc2"]
    assert fc2["macs"] == 0.0 and fc2["spiking_input"]
    assert fc2["acs"] == pytest.approx(nonzero * 3 / samples, rel=1e-12)  # one accumulate per spike per output
    assert fc2["input_rate"] == pytest.approx(nonzero / (2 * T * B * 5), rel=1e-12)
    assert fc2["dense_macs"] == T * 5 * 3
    assert set(ops["layers"]) == {"fc1", "fc2"}  # the spike source computes nothing
    assert ops["sops"] == fc2["acs"] and ops["macs"] == T * 30
    assert ops["energy_mJ"] == pytest.approx((E_MAC_PJ * T * 30 + E_AC_PJ * fc2["acs"]) * 1e-9, rel=1e-12)


def test_analog_values_into_the_second_layer_are_macs_and_energy_uses_the_given_costs():
    analog = [torch.randn(T, B, 5), torch.randn(T, B, 5)]
    ops = count(TwoLayers(), [torch.randn(T, B, 6)] * 2, analog, e_mac_pj=2.0, e_ac_pj=0.5)
    assert ops["layers"]["fc2"]["macs"] == T * 15 and ops["sops"] == 0.0
    assert ops["energy_mJ"] == pytest.approx(2.0 * T * (30 + 15) * 1e-9, rel=1e-12)


class SpikesThenConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.spikes, self.conv = KnownSpikes(), nn.Conv2d(2, 4, 3, padding=1)

    def forward(self, x):
        return self.conv(self.spikes(x))


def test_a_convolution_on_spikes_costs_its_macs_times_the_input_firing_rate():
    g = torch.Generator().manual_seed(3)
    spikes = (torch.rand(T * B, 2, 6, 6, generator=g) < 0.2).float()
    ops = count(SpikesThenConv(), [spikes], [spikes], batch_dim=0)  # 12 images
    macs = 4 * 6 * 6 * 2 * 9  # per image (output positions x input channels x kernel)
    layer = ops["layers"]["conv"]
    assert layer["dense_macs"] == macs and layer["macs"] == 0.0
    assert layer["acs"] == pytest.approx(macs * int(spikes.count_nonzero()) / spikes.numel(), rel=1e-12)


def test_a_layer_reading_very_sparse_spikes_is_still_seen_to_read_spikes():
    """Spike statistics come from a sample of the input's nonzero entries: an evenly strided sample of all
    entries would miss the few spikes of a large, nearly silent input (seen on converted deep nets)."""
    spikes = torch.zeros(T * B * 40, 2, 64, 64)
    spikes.view(-1)[[12345, 999_999, 2_000_001]] = 0.25  # a converted IF layer: spikes of amplitude θ = 0.25
    ops = count(SpikesThenConv(), [spikes], [spikes], batch_dim=0)
    layer = ops["layers"]["conv"]
    assert layer["macs"] == 0.0 and layer["acs"] == pytest.approx(3 * 4 * 9 / spikes.shape[0], rel=0.01)


@pytest.mark.parametrize(("values", "units", "max_level", "spikes"), [
    ([0.0, 1.0, 1.0], [1.0], 1, True),  # binary
    ([-0.5, 0.0, 0.5], [0.5], 1, True),  # ternary with amplitude 0.5
    ([0.0, 1.0, 2.0, 3.0], [1.0], 3, True), ([0.0, 2.0, 3.0], [1.0], 3, True),  # multi-level (MLF, K = 3)
    ([0.0, 0.25, 0.75, 1.0], [0.25], 4, True),  # normalised integer spikes (I-LIF, D = 4)
    ([0.0, 0.0], [], 1, True),  # silent
    ([0.0, 3e-7, 6e-7], [3e-7], 2, True), ([0.0, 1.0], [0.0], 1, False),  # a converted IF layer's tiny θ; no unit
    ([0.0, 1.0, 2.0], [1.0], 1, False),  # a sum of binary spikes: beyond the neurons' largest level
    ([0.0, 1 / 64, 3 / 64], [1.0], 1, False),  # spikes averaged over 8 x 8 pixels
    ([0.1, 0.37, 1.0], [1.0], 1, False), ([0.0, 1.0, 1.0], [], 1, False),  # analog; no spiking neurons (an ANN)
])
def test_which_inputs_are_spikes(values, units, max_level, spikes):
    stats = magnitude_stats(torch.tensor(values)).tolist()
    assert stats[0] == sum(v != 0 for v in values)
    assert is_spike_input(stats, units, max_level) is spikes


# ---- real architectures: MACs as ANNs against the layer lists -------------------------------------------------

def conv_macs(cin: int, cout: int, k: int, size: int) -> int:
    """A k x k convolution producing ``size x size`` outputs (per sample and time step)."""
    return cout * size * size * cin * k * k


def resnet19_macs(classes: int = 10) -> int:
    """TET's ResNet-19 on 32 px (stem 3->64; 3 blocks at 128 @32 px, 3 at 256 @16, 2 at 512 @8; 1x1 downsample
    where the shape changes; fc 512->256->classes)."""
    total = conv_macs(3, 64, 3, 32)
    for width, size, blocks, cin in ((128, 32, 3, 64), (256, 16, 3, 128), (512, 8, 2, 256)):
        total += conv_macs(cin, width, 3, size) + conv_macs(width, width, 3, size) + conv_macs(cin, width, 1, size)
        total += (blocks - 1) * 2 * conv_macs(width, width, 3, size)
    return total + 512 * 256 + 256 * classes


def sdt_macs(dim: int, layers: int, size: int, classes: int = 10) -> int:
    """Spike-driven Transformer, pooling '0011': SPS convs 3->D/8->D/4 at full size, ->D/2 at size/2 (pooled after
    stage 3), ->D at size/4 (pooled before stage 4's neuron: the conv runs at size/2), RPE 3x3 D->D at size/4;
    each block q, k, v, proj 1x1 and the MLP D->4D->D over the N tokens; the head Linear D->classes."""
    widths = (3, dim // 8, dim // 4, dim // 2, dim)
    sizes = (size, size, size, size // 2)  # the output size of each SPS conv
    total = sum(conv_macs(a, b, 3, s) for a, b, s in zip(widths, widths[1:], sizes))
    tokens = (size // 4) ** 2
    total += conv_macs(dim, dim, 3, size // 4)
    total += layers * tokens * (4 * dim * dim + 2 * dim * 4 * dim)
    return total + dim * classes


def lif(**kwargs):
    """A LIF that keeps firing through an untrained deep network, so every layer sees spikes."""
    return LIF(tau=2.0, v_threshold=kwargs.pop("v_threshold", 0.5) / 5, **kwargs)


def test_resnet19_macs_as_an_ann_match_its_layer_list_and_spiking_layers_accumulate():
    torch.manual_seed(0)
    model = create_model("resnet19", neuron=lif, input_shape=(3, 32, 32), num_classes=10).eval()
    x = 2 * torch.randn(2, 1, 3, 32, 32)  # T=2, B=1
    with torch.no_grad():
        ops = count(model, [x])
    assert ops["dense_macs"] == 2 * resnet19_macs()
    assert resnet19_macs() == 2_216_495_616  # 2.2 GMACs per time step
    layers = ops["layers"]
    analog = sorted(name for name, layer in layers.items() if not layer["spiking_input"])
    assert analog == ["head.0.module", "stem.0.module.conv"]  # the input image and the average-pooled features
    for name, layer in layers.items():
        if layer["spiking_input"]:
            assert layer["macs"] == 0 and layer["acs"] == pytest.approx(layer["dense_macs"] * layer["input_rate"])
            assert layer["input_rate"] > 0.01
        else:
            assert layer["acs"] == 0 and layer["macs"] == layer["dense_macs"]


def test_spike_driven_transformer_macs_match_its_layer_list_and_attention_is_masks_and_additions():
    torch.manual_seed(0)
    model = create_model("sdt", neuron=lif, input_shape=(3, 16, 16), num_classes=10, dim=32, layers=2,
                         heads=4).eval()
    summed = []
    for block in model.blocks:
        block.attn.token_sum.register_forward_hook(lambda m, args, out: summed.append(int(args[0].count_nonzero())))
    x = torch.randn(2, 3, 3, 16, 16)  # T=2, B=3
    with torch.no_grad():
        ops = count(model, [x])
    assert ops["dense_macs"] == pytest.approx(2 * sdt_macs(32, 2, 16), rel=1e-12)
    for i in range(2):
        token_sum = ops["layers"][f"blocks.{i}.attn.token_sum"]  # K * V summed over tokens: one add per nonzero
        assert token_sum["acs"] == pytest.approx(summed[i] / 3) and token_sum["macs"] == token_sum["dense_macs"] == 0
    assert [n for n, layer in ops["layers"].items() if not layer["spiking_input"]] == ["patch_embed.convs.0.module.conv"]


# ---- whole runs: logged per split and written to summary.json --------------------------------------------------

@pytest.mark.parametrize("method", ["sdt", "ann"])
def test_runs_log_energy_and_summary_holds_per_layer_counts(method, tmp_path):
    summary = run_and_summarise([*SHORT, f"method={method}", "energy.e_mac=2.0", "energy.e_ac=0.5"], tmp_path / "run")
    energy, test = summary["energy"], summary["test"]
    assert energy["split"] == "test" and (energy["e_mac_pJ"], energy["e_ac_pJ"]) == (2.0, 0.5)
    assert test["test/sops"] == pytest.approx(energy["sops"]) and test["test/macs"] == pytest.approx(energy["macs"])
    assert test["test/energy_mJ"] == pytest.approx((2.0 * energy["macs"] + 0.5 * energy["sops"]) * 1e-9)
    assert {"val/energy_mJ", "val/sops", "val/macs"} <= set(summary["final_val"])
    layers = energy["layers"]
    assert energy["dense_macs"] == pytest.approx(sum(layer["dense_macs"] for layer in layers.values()))
    if method == "ann":  # ReLU activations are not spikes: every layer multiplies
        assert energy["sops"] == 0 and energy["macs"] == pytest.approx(energy["dense_macs"])
        assert not any(layer["spiking_input"] for layer in layers.values())
    else:  # the first conv reads the image; the rest read spikes
        first, *rest = layers.values()
        assert not first["spiking_input"] and all(layer["spiking_input"] for layer in rest)
        assert energy["macs"] == first["macs"] and 0 < energy["sops"] < energy["dense_macs"] - energy["macs"]
