"""The CuPy custom ops (snnexp/kernels/cupy_ops.py). Without a GPU: fake implementations and autograd on the meta
device, and every op launching its kernel with the argument types of the CUDA signature (a recording stand-in for
CuPy). GPU tests (marked ``gpu``) compare the CuPy kernels with the torch reference on a CUDA device."""

from __future__ import annotations

import pytest
import torch

from helpers.markers import needs_cuda_and_cupy
from snnexp.kernels import sources
from snnexp.kernels.variants import DTYPES, all_variants
from snnexp.neurons import LIF, MLF, Ternary
from snnexp.neurons import functional as F
from snnexp.neurons.surrogate import Rectangle, Sigmoid


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

    signatures = _kernel_signatures()  # of every declared neuron (2 kernels each), these six among them
    assert {name for name, _, _ in launched} <= set(signatures) and [name for name, _, _ in launched] == [
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
@needs_cuda_and_cupy
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
@needs_cuda_and_cupy
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
@needs_cuda_and_cupy
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
@needs_cuda_and_cupy
def test_cupy_ternary_and_multilevel_handle_t1_and_work_under_torch_compile():
    x = torch.randn(1, 2, 333, device="cuda") * 2
    for make in (Ternary, MLF):
        assert torch.equal(make(backend="cupy").cuda()(x), make(backend="torch").cuda()(x))
        compiled = torch.compile(make(backend="cupy").cuda(), fullgraph=True)
        xi = torch.randn(4, 2, 300, device="cuda", requires_grad=True)
        compiled(xi).sum().backward()
        assert xi.grad is not None
