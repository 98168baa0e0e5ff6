"""``python -m snnexp.neurons --check``: (a) every kernel variant compiles with NVRTC, (b) the shared step math,
compiled for the host, equals the torch reference for every variant. Prints a table; exit status 1 on failure.

(a) needs CuPy's NVRTC binding (``pip install snnexp[cuda]``; no GPU needed) and is skipped with a note without
it. The variants of one dtype are compiled as one NVRTC program (the generated kernels, one name expression per
kernel), then each variant's lowered names are looked up in the PTX. (b) builds the generated CPU loops as a torch
C++ extension (:mod:`snnexp.kernels.cpu`) and compares spikes (exactly) and gradients of X and, for PLIF, of k (relative to
the largest gradient, float32 tolerance) on random inputs, float32.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from snnexp.kernels import sources
from snnexp.kernels.variants import ARCHS, DTYPES, Variant, all_variants, nvrtc_options
from snnexp.neurons import functional as F
from snnexp.neurons.surrogate import SURROGATES

GRAD_RTOL = 1e-5


@dataclass
class Result:
    variant: Variant
    check: str  # "nvrtc compute_80", "host"
    ok: bool
    detail: str = ""


# -------------------------------------------------------------------------------------------- (a) NVRTC


def nvrtc_module():
    """``cupy_backends.cuda.libs.nvrtc``, or None when CuPy is missing (the ImportError is returned instead)."""
    from importlib import import_module

    try:
        return import_module("cupy_backends.cuda.libs.nvrtc")
    except Exception as error:  # ImportError, or a broken CUDA install
        return error


def compile_ptx(nvrtc, variants: list[Variant], arch: str) -> tuple[str, dict[str, str]]:
    """Compile the generated kernels with these variants' name expressions; returns the PTX and lowered names."""
    prog = nvrtc.createProgram(sources.kernel_source(), "neuron_kernels.cu", [], [])
    try:
        names = list(dict.fromkeys(n for v in variants for n in v.name_expressions))  # forwards are shared
        for name in names:
            nvrtc.addNameExpression(prog, name)
        try:
            nvrtc.compileProgram(prog, list(nvrtc_options(arch, sources.cuda_include_dirs())))
        except Exception as error:
            raise RuntimeError(f"NVRTC failed for {arch}:\n{nvrtc.getProgramLog(prog)}") from error
        ptx = nvrtc.getPTX(prog)
        ptx = ptx.decode(errors="replace") if isinstance(ptx, bytes) else ptx
        return ptx, {n: nvrtc.getLoweredName(prog, n) for n in names}
    finally:
        nvrtc.destroyProgram(prog)


def check_nvrtc(variants: list[Variant], archs=ARCHS) -> list[Result]:
    nvrtc = nvrtc_module()
    if isinstance(nvrtc, Exception):
        raise ImportError(str(nvrtc))
    results = []
    for arch in archs:
        for dtype in DTYPES:
            group = [v for v in variants if v.dtype == dtype]
            if not group:
                continue
            try:
                ptx, lowered = compile_ptx(nvrtc, group, arch)
            except Exception as error:
                results += [Result(v, f"nvrtc {arch}", False, str(error)[:500]) for v in group]
                continue
            for v in group:
                missing = [n for n in v.name_expressions if f".entry {lowered[n]}(" not in ptx]
                results.append(Result(v, f"nvrtc {arch}", not missing, f"missing {missing}" if missing else ""))
    return results


# --------------------------------------------------------------------------------------------- (b) host


def _k_for(kind: str, generator: torch.Generator):
    if kind == "if":
        return None
    if kind == "lif":
        return 1.0 / float(1.5 + 2.0 * torch.rand((), generator=generator))
    return torch.sigmoid(torch.randn((), generator=generator, dtype=torch.float64)).float().requires_grad_()


def run_both(variant: Variant, shape=(6, 3, 37), seed=0):
    """Reference and host outputs for one variant: (spikes, grad_x, grad_k) twice."""
    from snnexp.kernels import cpu

    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=g) * 1.2 + 0.6).float()
    grad_s = torch.randn(shape, generator=g)
    if variant.kind in ("ternary", "mlf"):
        return _run_both_levels(variant, x, grad_s, g)
    if variant.kind not in ("if", "lif", "plif"):
        return _run_both_declared(variant, x, grad_s, g)
    k = _k_for(variant.kind, g)
    v_reset = float(torch.randn((), generator=g) * 0.2) if variant.hard_reset else None
    surrogate = SURROGATES[variant.surrogate]()
    surrogate.alpha = float(surrogate.alpha * (0.6 + torch.rand((), generator=g)))  # runtime parameter
    v_threshold = 1.0
    outs = []
    for fn in (F.multistep_torch, cpu.multistep_neuron):
        xi = x.clone().requires_grad_()
        ki = k.detach().clone().requires_grad_() if isinstance(k, torch.Tensor) else k
        s = fn(xi, ki, v_threshold, v_reset, variant.decay_input, variant.detach_reset, surrogate)
        s.backward(grad_s)
        outs.append((s.detach(), xi.grad, ki.grad if isinstance(ki, torch.Tensor) else None))
    return outs


def _run_both_levels(variant: Variant, x, grad_s, g):
    """Ternary / multi-level: the neuron's unrolled reference (backend="torch") against the host loops."""
    from snnexp.kernels import cpu
    from snnexp.neurons import MLF, Ternary

    surrogate = SURROGATES[variant.surrogate]()
    surrogate.alpha = float(surrogate.alpha * (0.6 + torch.rand((), generator=g)))
    decay = float(0.2 + 0.6 * torch.rand((), generator=g))
    if variant.kind == "ternary":
        x = x - 0.6  # both signs fire
        neuron = Ternary(decay=decay, v_threshold=0.5, learn_amplitude=False, detach_reset=variant.detach_reset,
                         surrogate=surrogate, backend="torch")
        fused = lambda xi: cpu.ternary(xi, decay, 0.5, variant.detach_reset, surrogate)  # noqa: E731
    else:
        neuron = MLF(decay=decay, v_threshold=0.4, levels=3, level_spacing=0.7, detach_reset=variant.detach_reset,
                     surrogate=surrogate, backend="torch")
        fused = lambda xi: cpu.multilevel(xi, 3, decay, 0.4, 0.7, variant.detach_reset, surrogate)  # noqa: E731
    outs = []
    for fn in (neuron, fused):
        xi = x.clone().requires_grad_()
        s = fn(xi)
        s.backward(grad_s)
        outs.append((s.detach(), xi.grad, None))
    return outs


def _run_both_declared(variant: Variant, x, grad_s, g):
    """Any other declared neuron (``DeclaredNeuron``): its torch reference against the fused CPU path, comparing
    the gradient of its (first) learnable parameter too."""
    from snnexp.neurons.declared import DECLARED

    surrogate = SURROGATES[variant.surrogate]()
    surrogate.alpha = float(surrogate.alpha * (0.6 + torch.rand((), generator=g)))
    outs = []
    for backend in ("torch", "auto"):
        torch.manual_seed(0)
        neuron = DECLARED[variant.kind].for_check(variant.detach_reset, surrogate, backend)
        xi = x.clone().requires_grad_()
        s = neuron(xi)
        s.backward(grad_s)
        grads = [p.grad for p in neuron.parameters()]
        outs.append((s.detach(), xi.grad, grads[0] if grads else None))
    return outs


def check_host(variants: list[Variant]) -> list[Result]:
    from snnexp.kernels import cpu

    if not cpu.available():
        return [Result(v, "host", False, "host build failed (see warning)") for v in variants]
    results = []
    for v in variants:
        (s_ref, gx_ref, gk_ref), (s, gx, gk) = run_both(v)
        problems = []
        if not torch.equal(s_ref, s):
            problems.append(f"{int((s_ref != s).sum())} spikes differ")
        err = float((gx - gx_ref).abs().max() / gx_ref.abs().max().clamp(min=1e-12))
        if err > GRAD_RTOL:
            problems.append(f"grad_x rel err {err:.2e}")
        if gk_ref is not None:
            kerr = float((gk - gk_ref).abs() / gk_ref.abs().clamp(min=1e-6))
            if kerr > 1e-4:
                problems.append(f"grad_k rel err {kerr:.2e}")
        results.append(Result(v, "host", not problems, "; ".join(problems) or f"grad err {err:.1e}"))
    return results


# -------------------------------------------------------------------------------------------------- main


def run(nvrtc: bool = True, host: bool = True, out=print) -> bool:
    results: list[Result] = []
    notes = []
    start = time.perf_counter()
    if nvrtc:
        module = nvrtc_module()
        if isinstance(module, Exception):
            notes.append(f"(a) NVRTC compile check SKIPPED: CuPy is not importable ({module}); "
                         "install it with `pip install snnexp[cuda]`")
        else:
            results += check_nvrtc(all_variants())
            notes.append(f"(a) NVRTC: {len(all_variants())} variants x {len(ARCHS)} archs in "
                         f"{time.perf_counter() - start:.1f}s")
    if host:
        t0 = time.perf_counter()
        results += check_host(all_variants(dtypes=(torch.float32,)))
        notes.append(f"(b) host math vs torch reference (float32): {time.perf_counter() - t0:.1f}s")
    checks = sorted({r.check for r in results})
    by_variant: dict[str, dict[str, Result]] = {}
    for r in results:
        by_variant.setdefault(r.variant.label, {})[r.check] = r
    width = max((len(label) for label in by_variant), default=10)
    out(f"{'variant':<{width}}  " + "  ".join(f"{c:<16}" for c in checks))
    for label, row in by_variant.items():
        cells = []
        for c in checks:
            r = row.get(c)
            cells.append(f"{'-' if r is None else ('ok' if r.ok else 'FAIL'):<16}")
        out(f"{label:<{width}}  " + "  ".join(cells))
    failures = [r for r in results if not r.ok]
    for r in failures[:20]:
        out(f"FAIL {r.variant.label} [{r.check}]: {r.detail}")
    for note in notes:
        out(note)
    out(f"{len(results) - len(failures)}/{len(results)} checks passed")
    return not failures
