"""Stride-2 convolutions on the CPU as matrix products (MKL) over im2col columns: 3x3 (padding 1) in the backward,
1x1 in both passes.

The forward is torch's (oneDNN), already close to the machine's matrix-product speed. oneDNN's backward for these
layers is slower: 120-250 GFLOP/s against MKL's 300 for the same products (VGGSNN's stride-2 layers at T*B = 160,
2 cores of an AVX-512 Xeon), so the backward here instead unfolds the saved input into columns ``[9C, M]``
(``M = N * Ho * Wo``, in chunks of images that stay cache-sized), and computes

* the weight gradient ``dW [K, 9C] += dY [K, M] cols^T``, and
* the input gradient ``cols' = W^T [9C, K] dY [K, M]``, folded back into the image (the adjoint of the unfold).

The im2col and fold loops are ``cuda/unfold_cpu.cpp``, built like the neuron extension
(:func:`snnexp.kernels.cpu.load_cached`). A 1x1 stride-2 convolution (a ResNet shortcut) needs no unfold: its columns
are the even pixels, and both passes are products on them (oneDNN ran ResNet-19's at a third of that speed, backward
included). Results equal torch's convolution up to float32 rounding (tests compare with float64).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from snnexp.kernels import cpu, sources

SOURCE = "unfold_cpu.cpp"
CHUNK_BYTES = 16 << 20  # the columns of one chunk of images
MIN_CHANNELS = 16  # below this, the products are too thin to beat oneDNN


@functools.cache
def extension():
    """Build (or load from the cache) and import the unfold / fold loops; raises if they cannot be built."""
    with sources.source_dir() as cuda_dir:
        return cpu.load_cached("snnexp_unfold_cpu", [cuda_dir / SOURCE], cflags=cpu.CFLAGS, ldflags=cpu.LDFLAGS,
                               what="the strided convolution's im2col loops",
                               usually="about 15 seconds on 2 idle cores")


@functools.cache
def available() -> bool:
    """True when the loops build and load here; otherwise one warning with the reason, and False."""
    return cpu.loads(extension, "the strided convolution's im2col loops", "torch's convolution backward")


def supports(x: torch.Tensor, weight: torch.Tensor, size: int = 3) -> bool:
    """Whether :func:`conv3x3_stride2` (``size`` 3) or :func:`conv1x1_stride2` (``size`` 1) takes this call: float32
    CPU tensors outside autocast and compilation, a batch of 2-d images, a ``[K, C, size, size]`` filter with ``C``
    and ``K`` at least :data:`MIN_CHANNELS`."""
    if x.dim() != 4 or weight.dim() != 4 or x.numel() == 0:
        return False
    K, C = weight.shape[:2]
    return (x.device.type == "cpu" and x.dtype == torch.float32 and weight.dtype == torch.float32
            and weight.shape[2:] == (size, size) and x.shape[1] == C and min(C, K) >= MIN_CHANNELS
            and not torch.compiler.is_compiling() and not cpu.autocast_on())


def _columns(rows: int, cols: int) -> torch.Tensor:
    """A work buffer viewed as ``[rows, cols]``, of one size every call where the chunk fits (a cache hit)."""
    return cpu.scratch("im2col columns", max(rows * cols, CHUNK_BYTES // 4))[: rows * cols].view(rows, cols)


def _image_chunks(N: int, per_image: int):
    """``(n0, n1)`` ranges of images whose ``per_image`` floats each fill at most one columns buffer."""
    step = max(1, min(N, CHUNK_BYTES // (4 * per_image)))
    return [(n0, min(N, n0 + step)) for n0 in range(0, N, step)]


class Conv3x3Stride2(torch.autograd.Function):
    """``conv2d(x, weight, bias, stride=2, padding=1)``: torch's forward, a backward by im2col products; once
    differentiable."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return F.conv2d(x, weight, bias, 2, 1)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        x, grad_out, ext = x.contiguous(), grad_out.contiguous(), extension()
        N, C, H, W = x.shape
        K, Ho, Wo = grad_out.shape[1:]
        need_x, need_w, need_b = ctx.needs_input_grad
        grad_x = cpu.cached_empty(x.shape) if need_x else None
        grad_w = torch.zeros(K, 9 * C) if need_w else None
        w = weight.reshape(K, 9 * C)
        for n0, n1 in _image_chunks(N, 9 * C * Ho * Wo):
            m = (n1 - n0) * Ho * Wo
            # dY of the chunk as [K, M]: the images' pixels side by side, as the columns are
            dy = grad_out[n0:n1].view(n1 - n0, K, Ho * Wo).transpose(0, 1).reshape(K, m)
            cols = _columns(9 * C, m)
            if need_w:
                ext.unfold3x3(x[n0:n1], cols)
                grad_w.addmm_(dy, cols.t())
            if need_x:
                torch.mm(w.t(), dy, out=cols)
                ext.fold3x3(cols, grad_x[n0:n1])
        grad_b = grad_out.sum((0, 2, 3)) if need_b and ctx.has_bias else None
        return grad_x, grad_w.view_as(weight) if need_w else None, grad_b


def conv3x3_stride2(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, 2, 1)``, with the im2col backward where :func:`supports` and :func:`available`
    say so."""
    if supports(x, weight) and available():
        return Conv3x3Stride2.apply(x, weight, bias)
    return F.conv2d(x, weight, bias, 2, 1)


class Conv1x1Stride2(torch.autograd.Function):
    """``conv2d(x, weight, bias, stride=2)`` for a 1x1 filter: ``W [K, C]`` times the even pixels of each image,
    copied a chunk of images at a time into the columns buffer, and the backward's two products on them; once
    differentiable. Saves ``x`` itself (spikes are kept as bits, once with the other layers reading them)."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        (N, C, H, W), K = x.shape, weight.shape[0]
        Ho, Wo = (H + 1) // 2, (W + 1) // 2
        w, out = weight.view(K, C), cpu.cached_empty((N, K, Ho, Wo))
        for n0, n1 in _image_chunks(N, C * Ho * Wo):
            pixels = _columns(n1 - n0, C * Ho * Wo).view(n1 - n0, C, Ho, Wo).copy_(x[n0:n1, :, ::2, ::2])
            torch.matmul(w, pixels.view(n1 - n0, C, Ho * Wo), out=out[n0:n1].view(n1 - n0, K, Ho * Wo))
        if bias is not None:
            out += bias.view(1, K, 1, 1)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad
        (N, C), (K, Ho, Wo) = x.shape[:2], grad_out.shape[1:]
        w, dy = weight.view(K, C), grad_out.contiguous().view(N, K, Ho * Wo)
        grad_x = torch.zeros(x.shape) if need_x else None
        grad_w = torch.zeros(K, C) if need_w else None
        for n0, n1 in _image_chunks(N, C * Ho * Wo):
            pixels = _columns(n1 - n0, C * Ho * Wo).view(n1 - n0, C, Ho * Wo)
            if need_w:
                pixels.view(n1 - n0, C, Ho, Wo).copy_(x[n0:n1, :, ::2, ::2])
                grad_w += torch.einsum("nkl,ncl->kc", dy[n0:n1], pixels)
            if need_x:
                torch.matmul(w.t(), dy[n0:n1], out=pixels)
                grad_x[n0:n1, :, ::2, ::2] = pixels.view(n1 - n0, C, Ho, Wo)
        grad_b = grad_out.sum((0, 2, 3)) if need_b and ctx.has_bias else None
        return grad_x, grad_w.view_as(weight) if need_w else None, grad_b


def conv1x1_stride2(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, 2)`` for a 1x1 filter, by :class:`Conv1x1Stride2` where :func:`supports` says so
    (no extension needed)."""
    if supports(x, weight, size=1):
        return Conv1x1Stride2.apply(x, weight, bias)
    return F.conv2d(x, weight, bias, 2)
