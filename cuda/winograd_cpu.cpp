// The tile transforms of Winograd convolutions (3x3 filters, padding 1) on the CPU, built by
// snnexp/kernels/winograd.py, which does the rest: the filter transforms and the matrix products (MKL, torch.bmm).
// Stride 1 by F(4x4, 3x3) (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", CVPR 2016); stride 2
// by a polyphase F(3x3, 2x2) (the outer taps w0, w2 of each dimension by F(3, 2), the middle one directly). Float32,
// NCHW contiguous.
//
// An input patch d (kPatch x kPatch, kStep apart), a 3x3 filter g and an output tile y (kOut x kOut) are related by
// y = A^T [(G g G^T) . (B^T d B)] A. Tiles are indexed p = (n * nh + th) * nw + tw, with nh = ceil(Ho / kOut) and
// nw = ceil(Wo / kOut) for an Ho x Wo output; a transformed tensor is [kValues^2, P, channels], value (i, j) of tile
// p at entry (position(i, j), p, c), so that each product is one [P, C] x [C, K] matrix product (or, for values that
// share a filter, one [3P, C] x [C, K]). The four transforms below are the forward's (input: B^T d B; output:
// A^T m A) and their adjoints for the backward (output gradient: A dy A^T; input gradient: B dv B^T, overlap-added
// into the image). Each takes the stride and runs that algorithm.
#include <ATen/core/Tensor.h>
#include <ATen/Parallel.h>
#include <torch/csrc/utils/pybind.h>
#include <algorithm>
#include <cstring>
#include <utility>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif
#include <vector>

namespace {

constexpr int64_t kBlock = 16;  // channels transformed together, so that a tile's values are written as runs
// The values of one pixel (or tile entry) in kBlock channels: the transforms below run on all of them at once.
typedef float Lanes __attribute__((vector_size(kBlock * sizeof(float))));

// The 1-D transforms, each reading a[0 * s], a[1 * s], ... and writing o[0 * t], o[1 * t], ..., for kBlock channels.
// An algorithm is four of them (bt: an input patch -> transformed values; at: products -> an output tile; b and a
// their adjoints, for the backward) and its geometry: kPatch input pixels (kStep apart) give kValues transformed
// values and kOut output pixels, along each dimension; the 2-d transforms apply them along both.

// F(4x4, 3x3) for stride 1 (Lavin & Gray): 6-pixel patches 4 apart, 6 values, 4 outputs.
struct Stride1 {
    static constexpr int64_t kPatch = 6, kStep = 4, kValues = 6, kOut = 4;

    static constexpr int64_t position(int64_t i, int64_t j) { return i * kValues + j; }  // where value (i, j) is kept

    static void bt(const Lanes* a, int64_t s, Lanes* o, int64_t t) {  // B^T d: 6 -> 6
        const Lanes d0 = a[0], d1 = a[s], d2 = a[2 * s], d3 = a[3 * s], d4 = a[4 * s], d5 = a[5 * s];
        o[0] = 4.f * d0 - 5.f * d2 + d4;
        o[t] = -4.f * (d1 + d2) + d3 + d4;
        o[2 * t] = 4.f * (d1 - d2) - d3 + d4;
        o[3 * t] = 2.f * (d3 - d1) - d2 + d4;
        o[4 * t] = 2.f * (d1 - d3) - d2 + d4;
        o[5 * t] = 4.f * d1 - 5.f * d3 + d5;
    }

    static void b(const Lanes* a, int64_t s, Lanes* o, int64_t t) {  // B v, the adjoint of bt: 6 -> 6
        const Lanes v0 = a[0], v1 = a[s], v2 = a[2 * s], v3 = a[3 * s], v4 = a[4 * s], v5 = a[5 * s];
        o[0] = 4.f * v0;
        o[t] = 4.f * (v2 - v1 + v5) + 2.f * (v4 - v3);
        o[2 * t] = -5.f * v0 - 4.f * (v1 + v2) - v3 - v4;
        o[3 * t] = v1 - v2 + 2.f * (v3 - v4) - 5.f * v5;
        o[4 * t] = v0 + v1 + v2 + v3 + v4;
        o[5 * t] = v5;
    }

    static void at(const Lanes* a, int64_t s, Lanes* o, int64_t t) {  // A^T m: 6 -> 4
        const Lanes m0 = a[0], m1 = a[s], m2 = a[2 * s], m3 = a[3 * s], m4 = a[4 * s], m5 = a[5 * s];
        o[0] = m0 + m1 + m2 + m3 + m4;
        o[t] = m1 - m2 + 2.f * (m3 - m4);
        o[2 * t] = m1 + m2 + 4.f * (m3 + m4);
        o[3 * t] = m1 - m2 + 8.f * (m3 - m4) + m5;
    }

    static void a(const Lanes* a, int64_t s, Lanes* o, int64_t t) {  // A g, the adjoint of at: 4 -> 6
        const Lanes g0 = a[0], g1 = a[s], g2 = a[2 * s], g3 = a[3 * s];
        o[0] = g0;
        o[t] = g0 + g1 + g2 + g3;
        o[2 * t] = g0 - g1 + g2 - g3;
        o[3 * t] = g0 + 2.f * g1 + 4.f * g2 + 8.f * g3;
        o[4 * t] = g0 - 2.f * g1 + 4.f * g2 - 8.f * g3;
        o[5 * t] = g3;
    }
};

// Stride 2, polyphase: output i of a 7-pixel patch d is w0 d[2i] + w1 d[2i+1] + w2 d[2i+2], i < 3. The even taps
// (w0, w2) on the samples d0, d2, d4, d6 are the 2-tap F(3, 2) (points 0, 1, -1, infinity: 4 products), the middle
// tap on d1, d3, d5 is direct (3 products): 7 values for 3 outputs, 49 for a 3x3 tile against the direct 81.
// Values 4, 5, 6 share one transformed filter entry (w1), so the 49 products need only 25 filters; the values are
// kept grouped by the filter they multiply: (i, j) both < 4 first (16), then (i < 4, j >= 4) (4 filters x 3),
// (i >= 4, j < 4) (4 x 3) and (i, j) both >= 4 (1 x 9), each filter's values adjacent, so that a group is one
// matrix product per filter over 3 (or 9) times the tiles.
struct Stride2 {
    static constexpr int64_t kPatch = 7, kStep = 6, kValues = 7, kOut = 3;

    static constexpr int64_t position(int64_t i, int64_t j) {
        if (i < 4 && j < 4) return i * 4 + j;
        if (i < 4) return 16 + i * 3 + (j - 4);
        if (j < 4) return 28 + j * 3 + (i - 4);
        return 40 + (i - 4) * 3 + (j - 4);
    }

    static void bt(const Lanes* a, int64_t s, Lanes* o, int64_t t) {  // 7 -> 7
        const Lanes d0 = a[0], d1 = a[s], d2 = a[2 * s], d3 = a[3 * s], d4 = a[4 * s], d5 = a[5 * s], d6 = a[6 * s];
        o[0] = d0 - d4;
        o[t] = d2 + d4;
        o[2 * t] = d4 - d2;
        o[3 * t] = d6 - d2;
        o[4 * t] = d1;
        o[5 * t] = d3;
        o[6 * t] = d5;
    }

    static void b(const Lanes* a, int64_t s, Lanes* o, int64_t t) {  // the adjoint of bt: 7 -> 7
        const Lanes v0 = a[0], v1 = a[s], v2 = a[2 * s], v3 = a[3 * s], v4 = a[4 * s], v5 = a[5 * s], v6 = a[6 * s];
        o[0] = v0;
        o[t] = v4;
        o[2 * t] = v1 - v2 - v3;
        o[3 * t] = v5;
        o[4 * t] = v1 + v2 - v0;
        o[5 * t] = v6;
        o[6 * t] = v3;
    }

    static void at(const Lanes* a, int64_t s, Lanes* o, int64_t t) {  // 7 -> 3
        const Lanes m0 = a[0], m1 = a[s], m2 = a[2 * s], m3 = a[3 * s], m4 = a[4 * s], m5 = a[5 * s], m6 = a[6 * s];
        o[0] = m0 + m1 + m2 + m4;
        o[t] = m1 - m2 + m5;
        o[2 * t] = m1 + m2 + m3 + m6;
    }

    static void a(const Lanes* a, int64_t s, Lanes* o, int64_t t) {  // the adjoint of at: 3 -> 7
        const Lanes g0 = a[0], g1 = a[s], g2 = a[2 * s];
        o[0] = g0;
        o[t] = g0 + g1 + g2;
        o[2 * t] = g0 - g1 + g2;
        o[3 * t] = g2;
        o[4 * t] = g0;
        o[5 * t] = g1;
        o[6 * t] = g2;
    }
};

typedef void (*Transform1d)(const Lanes*, int64_t, Lanes*, int64_t);

// Runs body(Stride1{}) or body(Stride2{}).
template <class Body>
void with_algorithm(int64_t stride, Body body) {
    TORCH_CHECK(stride == 1 || stride == 2, "snnexp winograd: stride must be 1 or 2, got ", stride);
    if (stride == 1)
        body(Stride1{});
    else
        body(Stride2{});
}

// The output size of a 3x3 convolution with padding 1 over n pixels.
inline int64_t output_size(int64_t n, int64_t stride) { return (n - 1) / stride + 1; }

// The tiles of algorithm A along a dimension of `outputs` output pixels.
template <class A>
inline int64_t tile_count(int64_t outputs) { return (outputs + A::kOut - 1) / A::kOut; }

void check(const at::Tensor& t, int64_t dim, const char* name) {
    TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat && t.is_contiguous() && t.dim() == dim,
                "snnexp winograd: ", name, " must be a contiguous ", dim, "-d float32 CPU tensor");
}

// The first n <= 16 floats at `from` as one vector (the rest zero), and the first n lanes of `v` stored to `to`: in
// registers, so that no vector is read back from memory that narrower stores wrote (a store-forwarding stall that
// made the transposes below most of a transform's time). Masked moves on AVX-512; elsewhere lane by lane.
inline Lanes load_lanes(const float* from, int64_t n) {
#if defined(__AVX512F__)
    return reinterpret_cast<Lanes>(_mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << n) - 1), from));
#else
    Lanes v = {};
    if (n == kBlock) {
        std::memcpy(&v, from, sizeof(Lanes));
        return v;
    }
    for (int64_t j = 0; j < n; ++j) v[j] = from[j];
    return v;
#endif
}

inline void store_lanes(float* to, Lanes v, int64_t n) {
#if defined(__AVX512F__)
    _mm512_mask_storeu_ps(to, static_cast<__mmask16>((1u << n) - 1), reinterpret_cast<__m512>(v));
#else
    if (n == kBlock) {
        std::memcpy(to, &v, sizeof(Lanes));
        return;
    }
    for (int64_t j = 0; j < n; ++j) to[j] = v[j];
#endif
}

// Writes block[tw][i * V + j] (its first cb channels) to out[A::position(i, j)][p0 + tw][c0, c0 + cb).
template <class A>
void scatter_block(const Lanes* block, int64_t nw, int64_t cb, float* out, int64_t P, int64_t C, int64_t p0,
                   int64_t c0) {
    constexpr int64_t V = A::kValues;
    for (int64_t tw = 0; tw < nw; ++tw)
        for (int64_t i = 0; i < V; ++i)
            for (int64_t j = 0; j < V; ++j)
                store_lanes(out + (A::position(i, j) * P + p0 + tw) * C + c0, block[(tw * V + i) * V + j], cb);
}

// Reads in[A::position(i, j)][p0 + tw][c0, c0 + cb) into block[tw][i * V + j] (its first cb channels).
template <class A>
void gather_block(const float* in, int64_t nw, int64_t cb, Lanes* block, int64_t P, int64_t C, int64_t p0,
                  int64_t c0) {
    constexpr int64_t V = A::kValues;
    for (int64_t tw = 0; tw < nw; ++tw)
        for (int64_t i = 0; i < V; ++i)
            for (int64_t j = 0; j < V; ++j)
                block[(tw * V + i) * V + j] = load_lanes(in + (A::position(i, j) * P + p0 + tw) * C + c0, cb);
}

// One stage of a 16x16 transpose held as 16 rows of lanes: swaps bit `Bit` of the row index with that of the column
// index, each pair of rows by two two-input shuffles (so the whole transpose is 64 shuffles, not 256 scalar moves).
template <int Bit, int... J>
inline void swap_index_bit(Lanes* rows, std::integer_sequence<int, J...>) {
    constexpr int b = 1 << Bit;
    for (int i = 0; i < kBlock; ++i) {
        if (i & b) continue;
        const Lanes low = rows[i], high = rows[i + b];
        rows[i] = __builtin_shufflevector(low, high, ((J & b) ? kBlock + (J ^ b) : J)...);
        rows[i + b] = __builtin_shufflevector(low, high, ((J & b) ? kBlock + J : (J ^ b))...);
    }
}

// rows[i][j] -> rows[j][i]: between a channel's run of 16 pixels (NCHW) and a pixel's 16 channels (lanes).
inline void transpose(Lanes* rows) {
    static_assert(kBlock == 16, "the transpose swaps four index bits");
    constexpr auto lanes = std::make_integer_sequence<int, kBlock>{};
    swap_index_bit<0>(rows, lanes);
    swap_index_bit<1>(rows, lanes);
    swap_index_bit<2>(rows, lanes);
    swap_index_bit<3>(rows, lanes);
}

// Pixels [0, n) (n <= 16) of `count` channel rows, channel cc's at planes[cc * plane] -> pixels[0, n), one lane
// each (channels beyond `count` zero).
inline void pixels_to_lanes(const float* planes, int64_t plane, int64_t count, int64_t n, Lanes* pixels) {
    Lanes block[kBlock];
    for (int64_t cc = 0; cc < kBlock; ++cc) block[cc] = cc < count ? load_lanes(planes + cc * plane, n) : Lanes{};
    transpose(block);
    for (int64_t j = 0; j < n; ++j) pixels[j] = block[j];
}

// The inverse of pixels_to_lanes: lanes of pixels [0, n) -> channel rows (written, or added to with `accumulate`).
inline void lanes_to_pixels(const Lanes* pixels, int64_t n, int64_t count, float* planes, int64_t plane,
                            bool accumulate) {
    Lanes block[kBlock];
    for (int64_t j = 0; j < kBlock; ++j) block[j] = j < n ? pixels[j] : Lanes{};
    transpose(block);
    for (int64_t cc = 0; cc < count; ++cc) {
        float* row = planes + cc * plane;
        store_lanes(row, accumulate ? block[cc] + load_lanes(row, n) : block[cc], n);
    }
}

// Channels [c_first, c_first + C) of images [N, C_in, H, W] -> out [V * V, N * nh * nw, C] (written in place), for
// each of the nh x nw tiles: its `Rows` rows from y = Step * th - Shift (zero outside the image, `Shift` zero
// columns on the left), kBlock channels at a time, transformed down the columns, then along each tile, by
// `Transform` (Rows -> V values).
template <class A, int64_t Rows, int64_t Step, int64_t Shift, Transform1d Transform>
void image_to_tiles(const at::Tensor& images, at::Tensor& out, int64_t c_first, int64_t nh, int64_t nw) {
    const int64_t N = images.size(0), C = out.size(2), C_in = images.size(1), H = images.size(2), W = images.size(3);
    constexpr int64_t V = A::kValues;
    const int64_t P = N * nh * nw, width = Step * nw + Rows - Step;
    TORCH_CHECK(out.size(0) == V * V && out.size(1) == P && c_first >= 0 && c_first + C <= C_in && W + Shift <= width,
                "snnexp winograd: the tiles do not match the images");
    const float* xs = images.data_ptr<float>();
    float* vs = out.data_ptr<float>();
    at::parallel_for(0, N * nh, 1, [&](int64_t begin, int64_t end) {
        std::vector<Lanes> rows(Rows * width), cols(V * width), block(nw * V * V);
        for (int64_t task = begin; task < end; ++task) {
            const int64_t n = task / nh, th = task % nh;
            for (int64_t c0 = 0; c0 < C; c0 += kBlock) {
                const int64_t cb = std::min(kBlock, C - c0);
                std::fill(rows.begin(), rows.end(), Lanes{});
                const float* planes = xs + (n * C_in + c_first + c0) * H * W;
                for (int64_t r = 0; r < Rows; ++r) {
                    const int64_t y = Step * th + r - Shift;
                    if (y < 0 || y >= H) continue;
                    Lanes* row = rows.data() + r * width + Shift;
                    for (int64_t x0 = 0; x0 < W; x0 += kBlock)
                        pixels_to_lanes(planes + y * W + x0, H * W, cb, std::min(kBlock, W - x0), row + x0);
                }
                for (int64_t xx = 0; xx < width; ++xx) Transform(rows.data() + xx, width, cols.data() + xx, width);
                for (int64_t tw = 0; tw < nw; ++tw)
                    for (int64_t i = 0; i < V; ++i)
                        Transform(cols.data() + i * width + Step * tw, 1, block.data() + (tw * V + i) * V, 1);
                scatter_block<A>(block.data(), nw, cb, vs, P, C, (n * nh + th) * nw, c0);
            }
        }
    });
}

}  // namespace

// x [N, C, H, W] -> V [kValues^2, N * nh * nw, C] (written in place): B^T d B of every patch of the zero-padded
// image.
void input_transform(const at::Tensor& x, at::Tensor& V, int64_t stride) {
    check(x, 4, "x");
    check(V, 3, "V");
    TORCH_CHECK(V.size(2) == x.size(1), "snnexp winograd: V does not match x");
    with_algorithm(stride, [&](auto algorithm) {
        using A = decltype(algorithm);
        const int64_t nh = tile_count<A>(output_size(x.size(2), stride));
        const int64_t nw = tile_count<A>(output_size(x.size(3), stride));
        image_to_tiles<A, A::kPatch, A::kStep, 1, A::bt>(x, V, 0, nh, nw);
    });
}

// M [kValues^2, N * nh * nw, K] -> channels [k_first, k_first + K) of out [N, K_out, Ho, Wo] (written in place):
// A^T m A of every tile, cropped to the output, plus bias[k_first + k] (an empty bias: none).
void output_transform(const at::Tensor& M, at::Tensor& out, int64_t k_first, int64_t stride, const at::Tensor& bias) {
    check(M, 3, "M");
    check(out, 4, "out");
    const bool has_bias = bias.numel() > 0;
    if (has_bias) check(bias, 1, "bias");
    TORCH_CHECK(!has_bias || bias.size(0) == out.size(1), "snnexp winograd: bias does not match out");
    const float* bs = has_bias ? bias.data_ptr<float>() : nullptr;
    with_algorithm(stride, [&](auto algorithm) {
        using A = decltype(algorithm);
        constexpr int64_t V = A::kValues, R = A::kOut;
        const int64_t N = out.size(0), K = M.size(2), K_out = out.size(1), H = out.size(2), W = out.size(3);
        const int64_t nh = tile_count<A>(H), nw = tile_count<A>(W), P = N * nh * nw, WT = R * nw;
        TORCH_CHECK(M.size(0) == V * V && M.size(1) == P && k_first >= 0 && k_first + K <= K_out,
                    "snnexp winograd: M does not match out");
        const float* ms = M.data_ptr<float>();
        float* os = out.data_ptr<float>();
        at::parallel_for(0, N * nh, 1, [&](int64_t begin, int64_t end) {
            std::vector<Lanes> block(nw * V * V), rows(V * WT), y(R * WT);
            for (int64_t task = begin; task < end; ++task) {
                const int64_t n = task / nh, th = task % nh;
                for (int64_t k0 = 0; k0 < K; k0 += kBlock) {
                    const int64_t kb = std::min(kBlock, K - k0);
                    gather_block<A>(ms, nw, kb, block.data(), P, K, (n * nh + th) * nw, k0);
                    for (int64_t tw = 0; tw < nw; ++tw)
                        for (int64_t i = 0; i < V; ++i)
                            A::at(block.data() + (tw * V + i) * V, 1, rows.data() + i * WT + R * tw, 1);
                    for (int64_t xx = 0; xx < WT; ++xx) A::at(rows.data() + xx, WT, y.data() + xx, WT);
                    if (bs != nullptr) {
                        const Lanes b = load_lanes(bs + k_first + k0, kb);
                        for (Lanes& pixel : y) pixel += b;
                    }
                    float* planes = os + (n * K_out + k_first + k0) * H * W;
                    for (int64_t b = 0; b < R && R * th + b < H; ++b)
                        for (int64_t x0 = 0; x0 < W; x0 += kBlock)
                            lanes_to_pixels(y.data() + b * WT + x0, std::min(kBlock, W - x0), kb,
                                            planes + (R * th + b) * W + x0, H * W, false);
                }
            }
        });
    });
}

// Channels [k_first, k_first + K) of dy [N, K_out, Ho, Wo] -> dM [kValues^2, N * nh * nw, K] (written in place):
// A g A^T of every output tile (zero beyond the output), the adjoint of output_transform.
void grad_output_transform(const at::Tensor& dy, at::Tensor& dM, int64_t k_first, int64_t stride) {
    check(dy, 4, "grad_output");
    check(dM, 3, "dM");
    with_algorithm(stride, [&](auto algorithm) {
        using A = decltype(algorithm);
        const int64_t nh = tile_count<A>(dy.size(2)), nw = tile_count<A>(dy.size(3));
        image_to_tiles<A, A::kOut, A::kOut, 0, A::a>(dy, dM, k_first, nh, nw);
    });
}

// dV [kValues^2, N * nh * nw, C] -> dx [N, C, H, W] (written, or added to with `accumulate`, in place): B v B^T of
// every patch, the overlapping patches added, cropped to the image; the adjoint of input_transform. Parallel over
// images and channel blocks, so that no two threads add into one pixel.
void grad_input_transform(const at::Tensor& dV, at::Tensor& dx, bool accumulate, int64_t stride) {
    check(dV, 3, "dV");
    check(dx, 4, "grad_input");
    with_algorithm(stride, [&](auto algorithm) {
        using A = decltype(algorithm);
        constexpr int64_t V = A::kValues, S = A::kStep, D = A::kPatch;
        const int64_t N = dx.size(0), C = dx.size(1), H = dx.size(2), W = dx.size(3);
        const int64_t nh = tile_count<A>(output_size(H, stride)), nw = tile_count<A>(output_size(W, stride));
        const int64_t P = N * nh * nw, WP = S * nw + D - S, HP = S * nh + D - S;
        TORCH_CHECK(dV.size(0) == V * V && dV.size(1) == P && dV.size(2) == C,
                    "snnexp winograd: dV does not match dx");
        const int64_t blocks = (C + kBlock - 1) / kBlock;
        const float* vs = dV.data_ptr<float>();
        float* xs = dx.data_ptr<float>();
        at::parallel_for(0, N * blocks, 1, [&](int64_t begin, int64_t end) {
            std::vector<Lanes> block(nw * V * V), rows(V * WP), image(HP * WP);
            for (int64_t task = begin; task < end; ++task) {
                const int64_t n = task / blocks, c0 = (task % blocks) * kBlock, cb = std::min(kBlock, C - c0);
                std::fill(image.begin(), image.end(), Lanes{});
                for (int64_t th = 0; th < nh; ++th) {
                    gather_block<A>(vs, nw, cb, block.data(), P, C, (n * nh + th) * nw, c0);
                    std::fill(rows.begin(), rows.end(), Lanes{});
                    for (int64_t tw = 0; tw < nw; ++tw)
                        for (int64_t i = 0; i < V; ++i) {
                            Lanes patch[D];
                            A::b(block.data() + (tw * V + i) * V, 1, patch, 1);
                            Lanes* row = rows.data() + i * WP + S * tw;
                            for (int64_t s = 0; s < D; ++s) row[s] += patch[s];
                        }
                    Lanes* band = image.data() + S * th * WP;
                    for (int64_t xx = 0; xx < WP; ++xx) {
                        Lanes col[D];
                        A::b(rows.data() + xx, WP, col, 1);
                        for (int64_t r = 0; r < D; ++r) band[r * WP + xx] += col[r];
                    }
                }
                float* planes = xs + (n * C + c0) * H * W;
                for (int64_t y = 0; y < H; ++y)
                    for (int64_t x0 = 0; x0 < W; x0 += kBlock)
                        lanes_to_pixels(image.data() + (y + 1) * WP + 1 + x0, std::min(kBlock, W - x0), cb,
                                        planes + y * W + x0, H * W, accumulate);
            }
        });
    });
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.def("input_transform", &input_transform, "x [N,C,H,W] -> V [V*V,P,C] in place");
    m.def("output_transform", &output_transform, "M [V*V,P,K] (+ bias) -> out[:, k_first:k_first+K] in place");
    m.def("grad_output_transform", &grad_output_transform,
          "grad_output[:, k_first:k_first+K] -> dM [V*V,P,K] in place");
    m.def("grad_input_transform", &grad_input_transform, "dV [V*V,P,C] -> grad_input [N,C,H,W] in place (or +=)");
}
