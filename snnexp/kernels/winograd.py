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

import torch
import torch.nn.functional as F

from snnexp.kernels import cpu, sources

SOURCE = "winograd_cpu.cpp"
# F(4x4, 3x3)'s filter transform G (6x3); the input and output transforms are written out in the C++ source
_G = ((1 / 4, 0, 0), (-1 / 6, -1 / 6, -1 / 6), (-1 / 6, 1 / 6, -1 / 6), (1 / 24, 1 / 12, 1 / 6), (1 / 24, -1 / 12, 1 / 6),
      (0, 0, 1))
CHUNK_BYTES = 16 << 20  # the transformed tiles of one chunk of images, per tensor (8 MiB: thinner, slower products)
FILTER_BYTES = 12 << 20  # the transformed filters of one block of output channels (and their gradient)
MIN_CHANNELS = 16  # below this, the matrix products are too thin to beat the direct convolution
# The share of the 4x4 output tiles' pixels inside the image: 2.25 / share multiplications per output and tap
# against the direct 9. 6x6 images (36 of 64) are 1.7x faster than oneDNN (512 channels, T*B = 160); 5x5 (25 of 64)
# would be slower.
MIN_TILE_USE = 0.5


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
    return cpu.loads(extension, "the Winograd convolution's tile transforms", "torch's 3x3 convolutions")


def supports(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether :func:`conv3x3` runs this call faster than torch: float32 CPU tensors outside autocast, a batch of
    2-d images that fill at least :data:`MIN_TILE_USE` of their 4x4 tiles, a ``[K, C, 3, 3]`` filter with ``C`` and
    ``K`` at least :data:`MIN_CHANNELS`."""
    if x.dim() != 4 or weight.dim() != 4 or x.numel() == 0:
        return False
    K, C = weight.shape[:2]
    H, W = x.shape[2:]
    tile_use = H * W / (16 * _ceil_div(H, 4) * _ceil_div(W, 4))
    return (x.device.type == "cpu" and x.dtype == torch.float32 and weight.dtype == torch.float32
            and weight.shape[2:] == (3, 3) and x.shape[1] == C and min(C, K) >= MIN_CHANNELS
            and tile_use >= MIN_TILE_USE and not torch.compiler.is_compiling() and not cpu.autocast_on())


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
    return grad.view(3, 3, C, K).permute(3, 2, 0, 1)


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _output_blocks(C: int, K: int) -> list[tuple[int, int]]:
    """Output channel ranges whose transformed filters take at most about :data:`FILTER_BYTES` each (a multiple
    of 16 channels), so that a wide layer's transient memory stays bounded (its inputs are transformed again
    for each block)."""
    blocks = _ceil_div(36 * C * K * 4, FILTER_BYTES)
    width = 16 * _ceil_div(_ceil_div(K, blocks), 16) if blocks > 1 else K
    return [(k0, min(K, k0 + width)) for k0 in range(0, K, width)]


def _chunks(x: torch.Tensor, channels: int):
    """``(images per chunk, tiles per image)``: chunks whose transformed tiles take about :data:`CHUNK_BYTES`."""
    H, W = x.shape[2:]
    tiles = _ceil_div(H, 4) * _ceil_div(W, 4)
    return max(1, min(x.shape[0], CHUNK_BYTES // (36 * tiles * channels * 4))), tiles


class _Workspace:
    """The transformed tiles of one chunk of images: ``tiles(which, images, channels)`` views one of its two work
    buffers (:func:`snnexp.kernels.cpu.scratch`, back to the buffer cache after the call) as a contiguous
    ``[36, images * tiles_per_image, channels]``."""

    def __init__(self, x: torch.Tensor, channels: int, other_channels: int):
        self.per_chunk, self.tiles_per_image = _chunks(x, max(channels, other_channels))
        size = 36 * self.per_chunk * self.tiles_per_image
        floats = CHUNK_BYTES // 4  # one size every call, so that the buffer cache always has it
        self.buffers = (cpu.scratch("winograd tiles", max(floats, size * channels)),
                        cpu.scratch("winograd products", max(floats, size * other_channels)))

    def tiles(self, which: int, images: int, channels: int) -> torch.Tensor:
        rows = images * self.tiles_per_image
        return self.buffers[which][: 36 * rows * channels].view(36, rows, channels)

    def chunks(self, N: int):
        return [(n0, min(N, n0 + self.per_chunk)) for n0 in range(0, N, self.per_chunk)]


class Winograd3x3(torch.autograd.Function):
    """``conv2d(x, weight, bias, stride=1, padding=1)`` by F(4x4, 3x3); once differentiable."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        x, ext = x.contiguous(), extension()
        N, C, H, W = x.shape
        K = weight.shape[0]
        blocks = _output_blocks(C, K)
        out = cpu.cached_empty((N, K, H, W))  # made at every step: last step's pages, not fresh ones
        work = _Workspace(x, C, blocks[0][1])
        for k0, k1 in blocks:  # inputs transformed once per block of outputs (one block unless very wide)
            u = filter_transform(weight.detach()[k0:k1])
            for n0, n1 in work.chunks(N):
                v, m = work.tiles(0, n1 - n0, C), work.tiles(1, n1 - n0, k1 - k0)
                ext.input_transform(x[n0:n1], v)
                torch.bmm(v, u, out=m)
                ext.output_transform(m, out[n0:n1], k0)
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
        blocks = _output_blocks(C, K)
        grad_x = cpu.cached_empty(x.shape) if need_x else None
        grad_w = torch.empty_like(weight) if need_w else None
        work = _Workspace(x, C, blocks[0][1])
        for k0, k1 in blocks:
            u_t = filter_transform(weight[k0:k1]).transpose(1, 2) if need_x else None
            grad_u = x.new_zeros(36, C, k1 - k0) if need_w else None
            for n0, n1 in work.chunks(N):
                v, dm = work.tiles(0, n1 - n0, C), work.tiles(1, n1 - n0, k1 - k0)
                ext.grad_output_transform(grad_out[n0:n1], dm, k0)
                if need_x:
                    torch.bmm(dm, u_t, out=v)
                    ext.grad_input_transform(v, grad_x[n0:n1], k0 > 0)
                if need_w:
                    ext.input_transform(x[n0:n1], v)
                    grad_u.baddbmm_(v.transpose(1, 2), dm)
            if need_w:
                grad_w[k0:k1] = filter_gradient(grad_u)
        grad_b = grad_out.sum((0, 2, 3)) if need_b and ctx.has_bias else None
        return grad_x, grad_w, grad_b


def conv3x3(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, 1, 1)``, by Winograd where :func:`supports` and :func:`available` say so."""
    if supports(x, weight) and available():
        return Winograd3x3.apply(x, weight, bias)
    return F.conv2d(x, weight, bias, 1, 1)
