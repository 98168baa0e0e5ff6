// im2col and its adjoint for the backward of a strided 3x3 convolution on the CPU, built by
// snnexp/kernels/strided_conv.py, which runs the two matrix products (MKL): the weight gradient
// dW [K, 9C] = dY [K, M] cols^T and the input gradient cols' = W^T [9C, K] dY [K, M], folded back into the image.
//
// Stride 2, padding 1 only (the layers it serves). cols is [C * 3 * 3, M] with M = N * Ho * Wo: row
// (c * 3 + ky) * 3 + kx, column (n * Ho + oy) * Wo + ox holds x[n, c, 2 oy + ky - 1, 2 ox + kx - 1] (zero outside
// the image), which is the order of a [K, C, 3, 3] weight viewed as [K, 9C]. Float32, NCHW contiguous.
#include <ATen/core/Tensor.h>
#include <ATen/Parallel.h>
#include <torch/csrc/utils/pybind.h>
#include <algorithm>
#include <cstring>

namespace {

constexpr int64_t kSize = 3;  // kernel height and width

void check(const at::Tensor& t, int64_t dim, const char* name) {
    TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat && t.is_contiguous() && t.dim() == dim,
                "snnexp unfold: ", name, " must be a contiguous ", dim, "-d float32 CPU tensor");
}

// The output columns [lo, hi) whose input column 2 ox + kx - 1 lies inside [0, W).
inline void valid_columns(int64_t kx, int64_t W, int64_t Wo, int64_t& lo, int64_t& hi) {
    lo = kx == 0 ? 1 : 0;
    hi = W < kx ? 0 : std::min<int64_t>(Wo, (W - kx) / 2 + 1);  // 2 ox + kx - 1 <= W - 1
    hi = std::max(hi, lo);
}

struct Geometry {
    int64_t N, C, H, W, Ho, Wo, M;
};

Geometry geometry(const at::Tensor& image, const at::Tensor& cols) {
    check(image, 4, "the image");
    check(cols, 2, "cols");
    Geometry g{image.size(0), image.size(1), image.size(2), image.size(3), 0, 0, 0};
    g.Ho = (g.H - 1) / 2 + 1;  // (H + 2 * 1 - 3) / 2 + 1
    g.Wo = (g.W - 1) / 2 + 1;
    g.M = g.N * g.Ho * g.Wo;
    TORCH_CHECK(cols.size(0) == g.C * kSize * kSize && cols.size(1) == g.M,
                "snnexp unfold: cols must be [C * 9, N * Ho * Wo] for this image");
    return g;
}

// Adds the three taps kx = 0, 1, 2 of one output row (source + kx * step) into one image row of width W. Pixel
// 2 ox takes tap 1 of ox; pixel 2 ox + 1 takes tap 2 of ox and tap 0 of ox + 1: one pass, both pixels of each pair
// written together (so the loop vectorises).
inline void fold_row(const float* source, int64_t step, int64_t Wo, int64_t W, float* row) {
    const float* t0 = source;
    const float* t1 = source + step;
    const float* t2 = source + 2 * step;
    const int64_t pairs = W / 2;  // pixels 2 ox and 2 ox + 1 both inside: ox < pairs (and pairs <= Wo)
    for (int64_t ox = 0; ox < pairs; ++ox) {
        const float odd_from_next = ox + 1 < Wo ? t0[ox + 1] : 0.f;
        row[2 * ox] += t1[ox];
        row[2 * ox + 1] += t2[ox] + odd_from_next;
    }
    if (W % 2) row[W - 1] += t1[Wo - 1];  // odd width: the last pixel is even, 2 (Wo - 1)
}

}  // namespace

// x [N, C, H, W] -> cols [9C, N * Ho * Wo] (written in place) for a 3x3 kernel, stride 2, padding 1.
void unfold3x3(const at::Tensor& x, at::Tensor& cols) {
    const Geometry g = geometry(x, cols);
    const float* xs = x.data_ptr<float>();
    float* out = cols.data_ptr<float>();
    at::parallel_for(0, g.C * kSize * kSize, 1, [&](int64_t begin, int64_t end) {
        for (int64_t row = begin; row < end; ++row) {
            const int64_t c = row / (kSize * kSize), ky = row / kSize % kSize, kx = row % kSize;
            int64_t lo, hi;
            valid_columns(kx, g.W, g.Wo, lo, hi);
            float* line = out + row * g.M;
            for (int64_t n = 0; n < g.N; ++n)
                for (int64_t oy = 0; oy < g.Ho; ++oy) {
                    float* o = line + (n * g.Ho + oy) * g.Wo;
                    const int64_t iy = 2 * oy + ky - 1;
                    if (iy < 0 || iy >= g.H) {
                        std::fill(o, o + g.Wo, 0.f);
                        continue;
                    }
                    const float* in = xs + ((n * g.C + c) * g.H + iy) * g.W + kx - 1;
                    for (int64_t ox = 0; ox < lo; ++ox) o[ox] = 0.f;
                    for (int64_t ox = lo; ox < hi; ++ox) o[ox] = in[2 * ox];
                    for (int64_t ox = hi; ox < g.Wo; ++ox) o[ox] = 0.f;
                }
        }
    });
}

// cols [9C, N * Ho * Wo] -> dx [N, C, H, W] (written in place): the adjoint of unfold3x3, overlapping taps added.
void fold3x3(const at::Tensor& cols, at::Tensor& dx) {
    const Geometry g = geometry(dx, cols);
    const float* in = cols.data_ptr<float>();
    float* xs = dx.data_ptr<float>();
    // parallel over channels: each thread adds into its own image planes only
    at::parallel_for(0, g.C, 1, [&](int64_t begin, int64_t end) {
        for (int64_t c = begin; c < end; ++c)
            for (int64_t n = 0; n < g.N; ++n) {
                float* plane = xs + (n * g.C + c) * g.H * g.W;
                std::fill(plane, plane + g.H * g.W, 0.f);
                for (int64_t ky = 0; ky < kSize; ++ky) {
                    const float* lines = in + (c * kSize + ky) * kSize * g.M + n * g.Ho * g.Wo;
                    for (int64_t oy = 0; oy < g.Ho; ++oy) {
                        const int64_t iy = 2 * oy + ky - 1;
                        if (iy >= 0 && iy < g.H) fold_row(lines + oy * g.Wo, g.M, g.Wo, g.W, plane + iy * g.W);
                    }
                }
            }
    });
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.def("unfold3x3", &unfold3x3, "x [N,C,H,W] -> cols [9C, N*Ho*Wo] in place");
    m.def("fold3x3", &fold3x3, "cols [9C, N*Ho*Wo] -> dx [N,C,H,W] in place (overlaps added)");
}
