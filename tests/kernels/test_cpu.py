"""The fused CPU neuron path (snnexp/kernels/cpu.py, backend="auto" on CPU) equals the torch reference: LIF / IF /
PLIF, ternary and multi-level neurons, T = 1 and non-contiguous inputs, the output-buffer cache, and the fallback
with one warning without a C++ compiler."""

from __future__ import annotations

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


@needs_host_build
def test_cpu_outputs_reuse_freed_buffers_without_clobbering_live_ones():
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
def test_cached_empty_tensors_come_from_and_return_to_the_cache():
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
