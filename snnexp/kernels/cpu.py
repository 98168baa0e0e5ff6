"""The CPU fused path: the loops :mod:`snnexp.kernels.generate` writes for every declared neuron (LIF / IF / PLIF,
ternary, multi-level, ...), with ``cuda/neuron_cpu.cpp``'s output buffers, built as one PyTorch C++ extension.

One pass over ``[T, N]`` per direction, parallel over neurons (``at::parallel_for``, so ``torch.set_num_threads``
applies), float32 only. It saves the input ``X`` (the caller's tensor, no copy) and no ``H``: the backward
recomputes ``H`` for each chunk of neurons into a small cache-resident buffer, so the forward allocates and
writes only the spikes. Outputs of 1 MiB and more come from a cache of freed buffers (at most
``SNNEXP_CPU_CACHE_MB``, default 4096 MiB; :func:`empty_cache` frees it), because a fresh large allocation
page-faults on every 4 KiB page and that costs more than the neuron itself; :func:`cache_torch_tensors` makes the
cache torch's CPU allocator, for every large tensor. It computes the torch reference's
function: spikes bit-identical, gradients equal up to float rounding (tests).

The generated sources are written to ``snnexp_generated_<hash>`` in torch's extension directory (once: a file is
rewritten only when its text changes). The build is cached there (``TORCH_EXTENSIONS_DIR``) under a name that
hashes the sources (generated ones included), flags, compiler, torch, Python and include paths (:func:`build_name`), and loaded once per process; a
first build says so on stderr, and processes that start together build once (:func:`load_cached`). Without a
working C++ compiler :func:`available` is False, one warning says why, and the neurons use the eager torch
reference.
"""

from __future__ import annotations

import functools
import os
import platform
import threading
import warnings
from pathlib import Path

import torch

from snnexp.kernels import sources
from snnexp.kernels.spec import NeuronSpec
from snnexp.kernels.variants import Variant, has_kernel, surrogate_kinds, surrogate_scalars, variant_for, variant_of


# IEEE float semantics are kept (no -ffast-math, no FMA contraction: spikes equal the reference bit for bit);
# -fno-trapping-math only lets GCC if-convert the Heaviside so that the loops over neurons vectorize.
# -fno-math-errno likewise lets the surrogate's expf (and, from glibc 2.35, tanhf) vectorize (glibc's libmvec on
# x86-64 Linux).
# -fopenmp: at::parallel_for is a header template that runs its OpenMP region in the caller's translation unit.
_LIBMVEC = platform.system() == "Linux" and platform.machine() == "x86_64" and platform.libc_ver()[0] == "glibc"
_GLIBC = tuple(int(part) for part in platform.libc_ver()[1].split(".")[:2] if part.isdigit()) if _LIBMVEC else ()
# -march=native: the extension is built on the machine that runs it, at first use.
CFLAGS = ("-O3", "-march=native", "-ffp-contract=off", "-fno-trapping-math", "-fno-math-errno", "-fopenmp") + (
    ("-DSNN_LIBMVEC",) if _LIBMVEC else ()
) + (("-DSNN_LIBMVEC_TANH",) if _GLIBC >= (2, 35) else ())
LDFLAGS = ("-fopenmp",) + (("-lmvec",) if _LIBMVEC else ())


# The hand-written parts of the extension, in ``cuda/``; the generated ones (one translation unit per neuron kind,
# which ninja compiles in parallel, and the headers) come from snnexp.kernels.generate.
CPU_HEADERS = (sources.MATH_HEADER, sources.HOST_HEADER)


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


def generated_dir() -> Path:
    """The generated sources written out (where missing or different) to a folder named by their hash in torch's
    extension root."""
    import hashlib

    files = sources.generated()
    digest = hashlib.sha256("\0".join(f"{n}\0{t}" for n, t in sorted(files.items())).encode()).hexdigest()[:16]
    root = os.environ.get("TORCH_EXTENSIONS_DIR") or _cpp_extension().get_default_build_root()
    folder = Path(root) / f"snnexp_generated_{digest}"
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        path = folder / name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            scratch = path.with_name(f".{name}.{os.getpid()}")
            scratch.write_text(text, encoding="utf-8")
            os.replace(scratch, path)  # atomic: processes starting together write the same text
    return folder


@functools.cache
def extension():
    """Build (or load from the cache) and import the fused CPU extension; raises if it cannot be built."""
    from snnexp.kernels.generate import cpu_units

    generated = generated_dir()
    headers = [generated / name for name in sources.generated() if not name.endswith(".cpp")]
    with sources.source_dir() as cuda_dir:
        module = load_cached(
            "snnexp_neurons_cpu", [cuda_dir / sources.CPU_SOURCE, *(generated / f for f in cpu_units())],
            headers=[*(cuda_dir / h for h in CPU_HEADERS), *headers], include_paths=[cuda_dir, generated],
            cflags=CFLAGS, ldflags=LDFLAGS, what="the fused CPU neuron kernels",
            usually="about half a minute on 2 idle cores")
    module.pool_set_cap(int(float(os.environ.get("SNNEXP_CPU_CACHE_MB", "4096")) * 2**20))
    return module


def empty_cache() -> None:
    """Free the cached output buffers of the CPU path (like ``torch.cuda.empty_cache``); never builds the
    extension (unloaded, it holds nothing)."""
    if extension.cache_info().currsize:
        extension().pool_release()


def autocast_dtype(device_type: str) -> torch.dtype | None:
    """The lower precision autocast computes in on ``device_type`` now, or None where autocast is off."""
    try:
        if not torch.is_autocast_enabled(device_type):
            return None
        return torch.get_autocast_dtype(device_type)
    except (TypeError, AttributeError):  # torch < 2.4
        if device_type == "cpu":
            return torch.get_autocast_cpu_dtype() if torch.is_autocast_cpu_enabled() else None
        return torch.get_autocast_gpu_dtype() if torch.is_autocast_enabled() else None


def autocast_on() -> bool:
    """Whether CPU autocast is on (mixed precision: torch's convolutions then run in its lower precision, so snnexp's
    float32 convolution kernels step aside)."""
    return autocast_dtype("cpu") is not None


_scratch = threading.local()  # per thread: the kept scratch buffers, while the buffer cache is not loaded


def scratch(slot: str, numel: int) -> torch.Tensor:
    """A flat float32 work buffer of at least ``numel`` entries for one kernel call (a chunk's Winograd tiles, im2col
    columns). Once the extension is loaded it comes from the buffer cache and goes back when the caller drops it, so
    between calls its pages serve other tensors (ResNet-19, T=8: 48 MiB off a step's peak); a caller that asks for
    one size every time always gets a cached buffer. Before that, this thread's buffer ``slot``, kept between calls
    (fresh pages fault) and grown when too small."""
    if extension.cache_info().currsize:
        return extension().pool_empty([numel])
    held = getattr(_scratch, "held", None)
    if held is None:
        held = _scratch.held = {}
    if slot not in held or held[slot].numel() < numel:
        held.pop(slot, None)  # the old one goes before the new one comes
        held[slot] = torch.empty(numel)
    return held[slot][:numel]


def cached_empty(shape) -> torch.Tensor:
    """An uninitialised, contiguous float32 CPU tensor of ``shape`` that, from 1 MiB on, comes from (and returns to)
    the output-buffer cache once the extension is loaded (a buffer is no reason to build it): a large tensor made at
    every step (a convolution's output, a recomputed BN output) then reuses last step's pages instead of faulting on
    fresh ones."""
    if extension.cache_info().currsize:
        return extension().pool_empty(list(shape))
    return torch.empty(shape)


def batch_norm_affine(y: torch.Tensor, alpha: torch.Tensor, mean: torch.Tensor, bias: torch.Tensor):
    """A training-mode BN output ``fma(y, alpha, fma(-mean, alpha, bias))`` per channel of a contiguous float32
    ``[N, C, ...]`` ``y``, into a cache buffer; None while the extension is not loaded (no reason to build it)."""
    if extension.cache_info().currsize:
        return extension().bn_affine(y, alpha, mean, bias)
    return None


def cache_stats() -> dict[str, int]:
    """The output-buffer cache: bytes and buffers held free, its cap in bytes, how many outputs reused one, and
    whether torch's CPU tensors come from it (:func:`cache_torch_tensors`)."""
    cached, buffers, cap, reused, installed, live, peak, moved = extension().pool_stats()
    return {"cached_bytes": cached, "cached_buffers": buffers, "cap_bytes": cap, "reused": reused,
            "torch_tensors": installed, "live_bytes": live, "peak_live_bytes": peak, "moved_bytes": moved}


def cache_torch_tensors(on: bool = True) -> None:
    """Make the output-buffer cache torch's CPU allocator (``on``), or give torch its own back: every CPU tensor of
    1 MiB and more then reuses a freed buffer of its size, so torch's BN outputs and oneDNN's convolution outputs
    and input gradients, like the neurons' outputs, reuse last step's pages instead of faulting on fresh ones (what
    PyTorch's caching allocator does on the GPU). Smaller tensors go to c10's allocator as before. Builds the
    extension; tensors made before the switch free as they were made."""
    extension().pool_install(bool(on))


def caches_torch_tensors() -> bool:
    """Whether the buffer cache is torch's CPU allocator now (:func:`cache_torch_tensors`); never builds the
    extension."""
    return bool(extension.cache_info().currsize) and bool(extension().pool_stats()[4])


def loads(extension_fn, what: str, instead: str) -> bool:
    """Whether ``extension_fn()`` builds and loads here (False under ``SNNEXP_NO_CPU_KERNELS``); if it fails, one
    warning says why, that ``instead`` runs, and how to enable ``what``."""
    if os.environ.get("SNNEXP_NO_CPU_KERNELS"):
        return False
    try:
        extension_fn()
    except Exception as error:  # no compiler, no headers, ninja missing, ...
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else repr(error)
        warnings.warn(
            f"snnexp: {what} could not be built ({type(error).__name__}: {reason}); using {instead} instead "
            f"(slower). Install a C++ compiler (g++) and ninja to enable them, or set SNNEXP_NO_CPU_KERNELS=1 to "
            "silence this.",
            RuntimeWarning,
            stacklevel=4,
        )
        return False
    return True


@functools.cache
def available() -> bool:
    """True when the extension builds and loads here; otherwise one warning with the reason, and False."""
    return loads(extension, "the fused CPU neuron kernels", "the eager torch reference")


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


class FusedCpu(torch.autograd.Function):
    """A declared neuron over ``x_seq [T, ...]`` on the CPU: ``apply(x_seq, variant, params, levels, surrogate,
    *learnt)``, ``params`` every parameter's value in declaration order, ``learnt`` one tensor per learnable
    parameter (receiving dL/dparam; a placeholder where the kind does not learn it). Subclassed per declaration
    (``FusedCpu<title>``), so that a graph names the neuron."""

    @staticmethod
    def forward(ctx, x_seq, variant: Variant, params, levels, surrogate, *learnt):
        spec = variant.spec
        x2 = _as_rows(x_seq)
        kind = spec.kinds.index(variant.kind)
        out = getattr(extension(), f"{spec.name}_forward")(x2, kind, variant.switches, int(levels), list(params))
        ctx.meta = (spec, kind, variant, list(params), int(levels), surrogate_kinds()[surrogate.name],
                    surrogate_scalars(surrogate), x_seq.shape)
        # x_seq itself (no copy; a saved BatchNorm output may be kept as its recipe): the backward recomputes h
        ctx.save_for_backward(x_seq, *learnt)
        return out.reshape(x_seq.shape)

    @staticmethod
    def backward(ctx, grad_out):
        spec, kind, variant, params, levels, sg, (alpha, width), shape = ctx.meta
        x_seq, *learnt = ctx.saved_tensors
        x2 = _as_rows(x_seq)
        grad_x, grads = getattr(extension(), f"{spec.name}_backward")(
            grad_out.reshape(x2.shape).float().contiguous(), x2, kind, variant.switches, variant.detach_reset, sg,
            levels, params, alpha, width)
        grad_learnt = [grads[j].to(t.dtype).reshape(t.shape) if ctx.needs_input_grad[5 + j] else None
                       for j, t in enumerate(learnt)]
        return (grad_x.reshape(shape) if ctx.needs_input_grad[0] else None, None, None, None, None, *grad_learnt)


_FUNCTIONS: dict[str, type[FusedCpu]] = {}


def function_for(spec: NeuronSpec) -> type[FusedCpu]:
    """The autograd Function of one declaration: ``FusedCpu<title>``."""
    if spec.name not in _FUNCTIONS:
        _FUNCTIONS[spec.name] = type(f"FusedCpu{spec.title}", (FusedCpu,),
                                     {"__doc__": f"{spec.name} on the CPU (see FusedCpu)."})
    return _FUNCTIONS[spec.name]


def run(variant: Variant, x_seq, params: dict, surrogate, levels: int = 1, learnt: dict | None = None):
    """The fused CPU path of any declared neuron: ``params`` by name (floats), ``learnt`` the tensors of the
    learnable parameters by name (missing: not learnt in this call)."""
    spec = variant.spec
    learnt = learnt or {}
    tensors = [learnt[p.name] if p.name in learnt else x_seq.new_empty(()) for p in spec.learnable]
    values = [float(params[p.name]) for p in spec.params]
    return function_for(spec).apply(x_seq, variant, values, levels, surrogate, *tensors)


def multistep_neuron(x_seq, k, v_threshold, v_reset, decay_input, detach_reset, surrogate):
    """The fused CPU path; same signature and function as ``snnexp.neurons.functional.multistep_torch``."""
    kind = kind_of(k)
    variant = variant_for(kind, v_reset, detach_reset, decay_input, surrogate, x_seq.dtype)
    k_value = 0.0 if k is None else float(k.detach().float().item() if kind == "plif" else k)
    params = {"k": k_value, "v_threshold": v_threshold, "v_reset": 0.0 if v_reset is None else v_reset}
    return run(variant, x_seq, params, surrogate, learnt={"k": k} if kind == "plif" else None)


def ternary(x_seq, decay, v_threshold, detach_reset, surrogate):
    """Ternary spikes ``{-1, 0, 1}`` of ``x_seq [T, ...]`` (the amplitude is applied by the caller)."""
    variant = variant_of("ternary", detach_reset, surrogate, x_seq.dtype)
    return run(variant, x_seq, {"decay": decay, "v_threshold": v_threshold}, surrogate)


def multilevel(x_seq, levels, decay, v_threshold, level_spacing, detach_reset, surrogate):
    """Multi-level firing output ``sum_l S_l`` of ``x_seq [T, ...]``."""
    variant = variant_of("mlf", detach_reset, surrogate, x_seq.dtype)
    params = {"decay": decay, "v_threshold": v_threshold, "level_spacing": level_spacing}
    return run(variant, x_seq, params, surrogate, levels=levels)

