"""Tensors the backward can recompute instead of keeping: a BatchNorm's output, a residual sum, a convolution's.

In a spiking network a neuron saves its input for the backward: a BatchNorm's output (or that plus a shortcut),
as large as the BN's own input, which BN saves anyway. A :class:`Recipe` tagged on such a tensor says how to get
it again, bit for bit, from what autograd keeps: ``BN(y)`` from BN's saved input ``y`` (the batch statistics are
recomputed by the same kernel), ``a + b`` from its operands (themselves recomputable, or spikes kept as bits).
A convolution's output, the input that BN saves, can be tagged too (``recompute_conv``): the convolution again on
its input (spikes kept as bits, or the tensor it keeps anyway), once per backward for BN and the neuron together;
by default only where that is cheap (:func:`cheap_convolutions`).
``snnexp.training.spike_packing`` reads the tags when autograd saves a tensor; nothing here changes a result.
"""

from __future__ import annotations

import contextlib
import functools
import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from snnexp.kernels import cpu as cpu_kernels

RECIPE_ATTR = "_snnexp_recipe"
_recording = 0  # > 0 inside recording(): tags are attached only where something will read them
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)  # exact types: a subclass may compute otherwise


@dataclass(eq=False)
class Recipe:
    """``fn(*kept, *operands)`` gives the tagged tensor again. ``kept``: tensors autograd keeps anyway (a BN's
    input and affine parameters), held as they are (or by their own recipe); ``operands``: tensors that are kept only
    if they can be kept compactly themselves. ``version``: the tagged tensor's version when tagged (an in-place
    change voids it). ``shared``: every saved copy of the tensor (BN's input, and the same input in the recipe of
    BN's output) is recomputed once per backward, the result held until the last of them is used."""

    fn: Callable[..., torch.Tensor]
    kept: tuple[torch.Tensor, ...]
    operands: tuple[torch.Tensor, ...]
    version: int
    shape: torch.Size
    stride: tuple[int, ...]
    shared: bool = False


@contextlib.contextmanager
def recording():
    """Tag recomputable tensors inside the block (else a tag would only hold its operands alive)."""
    global _recording
    _recording += 1
    try:
        yield
    finally:
        _recording -= 1


def tag(output: torch.Tensor, fn: Callable[..., torch.Tensor], kept=(), operands=(), shared: bool = False
        ) -> torch.Tensor:
    """Attach ``Recipe(fn, kept, operands, shared=shared)`` to ``output`` (a fresh tensor, not a view) inside
    :func:`recording`; return ``output``."""
    if not _recording:
        return output
    setattr(output, RECIPE_ATTR, Recipe(fn, tuple(kept), tuple(operands), output._version, output.shape,
                                        output.stride(), shared))
    return output


def root_of(x: torch.Tensor) -> torch.Tensor:
    """The tensor ``x`` views, or ``x`` itself: where tags and marks live."""
    return x._base if x._base is not None else x


def recipe_of(x: torch.Tensor) -> Recipe | None:
    """The recipe of ``x`` or of the tensor it views, if neither was changed in place since it was tagged."""
    recipe = getattr(root_of(x), RECIPE_ATTR, None)
    return recipe if recipe is not None and x._version == recipe.version else None


def untag(x: torch.Tensor) -> None:
    """Drop the recipe of ``x`` (or of the tensor it views): ``x`` is kept as it is, and its operands need not be."""
    root = root_of(x)
    if hasattr(root, RECIPE_ATTR):
        delattr(root, RECIPE_ATTR)


def residual_add(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a + b``, tagged as recomputable from its operands while autograd records (a residual sum)."""
    out = a + b
    if torch.is_grad_enabled() and out.requires_grad:
        tag(out, _sum_again, operands=(a, b))
    return out


SHARED_ATTR = "_snnexp_shared"  # on a recomputed tensor that other saved copies will read again: never written


def _sum_again(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a + b`` for the backward, into ``a`` where it can (a fresh recomputation that nothing else reads: one
    buffer less)."""
    if a.shape == b.shape and a.dtype == b.dtype and not getattr(root_of(a), SHARED_ATTR, False):
        return a.add_(b)
    return a + b


CONVOLUTIONS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)  # and their subclasses (Winograd, im2col backward, binary weights)
CHEAP_FRACTION = 16  # recompute_conv=cheap: convolutions that take at most 1/16 of the costliest's work per output


def cheap_convolutions(model: nn.Module) -> list[nn.Module]:
    """The convolutions of ``model`` whose outputs cost little to compute again next to the memory they free: at
    most 1/:data:`CHEAP_FRACTION` of the multiply-adds per output value of its costliest convolution. In ResNet-19
    those are the encoding layer on RGB (27 per value) and the 1x1 shortcuts (64-256) against 4608 for a 3x3
    convolution over 512 channels; where 1x1 convolutions do the work (PointNet, a transformer's MLP) they are not
    cheap, and only an encoding layer on a few input channels is."""
    convolutions = [m for m in model.modules() if isinstance(m, CONVOLUTIONS)]
    work = [m.in_channels // m.groups * math.prod(m.kernel_size) for m in convolutions]
    most = max(work, default=0)
    return [m for m, w in zip(convolutions, work) if w * CHEAP_FRACTION <= most]


def tag_convolution(module: nn.Module, args, output) -> None:
    """Forward hook for a convolution (``recompute_conv``): tag its output as recomputable by the module's own
    forward on the same input, which gives the same output bit for bit. Where the weight has a gradient the
    convolution keeps its input anyway, and the recipe keeps it too (spikes as bits, real values as they are);
    else the input is kept only if it is compact itself, and a convolution of real values keeps its output."""
    if not torch.is_grad_enabled() or not isinstance(output, torch.Tensor) or output._base is not None \
            or not output.requires_grad or not args or not isinstance(args[0], torch.Tensor):
        return
    params = tuple(p.detach() for p in (module.weight, module.bias) if p is not None)
    x, keeps_input = args[0], module.weight.requires_grad
    again = functools.partial(_convolve_again, module, len(params), output.device.type,
                              cpu_kernels.autocast_dtype(output.device.type))
    tag(output, again, kept=params + ((x,) if keeps_input else ()), operands=() if keeps_input else (x,), shared=True)


def _convolve_again(module: nn.Module, n_params: int, device_type: str, precision: torch.dtype | None,
                    *args) -> torch.Tensor:
    """``module``'s forward on its input (the last argument) under the forward's autocast ``precision`` (None:
    off), without its hooks (a counter would count it twice); the parameters before it are kept for their version
    check only."""
    with torch.autocast(device_type, dtype=precision, enabled=precision is not None):
        return module.forward(args[n_params])


def _batch_norm_again(eps: float, y: torch.Tensor, weight, bias, mean=None, invstd=None) -> torch.Tensor:
    """Training-mode BN of ``y`` with its own batch statistics: the forward's output, bit for bit. A contiguous
    float32 CPU ``y`` is normalised into a buffer of the CPU path's cache (made at every step: no fresh pages to
    fault): in one pass from the batch ``mean`` / ``invstd`` the forward saved, where that is checked to round as
    torch's kernel does, else by the same kernel on the same input (the running statistics, not passed, do not
    enter the output)."""
    if y.device.type != "cpu" or y.dtype != torch.float32 or not y.is_contiguous():
        return F.batch_norm(y, None, None, weight, bias, True, 0.0, eps)
    if mean is not None and y.dim() >= 2 and _affine_rounds_as_torch():
        out = _batch_norm_in_one_pass(y, weight, bias, mean, invstd)
        if out is not None:
            return out
    out, mean, invstd = cpu_kernels.cached_empty(y.shape), y.new_empty(0), y.new_empty(0)
    return torch.ops.aten.native_batch_norm.out(y, weight, bias, None, None, True, 0.0, eps, out=out,
                                                save_mean=mean, save_invstd=invstd)[0]


def _batch_norm_in_one_pass(y: torch.Tensor, weight, bias, mean: torch.Tensor, invstd: torch.Tensor):
    """BN's output from its saved batch statistics (``alpha = invstd * weight``, no bias as zeros), by the CPU
    extension's one pass; None while the extension is not loaded."""
    alpha = invstd if weight is None else invstd * weight
    return cpu_kernels.batch_norm_affine(y, alpha, mean, torch.zeros_like(mean) if bias is None else bias)


def _affine_rounds_as_torch() -> bool:
    """Whether the one-pass BN output equals torch's CPU kernel here, bit for bit (its rounding depends on how
    torch was built: FMA-contracted vector code on x86-64). Asked only once the extension is loaded, so that a
    call before then does not settle the answer."""
    return bool(cpu_kernels.extension.cache_info().currsize) and _one_pass_matches_torch()


@functools.cache
def _one_pass_matches_torch() -> bool:
    """The check behind :func:`_affine_rounds_as_torch`, once per process, on shapes with vector tails."""
    gen = torch.Generator().manual_seed(0)
    for shape in ((3, 5, 7, 9), (6, 4), (2, 16, 33)):
        y = torch.randn(shape, generator=gen) * 3 + 1
        weight, bias = torch.randn(shape[1], generator=gen), torch.randn(shape[1], generator=gen)
        for w, b in ((weight, bias), (None, None)):
            out, mean, invstd = torch.ops.aten.native_batch_norm(y, w, b, None, None, True, 0.0, 1e-5)
            if not torch.equal(_batch_norm_in_one_pass(y, w, b, mean, invstd), out):
                return False
    return True


def tag_batch_norm(module: nn.Module, args, output) -> None:
    """Forward hook for the exact ``nn.BatchNorm*d``: tag its output when it normalises with batch statistics.
    The type is checked at each call: a module whose class was changed since (DDP's global-statistics BN) computes
    otherwise and is left alone."""
    batch_stats = module.training or (module.running_mean is None and module.running_var is None)
    if type(module) not in BATCH_NORMS or not batch_stats or not torch.is_grad_enabled():
        return
    if isinstance(output, torch.Tensor) and output._base is None and output.requires_grad:
        weight = None if module.weight is None else module.weight.detach()
        bias = None if module.bias is None else module.bias.detach()
        stats = ()
        node = output.grad_fn
        if output.device.type == "cpu" and type(node).__name__ == "NativeBatchNormBackward0":
            stats = (node._saved_result1, node._saved_result2)  # the batch mean and invstd it normalised with
        y = args[0].detach()
        recipe = recipe_of(args[0])
        if recipe is not None:  # a recomputable convolution output: the recipe goes with it
            setattr(y, RECIPE_ATTR, recipe)
        tag(output, functools.partial(_batch_norm_again, module.eps), kept=(y, weight, bias, *stats))
