"""The CPU fused path: ``cuda/neuron_cpu*.cpp`` (the loops of ``cuda/neuron_host.cuh`` over the kernels' per-step
math) built as a PyTorch C++ extension, for LIF / IF / PLIF, the ternary and the multi-level neurons.

One pass over ``[T, N]`` per direction, parallel over neurons (``at::parallel_for``, so ``torch.set_num_threads``
applies), float32 only. It saves the input ``X`` (the caller's tensor, no copy) and no ``H``: the backward
recomputes ``H`` for each chunk of neurons into a small cache-resident buffer, so the forward allocates and
writes only the spikes. Outputs of 1 MiB and more come from a cache of freed buffers (at most
``SNNEXP_CPU_CACHE_MB``, default 1024 MiB; :func:`empty_cache` frees it), because a fresh large allocation
page-faults on every 4 KiB page and that costs more than the neuron itself. It computes the torch reference's
function: spikes bit-identical, gradients equal up to float rounding (tests).

The build is cached in torch's extension directory (``TORCH_EXTENSIONS_DIR``) under a name that hashes the
sources, flags, compiler, torch, Python and include paths (:func:`build_name`), and loaded once per process; a
first build says so on stderr, and processes that start together build once (:func:`load_cached`). Without a
working C++ compiler :func:`available` is False, one warning says why, and the neurons use the eager torch
reference.
"""

from __future__ import annotations

import functools
import os
import platform
import warnings
from pathlib import Path

import torch

from snnexp.kernels import sources
from snnexp.kernels.variants import KINDS, SURROGATE_KINDS, has_kernel, surrogate_scalars


# IEEE float semantics are kept (no -ffast-math, no FMA contraction: spikes equal the reference bit for bit);
# -fno-trapping-math only lets GCC if-convert the Heaviside so that the loops over neurons vectorize.
# -fno-math-errno likewise lets the surrogate's expf vectorize (glibc's libmvec on x86-64 Linux).
# -fopenmp: at::parallel_for is a header template that runs its OpenMP region in the caller's translation unit.
_LIBMVEC = platform.system() == "Linux" and platform.machine() == "x86_64" and platform.libc_ver()[0] == "glibc"
# -march=native: the extension is built on the machine that runs it, at first use.
CFLAGS = ("-O3", "-march=native", "-ffp-contract=off", "-fno-trapping-math", "-fno-math-errno", "-fopenmp") + (
    ("-DSNN_LIBMVEC",) if _LIBMVEC else ()
)
LDFLAGS = ("-fopenmp",) + (("-lmvec",) if _LIBMVEC else ())


# The extension's translation units, which ninja compiles in parallel (see neuron_cpu.cuh), and the headers they
# include; all in ``cuda/``.
CPU_SOURCES = (sources.CPU_SOURCE, "neuron_cpu_if.cpp", "neuron_cpu_lif.cpp", "neuron_cpu_plif.cpp",
               "neuron_cpu_levels.cpp")
CPU_HEADERS = (sources.MATH_HEADER, sources.HOST_HEADER, "neuron_cpu.cuh")


def build_name(prefix: str, files, *, include_paths=(), cflags=(), ldflags=()) -> str:
    """``prefix`` and a hash of everything that makes one build differ from another, and so goes into its
    build.ninja: the files' paths and contents (sources and the headers they include), the include paths, flags,
    compiler, torch (version, C++ ABI, headers, libraries) and Python. It is also the build's directory under
    torch's extension root, so environments and checkouts that build differently never share (and so never rebuild)
    one directory, and those that build identically share one build."""
    import hashlib
    import sys
    import sysconfig

    cpp_extension = _cpp_extension()

    sha = hashlib.sha256()
    for group in (
        [f"{path}\0{Path(path).read_text(encoding='utf-8')}" for path in map(str, files)],
        list(map(str, include_paths)), list(cflags), list(ldflags),
        [os.environ.get("CXX", "c++"), torch.__version__, str(torch._C._GLIBCXX_USE_CXX11_ABI), sys.version,
         str(sysconfig.get_path("include")), *cpp_extension.include_paths(), *cpp_extension.library_paths()],
    ):
        sha.update("\0".join(group).encode() + b"\1")
    return f"{prefix}_{sha.hexdigest()[:16]}"


def _cpp_extension():
    """``torch.utils.cpp_extension``, imported without its import-time warning "No CUDA runtime is found, using
    CUDA_HOME=..." on machines without a GPU: the CPU build needs no CUDA, so the warning is noise here."""
    import logging

    quiet = logging.getLogger("torch.utils.cpp_extension")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        from torch.utils import cpp_extension
    finally:
        quiet.setLevel(level)
    return cpp_extension


def _build_directory(name: str) -> Path | None:
    """torch's build directory for ``name`` (created if missing), or None if torch's private helper changed."""
    cpp_extension = _cpp_extension()

    try:
        return Path(cpp_extension._get_build_directory(name, verbose=False))
    except Exception:
        return None


def _built(directory: Path, name: str) -> bool:
    """Whether ``directory`` already holds a finished build (the linked library) of ``name``."""
    return any(f.suffix in (".so", ".pyd") for f in directory.glob(f"{name}*"))


def load_cached(prefix: str, files, *, headers=(), include_paths=(), cflags=(), ldflags=(), what: str = "",
                usually: str = ""):
    """Build (or load from torch's extension cache) and import the extension of C++ ``files`` (which include
    ``headers``), named by :func:`build_name`; raises if it cannot be built. A build says on stderr what it builds
    (``what``, which ``usually`` takes how long), once: processes that find no build take a lock in the build
    directory, so that the first builds and announces it while the others wait, then load its build."""
    import sys

    from filelock import FileLock
    cpp_extension = _cpp_extension()

    files, headers = [str(f) for f in files], [str(h) for h in headers]
    name = build_name(prefix, [*files, *headers], include_paths=include_paths, cflags=cflags, ldflags=ldflags)
    directory = _build_directory(name)

    def load():
        return cpp_extension.load(name=name, sources=files, extra_include_paths=[str(p) for p in include_paths],
                                  extra_cflags=list(cflags), extra_ldflags=list(ldflags),
                                  verbose=bool(os.environ.get("SNNEXP_VERBOSE_BUILD")))

    if directory is None or _built(directory, name):  # None: torch's private helper changed; torch still locks
        return load()
    with FileLock(str(directory / "snnexp_build.lock")):
        if not _built(directory, name):
            print(f"snnexp: building {what or name} for this environment, once{f' ({usually})' if usually else ''}; "
                  f"later runs load the build from torch's extension cache ({directory})", file=sys.stderr,
                  flush=True)
        return load()


@functools.cache
def extension():
    """Build (or load from the cache) and import the fused CPU extension; raises if it cannot be built."""
    with sources.source_dir() as cuda_dir:
        module = load_cached(
            "snnexp_neurons_cpu", [cuda_dir / f for f in CPU_SOURCES], headers=[cuda_dir / h for h in CPU_HEADERS],
            include_paths=[cuda_dir], cflags=CFLAGS, ldflags=LDFLAGS, what="the fused CPU neuron kernels",
            usually="about half a minute on 2 idle cores")
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
