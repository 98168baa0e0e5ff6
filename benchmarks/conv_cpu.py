"""CPU time of one 3x3 convolution, forward + backward, at the shapes of TET's VGGSNN and ResNet-19: snnexp's path
(what a run uses: Winograd for stride 1 and 2) against the im2col backward and against torch (oneDNN).

    python benchmarks/conv_cpu.py [--threads 2] [--repeat 7]

Shapes: VGGSNN's seven 3x3 convolutions after the encoding layer at T*B = 160 (T=10, B=16, 2x48x48 input), ResNet-19's
stride-2 ones and one stride-1 one per stage at T*B = 64 (T=4, B=16, 32x32). Inputs are spikes (20% ones), the
output gradient Gaussian; weight and bias require gradients, as in training. Entries:

* ``snnexp``: :func:`snnexp.kernels.winograd.conv3x3`, what ``WinogradConv2d`` runs (F(4x4, 3x3) for stride 1; the
  polyphase F(3x3, 2x2) for stride 2 where the output is whole 3x3 tiles, its forward torch's below 128 input
  channels; the im2col backward for the other stride-2 calls).
* ``im2col backward``: stride 2 only, :func:`snnexp.kernels.strided_conv.conv3x3_stride2` (torch's forward, the
  backward as im2col products), what a run with ``winograd=false`` uses.
* ``torch``: ``F.conv2d`` (oneDNN), as in SpikingJelly.

All in one process with snnexp's buffer cache as torch's allocator (as in a CPU run), the entries of a shape taking
turns call by call; the table gives each entry's median of ``--repeat`` calls and torch's median over it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
if BENCH_DIR not in sys.path:
    sys.path.insert(0, BENCH_DIR)

# (model, images T*B, in channels, out channels, input size, stride)
SHAPES = (
    ("VGGSNN", 160, 64, 128, 48, 2), ("VGGSNN", 160, 128, 256, 24, 1), ("VGGSNN", 160, 256, 256, 24, 2),
    ("VGGSNN", 160, 256, 512, 12, 1), ("VGGSNN", 160, 512, 512, 12, 2), ("VGGSNN", 160, 512, 512, 6, 1),
    ("VGGSNN", 160, 512, 512, 6, 2),
    ("ResNet-19", 64, 128, 128, 32, 1), ("ResNet-19", 64, 128, 256, 32, 2), ("ResNet-19", 64, 256, 256, 16, 1),
    ("ResNet-19", 64, 256, 512, 16, 2), ("ResNet-19", 64, 512, 512, 8, 1),
)


def entries(stride: int):
    """``name -> conv(x, weight, bias)`` for a shape of this stride."""
    import torch.nn.functional as F

    from snnexp.kernels import strided_conv, winograd

    found = {"snnexp": lambda x, w, b: winograd.conv3x3(x, w, b, stride)}
    if stride == 2:
        found["im2col backward"] = strided_conv.conv3x3_stride2
    found["torch"] = lambda x, w, b: F.conv2d(x, w, b, stride, 1)
    return found


def time_shape(images: int, C: int, K: int, size: int, stride: int, repeat: int) -> dict[str, float]:
    """Median ms of forward + backward per entry, the entries taking turns call by call."""
    import torch

    generator = torch.Generator().manual_seed(0)
    x = (torch.rand(images, C, size, size, generator=generator) < 0.2).float().requires_grad_()
    weight = (torch.randn(K, C, 3, 3, generator=generator) * (2 / (9 * C)) ** 0.5).requires_grad_()
    bias = torch.zeros(K, requires_grad=True)
    out_size = (size - 1) // stride + 1
    grad = torch.randn(images, K, out_size, out_size, generator=generator)
    convs = entries(stride)
    times = {name: [] for name in convs}
    for i in range(repeat + 1):  # the first round warms up
        for name, conv in convs.items():
            x.grad = weight.grad = bias.grad = None
            start = time.perf_counter()
            conv(x, weight, bias).backward(grad)
            if i:
                times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=7, help="timed calls per entry and shape (after one warm-up)")
    args = parser.parse_args(argv)

    import torch

    from snnexp.kernels import cpu, strided_conv, winograd
    from step_cpu import machine_line

    torch.set_num_threads(args.threads)
    if not (winograd.available() and strided_conv.available() and cpu.available()):
        print("snnexp's CPU extensions cannot be built here: nothing to compare")
        return 1
    cpu.cache_torch_tensors(True)
    print(f"One 3x3 convolution, forward + backward, median of {args.repeat} calls (ms); {machine_line(args.threads)}\n")
    print("| model | T*B | channels | size | stride | snnexp | im2col backward | torch (oneDNN) | torch / snnexp |")
    print("|---|---|---|---|---|---|---|---|---|")
    totals = {}
    for model, images, C, K, size, stride in SHAPES:
        ms = time_shape(images, C, K, size, stride, args.repeat)
        for name, value in ms.items():
            totals.setdefault(model, {}).setdefault(name, 0.0)
            totals[model][name] += value
        im2col = f"{ms['im2col backward']:.0f}" if "im2col backward" in ms else "-"
        print(f"| {model} | {images} | {C}->{K} | {size}x{size} | {stride} | {ms['snnexp']:.0f} | {im2col} | "
              f"{ms['torch']:.0f} | {ms['torch'] / ms['snnexp']:.2f}x |", flush=True)
    for model, sums in totals.items():
        print(f"\n{model}, these shapes summed: snnexp {sums['snnexp']:.0f} ms, torch {sums['torch']:.0f} ms "
              f"({sums['torch'] / sums['snnexp']:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
