"""A 3x3 convolution (stride 1, padding 1) on the CPU by Winograd's minimal filtering, F(4x4, 3x3) (Lavin & Gray,
"Fast Algorithms for Convolutional Neural Networks", CVPR 2016): 4x fewer multiplications than the direct
convolution, forward and backward.

Each 6x6 input tile ``d`` (4 apart) and each filter ``g`` are transformed (``B^T d B``, ``G g G^T``), multiplied
elementwise and summed over input channels, which is 36 matrix products ``[P, C] x [C, K]`` (MKL, through
``torch.bmm``), and transformed back (``A^T m A``) into a 4x4 output tile. The backward runs the adjoint transforms
(``A dy A^T`` and ``B v B^T``, overlap-added) and the same products transposed. The tile transforms are
``cuda/winograd_cpu.cpp``, built like the neuron extension (:func:`snnexp.kernels.cpu.load_cached`); the images go
through in chunks so the transformed tiles stay a few MiB (cache-sized, and no fresh pages for every call).

The result is the convolution's up to float32 rounding: about 1e-5 of the output's largest entry, against 1e-6 for
the direct convolution (the transforms' constants, up to 8, grow the rounding; tests bound it against float64).
oneDNN (what ``F.conv2d`` runs on the CPU) has no Winograd path for AVX2 machines, and its direct convolutions
are most of a spiking ResNet's training step there.
"""

from __future__ import annotations

import functools
import os
import warnings

import torch
import torch.nn.functional as F

from snnexp.kernels import cpu, sources

SOURCE = "winograd_cpu.cpp"
# F(4x4, 3x3)'s filter transform G (6x3); the input and output transforms are written out in the C++ source
_G = ((1 / 4, 0, 0), (-1 / 6, -1 / 6, -1 / 6), (-1 / 6, 1 / 6, -1 / 6), (1 / 24, 1 / 12, 1 / 6), (1 / 24, -1 / 12, 1 / 6),
      (0, 0, 1))
CHUNK_BYTES = 8 << 20  # the transformed tiles of one chunk of images, per tensor
MIN_CHANNELS = 16  # below this, the matrix products are too thin to beat the direct convolution
MAX_FILTER_BYTES = 16 << 20  # the transformed filters (36 C K floats), and their gradient, are held whole per call


@functools.cache
def extension():
    """Build (or load from the cache) and import the tile transforms; raises if they cannot be built."""
    with sources.source_dir() as cuda_dir:
        return cpu.load_cached("snnexp_winograd_cpu", [cuda_dir / SOURCE], cflags=cpu.CFLAGS, ldflags=cpu.LDFLAGS,
                               what="the Winograd convolution's tile transforms",
                               usually="about 20 seconds on 2 idle cores")


@functools.cache
def available() -> bool:
    """True when the tile transforms build and load here; otherwise one warning with the reason, and False."""
    if os.environ.get("SNNEXP_NO_CPU_KERNELS"):
        return False
    try:
        extension()
    except Exception as error:  # no compiler, no headers, ninja missing, ...
        message = str(error).strip().splitlines()[-1] if str(error).strip() else repr(error)
        warnings.warn(f"snnexp: the Winograd convolution could not be built ({type(error).__name__}: {message}); "
                      "3x3 convolutions use torch's instead (slower on the CPU).", RuntimeWarning, stacklevel=3)
        return False
    return True


def supports(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether :func:`conv3x3` runs this call: float32 CPU tensors, a ``[K, C, 3, 3]`` filter with ``C`` and ``K``
    at least :data:`MIN_CHANNELS` and its transform at most :data:`MAX_FILTER_BYTES`, a batch of 2-d images."""
    K, C = weight.shape[:2]
    return (x.device.type == "cpu" and x.dtype == torch.float32 and weight.dtype == torch.float32 and x.dim() == 4
            and weight.shape[2:] == (3, 3) and x.shape[1] == C and min(C, K) >= MIN_CHANNELS
            and 36 * C * K * 4 <= MAX_FILTER_BYTES and x.numel() > 0 and not torch.compiler.is_compiling())


@functools.cache
def _filter_matrix(dtype: torch.dtype) -> torch.Tensor:
    """``G (x) G`` as ``[36, 9]``: row ``6 i + j``, column ``3 a + b`` is ``G[i, a] G[j, b]``."""
    g = torch.tensor(_G, dtype=torch.float64)
    return torch.kron(g, g).to(dtype)


def filter_transform(weight: torch.Tensor) -> torch.Tensor:
    """``[K, C, 3, 3] -> [36, C, K]``: ``G g G^T`` of every filter, entry ``(6 i + j, c, k)``."""
    K, C = weight.shape[:2]
    return torch.mm(_filter_matrix(weight.dtype), weight.permute(2, 3, 1, 0).reshape(9, C * K)).view(36, C, K)


def filter_gradient(grad_u: torch.Tensor) -> torch.Tensor:
    """The adjoint of :func:`filter_transform`: ``[36, C, K] -> [K, C, 3, 3]``."""
    _, C, K = grad_u.shape
    grad = torch.mm(_filter_matrix(grad_u.dtype).T, grad_u.reshape(36, C * K))
    return grad.view(3, 3, C, K).permute(3, 2, 0, 1).contiguous()


def _chunks(x: torch.Tensor, channels: int):
    """``(images per chunk, tiles per image)``: chunks whose transformed tiles take about :data:`CHUNK_BYTES`."""
    H, W = x.shape[2:]
    tiles = ((H + 3) // 4) * ((W + 3) // 4)
    return max(1, min(x.shape[0], CHUNK_BYTES // (36 * tiles * channels * 4))), tiles


def _tiles(buffer: torch.Tensor, rows: int, channels: int) -> torch.Tensor:
    """The first ``36 rows channels`` floats of ``buffer`` as a contiguous ``[36, rows, channels]`` tensor."""
    return buffer[: 36 * rows * channels].view(36, rows, channels)


class Winograd3x3(torch.autograd.Function):
    """``conv2d(x, weight, bias, stride=1, padding=1)`` by F(4x4, 3x3); once differentiable."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        x, ext = x.contiguous(), extension()
        N, C, H, W = x.shape
        K = weight.shape[0]
        u = filter_transform(weight.detach())
        out = x.new_empty(N, K, H, W)
        per_chunk, tiles = _chunks(x, max(C, K))
        v_buffer, m_buffer = x.new_empty(36 * per_chunk * tiles * C), x.new_empty(36 * per_chunk * tiles * K)
        for n0 in range(0, N, per_chunk):
            n1 = min(N, n0 + per_chunk)
            v, m = _tiles(v_buffer, (n1 - n0) * tiles, C), _tiles(m_buffer, (n1 - n0) * tiles, K)
            ext.input_transform(x[n0:n1], v)
            torch.bmm(v, u, out=m)
            ext.output_transform(m, out[n0:n1])
        if bias is not None:
            out += bias.view(1, K, 1, 1)
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        grad_out, ext = grad_out.contiguous(), extension()
        N, C, H, W = x.shape
        K = weight.shape[0]
        need_x, need_w, need_b = ctx.needs_input_grad
        u_t = filter_transform(weight).transpose(1, 2) if need_x else None
        grad_x = torch.empty_like(x) if need_x else None
        grad_u = x.new_zeros(36, C, K) if need_w else None
        per_chunk, tiles = _chunks(x, max(C, K))
        v_buffer, m_buffer = x.new_empty(36 * per_chunk * tiles * C), x.new_empty(36 * per_chunk * tiles * K)
        for n0 in range(0, N, per_chunk):
            n1 = min(N, n0 + per_chunk)
            v, dm = _tiles(v_buffer, (n1 - n0) * tiles, C), _tiles(m_buffer, (n1 - n0) * tiles, K)
            ext.grad_output_transform(grad_out[n0:n1], dm)
            if need_x:
                torch.bmm(dm, u_t, out=v)
                ext.grad_input_transform(v, grad_x[n0:n1])
            if need_w:
                ext.input_transform(x[n0:n1], v)
                grad_u.baddbmm_(v.transpose(1, 2), dm)
        grad_w = filter_gradient(grad_u) if need_w else None
        grad_b = grad_out.sum((0, 2, 3)) if need_b and ctx.has_bias else None
        return grad_x, grad_w, grad_b


def conv3x3(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, 1, 1)``, by Winograd where :func:`supports` and :func:`available` say so."""
    if supports(x, weight) and available():
        return Winograd3x3.apply(x, weight, bias)
    return F.conv2d(x, weight, bias, 1, 1)
