"""The generated CUDA kernels through CuPy: compile once per variant (NVRTC, ``cupy.RawModule``), launch on torch's
current stream, and expose each declared neuron's forward / backward as ``torch.library`` custom ops with fake
implementations and a registered autograd formula, so the neurons work under ``torch.compile`` and autocast.

Ops of a declaration ``P`` (op prefix ``op``; tensors ``[T, N]`` contiguous, ``h`` of a multi-level neuron
``[levels, T, N]``; scalars are op arguments, so changing them never recompiles)::

    snnexp::<op>_forward(x, <learnable>_param..., code, [levels,] <params>..., alpha, width) -> (out, h, saved...)
    snnexp::<op>_backward(grad_out, h, saved..., [x,] code, [levels,] <params>..., alpha, width)
        -> grad_x, or (grad_x, grad_params [n_learnable]) when the neuron has learnable parameters

e.g. ``snnexp::neuron_forward(x, k_param, code, k, v_threshold, v_reset, alpha, width)`` for LIF / IF / PLIF,
``snnexp::ternary_forward(x, code, decay, v_threshold, alpha, width)``. ``code`` is the integer code of a
:class:`~snnexp.kernels.variants.Variant` minus its dtype (the dtype is the tensors'). A learnable parameter is a
float argument (read once per call) and its tensor is passed too, only to receive its gradient. ``x`` goes to the
backward only where it reads it (PLIF with decay_input). CuPy is imported on first launch;
``snnexp.kernels.cupy_available`` tries it first.
"""

from __future__ import annotations

import functools
import threading
from importlib import import_module

import torch

from snnexp.kernels import expr, sources
from snnexp.kernels.spec import NeuronSpec, registered
from snnexp.kernels.variants import (
    DTYPES, Variant, kind_codes, level_variant, surrogate_kinds, surrogate_scalars, variant_for, variant_of,
)


@functools.cache
def _cupy():
    """CuPy, imported on first use (after the ops below are registered)."""
    return import_module("cupy")


BLOCK = 256
_lock = threading.Lock()


# -------------------------------------------------------------------------------------------- variants


def encode(v: Variant) -> int:
    return (((kind_codes()[v.kind] * 2 + v.hard_reset) * 2 + v.detach_reset) * 2 + v.decay_input) * 8 + \
        surrogate_kinds()[v.surrogate]


def decode(code: int, dtype: torch.dtype) -> Variant:
    sg, rest = code % 8, code // 8
    decay, rest = rest % 2, rest // 2
    detach, rest = rest % 2, rest // 2
    hard, kind = rest % 2, rest // 2
    kinds = {v: k for k, v in kind_codes().items()}
    surrogates = {v: k for k, v in surrogate_kinds().items()}
    return Variant(kinds[kind], bool(hard), bool(detach), bool(decay), surrogates[sg], dtype)


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


def _schemas(spec: NeuronSpec) -> tuple[str, str]:
    levels = ["int levels"] if spec.levels else []
    scalars = levels + [f"float {p.name}" for p in spec.params] + ["float alpha", "float width"]
    learnt = [f"Tensor {p.name}_param" for p in spec.learnable]
    outputs = ", ".join(["Tensor"] * (2 + len(spec.saved)))
    forward = f"(Tensor x, {', '.join(learnt + ['int code'] + scalars)}) -> ({outputs})"
    inputs = ["Tensor grad_out", "Tensor h"] + [f"Tensor saved_{v}" for v in spec.saved]
    inputs += ["Tensor x"] if spec.reads("x") else []
    result = "(Tensor, Tensor)" if spec.learnable else "Tensor"
    backward = f"({', '.join(inputs + ['int code'] + scalars)}) -> {result}"
    return forward, backward


def _define_ops(spec: NeuronSpec) -> tuple:
    """Register ``snnexp::<op>_forward`` / ``_backward`` of one declaration, with fakes and autograd."""
    nlearn, nsaved, reads_x = len(spec.learnable), len(spec.saved), spec.reads("x")
    nscalars = len(spec.params) + 2 + int(spec.levels)  # (levels,) params, alpha, width
    forward_schema, backward_schema = _schemas(spec)

    def as_scalars(scalars) -> list:
        """Op scalars as kernel arguments: levels an int (int32), the rest floats (float32)."""
        return [int(v) if spec.levels and i == 0 else float(v) for i, v in enumerate(scalars)]

    def h_shape(x, scalars):
        return (scalars[0], *x.shape) if spec.levels else tuple(x.shape)

    def forward_impl(x, *args):
        code, scalars = args[nlearn], args[nlearn + 1:]
        x = x.contiguous()
        out, h = torch.empty_like(x), x.new_empty(h_shape(x, scalars))
        saved = [torch.empty(h.shape, dtype=torch.float32, device=x.device) for _ in range(nsaved)]
        _launch(code, x, False, (x, out, h, *saved), *x.shape, *as_scalars(scalars[:-2]))
        return (out, h, *saved)

    def forward_fake(x, *args):
        scalars = args[nlearn + 1:]
        h = x.new_empty(h_shape(x, scalars))
        return (torch.empty_like(x), h, *(h.new_empty(h.shape, dtype=torch.float32) for _ in range(nsaved)))

    def backward_impl(grad_out, h, *args):
        saved, rest = args[:nsaved], args[nsaved:]
        x, rest = (rest[0], rest[1:]) if reads_x else (None, rest)
        code, scalars = rest[0], rest[1:]
        grad_out, h = grad_out.to(h.dtype).contiguous(), h.contiguous()
        grad_x = torch.empty_like(grad_out)
        grads = [torch.zeros(nlearn, dtype=torch.float32, device=h.device)] if nlearn else []
        x_ptr = [x.contiguous() if x.numel() else None] if reads_x else []
        _launch(code, h, True, (grad_out, h, *(s.contiguous() for s in saved), *x_ptr, grad_x, *grads),
                *grad_out.shape, *as_scalars(scalars))
        return (grad_x, *grads) if nlearn else grad_x

    def backward_fake(grad_out, h, *args):
        grad_x = torch.empty_like(grad_out, dtype=h.dtype)
        return (grad_x, h.new_empty((nlearn,), dtype=torch.float32)) if nlearn else grad_x

    forward = torch.library.custom_op(f"snnexp::{spec.op}_forward", forward_impl, mutates_args=(),
                                      schema=forward_schema)
    forward.register_fake(forward_fake)
    backward = torch.library.custom_op(f"snnexp::{spec.op}_backward", backward_impl, mutates_args=(),
                                       schema=backward_schema)
    backward.register_fake(backward_fake)

    def setup_context(ctx, inputs, output):
        x, learnt, code, scalars = inputs[0], inputs[1:1 + nlearn], inputs[1 + nlearn], inputs[2 + nlearn:]
        variant = decode(code, x.dtype)
        keep_x = reads_x and _needs_x(variant)
        ctx.code, ctx.scalars, ctx.learnt_shapes = code, scalars, [(t.dtype, t.shape) for t in learnt]
        ctx.save_for_backward(*output[1:], *([x if keep_x else x.new_empty(0)] if reads_x else []))

    def backward_formula(ctx, grad_out, *unused):
        tensors = ctx.saved_tensors
        result = backward(grad_out, *tensors, ctx.code, *ctx.scalars)
        grad_x, grads = (result[0], result[1]) if nlearn else (result, None)
        wanted = getattr(ctx, "needs_input_grad", None) or [True] * (1 + nlearn)
        learnt = [grads[j].to(dtype).reshape(shape) if wanted[1 + j] else None
                  for j, (dtype, shape) in enumerate(ctx.learnt_shapes)]
        return (grad_x, *learnt, None, *([None] * nscalars))

    torch.library.register_autograd(f"snnexp::{spec.op}_forward", backward_formula, setup_context=setup_context)
    return forward, backward


def _needs_x(variant: Variant) -> bool:
    """Whether this call's backward reads x: a partial derivative reads it, once the switches are known, other
    than those of learnable parameters this kind does not learn (LIF keeps x only for PLIF with decay_input)."""
    spec = variant.spec
    env = {"kind": variant.kind, "hard_reset": variant.hard_reset, "decay_input": variant.decay_input}
    unlearnt = {p.name for p in spec.learnable if p.learnable is not True and not expr.evaluate(p.learnable, env)}
    return any(name not in unlearnt and "x" in _live_names(text, env)
               for table in (spec.dh, spec.ds, *spec.dreset.values()) for name, text in table.items())


def _live_names(text: str, env: dict) -> set[str]:
    """The names a partial reads once the switches are known (``a if decay_input else b`` -> a's names)."""
    import ast

    node = expr.parse(text)
    while isinstance(node, ast.IfExp):
        test = ast.unparse(node.test)
        if not expr.names(test) <= set(env):
            break
        node = node.body if expr.evaluate(test, env) else node.orelse
    return expr.names(ast.unparse(node))


OPS: dict[str, tuple] = {spec.name: _define_ops(spec) for spec in registered()}
for _spec, (_forward, _backward) in zip(registered(), OPS.values()):
    globals()[f"{_spec.op}_forward"], globals()[f"{_spec.op}_backward"] = _forward, _backward


def _index(device: torch.device) -> int:
    return device.index if device.index is not None else torch.cuda.current_device()


def _check_tensor(x_seq: torch.Tensor) -> None:
    if x_seq.dtype not in DTYPES:
        raise TypeError(f"the CuPy neuron kernels take float32, float16 or bfloat16 inputs, got {x_seq.dtype}; "
                        "cast the input or set the neuron's backend=torch")
    if not x_seq.is_cuda:
        raise ValueError(f"the CuPy neuron kernels run on CUDA tensors, got {x_seq.device}")


def run(variant: Variant, x_seq, params: dict, surrogate, levels: int = 1, learnt: dict | None = None):
    """The CUDA kernels of any declared neuron over ``x_seq [T, ...]``: ``params`` by name (floats), ``learnt`` the
    tensors of the learnable parameters by name (missing: not learnt in this call). Returns the output."""
    _check_tensor(x_seq)
    spec = variant.spec
    learnt = learnt or {}
    tensors = [learnt[p.name] if p.name in learnt else x_seq.new_empty(()) for p in spec.learnable]
    scalars = ([int(levels)] if spec.levels else []) + [float(params[p.name]) for p in spec.params]
    forward, _ = OPS[spec.name]
    shape = x_seq.shape
    out, *_ = forward(x_seq.reshape(shape[0], -1), *tensors, encode(variant), *scalars, *surrogate_scalars(surrogate))
    return out.reshape(shape)


def multistep_neuron(x_seq, k, v_threshold, v_reset, decay_input, detach_reset, surrogate):
    """Multi-step LIF / IF / PLIF on CUDA (``backend="cupy"``); same function as the torch reference.

    PLIF reads ``k = sigmoid(w)`` on the host once per call (one device sync; a graph break under
    ``torch.compile``); LIF / IF pass their constants straight through.
    """
    _check_tensor(x_seq)
    kind = "if" if k is None else ("plif" if isinstance(k, torch.Tensor) else "lif")
    variant = variant_for(kind, v_reset, detach_reset, decay_input, surrogate, x_seq.dtype)
    k_value = float(k.detach().float().item()) if kind == "plif" else (0.0 if k is None else float(k))
    params = {"k": k_value, "v_threshold": v_threshold, "v_reset": 0.0 if v_reset is None else v_reset}
    return run(variant, x_seq, params, surrogate, learnt={"k": k} if kind == "plif" else None)


def ternary(x_seq, decay, v_threshold, detach_reset, surrogate):
    """Ternary spikes ``{-1, 0, 1}`` of ``x_seq [T, ...]`` on CUDA (the amplitude is applied by the caller)."""
    variant = level_variant("ternary", detach_reset, surrogate, x_seq.dtype)
    return run(variant, x_seq, {"decay": decay, "v_threshold": v_threshold}, surrogate)


def multilevel(x_seq, levels, decay, v_threshold, level_spacing, detach_reset, surrogate):
    """Multi-level firing output ``sum_l S_l`` of ``x_seq [T, ...]`` on CUDA (at most 8 levels)."""
    variant = variant_of("mlf", detach_reset, surrogate, x_seq.dtype)
    params = {"decay": decay, "v_threshold": v_threshold, "level_spacing": level_spacing}
    return run(variant, x_seq, params, surrogate, levels=levels)
