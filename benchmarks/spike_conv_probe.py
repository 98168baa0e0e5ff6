"""Would a convolution that exploits binary, sparse spike inputs make the CPU step faster? A probe, not a feature.

    python benchmarks/spike_conv_probe.py [--threads 2] [--reps 5] [--batch 64] [--rate 0.2]

``benchmarks/step_profile.py`` finds 86% of a ResNet-19 step in oneDNN's convolutions (forward 26%, backward 58%),
and every layer after the stem convolves spikes: ``{0, 1}``, about 15-23% ones at initialisation. A spike input
turns the convolution into sums of weight rows: for every output pixel, add the row ``W[:, c, ky, kx]`` of each
active input ``(c, y + ky, x + kx)``, no multiplications and ``rate`` of the dense work. The same holds for the
weight gradient, ``dW[:, c, ky, kx]`` = sum of the output gradient's rows at the active inputs' positions; the
input gradient stays dense.

This script compiles a straightforward AVX2 version of both (output rows of 64 channels kept in 8 registers;
active inputs listed per pixel for the forward, per channel and stride class for the weight gradient), checks them
against float64 ``conv2d`` and times them against PyTorch's (oneDNN) at ResNet-19's shapes with Bernoulli(rate)
inputs, the entries taking turns rep by rep. The table gives medians; the last rows total the network's
convolutions weighted by their count, and the backward as oneDNN computes it (input and weight gradients in one
call) against the dense input gradient plus the sparse weight gradient.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
if BENCH_DIR not in sys.path:
    sys.path.insert(0, BENCH_DIR)

SOURCE = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>
#include <cstring>
#include <vector>

// 64 float accumulators in 8 AVX registers
struct Acc64 {
  __m256 a[8];
  Acc64() { for (auto& r : a) r = _mm256_setzero_ps(); }
  inline void add(const float* p) {
    for (int i = 0; i < 8; ++i) a[i] = _mm256_add_ps(a[i], _mm256_loadu_ps(p + 8 * i));
  }
  inline void store(float* p) const { for (int i = 0; i < 8; ++i) _mm256_storeu_ps(p + 8 * i, a[i]); }
  inline void add_into(float* p) const {
    for (int i = 0; i < 8; ++i) _mm256_storeu_ps(p + 8 * i, _mm256_add_ps(_mm256_loadu_ps(p + 8 * i), a[i]));
  }
};
constexpr int64_t B = 64;  // output channels per block

// forward: s [N, Cin, H, W] in {0, 1}, w [Cout, Cin, K, K] (Cout % 64 == 0) -> [N, Cout, Ho, Wo]
torch::Tensor forward(torch::Tensor s, torch::Tensor w, int64_t stride, int64_t pad) {
  const int64_t N = s.size(0), Cin = s.size(1), H = s.size(2), W = s.size(3), HW = H * W;
  const int64_t Cout = w.size(0), K = w.size(2);
  const int64_t Ho = (H + 2 * pad - K) / stride + 1, Wo = (W + 2 * pad - K) / stride + 1;
  const float* sp = s.data_ptr<float>();
  // the active channels of every input pixel: idx[off[p] .. off[p + 1])
  std::vector<int32_t> off(N * HW + 1, 0);
  at::parallel_for(0, N, 1, [&](int64_t b, int64_t e) {
    for (int64_t n = b; n < e; ++n)
      for (int64_t c = 0; c < Cin; ++c)
        for (int64_t p = 0; p < HW; ++p) off[n * HW + p + 1] += sp[(n * Cin + c) * HW + p] != 0.f;
  });
  for (int64_t i = 0; i < N * HW; ++i) off[i + 1] += off[i];
  std::vector<int32_t> idx(off[N * HW]);
  at::parallel_for(0, N, 1, [&](int64_t b, int64_t e) {
    std::vector<int32_t> next(HW);
    for (int64_t n = b; n < e; ++n) {
      std::memcpy(next.data(), off.data() + n * HW, HW * sizeof(int32_t));
      for (int64_t c = 0; c < Cin; ++c)
        for (int64_t p = 0; p < HW; ++p) if (sp[(n * Cin + c) * HW + p] != 0.f) idx[next[p]++] = (int32_t)c;
    }
  });
  auto wt = w.view({Cout / B, B, Cin, K, K}).permute({0, 3, 4, 2, 1}).contiguous();  // [Cout/B, K, K, Cin, B]
  const float* wp = wt.data_ptr<float>();
  auto out = torch::empty({N, Cout, Ho, Wo}, s.options());
  float* op = out.data_ptr<float>();
  at::parallel_for(0, N * (Cout / B), 1, [&](int64_t b, int64_t e) {
    std::vector<float> row(B * Wo);  // one output row of the block, transposed on the way out
    for (int64_t i = b; i < e; ++i) {
      const int64_t n = i % N, cb = i / N;
      for (int64_t oy = 0; oy < Ho; ++oy) {
        for (int64_t ox = 0; ox < Wo; ++ox) {
          Acc64 acc;
          for (int64_t ky = 0; ky < K; ++ky) {
            const int64_t iy = oy * stride - pad + ky;
            if (iy < 0 || iy >= H) continue;
            for (int64_t kx = 0; kx < K; ++kx) {
              const int64_t ix = ox * stride - pad + kx;
              if (ix < 0 || ix >= W) continue;
              const int64_t pix = (n * H + iy) * W + ix;
              const float* wb = wp + ((cb * K + ky) * K + kx) * Cin * B;
              for (int32_t j = off[pix]; j < off[pix + 1]; ++j) acc.add(wb + (int64_t)idx[j] * B);
            }
          }
          alignas(32) float v[B];
          acc.store(v);
          for (int64_t c = 0; c < B; ++c) row[c * Wo + ox] = v[c];
        }
        for (int64_t c = 0; c < B; ++c)
          std::memcpy(op + ((n * Cout + cb * B + c) * Ho + oy) * Wo, row.data() + c * Wo, Wo * sizeof(float));
      }
    }
  });
  return out;
}

// weight gradient: g [N, Cout, Ho, Wo], s [N, Cin, H, W] in {0, 1} -> [Cout, Cin, K, K]
torch::Tensor weight_grad(torch::Tensor g, torch::Tensor s, int64_t K, int64_t stride, int64_t pad) {
  const int64_t N = s.size(0), Cin = s.size(1), H = s.size(2), W = s.size(3);
  const int64_t Cout = g.size(1), Ho = g.size(2), Wo = g.size(3), S2 = stride * stride;
  // images per group: the group's output gradient block of 64 channels stays near 256 KiB (in L2)
  const int64_t G = std::max<int64_t>(1, std::min<int64_t>(N, (256 << 10) / (Ho * Wo * B * 4)));
  auto gt = g.permute({0, 2, 3, 1}).contiguous();  // [N, Ho, Wo, Cout]: a pixel's channels contiguous
  const float* gp = gt.data_ptr<float>();
  const float* sp = s.data_ptr<float>();
  std::vector<std::vector<float>> parts(at::get_num_threads());  // per thread [K, K, Cin, Cout]
  at::parallel_for(0, (N + G - 1) / G, 1, [&](int64_t b, int64_t e) {
    auto& acc = parts[at::get_thread_num()];
    if (acc.empty()) acc.assign(K * K * Cin * Cout, 0.f);
    std::vector<int32_t> off(Cin * S2 + 1), py(G * H * W * Cin), px(G * H * W * Cin), pn(G * H * W * Cin);
    for (int64_t grp = b; grp < e; ++grp) {
      const int64_t n0 = grp * G, n1 = std::min(N, n0 + G);
      // the active inputs of each (channel, stride class): only one class meets a given (ky, kx)
      auto cls = [&](int64_t c, int64_t y, int64_t x) { return c * S2 + (y % stride) * stride + x % stride; };
      std::fill(off.begin(), off.end(), 0);
      for (int64_t n = n0; n < n1; ++n)
        for (int64_t c = 0; c < Cin; ++c) for (int64_t y = 0; y < H; ++y) for (int64_t x = 0; x < W; ++x)
          off[1 + cls(c, y, x)] += sp[((n * Cin + c) * H + y) * W + x] != 0.f;
      for (int64_t i = 0; i < Cin * S2; ++i) off[i + 1] += off[i];
      std::vector<int32_t> next(off.begin(), off.end() - 1);
      for (int64_t n = n0; n < n1; ++n)
        for (int64_t c = 0; c < Cin; ++c) for (int64_t y = 0; y < H; ++y) for (int64_t x = 0; x < W; ++x)
          if (sp[((n * Cin + c) * H + y) * W + x] != 0.f) {
            const int32_t k = next[cls(c, y, x)]++;
            py[k] = (int32_t)y; px[k] = (int32_t)x; pn[k] = (int32_t)n;
          }
      for (int64_t cb = 0; cb < Cout / B; ++cb)
        for (int64_t c = 0; c < Cin; ++c)
          for (int64_t ky = 0; ky < K; ++ky) for (int64_t kx = 0; kx < K; ++kx) {
            const int64_t k = cls(c, ((ky - pad) % stride + stride) % stride, ((kx - pad) % stride + stride) % stride);
            Acc64 sum;
            for (int32_t j = off[k]; j < off[k + 1]; ++j) {
              const int64_t ty = py[j] + pad - ky, tx = px[j] + pad - kx;
              if (ty < 0 || tx < 0 || ty / stride >= Ho || tx / stride >= Wo) continue;
              sum.add(gp + ((pn[j] * Ho + ty / stride) * Wo + tx / stride) * Cout + cb * B);
            }
            sum.add_into(acc.data() + ((ky * K + kx) * Cin + c) * Cout + cb * B);
          }
    }
  });
  auto out = torch::zeros({K, K, Cin, Cout}, s.options());
  float* o = out.data_ptr<float>();
  for (auto& part : parts)
    for (size_t i = 0; i < part.size(); ++i) o[i] += part[i];
  return out.permute({3, 2, 0, 1}).contiguous();
}
"""


def build():
    """The probe's extension, built in a private temporary folder (never the machine-wide extension cache)."""
    from torch.utils.cpp_extension import load_inline

    return load_inline("snnexp_spike_conv_probe", cpp_sources=[SOURCE], functions=["forward", "weight_grad"],
                       extra_cflags=["-O3", "-mavx2", "-fopenmp"], extra_ldflags=["-fopenmp"],
                       build_directory=tempfile.mkdtemp(prefix="spike_conv_probe_"))


def relative_error(out, ref) -> float:
    """The largest deviation of ``out`` from the float64 ``ref``, relative to the largest entry of ``ref``."""
    return float((out.double() - ref).abs().max() / ref.abs().max())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=64, help="N = T*B")
    parser.add_argument("--rate", type=float, default=0.2, help="fraction of ones in the spike inputs")
    args = parser.parse_args(argv)
    if platform.machine() not in ("x86_64", "AMD64"):
        print("the probe's kernels are AVX2 (x86-64) only")
        return 1
    import torch
    import torch.nn.functional as F

    from step_profile import RESNET19_CONVS

    torch.set_num_threads(args.threads)
    ext = build()
    conv_backward = torch.ops.aten.convolution_backward
    print(f"Spike-input convolutions at ResNet-19's shapes: N = {args.batch}, rate {args.rate}, "
          f"{args.threads} threads, "
          f"torch {torch.__version__}, median of {args.reps} (entries take turns)\n")
    print("| conv | count | fwd oneDNN ms | fwd sparse ms | fwd × | bwd oneDNN (in+weight) ms "
          "| weight oneDNN ms | weight sparse ms | bwd oneDNN in + sparse weight ms | bwd × | max rel. error |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    totals = dict.fromkeys(("fwd", "fwd_sparse", "bwd", "bwd_mixed"), 0.0)
    gen = torch.Generator().manual_seed(0)
    for cin, cout, k, stride, hw, count in RESNET19_CONVS:
        if cin == 3:
            continue  # the stem convolves the image, not spikes
        pad = k // 2
        s = (torch.rand(args.batch, cin, hw, hw, generator=gen) < args.rate).float()
        w = torch.randn(cout, cin, k, k, generator=gen) * 0.05
        out_hw = (hw + 2 * pad - k) // stride + 1
        g = torch.randn(args.batch, cout, out_hw, out_hw, generator=gen)

        def backward(mask, g=g, s=s, w=w):  # the gradients oneDNN computes (input, weight, bias) per mask
            return conv_backward(g, s, w, None, [stride] * 2, [pad] * 2, [1, 1], False, [0, 0], 1, mask)

        entries = {  # called within this iteration only: the closures see this layer's tensors
            "fwd": lambda: F.conv2d(s, w, None, stride, pad),
            "fwd_sparse": lambda: ext.forward(s, w, stride, pad),
            "bwd": lambda: backward([True, True, False]),
            "bwd_input": lambda: backward([True, False, False]),
            "weight": lambda: backward([False, True, False]),
            "weight_sparse": lambda: ext.weight_grad(g, s, k, stride, pad),
        }
        ref_dw = backward([False, True, False], g.double(), s.double(), w.double())[1]
        err = max(relative_error(entries["fwd_sparse"](), F.conv2d(s.double(), w.double(), None, stride, pad)),
                  relative_error(entries["weight_sparse"](), ref_dw))
        times = {name: [] for name in entries}
        for rep in range(args.reps + 1):
            for name, fn in entries.items():
                t0 = time.perf_counter()
                fn()
                if rep:
                    times[name].append(1e3 * (time.perf_counter() - t0))
        ms = {name: statistics.median(t) for name, t in times.items()}
        mixed = ms["bwd_input"] + ms["weight_sparse"]
        for key, value in (("fwd", ms["fwd"]), ("fwd_sparse", ms["fwd_sparse"]), ("bwd", ms["bwd"]),
                           ("bwd_mixed", mixed)):
            totals[key] += count * value
        print(f"| {cin}->{cout} k{k} s{stride} @{hw}x{hw} | {count} | {ms['fwd']:.0f} | {ms['fwd_sparse']:.0f} | "
              f"{ms['fwd'] / ms['fwd_sparse']:.2f} | {ms['bwd']:.0f} | {ms['weight']:.0f} | {ms['weight_sparse']:.0f} "
              f"| {mixed:.0f} | {ms['bwd'] / mixed:.2f} | {err:.1e} |")
    print(f"| all spike convs, weighted by count | | {totals['fwd']:.0f} | {totals['fwd_sparse']:.0f} | "
          f"{totals['fwd'] / totals['fwd_sparse']:.2f} | {totals['bwd']:.0f} | | | {totals['bwd_mixed']:.0f} | "
          f"{totals['bwd'] / totals['bwd_mixed']:.2f} | |")
    dense, best = totals["fwd"] + totals["bwd"], totals["fwd_sparse"] + min(totals["bwd"], totals["bwd_mixed"])
    print(f"\nforward + backward of the spike convolutions: oneDNN {dense:.0f} ms; the sparse forward and the faster "
          f"backward total {best:.0f} ms ({dense / best:.2f}×)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
