"""The fused CPU neuron path (snnexp/kernels/cpu.py, backend="auto" on CPU) equals the torch reference: LIF / IF /
PLIF, ternary and multi-level neurons, T = 1 and non-contiguous inputs, the output-buffer cache (also as torch's CPU
allocator), and the fallback with one warning without a C++ compiler."""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import sys
import warnings

import pytest
import torch

from helpers.markers import needs_host_build
from snnexp.kernels import cpu
from snnexp.neurons import IF, LIF, MLF, PLIF, Ternary
from snnexp.neurons import functional as F
from snnexp.neurons.surrogate import ATan, Dspike, Sigmoid, Triangle


def _compare(neuron_factory, shape=(7, 4, 33), seed=0):
    torch.manual_seed(seed)
    x = torch.randn(shape) * 1.5 + 0.5
    grad = torch.randn(shape)
    outs = []
    for backend in ("torch", "auto"):
        torch.manual_seed(seed)
        neuron = neuron_factory(backend)
        xi = x.clone().requires_grad_()
        s = neuron(xi)
        s.backward(grad)
        params = [p.grad.clone() for p in neuron.parameters()]
        outs.append((s.detach(), xi.grad, params))
    return outs


@needs_host_build
@pytest.mark.parametrize(
    "factory",
    [
        lambda b: LIF(tau=2.0, backend=b),
        lambda b: LIF(tau=3.0, v_reset=None, decay_input=False, surrogate=ATan(), backend=b),
        lambda b: IF(v_reset=None, detach_reset=True, backend=b),
        lambda b: PLIF(tau=2.5, surrogate=Dspike(alpha=2.0, width=0.8), backend=b),
        lambda b: PLIF(tau=2.0, v_reset=None, decay_input=False, backend=b),
    ],
    ids=["lif", "lif-soft-atan", "if-soft-detach", "plif-dspike", "plif-soft-decay_v"],
)
def test_cpu_fused_path_equals_torch_reference(factory):
    (s_ref, gx_ref, gp_ref), (s, gx, gp) = _compare(factory)
    assert torch.equal(s, s_ref)
    torch.testing.assert_close(gx, gx_ref, rtol=1e-5, atol=1e-6)
    for a, b in zip(gp, gp_ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@needs_host_build
def test_auto_on_cpu_uses_the_fused_path_for_float32_and_the_reference_otherwise():
    x = torch.randn(3, 5, requires_grad=True)
    s = F.multistep_neuron(x, 0.5, 1.0, 0.0, True, False, Sigmoid(), backend="auto")
    assert type(s.grad_fn).__name__.startswith("FusedCpuNeuron")
    s = F.multistep_neuron(x.double(), 0.5, 1.0, 0.0, True, False, Sigmoid(), backend="auto")
    assert type(s.grad_fn).__name__.startswith("MultiStepNeuronFunction")
    s = F.multistep_neuron(x, 0.5, 1.0, 0.0, True, False, Sigmoid(), backend="torch")
    assert type(s.grad_fn).__name__.startswith("MultiStepNeuronFunction")


@needs_host_build
def test_cpu_fused_path_handles_t1_and_non_contiguous_inputs():
    x = torch.randn(9, 6, 4).transpose(1, 2)[:1]  # T=1, non-contiguous
    ref = F.multistep_torch(x, 0.5, 1.0, 0.0, True, False, Sigmoid())
    got = cpu.multistep_neuron(x, 0.5, 1.0, 0.0, True, False, Sigmoid())
    assert torch.equal(ref, got)
    assert got.shape == x.shape


@needs_host_build
@pytest.mark.parametrize(
    "factory",
    [
        lambda b: Ternary(backend=b),
        lambda b: Ternary(decay=0.5, v_threshold=0.8, amplitude=1.7, detach_reset=True, surrogate=Sigmoid(), backend=b),
        lambda b: MLF(backend=b),
        lambda b: MLF(levels=8, level_spacing=0.4, decay=0.6, detach_reset=True, surrogate=Triangle(0.5), backend=b),
    ],
    ids=["ternary", "ternary-sigmoid-detach", "mlf", "mlf-8-levels-triangle"],
)
def test_cpu_fused_ternary_and_multilevel_equal_the_unrolled_reference(factory):
    (s_ref, gx_ref, gp_ref), (s, gx, gp) = _compare(factory, shape=(9, 3, 301))
    assert torch.equal(s, s_ref)
    assert (s_ref < 0).any() or isinstance(factory("torch"), MLF)  # ternary: both signs are exercised
    assert float((gx - gx_ref).abs().max() / gx_ref.abs().max()) < 1e-5  # float rounding, relative to the scale
    for a, b in zip(gp, gp_ref):  # the ternary amplitude
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@needs_host_build
def test_ternary_and_multilevel_take_the_fused_path_only_where_it_applies(monkeypatch):
    x = torch.randn(4, 2, 9)
    assert type(Ternary()(x.requires_grad_()).grad_fn.next_functions[0][0]).__name__.startswith("FusedCpuTernary")
    assert type(MLF()(x).grad_fn).__name__.startswith("FusedCpuMultiLevel")
    monkeypatch.setattr(cpu, "multilevel", lambda *a: pytest.fail("9 levels must run on the reference"))
    monkeypatch.setattr(cpu, "ternary", lambda *a: pytest.fail("float64 / backend=torch must run on the reference"))
    MLF(levels=9)(x)
    Ternary()(x.double())
    Ternary(backend="torch")(x)


@needs_host_build
def test_cpu_fused_ternary_and_multilevel_handle_t1_and_non_contiguous_inputs():
    x = (torch.randn(9, 6, 4) * 2).transpose(1, 2)[:1]  # T=1, non-contiguous
    for make in (Ternary, MLF):
        assert torch.equal(make(backend="torch")(x), make(backend="auto")(x))


@pytest.fixture
def torch_allocator():
    """torch's own CPU allocator for the test (an earlier test's ``build`` may have made the cache torch's), then
    whichever was there before."""
    was = cpu.cache_stats()["torch_tensors"]
    cpu.cache_torch_tensors(False)
    yield
    cpu.cache_torch_tensors(bool(was))


@needs_host_build
def test_cpu_outputs_reuse_freed_buffers_without_clobbering_live_ones(torch_allocator):
    cpu.empty_cache()
    lif = LIF(tau=2.0)
    x = torch.randn(4, 512, 256)  # 2 MiB outputs: pooled
    s1 = lif(x)
    first = s1.clone()
    reused = cpu.cache_stats()["reused"]
    s2 = lif(x * 0.5)  # s1 is alive: s2 must get another buffer
    assert s1.data_ptr() != s2.data_ptr() and torch.equal(s1, first)
    ptr = s2.data_ptr()
    del s2
    assert cpu.cache_stats()["cached_bytes"] == x.numel() * 4
    s3 = lif(x)
    assert s3.data_ptr() == ptr and cpu.cache_stats()["reused"] == reused + 1
    assert torch.equal(s3, first)
    del s1, s3  # two free buffers of one size: the cache keeps one (a second would mostly sit idle)
    assert cpu.cache_stats()["cached_bytes"] == x.numel() * 4 and cpu.cache_stats()["cached_buffers"] == 1
    cpu.empty_cache()
    assert cpu.cache_stats()["cached_bytes"] == 0


@needs_host_build
def test_cached_empty_tensors_come_from_and_return_to_the_cache(torch_allocator):
    """Winograd's outputs and recomputed BN outputs: a large tensor made anew at every step reuses a freed one."""
    assert cpu.available()  # loaded: the cache hands out buffers only then
    cpu.empty_cache()
    first = cpu.cached_empty((4, 512, 256))  # 2 MiB
    assert first.shape == (4, 512, 256) and first.dtype == torch.float32 and first.is_contiguous()
    ptr, reused = first.data_ptr(), cpu.cache_stats()["reused"]
    del first
    assert cpu.cache_stats()["cached_bytes"] == 4 * 512 * 256 * 4
    second = cpu.cached_empty((512, 4, 256))  # the same size, another shape
    assert second.data_ptr() == ptr and cpu.cache_stats()["reused"] == reused + 1
    small = cpu.cached_empty((3, 5))  # under 1 MiB: torch's allocator
    assert small.shape == (3, 5)
    del second, small
    cpu.empty_cache()
    assert cpu.cache_stats()["cached_bytes"] == 0


@needs_host_build
def test_scratch_buffers_go_back_to_the_cache_between_calls(torch_allocator, monkeypatch):
    """Winograd's tiles and the im2col columns: with the extension loaded a work buffer comes from the cache and
    returns to it when dropped (its pages free for other tensors between calls); before the extension is loaded, a
    thread's buffer per slot is kept between calls and grown when too small."""
    assert cpu.available()
    cpu.empty_cache()
    work = cpu.scratch("tiles", 1 << 20)  # 4 MiB
    ptr, reused = work.data_ptr(), cpu.cache_stats()["reused"]
    assert work.shape == (1 << 20,) and work.dtype == torch.float32
    del work
    assert cpu.cache_stats()["cached_bytes"] == 4 << 20
    again = cpu.scratch("columns", 1 << 20)
    assert again.data_ptr() == ptr and cpu.cache_stats()["reused"] == reused + 1
    del again
    cpu.empty_cache()

    class NotLoaded:
        @staticmethod
        def cache_info():
            return functools._CacheInfo(0, 0, 1, 0)

    monkeypatch.setattr(cpu, "extension", NotLoaded)
    first = cpu.scratch("tiles", 1000)
    kept = first.data_ptr()
    del first
    assert cpu.scratch("tiles", 800).data_ptr() == kept  # kept, and a smaller request fits
    assert cpu.scratch("columns", 800).data_ptr() != kept  # another slot, another buffer
    assert cpu.scratch("tiles", 5000).numel() == 5000  # grown


@needs_host_build
def test_torch_tensors_come_from_the_cache_while_it_is_torchs_allocator(torch_allocator):
    """cache_torch_tensors(): every torch CPU tensor of 1 MiB and more reuses a freed buffer of its size; smaller ones
    and everything after cache_torch_tensors(False) are c10's as before."""
    cpu.empty_cache()
    cpu.cache_torch_tensors()
    assert cpu.cache_stats()["torch_tensors"] == 1
    first = torch.ones(512, 1024)  # 2 MiB, made by torch itself
    ptr, reused = first.data_ptr(), cpu.cache_stats()["reused"]
    del first
    assert cpu.cache_stats()["cached_bytes"] == 2**21
    second = torch.full((1024, 512), 3.0)  # the same size
    assert second.data_ptr() == ptr and cpu.cache_stats()["reused"] == reused + 1
    assert second.sum().item() == 3.0 * 2**19 and cpu.cache_stats()["cached_bytes"] == 0
    small = torch.ones(100, 100)  # 40 KB: c10's allocator, not counted
    del small
    grown = torch.empty(0)
    grown.resize_(3 * 2**18)  # 3 MiB: a storage that grows asks the allocator it was made by
    grown.fill_(1.0)
    assert grown.sum().item() == 3 * 2**18
    cpu.cache_torch_tensors(False)
    assert cpu.cache_stats()["torch_tensors"] == 0
    del second, grown  # made by the cache, freed after the switch: back to the cache
    assert cpu.cache_stats()["cached_bytes"] == 2**21 + 3 * 2**20
    reused = cpu.cache_stats()["reused"]
    third = torch.ones(512, 1024)  # torch's allocator again
    assert cpu.cache_stats()["reused"] == reused
    del third
    cpu.empty_cache()
    assert cpu.cache_stats()["cached_bytes"] == 0


@needs_host_build
def test_convolution_and_batch_norm_steps_are_equal_with_the_cache_as_torchs_allocator(torch_allocator):
    """oneDNN's convolution, BN and their backward (scratch buffers, outputs, input gradients) through the cache
    give bit-identical results to torch's allocator, over repeated steps that reuse the buffers."""
    torch.manual_seed(0)
    conv, bn = torch.nn.Conv2d(16, 32, 3, stride=2, padding=1), torch.nn.BatchNorm2d(32)
    x = torch.randn(32, 16, 40, 40)

    def steps():
        results = []
        for scale in (1.0, -0.5, 2.0):
            xi = (x * scale).requires_grad_()
            out = bn(conv(xi)).relu()
            out.square().sum().backward()
            results.append([out.detach().clone(), xi.grad.clone(), conv.weight.grad.clone(), bn.weight.grad.clone()])
            conv.zero_grad(set_to_none=True)
            bn.zero_grad(set_to_none=True)
        return results

    reference = steps()
    cpu.cache_torch_tensors()
    cached = steps()
    assert cpu.cache_stats()["reused"] > 0
    for ref, got in zip(reference, cached):
        assert all(torch.equal(a, b) for a, b in zip(ref, got))


BUDGET_CHILD = """
import json, torch
from snnexp.kernels import cpu
cpu.cache_torch_tensors()
MiB = 2**20
a, b = torch.empty(MiB), torch.empty(MiB)  # two live 4 MiB blocks
a.fill_(1.0)
b.fill_(2.0)
del a, b  # both cached: 8 MiB
stats = [cpu.cache_stats()]
c = torch.empty(3 * MiB // 2)  # 6 MiB, no cached block of its size
stats.append(cpu.cache_stats())
values = [c[0].item(), c[MiB - 1].item(), c[MiB].item(), c[-1].item()]
del c
stats.append(cpu.cache_stats())
print(json.dumps({"stats": stats, "values": values}))
"""


@needs_host_build
@pytest.mark.skipif(sys.platform != "linux", reason="pages move between blocks with Linux's mremap")
def test_a_block_of_a_new_size_takes_the_oldest_cached_blocks_pages():
    """A new size gets its pages from the oldest cached blocks (moved with their contents, so nothing faults in
    afresh and the process does not grow): a 6 MiB block after two freed 4 MiB ones holds the first one's pages and
    half the second's; the rest of the second stays cached (a fresh process, so that no earlier test's blocks count)."""
    proc = subprocess.run([sys.executable, "-c", BUDGET_CHILD], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    held, during, after = result["stats"]
    MiB = 2**20
    assert held["cached_bytes"] == 8 * MiB and held["peak_live_bytes"] == 8 * MiB and held["live_bytes"] == 0
    assert during["live_bytes"] == 6 * MiB and during["cached_bytes"] == 2 * MiB  # the second block's tail
    assert during["moved_bytes"] - held["moved_bytes"] == 6 * MiB
    assert result["values"] == [1.0, 1.0, 2.0, 2.0]  # the pages moved, contents and all
    assert after["cached_bytes"] == 8 * MiB and after["peak_live_bytes"] == 8 * MiB


def test_cpu_path_falls_back_with_one_warning_without_a_compiler(monkeypatch):
    monkeypatch.setattr(cpu, "extension", lambda: (_ for _ in ()).throw(RuntimeError("no C++ compiler")))
    cpu.available.cache_clear()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            x = torch.randn(4, 3)
            assert not cpu.supports(x, 0.5, Sigmoid())
            assert not cpu.supports(x, 0.5, Sigmoid())  # cached: warned once
            s = F.multistep_neuron(x, 0.5, 1.0, 0.0, True, False, Sigmoid(), backend="auto")
        assert torch.equal(s, F.multistep_torch(x, 0.5, 1.0, 0.0, True, False, Sigmoid()))
        messages = [str(w.message) for w in caught if "fused CPU neuron kernels" in str(w.message)]
        assert len(messages) == 1 and "no C++ compiler" in messages[0]
    finally:
        cpu.available.cache_clear()
