"""The fused neuron kernels compute the torch reference's function.

CPU-only here: every CUDA variant compiles with NVRTC (needs CuPy, no GPU), the shared step math compiled for
the host equals the torch reference for every variant, and the CPU fused path (backend="auto") equals the
reference. GPU tests (marked ``gpu``) compare the CuPy kernels with the reference on a CUDA device.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import warnings

import pytest
import torch

from snnexp.kernels import cpu, sources
from snnexp.neurons import check
from snnexp.kernels.variants import ARCHS, DTYPES, all_variants
from snnexp.neurons import IF, LIF, MLF, PLIF, Ternary
from snnexp.neurons import functional as F
from snnexp.neurons.surrogate import ATan, Dspike, Rectangle, Sigmoid, Triangle

HAS_CUPY = importlib.util.find_spec("cupy") is not None
needs_cupy = pytest.mark.skipif(not HAS_CUPY, reason="CuPy (snnexp[cuda]) is not installed")
needs_host_build = pytest.mark.skipif(not cpu.available(), reason="the CPU extension cannot be built here")


def test_sources_load_from_the_package_with_the_math_header_inlined():
    src = sources.kernel_source()
    assert "multistep_forward" in src and "backward_step" in src
    assert '#include "neuron_math.cuh"' not in src
    assert sources.read("neuron_math.cuh").count("__host__ __device__") >= 1


def test_every_variant_is_enumerated_once():
    variants = all_variants()
    assert len(variants) == len(set(variants)) == 120 * len(DTYPES)
    assert not any(v.kind == "if" and v.decay_input for v in variants)
    assert sum(v.kind in ("ternary", "mlf") for v in variants) == 20 * len(DTYPES)
    ternary = next(v for v in variants if v.kind == "ternary" and v.detach_reset and v.surrogate == "rectangle")
    assert ternary.name_expressions == ("snn::ternary_forward<float>", "snn::ternary_backward<float, true, 3>")


@needs_cupy
@pytest.mark.parametrize("arch", ARCHS)
def test_every_variant_compiles_with_nvrtc(arch):
    results = check.check_nvrtc(all_variants(), archs=(arch,))
    failed = [f"{r.variant.label}: {r.detail}" for r in results if not r.ok]
    assert len(results) == len(all_variants()) and not failed, failed[:5]


@needs_host_build
def test_host_compiled_step_math_equals_torch_reference_for_every_variant():
    results = check.check_host(all_variants(dtypes=(torch.float32,)))
    failed = [f"{r.variant.label}: {r.detail}" for r in results if not r.ok]
    assert len(results) == 120 and not failed, failed[:5]


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
    del s3
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


@needs_host_build
def test_check_command_prints_a_table_and_passes():
    args = [sys.executable, "-m", "snnexp.neurons", "--check"] + ([] if HAS_CUPY else ["--no-nvrtc"])
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "lif/hard/attach/decay_input/sigmoid/float32" in proc.stdout
    assert "checks passed" in proc.stdout


def test_cupy_available_is_false_with_the_import_error_kept_when_cupy_fails(monkeypatch):
    import snnexp.kernels as kernels

    def broken(name):
        raise ImportError(f"libcudart.so.13: cannot open shared object file (importing {name})")

    monkeypatch.setattr(kernels, "import_module", broken)
    kernels.cupy_available.cache_clear()
    try:
        assert kernels.cupy_available() is False
        assert "libcudart" in str(kernels.cupy_import_error())
    finally:
        kernels.cupy_available.cache_clear()


def test_custom_ops_have_fake_impls_and_autograd_routing_dl_dk_to_plif():
    from snnexp.kernels import cupy_ops
    from snnexp.kernels.variants import variant_for

    for kind, k in (("lif", None), ("plif", torch.tensor(0.4, device="meta", requires_grad=True))):
        x = torch.randn(4, 2, 7, device="meta", requires_grad=True)
        variant = variant_for(kind, 0.0, False, True, Sigmoid(), x.dtype)
        k_param = k if k is not None else x.new_empty(())
        s, h = torch.ops.snnexp.neuron_forward(x.reshape(4, -1), k_param, cupy_ops.encode(variant), 0.5, 1.0, 0.0,
                                               4.0, 1.0)
        assert s.shape == h.shape == (4, 14)
        s.sum().backward()
        assert x.grad.shape == x.shape
        assert kind == "lif" or k.grad is not None


def test_ternary_and_multilevel_ops_have_fake_impls_and_autograd():
    from snnexp.kernels import cupy_ops
    from snnexp.kernels.variants import level_variant

    x = torch.randn(4, 2, 7, device="meta", requires_grad=True)
    code = cupy_ops.encode(level_variant("ternary", False, Rectangle(), x.dtype))
    assert cupy_ops.decode(code, x.dtype) == level_variant("ternary", False, Rectangle(), x.dtype)
    s, h = torch.ops.snnexp.ternary_forward(x.reshape(4, -1), code, 0.25, 0.5, 1.0, 1.0)
    assert s.shape == h.shape == (4, 14)
    s.sum().backward()
    assert x.grad.shape == x.shape
    x.grad = None
    code = cupy_ops.encode(level_variant("mlf", True, Rectangle(), x.dtype))
    out, h = torch.ops.snnexp.multilevel_forward(x.reshape(4, -1), code, 3, 0.25, 0.6, 1.0, 1.0, 1.0)
    assert out.shape == (4, 14) and h.shape == (3, 4, 14)
    out.sum().backward()
    assert x.grad.shape == x.shape


def _kernel_signatures() -> dict[str, list[str]]:
    """Each kernel's parameter types from neuron_kernels.cu, as the CuPy scalar type its argument must have."""
    import re

    found = {}
    for name, params in re.findall(r"__global__ void __launch_bounds__\(SNN_BLOCK\) (\w+)\((.*?)\)\s*\{",
                                   sources.read("neuron_kernels.cu"), re.S):
        kinds = []
        for param in params.split(","):
            kinds.append("uint64" if "*" in param else "int64" if "long long" in param
                         else "int32" if "int " in param else "float32")
        found[name] = kinds
    return found


def test_every_op_launches_its_kernel_with_the_argument_types_of_the_cuda_signature(monkeypatch):
    """The GPU path without a GPU: run each custom op with a recording stand-in for CuPy and compare the kernel
    arguments (pointer / int32 / int64 / float32, in order) with the parameter list in neuron_kernels.cu."""
    import contextlib
    import types

    from snnexp.kernels import cupy_ops
    from snnexp.kernels.variants import level_variant, variant_for

    typed = lambda kind: (lambda value: (kind, value))  # noqa: E731
    fake = types.SimpleNamespace(uint64=typed("uint64"), int32=typed("int32"), int64=typed("int64"),
                                 float32=typed("float32"), cuda=types.SimpleNamespace(
                                     Device=lambda index: contextlib.nullcontext(),
                                     ExternalStream=lambda ptr, index: None))
    launched = []

    def kernels(variant, index):
        names = [n.split("<")[0].removeprefix("snn::") for n in variant.name_expressions]
        return tuple((lambda grid, block, args, stream=None, name=name: launched.append((name, grid, args)))
                     for name in names)

    monkeypatch.setattr(cupy_ops, "_cupy", lambda: fake)
    monkeypatch.setattr(cupy_ops, "kernels", kernels)
    monkeypatch.setattr(cupy_ops, "_index", lambda device: 0)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda index: types.SimpleNamespace(cuda_stream=0))
    x = torch.randn(3, 600)
    lif = cupy_ops.encode(variant_for("plif", 0.0, False, True, Sigmoid(), x.dtype))
    s, h = cupy_ops.neuron_forward(x, torch.tensor(0.5), lif, 0.5, 1.0, 0.0, 4.0, 1.0)
    cupy_ops.neuron_backward(x, h, x, lif, 0.5, 1.0, 0.0, 4.0, 1.0)
    ternary = cupy_ops.encode(level_variant("ternary", False, Rectangle(), x.dtype))
    s, h = cupy_ops.ternary_forward(x, ternary, 0.25, 0.5, 1.0, 1.0)
    cupy_ops.ternary_backward(x, h, ternary, 0.25, 0.5, 1.0, 1.0)
    mlf = cupy_ops.encode(level_variant("mlf", True, Rectangle(), x.dtype))
    out, h = cupy_ops.multilevel_forward(x, mlf, 3, 0.25, 0.6, 1.0, 1.0, 1.0)
    assert h.shape == (3, 3, 600)
    cupy_ops.multilevel_backward(x, h, mlf, 3, 0.25, 0.6, 1.0, 1.0, 1.0)

    signatures = _kernel_signatures()
    assert len(signatures) == 6 and [name for name, _, _ in launched] == [
        "multistep_forward", "multistep_backward", "ternary_forward", "ternary_backward", "multilevel_forward",
        "multilevel_backward"]
    for name, grid, args in launched:
        assert [kind for kind, _ in args] == signatures[name], name
        assert grid == ((600 + cupy_ops.BLOCK - 1) // cupy_ops.BLOCK,)
        ints = [value for kind, value in args if kind in ("int32", "int64")]
        assert ints[:2] == [3, 600], name  # T, then N
    assert launched[4][2][5] == ("int32", 3)  # levels, after the pointers, T and N
    assert launched[1][2][2][1] == x.data_ptr()  # PLIF with decay_input reads X


# ------------------------------------------------------------------------------------------------- GPU


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("variant_index", range(0, 100, 7))
@pytest.mark.gpu
@pytest.mark.skipif(not (torch.cuda.is_available() and HAS_CUPY), reason="needs a CUDA device and CuPy")
def test_cupy_kernels_equal_torch_reference_on_gpu(dtype, variant_index):
    from snnexp.neurons.surrogate import SURROGATES

    variant = [v for v in all_variants() if v.dtype == dtype][variant_index]
    torch.manual_seed(variant_index)
    shape = (5, 3, 1001)  # odd size, several blocks
    x = (torch.randn(shape, device="cuda") * 1.5 + 0.5).to(dtype)
    x = x.transpose(1, 2).contiguous().transpose(1, 2)  # non-contiguous
    grad = torch.randn(shape, device="cuda").to(dtype)
    k = {"if": None, "lif": 0.4, "plif": torch.tensor(0.45, device="cuda")}[variant.kind]
    v_reset = 0.1 if variant.hard_reset else None
    sg = SURROGATES[variant.surrogate]()
    outs = []
    for backend in ("torch", "cupy"):
        xi = x.detach().clone().requires_grad_()
        ki = k.clone().requires_grad_() if isinstance(k, torch.Tensor) else k
        s = F.multistep_neuron(xi, ki, 1.0, v_reset, variant.decay_input, variant.detach_reset, sg, backend=backend)
        s.backward(grad)
        outs.append((s, xi.grad, ki.grad if isinstance(ki, torch.Tensor) else None))
    (s_ref, gx_ref, gk_ref), (s, gx, gk) = outs
    if dtype == torch.float32:
        assert torch.equal(s, s_ref)
        assert float((gx - gx_ref).abs().max() / gx_ref.abs().max()) < 1e-5
    else:  # half types: fp32 state vs the reference's per-op rounding; a few spikes may flip at the threshold
        assert float((s != s_ref).float().mean()) < 1e-2
    if gk_ref is not None and dtype == torch.float32:
        torch.testing.assert_close(gk, gk_ref, rtol=1e-4, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not (torch.cuda.is_available() and HAS_CUPY), reason="needs a CUDA device and CuPy")
def test_cupy_neuron_works_under_torch_compile_and_keeps_the_current_device():
    lif = LIF(tau=2.0, backend="cupy")
    x = torch.randn(4, 2, 300, device="cuda", requires_grad=True)
    device = torch.cuda.current_device()
    compiled = torch.compile(lif, fullgraph=True)
    s = compiled(x)
    s.sum().backward()
    assert torch.cuda.current_device() == device
    assert torch.equal(s, LIF(tau=2.0, backend="torch")(x))
    torch.library.opcheck(torch.ops.snnexp.neuron_forward.default,
                          (x.detach().reshape(4, -1), torch.zeros((), device="cuda"), 8, 0.5, 1.0, 0.0, 4.0, 1.0))


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("kind", ["ternary", "mlf"])
@pytest.mark.gpu
@pytest.mark.skipif(not (torch.cuda.is_available() and HAS_CUPY), reason="needs a CUDA device and CuPy")
def test_cupy_ternary_and_multilevel_equal_the_unrolled_reference_on_gpu(kind, dtype):
    from snnexp.neurons.surrogate import SURROGATES

    for i, (surrogate, detach) in enumerate((s, d) for s in SURROGATES for d in (False, True)):
        torch.manual_seed(i)
        shape = (5, 3, 1001)
        x = (torch.randn(shape, device="cuda") * 1.5 + 0.3).to(dtype)
        x = x.transpose(1, 2).contiguous().transpose(1, 2)  # non-contiguous
        grad = torch.randn(shape, device="cuda").to(dtype)
        outs = []
        for backend in ("torch", "cupy"):
            make = Ternary if kind == "ternary" else MLF
            neuron = make(detach_reset=detach, surrogate=SURROGATES[surrogate](), backend=backend).to("cuda")
            if dtype == torch.float32:  # reference in float32 for half inputs: it keeps float32 state like the kernels
                xi = x.detach().clone().requires_grad_()
            else:
                xi = x.detach().float().requires_grad_()
            s = neuron(xi if backend == "torch" else xi.to(dtype))
            s.float().backward(grad.float())
            outs.append((s.float(), xi.grad))
        (s_ref, gx_ref), (s, gx) = outs
        if dtype == torch.float32:
            assert torch.equal(s, s_ref), (surrogate, detach)
            assert float((gx - gx_ref).abs().max() / gx_ref.abs().max()) < 1e-5, (surrogate, detach)
        else:  # storage rounding of H: a few spikes may flip at a threshold
            assert float((s != s_ref).float().mean()) < 1e-2, (surrogate, detach)


@pytest.mark.gpu
@pytest.mark.skipif(not (torch.cuda.is_available() and HAS_CUPY), reason="needs a CUDA device and CuPy")
def test_cupy_ternary_and_multilevel_handle_t1_and_work_under_torch_compile():
    x = torch.randn(1, 2, 333, device="cuda") * 2
    for make in (Ternary, MLF):
        assert torch.equal(make(backend="cupy").cuda()(x), make(backend="torch").cuda()(x))
        compiled = torch.compile(make(backend="cupy").cuda(), fullgraph=True)
        xi = torch.randn(4, 2, 300, device="cuda", requires_grad=True)
        compiled(xi).sum().backward()
        assert xi.grad is not None
