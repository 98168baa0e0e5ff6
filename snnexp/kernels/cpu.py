"""The CPU fused path: ``cuda/neuron_host.cuh`` (the kernels' per-step math) built as a PyTorch C++ extension.

One pass over ``[T, N]`` per direction, parallel over neurons (``at::parallel_for``, so ``torch.set_num_threads``
applies), float32 only. It saves the input ``X`` (the caller's tensor, no copy) and no ``H``: the backward
recomputes ``H`` for each chunk of neurons into a small cache-resident buffer, so the forward allocates and
writes only the spikes. It computes the torch reference's function: spikes bit-identical, gradients equal up to
float rounding (tests).

The build is cached in torch's extension directory (``TORCH_EXTENSIONS_DIR``), keyed by a hash of the sources,
and loaded once per process. Without a working C++ compiler :func:`available` is False, one warning says why, and
the neurons use the eager torch reference.
"""

from __future__ import annotations

import functools
import os
import platform
import warnings

import torch

from snnexp.kernels import sources
from snnexp.kernels.variants import KINDS, SURROGATE_KINDS

_CPP = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <cmath>
#ifdef SNN_LIBMVEC  // glibc's vector expf (libmvec): lets the sigmoid surrogate's backward loop vectorize
extern "C" {
#pragma omp declare simd notinbranch
float expf(float) noexcept;
}
#define SNN_HOST_EXPF ::expf
#endif
#include "neuron_host.cuh"

using namespace snn::host;

constexpr int64_t GRAIN = SNN_HOST_CHUNK * 4;

std::vector<at::Tensor> forward(at::Tensor x, int64_t kind, bool decay_input, bool hard, double k,
                                double v_threshold, double v_reset) {
    TORCH_CHECK(x.scalar_type() == at::kFloat && x.is_contiguous() && x.dim() == 2, "x: contiguous float32 [T, N]");
    const int64_t T = x.size(0), N = x.size(1);
    auto s = at::empty_like(x);
    const float* xp = x.data_ptr<float>();
    float* sp = s.data_ptr<float>();
    dispatch_kind((int)kind, [&](auto K) { return dispatch_bool(decay_input, [&](auto D) {
        return dispatch_bool(hard, [&](auto H) {
            at::parallel_for(0, N, GRAIN, [&](int64_t b, int64_t e) {
                forward_range<decltype(K)::value, decltype(D)::value, decltype(H)::value>(
                    xp, sp, T, N, b, e, (float)k, (float)v_threshold, (float)v_reset);
            });
            return 0; }); }); });
    return {s};
}

std::vector<at::Tensor> backward(at::Tensor grad_s, at::Tensor x, int64_t kind, bool decay_input,
                                 bool hard, bool detach, int64_t surrogate, double k, double v_threshold,
                                 double v_reset, double alpha, double width) {
    TORCH_CHECK(grad_s.scalar_type() == at::kFloat && grad_s.is_contiguous() && x.is_contiguous(), "float32 [T, N]");
    const int64_t T = x.size(0), N = x.size(1);
    auto grad_x = at::empty_like(x);
    const float *gp = grad_s.data_ptr<float>(), *xp = x.data_ptr<float>();
    float* gxp = grad_x.data_ptr<float>();
    const int64_t chunks = (N + GRAIN - 1) / GRAIN;
    std::vector<double> partial(std::max<int64_t>(chunks, 1), 0.0);
    dispatch_kind((int)kind, [&](auto K) { return dispatch_bool(decay_input, [&](auto D) {
        return dispatch_bool(hard, [&](auto H) { return dispatch_bool(detach, [&](auto R) {
            return dispatch_surrogate((int)surrogate, [&](auto S) {
                at::parallel_for(0, chunks, 1, [&](int64_t cb, int64_t ce) {
                    for (int64_t c = cb; c < ce; ++c)
                        partial[c] = backward_range<decltype(K)::value, decltype(D)::value, decltype(H)::value,
                                                    decltype(R)::value, decltype(S)::value>(
                            gp, xp, gxp, T, N, c * GRAIN, std::min(N, (c + 1) * GRAIN), (float)k,
                            (float)v_threshold, (float)v_reset, (float)alpha, (float)width);
                });
                return 0; }); }); }); }); });
    double grad_k = 0.0;
    for (double p : partial) grad_k += p;
    return {grad_x, at::scalar_tensor(grad_k, at::kDouble)};
}
"""

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


@functools.cache
def extension():
    """Build (or load from the cache) and import the extension; raises if it cannot be built."""
    from torch.utils import cpp_extension

    with sources.source_dir() as cuda_dir:
        name = "snnexp_neurons_cpu_" + sources.digest(sources.MATH_HEADER, sources.HOST_HEADER) + _cpp_hash()
        return cpp_extension.load_inline(
            name=name,
            cpp_sources=_CPP,
            functions=["forward", "backward"],
            extra_include_paths=[str(cuda_dir)],
            extra_cflags=list(CFLAGS),
            extra_ldflags=list(LDFLAGS),
            verbose=bool(os.environ.get("SNNEXP_VERBOSE_BUILD")),
        )


def _cpp_hash() -> str:
    import hashlib

    return hashlib.sha256((_CPP + " ".join(CFLAGS + LDFLAGS)).encode()).hexdigest()[:6]


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
        and getattr(surrogate, "name", None) in SURROGATE_KINDS
        and not torch.compiler.is_compiling()
        and available()
    )


class FusedCpuNeuron(torch.autograd.Function):
    """Multi-step LIF / IF / PLIF on the CPU: the fused counterpart of ``MultiStepNeuronFunction``."""

    @staticmethod
    def forward(ctx, x_seq, k, v_threshold, v_reset, decay_input, detach_reset, surrogate):
        kind = kind_of(k)
        decay_input = bool(decay_input) and kind != "if"
        k_value = 0.0 if k is None else float(k.detach().float().item() if kind == "plif" else k)
        shape = x_seq.shape
        x2 = x_seq.detach().reshape(shape[0], -1).contiguous()
        (s,) = extension().forward(
            x2, KINDS[kind], decay_input, v_reset is not None, k_value, float(v_threshold),
            0.0 if v_reset is None else float(v_reset),
        )
        ctx.meta = (kind, decay_input, k_value, v_threshold, v_reset, detach_reset, surrogate.name,
                    float(surrogate.alpha), float(getattr(surrogate, "width", 1.0)), shape)
        # x (the caller's tensor, no copy) rather than a new h: the backward recomputes h per chunk of neurons
        ctx.save_for_backward(x2, *((k,) if kind == "plif" else ()))
        return s.reshape(shape)

    @staticmethod
    def backward(ctx, grad_s):
        kind, decay_input, k_value, v_threshold, v_reset, detach_reset, sg, alpha, width, shape = ctx.meta
        x2, *k = ctx.saved_tensors
        grad_x, grad_k = extension().backward(
            grad_s.reshape(x2.shape).float().contiguous(), x2, KINDS[kind], decay_input, v_reset is not None,
            bool(detach_reset), SURROGATE_KINDS[sg], k_value, float(v_threshold),
            0.0 if v_reset is None else float(v_reset), alpha, width,
        )
        gk = None
        if kind == "plif" and ctx.needs_input_grad[1]:
            gk = grad_k.to(k[0].dtype).reshape(k[0].shape)
        return grad_x.reshape(shape) if ctx.needs_input_grad[0] else None, gk, None, None, None, None, None


def multistep_neuron(x_seq, k, v_threshold, v_reset, decay_input, detach_reset, surrogate):
    """The fused CPU path; same signature and function as ``snnexp.neurons.functional.multistep_torch``."""
    return FusedCpuNeuron.apply(x_seq, k, v_threshold, v_reset, decay_input, detach_reset, surrogate)
