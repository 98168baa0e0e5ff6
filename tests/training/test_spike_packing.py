"""Saved spikes as bits (snnexp/training/spike_packing.py): the round trip is exact, a training step's gradients are
bit-identical with and without packing, only binary neurons' outputs are packed, and the bytes autograd keeps
for the spikes shrink 32-fold."""

from __future__ import annotations

import pytest
import torch

from helpers.runs import compose_config
from snnexp.train import build
from snnexp.training import spike_packing
from snnexp.training.spike_packing import SpikePacking, pack_bits, unpack_bits


@pytest.mark.parametrize("shape", [(3,), (8,), (2, 5, 7), (4, 3, 9, 9)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_bits_round_trip_exactly(shape, dtype):
    x = (torch.rand(shape, generator=torch.Generator().manual_seed(0)) < 0.3).to(dtype)
    packed = pack_bits(x)
    assert packed.dtype == torch.uint8 and packed.numel() == -(-x.numel() // 8)
    assert int(packed[0]) == sum(int(v) << i for i, v in enumerate(x.reshape(-1)[:8].tolist()))  # bit i = entry i
    restored = unpack_bits(packed, x.shape, dtype)
    assert restored.dtype == dtype and torch.equal(restored, x)


def gradients(overrides: list[str], pack: bool, tmp_path) -> tuple[dict[str, torch.Tensor], list[int]]:
    """One training step's parameter gradients (same seed, weights and batch), and the bytes of every saved
    tensor packed (``[original bytes, packed bytes]`` per tensor)."""
    cfg = compose_config(["data.batch_size=4", "seed=0", f"pack_spikes={str(pack).lower()}", *overrides], tmp_path)
    torch.manual_seed(0)
    _, module = build(cfg)
    x = torch.rand(4, *module.input_shape)
    y = torch.arange(4) % module.num_classes
    packed = []
    original_init = spike_packing._Packed.__init__

    def counting_init(self, tensor):
        original_init(self, tensor)
        packed.append((tensor.numel() * tensor.element_size(), self.bits.numel()))

    spike_packing._Packed.__init__ = counting_init
    try:
        with module.spike_packing.saving():
            loss = module.method.loss(module(x), y)
    finally:
        spike_packing._Packed.__init__ = original_init
    loss.backward()
    return {n: p.grad.clone() for n, p in module.model.named_parameters() if p.grad is not None}, packed


@pytest.mark.parametrize("overrides", [["model=convnet", "data=digits"], ["model=resnet19", "data=digits",
                                                                          "neuron=tet_lif"]])
def test_a_training_step_with_packed_spikes_has_bit_identical_gradients(overrides, tmp_path):
    plain, none_packed = gradients(overrides, False, tmp_path / "plain")
    packed, sizes = gradients(overrides, True, tmp_path / "packed")
    assert not none_packed and sizes  # packing on: the conv / linear inputs that are spikes were packed
    assert plain.keys() == packed.keys()
    for name in plain:
        assert torch.equal(plain[name], packed[name]), name
    original, kept = map(sum, zip(*sizes))
    assert kept * 32 == pytest.approx(original, rel=0.01)  # float32 spikes: 4 bytes each, now one bit


def test_real_valued_spikes_are_never_packed(tmp_path):
    """ReverB's neuron emits S[t]·H[t]: not 0 or 1, so its outputs stay as they are."""
    _, packed = gradients(["model=convnet", "data=digits", "neuron=reverb"], True, tmp_path)
    assert not packed


def test_packing_marks_only_binary_neurons_and_can_be_switched_off_and_removed():
    from snnexp.neurons import LIF

    model = torch.nn.Sequential(torch.nn.Linear(3, 4), LIF(), torch.nn.Linear(4, 2))
    assert not SpikePacking(model, enabled=False)._handles and not model[1]._forward_hooks
    packing = SpikePacking(model)
    assert len(packing._handles) == 1 and len(model[1]._forward_hooks) == 1  # the LIF only, not the linears
    packing.remove()
    assert not model[1]._forward_hooks
