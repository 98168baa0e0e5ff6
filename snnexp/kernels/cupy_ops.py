"""The CUDA kernels through CuPy: compile once per variant (NVRTC, ``cupy.RawModule``), launch on torch's
current stream, and expose forward / backward as ``torch.library`` custom ops with fake implementations and a
registered autograd formula, so the neurons work under ``torch.compile`` and autocast.

Ops (all tensors ``[T, N]`` contiguous; scalars are op arguments, so changing them never recompiles):

    snnexp::neuron_forward(x, k_param, code, k, v_threshold, v_reset, alpha, width) -> (spikes, h)
    snnexp::neuron_backward(grad_s, h, x, code, k, v_threshold, v_reset, alpha, width) -> (grad_x, grad_k)

and for the ternary and multi-level neurons (``h`` of the multi-level neuron is ``[levels, T, N]``):

    snnexp::ternary_forward(x, code, decay, v_threshold, alpha, width) -> (spikes, h)
    snnexp::ternary_backward(grad_s, h, code, decay, v_threshold, alpha, width) -> grad_x
    snnexp::multilevel_forward(x, code, levels, decay, v_threshold, level_spacing, alpha, width) -> (out, h)
    snnexp::multilevel_backward(grad_out, h, code, levels, decay, v_threshold, level_spacing, alpha, width) -> grad_x

``code`` is the integer code of :class:`~snnexp.kernels.variants.Variant` minus its dtype (the dtype is the
tensors'). ``k`` is a float argument (PLIF reads ``sigmoid(w)`` once per call); PLIF's leak tensor is passed
too, only to receive dL/dk. CuPy is imported on first launch; ``snnexp.kernels.cupy_available`` tries it first.
"""

from __future__ import annotations

import functools
import threading

import torch

from importlib import import_module

from snnexp.kernels import sources
from snnexp.kernels.variants import (
    DTYPES, KINDS, LEVEL_KINDS, SURROGATE_KINDS, Variant, level_variant, surrogate_scalars, variant_for,
)


@functools.cache
def _cupy():
    """CuPy, imported on first use (after the ops below are registered)."""
    return import_module("cupy")


BLOCK = 256
_lock = threading.Lock()
_SURROGATE_NAMES = {v: k for k, v in SURROGATE_KINDS.items()}
_KIND_CODES = {**KINDS, **{kind: len(KINDS) + i for i, kind in enumerate(LEVEL_KINDS)}}
_KIND_NAMES = {v: k for k, v in _KIND_CODES.items()}


# -------------------------------------------------------------------------------------------- variants


def encode(v: Variant) -> int:
    return (((_KIND_CODES[v.kind] * 2 + v.hard_reset) * 2 + v.detach_reset) * 2 + v.decay_input) * 8 + SURROGATE_KINDS[
        v.surrogate
    ]


def decode(code: int, dtype: torch.dtype) -> Variant:
    sg, rest = code % 8, code // 8
    decay, rest = rest % 2, rest // 2
    detach, rest = rest % 2, rest // 2
    hard, kind = rest % 2, rest // 2
    return Variant(_KIND_NAMES[kind], bool(hard), bool(detach), bool(decay), _SURROGATE_NAMES[sg], dtype)


_modules: dict[tuple[Variant, int], tuple] = {}


def kernels(variant: Variant, device_index: int):
    """(forward, backward) ``cupy.RawKernel`` of this variant on this device, compiled once per process (and
    cached on disk by CuPy, ``~/.cupy/kernel_cache``) for the device's architecture."""
    key = (variant, device_index)
    found = _modules.get(key)
    if found is None:
        with _lock:
            found = _modules.get(key)
            if found is None:
                cupy = _cupy()
                with cupy.cuda.Device(device_index):
                    module = cupy.RawModule(
                        code=sources.kernel_source(),
                        options=(
                            "-std=c++17", "--fmad=false", f"-DSNN_BLOCK={BLOCK}",
                            *(f"-I{d}" for d in sources.cuda_include_dirs()),
                        ),
                        name_expressions=list(dict.fromkeys(variant.name_expressions)),
                    )
                    found = (module.get_function(variant.forward_name), module.get_function(variant.backward_name))
                _modules[key] = found
    return found


def _launch(code: int, like: torch.Tensor, backward: bool, tensors, T: int, n: int, *scalars) -> None:
    """Launch the forward or backward kernel of variant ``code`` (dtype of ``like``) over ``n`` neurons on torch's
    current stream. Kernel arguments: the tensors' pointers (None: a null pointer), ``T`` (int32), ``n`` (int64),
    then the scalars (int -> int32, float -> float32)."""
    if T == 0 or n == 0:
        return
    cupy = _cupy()
    index = _index(like.device)
    kernel = kernels(decode(code, like.dtype), index)[int(backward)]
    args = (
        *(cupy.uint64(0 if t is None else t.data_ptr()) for t in tensors), cupy.int32(T), cupy.int64(n),
        *(cupy.int32(v) if isinstance(v, int) else cupy.float32(v) for v in scalars),
    )
    with cupy.cuda.Device(index):  # restores the previous current device on exit
        stream = cupy.cuda.ExternalStream(torch.cuda.current_stream(index).cuda_stream, index)
        kernel(((n + BLOCK - 1) // BLOCK,), (BLOCK,), args, stream=stream)


# -------------------------------------------------------------------------------------------------- ops


@torch.library.custom_op("snnexp::neuron_forward", mutates_args=())
def neuron_forward(
    x: torch.Tensor, k_param: torch.Tensor, code: int, k: float, v_threshold: float, v_reset: float,
    alpha: float, width: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``x [T, N] -> (spikes, h)``. ``k_param``: PLIF's leak tensor (only routes dL/dk; its value is ``k``)."""
    x = x.contiguous()
    s, h = torch.empty_like(x), torch.empty_like(x)
    _launch(code, x, False, (x, s, h), *x.shape, float(k), float(v_threshold), float(v_reset))
    return s, h


@neuron_forward.register_fake
def _(x, k_param, code, k, v_threshold, v_reset, alpha, width):
    return torch.empty_like(x), torch.empty_like(x)


@torch.library.custom_op("snnexp::neuron_backward", mutates_args=())
def neuron_backward(
    grad_s: torch.Tensor, h: torch.Tensor, x: torch.Tensor, code: int, k: float, v_threshold: float,
    v_reset: float, alpha: float, width: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(dL/dS, H, X) -> (dL/dX, dL/dk)``; ``X`` is read only by PLIF with decay_input (else may be empty)."""
    grad_s, h, x = grad_s.to(h.dtype).contiguous(), h.contiguous(), x.contiguous()
    grad_x = torch.empty_like(h)
    grad_k = torch.zeros((), dtype=torch.float32, device=h.device)
    _launch(code, h, True, (grad_s, h, x if x.numel() else None, grad_x, grad_k), *h.shape, float(k),
            float(v_threshold), float(v_reset), float(alpha), float(width))
    return grad_x, grad_k


@neuron_backward.register_fake
def _(grad_s, h, x, code, k, v_threshold, v_reset, alpha, width):
    return torch.empty_like(h), h.new_empty((), dtype=torch.float32)


def _setup_context(ctx, inputs, output):
    x, k_param, code, k, v_threshold, v_reset, alpha, width = inputs
    _, h = output
    variant = decode(code, x.dtype)
    ctx.params = (code, k, v_threshold, v_reset, alpha, width, variant.kind == "plif")
    keep_x = variant.kind == "plif" and variant.decay_input
    ctx.save_for_backward(h, x if keep_x else x.new_empty(0), k_param)


def _backward(ctx, grad_s, grad_h):
    h, x, k_param = ctx.saved_tensors
    code, k, v_threshold, v_reset, alpha, width, plif = ctx.params
    grad_x, grad_k = neuron_backward(grad_s, h, x, code, k, v_threshold, v_reset, alpha, width)
    grad_k = grad_k.to(k_param.dtype).reshape(k_param.shape) if plif else None
    return grad_x, grad_k, None, None, None, None, None, None


torch.library.register_autograd("snnexp::neuron_forward", _backward, setup_context=_setup_context)


# ------------------------------------------------------------------------------ ternary and multi-level ops
# The forward ops take the surrogate's (alpha, width) too, unused there, so that autograd hands them to backward.


@torch.library.custom_op("snnexp::ternary_forward", mutates_args=())
def ternary_forward(x: torch.Tensor, code: int, decay: float, v_threshold: float, alpha: float,
                    width: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``x [T, N] -> (spikes in {-1, 0, 1}, h)``."""
    x = x.contiguous()
    s, h = torch.empty_like(x), torch.empty_like(x)
    _launch(code, x, False, (x, s, h), *x.shape, float(decay), float(v_threshold))
    return s, h


@ternary_forward.register_fake
def _(x, code, decay, v_threshold, alpha, width):
    return torch.empty_like(x), torch.empty_like(x)


@torch.library.custom_op("snnexp::ternary_backward", mutates_args=())
def ternary_backward(grad_s: torch.Tensor, h: torch.Tensor, code: int, decay: float, v_threshold: float,
                     alpha: float, width: float) -> torch.Tensor:
    """``(dL/dS, H) -> dL/dX``."""
    grad_s, h = grad_s.to(h.dtype).contiguous(), h.contiguous()
    grad_x = torch.empty_like(h)
    _launch(code, h, True, (grad_s, h, grad_x), *h.shape, float(decay), float(v_threshold), float(alpha),
            float(width))
    return grad_x


@ternary_backward.register_fake
def _(grad_s, h, code, decay, v_threshold, alpha, width):
    return torch.empty_like(h)


def _ternary_setup(ctx, inputs, output):
    ctx.params = inputs[1:]  # code, decay, v_threshold, alpha, width
    ctx.save_for_backward(output[1])


def _ternary_backward(ctx, grad_s, grad_h):
    (h,) = ctx.saved_tensors
    return ternary_backward(grad_s, h, *ctx.params), None, None, None, None, None


torch.library.register_autograd("snnexp::ternary_forward", _ternary_backward, setup_context=_ternary_setup)


@torch.library.custom_op("snnexp::multilevel_forward", mutates_args=())
def multilevel_forward(x: torch.Tensor, code: int, levels: int, decay: float, v_threshold: float,
                       level_spacing: float, alpha: float, width: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``x [T, N] -> (sum_l S_l [T, N], h [levels, T, N])``."""
    x = x.contiguous()
    out, h = torch.empty_like(x), x.new_empty((levels, *x.shape))
    _launch(code, x, False, (x, out, h), *x.shape, int(levels), float(decay), float(v_threshold),
            float(level_spacing))
    return out, h


@multilevel_forward.register_fake
def _(x, code, levels, decay, v_threshold, level_spacing, alpha, width):
    return torch.empty_like(x), x.new_empty((levels, *x.shape))


@torch.library.custom_op("snnexp::multilevel_backward", mutates_args=())
def multilevel_backward(grad_out: torch.Tensor, h: torch.Tensor, code: int, levels: int, decay: float,
                        v_threshold: float, level_spacing: float, alpha: float, width: float) -> torch.Tensor:
    """``(dL/dO, H [levels, T, N]) -> dL/dX [T, N]``."""
    grad_out, h = grad_out.to(h.dtype).contiguous(), h.contiguous()
    grad_x = torch.empty_like(grad_out)
    _launch(code, h, True, (grad_out, h, grad_x), *grad_out.shape, int(levels), float(decay),
            float(v_threshold), float(level_spacing), float(alpha), float(width))
    return grad_x


@multilevel_backward.register_fake
def _(grad_out, h, code, levels, decay, v_threshold, level_spacing, alpha, width):
    return torch.empty_like(grad_out, dtype=h.dtype)


def _multilevel_setup(ctx, inputs, output):
    ctx.params = inputs[1:]  # code, levels, decay, v_threshold, level_spacing, alpha, width
    ctx.save_for_backward(output[1])


def _multilevel_backward(ctx, grad_out, grad_h):
    (h,) = ctx.saved_tensors
    return (multilevel_backward(grad_out, h, *ctx.params),) + (None,) * 7


torch.library.register_autograd("snnexp::multilevel_forward", _multilevel_backward, setup_context=_multilevel_setup)


def _index(device: torch.device) -> int:
    return device.index if device.index is not None else torch.cuda.current_device()


def multistep_neuron(x_seq, k, v_threshold, v_reset, decay_input, detach_reset, surrogate):
    """Multi-step LIF / IF / PLIF on CUDA (``backend="cupy"``); same function as the torch reference.

    PLIF reads ``k = sigmoid(w)`` on the host once per call (one device sync; a graph break under
    ``torch.compile``); LIF / IF pass their constants straight through.
    """
    _check_tensor(x_seq)
    kind = "if" if k is None else ("plif" if isinstance(k, torch.Tensor) else "lif")
    variant = variant_for(kind, v_reset, detach_reset, decay_input, surrogate, x_seq.dtype)
    if kind == "plif":
        k_param, k_value = k, float(k.detach().float().item())
    else:
        k_param, k_value = x_seq.new_empty(()), 0.0 if k is None else float(k)  # placeholder, no grad
    shape = x_seq.shape
    s, _ = neuron_forward(
        x_seq.reshape(shape[0], -1), k_param, encode(variant), k_value, float(v_threshold),
        0.0 if v_reset is None else float(v_reset), *surrogate_scalars(surrogate),
    )
    return s.reshape(shape)


def _check_tensor(x_seq: torch.Tensor) -> None:
    if x_seq.dtype not in DTYPES:
        raise TypeError(f"the CuPy neuron kernels take float32, float16 or bfloat16 inputs, got {x_seq.dtype}; "
                        "cast the input or set the neuron's backend=torch")
    if not x_seq.is_cuda:
        raise ValueError(f"the CuPy neuron kernels run on CUDA tensors, got {x_seq.device}")


def ternary(x_seq, decay, v_threshold, detach_reset, surrogate):
    """Ternary spikes ``{-1, 0, 1}`` of ``x_seq [T, ...]`` on CUDA (the amplitude is applied by the caller)."""
    _check_tensor(x_seq)
    code = encode(level_variant("ternary", detach_reset, surrogate, x_seq.dtype))
    s, _ = ternary_forward(x_seq.reshape(x_seq.shape[0], -1), code, float(decay), float(v_threshold),
                           *surrogate_scalars(surrogate))
    return s.reshape(x_seq.shape)


def multilevel(x_seq, levels, decay, v_threshold, level_spacing, detach_reset, surrogate):
    """Multi-level firing output ``sum_l S_l`` of ``x_seq [T, ...]`` on CUDA (at most SNN_MAX_LEVELS = 8 levels)."""
    _check_tensor(x_seq)
    code = encode(level_variant("mlf", detach_reset, surrogate, x_seq.dtype))
    out, _ = multilevel_forward(x_seq.reshape(x_seq.shape[0], -1), code, int(levels), float(decay),
                                float(v_threshold), float(level_spacing), *surrogate_scalars(surrogate))
    return out.reshape(x_seq.shape)
