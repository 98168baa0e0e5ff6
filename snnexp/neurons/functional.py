"""The neuron dynamics as functions, and the "torch" backend of the multi-step neurons.

One time step of an LIF / IF / PLIF neuron (SpikingJelly's equations, names and defaults):

    charge  H[t] = V[t-1] + k (X[t] - (V[t-1] - V_reset))          decay_input=True
            H[t] = V[t-1] - k (V[t-1] - V_reset) + X[t]            decay_input=False
            H[t] = V[t-1] + X[t]                                   IF (no leak, ``k=None``)
    fire    S[t] = Heaviside(H[t] - V_threshold),  Heaviside(0) = 1
    reset   V[t] = H[t] - S[t] V_threshold                         soft (``v_reset=None``)
            V[t] = H[t] (1 - S[t]) + V_reset S[t]                  hard
    V[-1]   = V_reset (0 for the soft reset): every call starts from rest.

``k`` is the leak: ``1 / tau`` for LIF (a float), ``sigmoid(w)`` for PLIF (a scalar tensor, learnt); in the
decay term ``V_reset`` is taken as 0 when the reset is soft.

The torch backend (:class:`MultiStepNeuronFunction`) loops over T and saves only ``H`` for backward; the
backward pass recomputes ``S`` and the surrogate from ``H`` and runs BPTT through ``V`` by hand, so memory
holds one ``[T, ...]`` tensor per neuron instead of an autograd graph per step.
"""

from __future__ import annotations

import copy

import torch
from torch.autograd.function import once_differentiable

from snnexp.errors import SnnexpError
from snnexp.neurons.surrogate import Surrogate, heaviside

BACKENDS = ("torch", "cupy", "auto")

Leak = float | torch.Tensor | None


# ---------------------------------------------------------------------------------------------- one step


def charge(x: torch.Tensor, v: torch.Tensor, k: Leak, v_reset: float | None, decay_input: bool) -> torch.Tensor:
    """``H[t] = V[t-1] + k (X[t] - (V[t-1] - V_reset))`` (decay_input) or
    ``H[t] = V[t-1] - k (V[t-1] - V_reset) + X[t]``; IF (``k=None``): ``H[t] = V[t-1] + X[t]``."""
    if k is None:
        return v + x
    rest = 0.0 if v_reset is None else v_reset
    if decay_input:
        return v + (x - (v - rest)) * k
    return v - (v - rest) * k + x


def reset(h: torch.Tensor, s: torch.Tensor, v_threshold: float, v_reset: float | None) -> torch.Tensor:
    """Soft (``v_reset=None``): ``V[t] = H[t] - S[t] V_threshold``; hard: ``V[t] = H[t] (1 - S[t]) + V_reset S[t]``."""
    if v_reset is None:
        return h - s * v_threshold
    return h * (1.0 - s) + v_reset * s


def resting_potential(like: torch.Tensor, v_reset: float | None) -> torch.Tensor:
    """``V[-1] = V_reset``, or 0 for the soft reset."""
    return torch.full_like(like, 0.0 if v_reset is None else v_reset)


class SpikeFunction(torch.autograd.Function):
    """``S = Heaviside(x)`` forward, ``dS/dx = surrogate.derivative(x)`` backward (single-step autograd)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, surrogate: Surrogate) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.surrogate = copy.copy(surrogate)  # the parameters in force at forward time
        return heaviside(x)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_s: torch.Tensor):
        (x,) = ctx.saved_tensors
        return grad_s * ctx.surrogate.derivative(x), None


def spike(x: torch.Tensor, surrogate: Surrogate) -> torch.Tensor:
    """``S = Heaviside(x)`` with the surrogate gradient; ``x = H - V_threshold``."""
    return SpikeFunction.apply(x, surrogate)


# ---------------------------------------------------------------------------------- torch multi-step backend


class MultiStepNeuronFunction(torch.autograd.Function):
    """Multi-step LIF / IF / PLIF: ``X[0..T-1] -> S[0..T-1]``, saving only ``H`` for backward.

    Backward, from t = T-1 down to 0, with ``sg[t] = surrogate.derivative(H[t] - V_threshold)`` and
    ``dL/dV[T-1] = 0``:

        dL/dH[t]   = dL/dS[t] sg[t] + dL/dV[t] dV[t]/dH[t]
        dV/dH      = 1 - V_threshold sg                          soft reset
                   = (1 - S) + (V_reset - H) sg                  hard reset
                     (detach_reset drops the ``sg`` term: no gradient through S in the reset)
        dL/dV[t-1] = dL/dH[t] (1 - k)                            (IF: k = 0)
        dL/dX[t]   = dL/dH[t] k                                  (decay_input=False and IF: 1)
        dL/dk      = sum_t dL/dH[t] (X[t] - (V[t-1] - V_reset))  (decay_input=False: -(V[t-1] - V_reset))

    ``V[t-1]`` for ``dL/dk`` is recomputed from ``H[t-1]`` by the reset. Only PLIF with decay_input=True
    also keeps ``X`` (the input tensor itself, no copy), which its ``dL/dk`` needs.
    """

    @staticmethod
    def forward(ctx, x_seq, k, v_threshold, v_reset, decay_input, detach_reset, surrogate):
        k_learnt = isinstance(k, torch.Tensor)
        kx = k.detach().to(x_seq.dtype) if k_learnt else k
        h_seq = torch.empty_like(x_seq)
        s_seq = torch.empty_like(x_seq)
        v = resting_potential(x_seq[0], v_reset)
        for t in range(x_seq.shape[0]):
            h = charge(x_seq[t], v, kx, v_reset, decay_input)
            s = heaviside(h - v_threshold)
            v = reset(h, s, v_threshold, v_reset)
            h_seq[t] = h
            s_seq[t] = s

        ctx.k_learnt = k_learnt
        ctx.keeps_x = k_learnt and decay_input
        ctx.k = None if k_learnt else k
        ctx.params = (v_threshold, v_reset, decay_input, detach_reset, copy.copy(surrogate))
        saved = [h_seq]
        if k_learnt:
            saved.append(k)
        if ctx.keeps_x:
            saved.append(x_seq)
        ctx.save_for_backward(*saved)
        return s_seq

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_s_seq):
        h_seq, *extra = ctx.saved_tensors  # H, then k (PLIF), then X (PLIF, decay_input=True)
        k_param = extra[0] if ctx.k_learnt else None
        x_seq = extra[1] if ctx.keeps_x else None
        k = k_param.to(h_seq.dtype) if ctx.k_learnt else ctx.k
        v_threshold, v_reset, decay_input, detach_reset, surrogate = ctx.params
        want_k = ctx.k_learnt and ctx.needs_input_grad[1]
        rest_v = 0.0 if v_reset is None else v_reset

        grad_x_seq = torch.empty_like(h_seq)
        # accumulate dL/dk in the wider of the input's and the parameter's dtypes (e.g. fp32 for fp16 inputs)
        grad_k = torch.zeros_like(h_seq[0], dtype=torch.promote_types(h_seq.dtype, k_param.dtype)) if want_k else None
        grad_v = torch.zeros_like(h_seq[0])  # dL/dV[T-1]
        for t in reversed(range(h_seq.shape[0])):
            h = h_seq[t]
            sg = surrogate.derivative(h - v_threshold)
            grad_h = grad_s_seq[t] * sg + grad_v * _reset_grad(h, sg, v_threshold, v_reset, detach_reset)
            grad_x_seq[t] = grad_h if (k is None or not decay_input) else grad_h * k
            if want_k:
                v_prev = _potential_before(h_seq, t, v_threshold, v_reset)
                leak_term = (x_seq[t] - (v_prev - rest_v)) if decay_input else -(v_prev - rest_v)
                grad_k += grad_h * leak_term
            grad_v = grad_h if k is None else grad_h * (1.0 - k)

        grad_x = grad_x_seq if ctx.needs_input_grad[0] else None
        if want_k:
            grad_k = grad_k.sum().to(k_param.dtype).reshape(k_param.shape)
        return grad_x, grad_k, None, None, None, None, None


def _reset_grad(h, sg, v_threshold, v_reset, detach_reset):
    """``dV[t]/dH[t]`` through the reset, including the path through ``S[t]`` unless detach_reset."""
    if v_reset is None:  # V = H - S V_th
        return 1.0 if detach_reset else 1.0 - v_threshold * sg
    s = heaviside(h - v_threshold)  # V = H (1 - S) + V_reset S
    return (1.0 - s) if detach_reset else (1.0 - s) + (v_reset - h) * sg


def _potential_before(h_seq, t, v_threshold, v_reset):
    """``V[t-1]``, recomputed from ``H[t-1]`` by the reset (``V[-1]`` is the resting potential)."""
    if t == 0:
        return resting_potential(h_seq[0], v_reset)
    h = h_seq[t - 1]
    return reset(h, heaviside(h - v_threshold), v_threshold, v_reset)


def multistep_torch(x_seq, k, v_threshold, v_reset, decay_input, detach_reset, surrogate):
    """The torch backend: see :class:`MultiStepNeuronFunction`."""
    return MultiStepNeuronFunction.apply(x_seq, k, v_threshold, v_reset, decay_input, detach_reset, surrogate)


# ------------------------------------------------------------------------------------------------ dispatch


def check_backend(backend: str) -> None:
    """Unknown backend -> ``ValueError``; ``"cupy"`` without CuPy kernels -> ``SnnexpError``."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown neuron backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    if backend == "cupy" and not cupy_available():
        raise SnnexpError(
            "neuron backend 'cupy' was requested but the CuPy kernels are not available; install them with "
            "`pip install snnexp[cuda]` (needs a CUDA GPU), or set the neuron's backend=torch (or auto)"
        )


def cupy_available() -> bool:
    """Whether the CuPy kernels can run here (``snnexp.kernels.cupy_available``, looked up at call time)."""
    from snnexp import kernels

    return kernels.cupy_available()


def _cpu_fused_supports(x: torch.Tensor, k: Leak, surrogate: Surrogate) -> bool:
    """Whether ``"auto"`` on the CPU takes the fused C++ path (``snnexp.kernels.cpu``), which computes the
    torch reference's function (float32; built once and cached; falls back here with one warning)."""
    if x.is_cuda:
        return False
    from snnexp.kernels.cpu import supports

    return supports(x, k, surrogate)


def resolve_backend(backend: str, x: torch.Tensor) -> str:
    """``"auto"`` -> ``"cupy"`` for CUDA tensors when the kernels are available, else ``"torch"``."""
    check_backend(backend)
    if backend == "cupy" and not x.is_cuda:
        raise SnnexpError(
            f"neuron backend 'cupy' runs on CUDA tensors only, got a tensor on {x.device}; "
            "move the model to a GPU or set the neuron's backend=torch (or auto)"
        )
    if backend == "auto":
        return "cupy" if x.is_cuda and cupy_available() else "torch"
    return backend


def multistep_neuron(
    x_seq: torch.Tensor,
    k: Leak,
    v_threshold: float,
    v_reset: float | None,
    decay_input: bool,
    detach_reset: bool,
    surrogate: Surrogate,
    backend: str = "auto",
) -> torch.Tensor:
    """Run a LIF / IF / PLIF neuron over ``x_seq [T, ...]`` from rest; returns the spikes ``[T, ...]``.

    ``k``: ``1 / tau`` (LIF), ``sigmoid(w)`` (PLIF, a scalar tensor that receives a gradient) or ``None`` (IF).
    This is the one place that picks the implementation: the CuPy kernels (``snnexp.kernels.cupy_ops``) for
    ``"cupy"`` / ``"auto"`` on CUDA tensors they cover, the fused C++ path (``snnexp.kernels.cpu``) for
    ``"auto"`` on float32 CPU tensors when it builds here, else the torch reference, which computes the same
    function (float64, a user-defined surrogate without a kernel variant).
    """
    from snnexp.kernels.variants import has_kernel

    if resolve_backend(backend, x_seq) == "cupy" and has_kernel(x_seq.dtype, surrogate):
        from snnexp.kernels.cupy_ops import multistep_neuron as multistep_cupy

        return multistep_cupy(x_seq, k, v_threshold, v_reset, decay_input, detach_reset, surrogate)
    if backend == "auto" and _cpu_fused_supports(x_seq, k, surrogate):
        from snnexp.kernels.cpu import multistep_neuron as multistep_cpu

        return multistep_cpu(x_seq, k, v_threshold, v_reset, decay_input, detach_reset, surrogate)
    return multistep_torch(x_seq, k, v_threshold, v_reset, decay_input, detach_reset, surrogate)


def fused_kernels(backend: str, x_seq: torch.Tensor, surrogate: Surrogate):
    """The kernels that run a ternary or multi-level neuron call, or None for the unrolled torch reference.

    ``snnexp.kernels.cupy_ops`` for ``"cupy"`` (and ``"auto"`` on CUDA tensors when CuPy is there) with float32 /
    float16 / bfloat16 inputs; ``snnexp.kernels.cpu`` for ``"auto"`` on float32 CPU tensors. Both modules provide
    ``ternary(x_seq, decay, v_threshold, detach_reset, surrogate)`` and
    ``multilevel(x_seq, levels, decay, v_threshold, level_spacing, detach_reset, surrogate)``.
    """
    if resolve_backend(backend, x_seq) == "cupy":
        from snnexp.kernels.variants import has_kernel

        if has_kernel(x_seq.dtype, surrogate):
            from snnexp.kernels import cupy_ops

            return cupy_ops
        return None
    if backend == "auto" and _cpu_fused_supports(x_seq, None, surrogate):
        from snnexp.kernels import cpu

        return cpu
    return None
