"""Saved spikes as bits and saved BatchNorm (and, optionally, convolution) outputs as recipes
(snnexp/training/spike_packing.py): the round trip is exact, a training step's gradients are bit-identical with and
without them, only binary neurons' outputs are packed, the bytes autograd keeps for the spikes shrink 32-fold, the
neurons' saved inputs are not kept, and with recompute_conv neither are the convolutions' outputs."""

from __future__ import annotations

import contextlib

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


def test_the_cpu_extension_packs_as_torch_does(monkeypatch):
    """float32 CPU spikes take the extension's one-pass packing: the bytes and the unpacked tensor equal torch's
    (NaN counts as a spike and -0.0 as none, like ``ne(0)``), at lengths that do and do not fill the last byte."""
    if not spike_packing.cpu_kernels.available():
        pytest.skip("the CPU extension cannot be built here")
    for n in (1, 8, 13, 100_003):
        x = (torch.rand(n, generator=torch.Generator().manual_seed(n)) < 0.3).float()
        x[0], x[-1] = float("nan"), -0.0
        ours = pack_bits(x)
        unpacked = unpack_bits(ours, x.shape, torch.float32)
        with monkeypatch.context() as torch_only:
            torch_only.setattr(spike_packing, "_in_one_pass", lambda device, dtype: False)
            theirs = pack_bits(x)
            assert torch.equal(unpack_bits(theirs, x.shape, torch.float32), unpacked)
        assert torch.equal(ours, theirs) and torch.equal(unpacked, x.ne(0).float())


def gradients(overrides: list[str], pack: bool, tmp_path, recompute: bool = False
              ) -> tuple[dict[str, torch.Tensor], list[int]]:
    """One training step's parameter gradients (same seed, weights and batch), and the bytes of every saved
    tensor packed (``[original bytes, packed bytes]`` per tensor)."""
    cfg = compose_config(["data.batch_size=4", "seed=0", f"pack_spikes={str(pack).lower()}",
                          f"recompute_bn={str(recompute).lower()}", *overrides], tmp_path)
    torch.manual_seed(0)
    _, module = build(cfg)
    x = torch.rand(4, *module.input_shape)
    y = torch.arange(4) % module.num_classes
    packed = []
    original_init = spike_packing._Packed.__init__

    def counting_init(self, tensor, bits=None):
        original_init(self, tensor, bits)
        if bits is None:  # packed now, not shared with an earlier save of the same spikes
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


def saved_storage_bytes(module, x, y) -> tuple[int, int]:
    """(bytes of activations autograd keeps as tensors, number kept as recipes) for one forward of ``module``."""
    kept, recipes = {}, []
    pack = module.spike_packing._pack

    def counting(t):
        out = pack(t)
        if isinstance(out, spike_packing._Recomputed):
            recipes.append(out)
        elif isinstance(out, torch.Tensor) and not isinstance(out, torch.nn.Parameter):  # activations only
            kept[out.untyped_storage().data_ptr()] = out.untyped_storage().nbytes()
        return out

    module.spike_packing._pack = counting
    with module.spike_packing.saving():
        loss = module.method.loss(module(x), y)
    del module.spike_packing._pack
    return sum(kept.values()), len(recipes), loss


@pytest.mark.parametrize("overrides", [["model=resnet19", "data=digits", "neuron=tet_lif"],
                                       ["model=vggsnn", "data=digits", "neuron=tet_lif"]])
def test_recomputed_convolution_outputs_give_bit_identical_gradients_and_are_not_kept(overrides, tmp_path,
                                                                                       monkeypatch):
    """recompute_conv: ``all`` runs every convolution again in the backward, ``cheap`` (the default) those of at
    most 1/16 of the costliest's multiply-adds per output value (the stem on the image, ResNet's 1x1 shortcuts),
    ``none`` none; each once
    (for BN's input and the recipe of BN's output together), and the gradients are those of the plain step bit for
    bit. Autograd keeps as float tensors the outputs of the convolutions that are not recomputed."""
    from snnexp.models import recompute

    plain, _ = gradients([*overrides, "recompute_conv=none"], False, tmp_path / "plain", recompute=False)
    calls = []
    convolve = recompute._convolve_again
    monkeypatch.setattr(recompute, "_convolve_again", lambda module, *args: calls.append(module) or
                        convolve(module, *args))
    for mode in ("all", "cheap"):
        calls.clear()
        compact, _ = gradients([*overrides, f"recompute_conv={mode}"], True, tmp_path / mode, recompute=True)
        assert plain.keys() == compact.keys()
        for name in plain:
            assert torch.equal(plain[name], compact[name]), (mode, name)
        assert calls and len(calls) == len(set(map(id, calls)))  # each convolution once
        recomputed = {(m.in_channels, m.kernel_size) for m in calls}
        if mode == "cheap":  # the stem on the image and ResNet-19's 1x1 shortcuts
            expected = {(1, (3, 3))} | ({(c, (1, 1)) for c in (64, 128, 256)} if "model=resnet19" in overrides else
                                        set())
            assert recomputed == expected
    kept = {}
    for mode in ("none", "cheap", "all"):
        cfg = compose_config(["data.batch_size=4", "seed=0", f"recompute_conv={mode}", *overrides], tmp_path / mode)
        torch.manual_seed(0)
        _, module = build(cfg)
        x, y = torch.rand(4, *module.input_shape), torch.arange(4) % module.num_classes
        convolutions = [m for m in module.model.modules() if isinstance(m, torch.nn.Conv2d)]
        work = [m.in_channels * m.kernel_size[0] * m.kernel_size[1] for m in convolutions]
        cheap = [w for w in work if 16 * w <= max(work)]
        kept[mode] = convolution_outputs_kept(module, x, y)
    assert kept["none"] == len(convolutions)
    assert kept["cheap"] == len(convolutions) - len(cheap) and 0 < len(cheap) < len(convolutions)
    assert kept["all"] == 0


def test_recompute_conv_takes_none_cheap_all_or_a_boolean():
    from snnexp.errors import ConfigValueError

    assert [spike_packing.recompute_conv_mode(v) for v in ("none", "Cheap", "all", True, False, "false")] == \
        ["none", "cheap", "all", "all", "none", "none"]
    with pytest.raises(ConfigValueError, match=r"recompute_conv='some'.*none, cheap, all"):
        spike_packing.recompute_conv_mode("some")


def convolution_outputs_kept(module, x, y) -> int:
    """How many convolution outputs autograd keeps as float tensors in one forward of ``module``."""
    kept = []
    pack = module.spike_packing._pack

    def counting(t):
        out = pack(t)
        if isinstance(out, torch.Tensor) and any(k in type(t.grad_fn).__name__ for k in ("Conv", "Winograd")):
            kept.append(out)
        return out

    module.spike_packing._pack = counting
    with module.spike_packing.saving():
        module.method.loss(module(x), y)
    del module.spike_packing._pack
    return len({t.untyped_storage().data_ptr() for t in kept})


def conv_bn_lif(residual: bool):
    from snnexp.models.layers import SeqToBatch
    from snnexp.models.recompute import residual_add
    from snnexp.neurons import LIF

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.pre = LIF(tau=2.0, v_threshold=0.5)
            self.body = SeqToBatch(torch.nn.Sequential(torch.nn.Conv2d(3, 3, 3, padding=1), torch.nn.BatchNorm2d(3)))
            self.sn = LIF(tau=2.0)

        def forward(self, x):
            spikes = self.pre(x)
            out = self.body(spikes)
            return self.sn(residual_add(out, spikes) if residual else out)

    torch.manual_seed(0)
    return Block()


def step_gradients(model, x, packing: SpikePacking | None, edit=None):
    model.zero_grad(set_to_none=True)
    with packing.saving() if packing else contextlib.nullcontext():
        out = model(x)
    if edit is not None:
        edit(model)
    out.square().sum().backward()
    return [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("residual", [False, True])
def test_a_recipe_restores_the_saved_tensor_exactly(residual):
    model = conv_bn_lif(residual)
    x = torch.rand(3, 2, 3, 6, 6, generator=torch.Generator().manual_seed(1), requires_grad=True)
    reference = step_gradients(model, x, None)
    restored = []
    original = spike_packing._Recomputed.restore

    def recording_restore(self):
        restored.append(original(self))
        return restored[-1]

    spike_packing._Recomputed.restore = recording_restore
    try:
        recomputed = step_gradients(model, x, SpikePacking(model, recompute=True, recompute_conv="none"))  # the
        # shortcut's spikes as bits
    finally:
        spike_packing._Recomputed.restore = original
    assert len(restored) == (2 if residual else 1)  # the neuron's input: BN(conv(s)), or that (within) + s
    with torch.no_grad():
        spikes = model.pre(x)
        bn_out = model.body(spikes)
    assert torch.equal(restored[-1], bn_out + spikes if residual else bn_out)
    for a, b in zip(reference, recomputed):
        assert torch.equal(a, b)


def test_a_convolution_run_under_autocast_is_recomputed_under_it():
    """Mixed precision: the recomputed convolution output is the forward's bfloat16 one (not a float32 rerun), so
    the gradients equal those of the plain bfloat16 step bit for bit."""
    model = conv_bn_lif(residual=True)
    x = torch.rand(3, 2, 3, 6, 6, generator=torch.Generator().manual_seed(1), requires_grad=True)
    grads = []
    for packing in (None, SpikePacking(model, recompute=True, recompute_conv="all")):
        model.zero_grad(set_to_none=True)
        with packing.saving() if packing else contextlib.nullcontext(), torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x)
        out.float().square().sum().backward()  # outside autocast, as Lightning runs it
        grads.append([p.grad.clone() for p in model.parameters()])
        if packing:
            packing.remove()
    for a, b in zip(*grads):
        assert torch.equal(a, b)


def test_an_output_changed_in_place_is_kept_as_it_is_and_a_changed_input_is_an_error():
    from snnexp.models import recompute

    bn = torch.nn.BatchNorm1d(4)
    packing = SpikePacking(bn, enabled=False, recompute=True)
    y = torch.randn(8, 4, requires_grad=True)
    with packing.saving():
        z = bn(y)
        assert recompute.recipe_of(z) is not None
        z.mul_(2)  # the recipe no longer describes z
        assert recompute.recipe_of(z) is None and packing._pack(z) is z
        kept = bn(y * 1)
        saved = packing._pack(kept[:, :2])  # a view: restored as the same view of the recomputation
    assert torch.equal(saved.restore(), kept[:, :2])
    with torch.no_grad():
        saved.root.kept[0].add_(1)  # BN's input changed after the forward: recomputing would be wrong
    with pytest.raises(RuntimeError, match="modified in place after the forward"):
        saved.restore()


def test_tags_are_attached_only_while_recording_and_the_switch_removes_the_hooks():
    from snnexp.models.recompute import RECIPE_ATTR, residual_add

    a = torch.randn(3, requires_grad=True)
    assert not hasattr(residual_add(a, a), RECIPE_ATTR)  # outside saving(): nothing would read it
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    assert not SpikePacking(model, enabled=False, recompute=False)._handles
    packing = SpikePacking(model, enabled=False, recompute=True)
    assert len(packing._handles) == 1 and len(model[1]._forward_hooks) == 1
    with packing.saving():
        assert hasattr(residual_add(a, a), RECIPE_ATTR) and hasattr(model(torch.randn(5, 3)), RECIPE_ATTR)
    packing.remove()
    assert not model[1]._forward_hooks


@pytest.mark.parametrize("torch_tensors", [False, True])
def test_the_cpu_buffer_cache_is_emptied_between_forward_and_backward_unless_torch_allocates_from_it(torch_tensors):
    """The forward's freed spikes would sit idle through the backward; as torch's allocator, the cache hands their
    pages to the backward's own tensors instead, so they stay."""
    from snnexp.kernels import cpu
    from snnexp.neurons import LIF

    if not cpu.available():
        pytest.skip("fused CPU path unavailable")
    was = cpu.caches_torch_tensors()
    cpu.cache_torch_tensors(torch_tensors)
    try:
        cpu.empty_cache()
        model = torch.nn.Sequential(LIF(), torch.nn.Linear(2**18, 1))
        x = torch.rand(4, 2, 2**18, requires_grad=True)  # 4 MiB of spikes per step: from the buffer cache
        with SpikePacking(model).saving():
            out = model(x)
            del out
            held = cpu.cache_stats()["cached_bytes"]
            assert held >= 2**22  # the freed spikes went to the cache
        assert cpu.cache_stats()["cached_bytes"] == (held if torch_tensors else 0)
        assert cpu.caches_torch_tensors() == torch_tensors
    finally:
        cpu.cache_torch_tensors(was)
        cpu.empty_cache()


def test_a_batchnorm_whose_class_changes_later_is_not_recomputed():
    """DDP's GlobalBatchNorm changes each BN's class in place (global statistics): the hook registered before must
    not tag its output with a recipe of local statistics."""
    from snnexp.models.recompute import RECIPE_ATTR

    class GlobalStats(torch.nn.BatchNorm1d):
        pass

    bn = torch.nn.BatchNorm1d(4)
    packing = SpikePacking(bn, enabled=False, recompute=True)
    bn.__class__ = GlobalStats
    with packing.saving():
        assert not hasattr(bn(torch.randn(8, 4, requires_grad=True)), RECIPE_ATTR)
