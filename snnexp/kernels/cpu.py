"""The CPU fused path: ``cuda/neuron_cpu.cpp`` (the loops of ``cuda/neuron_host.cuh`` over the kernels' per-step
math) built as a PyTorch C++ extension, for LIF / IF / PLIF, the ternary and the multi-level neurons.

One pass over ``[T, N]`` per direction, parallel over neurons (``at::parallel_for``, so ``torch.set_num_threads``
applies), float32 only. It saves the input ``X`` (the caller's tensor, no copy) and no ``H``: the backward
recomputes ``H`` for each chunk of neurons into a small cache-resident buffer, so the forward allocates and
writes only the spikes. Outputs of 1 MiB and more come from a cache of freed buffers (at most
``SNNEXP_CPU_CACHE_MB``, default 1024 MiB; :func:`empty_cache` frees it), because a fresh large allocation
page-faults on every 4 KiB page and that costs more than the neuron itself. It computes the torch reference's
function: spikes bit-identical, gradients equal up to float rounding (tests).

The build is cached in torch's extension directory (``TORCH_EXTENSIONS_DIR``) under a name that hashes the
sources, flags, torch, Python and include paths (:func:`build_name`), and loaded once per process; a first build
says so on stderr. Without a working C++ compiler :func:`available` is False, one warning says why, and
the neurons use the eager torch reference.
"""

from __future__ import annotations

import functools
import os
import platform
import warnings

import torch

from snnexp.kernels import sources
from snnexp.kernels.variants import KINDS, SURROGATE_KINDS, has_kernel, surrogate_scalars


# IEEE float semantics are kept (no -ffast-math, no FMA contraction: spikes equal the reference bit for bit);
# -fno-trapping-math only lets GCC if-convert the Heaviside so that the loops over neurons vectorize.
# -fno-math-errno likewise lets the surrogate's expf vectorize (glibc's libmvec on x86-64 Linux).
# -fopenmp: at::parallel_for is a header template that runs its OpenMP region in this translation unit.
_LIBMVEC = platform.system() == "Linux" and platform.machine() == "x86_64" and platform.libc_ver()[0] == "glibc"
# -march=native: the extension is built on the machine that runs it, at first use.
CFLAGS = ("-O3", "-march=native", "-ffp-contract=off", "-fno-trapping-math", "-fno-math-errno", "-fopenmp") + (
    ("-DSNN_LIBMVEC",) if _LIBMVEC else ()
)
LDFLAGS = ("-fopenmp",) + (("-lmvec",) if _LIBMVEC else ())


def build_name(cuda_dir) -> str:
    """The extension's name, which is also its build directory under torch's extension root: it hashes everything
    that makes one build differ from another (the sources, the flags, torch's version and C++ ABI, the Python, and
    the include paths, which differ between virtual environments), so two environments or checkouts never share,
    and so never rebuild, each other's build."""
    import hashlib
    import sys

    from torch.utils import cpp_extension

    parts = [sources.digest(sources.MATH_HEADER, sources.HOST_HEADER, sources.CPU_SOURCE), *CFLAGS, *LDFLAGS,
             torch.__version__, str(torch._C._GLIBCXX_USE_CXX11_ABI), sys.version, str(cuda_dir),
             *cpp_extension.include_paths()]
    return "snnexp_neurons_cpu_" + hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def _built(name: str) -> bool:
    """Whether a finished build of ``name`` is already in torch's extension directory."""
    from torch.utils import cpp_extension

    try:
        directory = cpp_extension._get_build_directory(name, verbose=False)
    except Exception:  # a private helper of torch: if it changes, just announce the build
        return False
    return any(f.startswith(name) and f.endswith((".so", ".pyd")) for f in os.listdir(directory))


@functools.cache
def extension():
    """Build (or load from the cache) and import the extension; raises if it cannot be built. Processes that
    start together build once: torch's lock in the build directory makes the others wait for the first."""
    import sys

    from torch.utils import cpp_extension

    with sources.source_dir() as cuda_dir:
        name = build_name(cuda_dir)
        if not _built(name):
            print("snnexp: building the fused CPU neuron kernels for this environment, once (about a minute on 2 "
                  "cores); later runs load them from torch's extension cache", file=sys.stderr, flush=True)
        module = cpp_extension.load(
            name=name,
            sources=[str(cuda_dir / sources.CPU_SOURCE)],
            extra_include_paths=[str(cuda_dir)],
            extra_cflags=list(CFLAGS),
            extra_ldflags=list(LDFLAGS),
            verbose=bool(os.environ.get("SNNEXP_VERBOSE_BUILD")),
        )
    module.pool_set_cap(int(float(os.environ.get("SNNEXP_CPU_CACHE_MB", "1024")) * 2**20))
    return module


def empty_cache() -> None:
    """Free the cached output buffers of the CPU path (like ``torch.cuda.empty_cache``)."""
    if available():
        extension().pool_release()


def cache_stats() -> dict[str, int]:
    """The output-buffer cache: bytes and buffers held free, its cap in bytes, and how many outputs reused one."""
    cached, buffers, cap, reused = extension().pool_stats()
    return {"cached_bytes": cached, "cached_buffers": buffers, "cap_bytes": cap, "reused": reused}


@functools.cache
def available() -> bool:
    """True when the extension builds and loads here; otherwise one warning with the reason, and False."""
    if os.environ.get("SNNEXP_NO_CPU_KERNELS"):
        return False
    try:
        extension()
    except Exception as error:  # no compiler, no headers, ninja missing, ...
        warnings.warn(
            f"snnexp: the fused CPU neuron kernels could not be built ({type(error).__name__}: "
            f"{str(error).strip().splitlines()[-1] if str(error).strip() else error}); using the eager torch "
            "reference instead (slower). Install a C++ compiler (g++) and ninja to enable them, or set "
            "SNNEXP_NO_CPU_KERNELS=1 to silence this.",
            RuntimeWarning,
            stacklevel=3,
        )
        return False
    return True


def kind_of(k) -> str:
    if k is None:
        return "if"
    return "plif" if isinstance(k, torch.Tensor) else "lif"


def supports(x_seq: torch.Tensor, k, surrogate) -> bool:
    """Whether the fused CPU path handles this call (float32 CPU tensors, a known surrogate, k not a graph)."""
    return (
        x_seq.device.type == "cpu"
        and x_seq.dtype == torch.float32
        and x_seq.dim() >= 1
        and x_seq.numel() > 0
        and has_kernel(x_seq.dtype, surrogate)
        and not torch.compiler.is_compiling()
        and available()
    )


def _as_rows(x_seq: torch.Tensor) -> torch.Tensor:
    """``[T, ...] -> [T, N]`` contiguous float32 (no copy when it already is)."""
    return x_seq.detach().reshape(x_seq.shape[0], -1).contiguous()


def _surrogate_args(surrogate) -> tuple[int, float, float]:
    return (SURROGATE_KINDS[surrogate.name], *surrogate_scalars(surrogate))


class FusedCpuNeuron(torch.autograd.Function):
    """Multi-step LIF / IF / PLIF on the CPU: the fused counterpart of ``MultiStepNeuronFunction``."""

    @staticmethod
    def forward(ctx, x_seq, k, v_threshold, v_reset, decay_input, detach_reset, surrogate):
        kind = kind_of(k)
        decay_input = bool(decay_input) and kind != "if"
        k_value = 0.0 if k is None else float(k.detach().float().item() if kind == "plif" else k)
        shape = x_seq.shape
        x2 = _as_rows(x_seq)
        s = extension().forward(
            x2, KINDS[kind], decay_input, v_reset is not None, k_value, float(v_threshold),
            0.0 if v_reset is None else float(v_reset),
        )
        ctx.meta = (kind, decay_input, k_value, v_threshold, v_reset, detach_reset, *_surrogate_args(surrogate),
                    shape)
        # x (the caller's tensor, no copy) rather than a new h: the backward recomputes h per chunk of neurons
        ctx.save_for_backward(x2, *((k,) if kind == "plif" else ()))
        return s.reshape(shape)

    @staticmethod
    def backward(ctx, grad_s):
        kind, decay_input, k_value, v_threshold, v_reset, detach_reset, sg, alpha, width, shape = ctx.meta
        x2, *k = ctx.saved_tensors
        grad_x, grad_k = extension().backward(
            grad_s.reshape(x2.shape).float().contiguous(), x2, KINDS[kind], decay_input, v_reset is not None,
            bool(detach_reset), sg, k_value, float(v_threshold),
            0.0 if v_reset is None else float(v_reset), alpha, width,
        )
        gk = None
        if kind == "plif" and ctx.needs_input_grad[1]:
            gk = grad_k.to(k[0].dtype).reshape(k[0].shape)
        return grad_x.reshape(shape) if ctx.needs_input_grad[0] else None, gk, None, None, None, None, None


def multistep_neuron(x_seq, k, v_threshold, v_reset, decay_input, detach_reset, surrogate):
    """The fused CPU path; same signature and function as ``snnexp.neurons.functional.multistep_torch``."""
    return FusedCpuNeuron.apply(x_seq, k, v_threshold, v_reset, decay_input, detach_reset, surrogate)


class FusedCpuTernary(torch.autograd.Function):
    """Ternary neuron (unit spikes ``{-1, 0, 1}``, before the amplitude) on the CPU; see ``snnexp.neurons.Ternary``."""

    @staticmethod
    def forward(ctx, x_seq, decay, v_threshold, detach_reset, surrogate):
        x2 = _as_rows(x_seq)
        s = extension().ternary_forward(x2, float(decay), float(v_threshold))
        ctx.meta = (float(decay), float(v_threshold), bool(detach_reset), _surrogate_args(surrogate), x_seq.shape)
        ctx.save_for_backward(x2)
        return s.reshape(x_seq.shape)

    @staticmethod
    def backward(ctx, grad_s):
        decay, v_threshold, detach, (sg, alpha, width), shape = ctx.meta
        (x2,) = ctx.saved_tensors
        grad_x = extension().ternary_backward(grad_s.reshape(x2.shape).float().contiguous(), x2, detach, sg, decay,
                                              v_threshold, alpha, width)
        return grad_x.reshape(shape), None, None, None, None


class FusedCpuMultiLevel(torch.autograd.Function):
    """Multi-level firing neuron (output ``sum_l S_l``) on the CPU; see ``snnexp.neurons.MLF``."""

    @staticmethod
    def forward(ctx, x_seq, levels, decay, v_threshold, level_spacing, detach_reset, surrogate):
        x2 = _as_rows(x_seq)
        scalars = (int(levels), float(decay), float(v_threshold), float(level_spacing))
        out = extension().multilevel_forward(x2, *scalars)
        ctx.meta = (scalars, bool(detach_reset), _surrogate_args(surrogate), x_seq.shape)
        ctx.save_for_backward(x2)
        return out.reshape(x_seq.shape)

    @staticmethod
    def backward(ctx, grad_out):
        (levels, decay, v_threshold, spacing), detach, (sg, alpha, width), shape = ctx.meta
        (x2,) = ctx.saved_tensors
        grad_x = extension().multilevel_backward(grad_out.reshape(x2.shape).float().contiguous(), x2, levels, detach,
                                                 sg, decay, v_threshold, spacing, alpha, width)
        return grad_x.reshape(shape), None, None, None, None, None, None


def ternary(x_seq, decay, v_threshold, detach_reset, surrogate):
    """Ternary spikes ``{-1, 0, 1}`` of ``x_seq [T, ...]`` (the amplitude is applied by the caller)."""
    return FusedCpuTernary.apply(x_seq, decay, v_threshold, detach_reset, surrogate)


def multilevel(x_seq, levels, decay, v_threshold, level_spacing, detach_reset, surrogate):
    """Multi-level firing output ``sum_l S_l`` of ``x_seq [T, ...]``."""
    return FusedCpuMultiLevel.apply(x_seq, levels, decay, v_threshold, level_spacing, detach_reset, surrogate)
