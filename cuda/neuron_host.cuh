// The multi-step neurons (LIF / IF / PLIF, ternary, multi-level) on the CPU, from the same per-step math as the CUDA kernels (neuron_math.cuh).
// Data is [T, N] contiguous float32; a call handles neurons [begin, end) in chunks of SNN_HOST_CHUNK, looping
// over T outside and over the chunk inside, so that each step reads and writes contiguous memory.
// Used by the CPU fused path and by the host check (snnexp/kernels/cpu.py builds it as a torch extension).
#pragma once
#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>
#include "neuron_math.cuh"

#ifndef SNN_HOST_CHUNK
#define SNN_HOST_CHUNK 256
#endif

namespace snn {
namespace host {

// One chunk of m neurons over T steps. Row t of x, s and h starts at t * stride (s or h skipped when not wanted).
template <int KIND, bool DECAY, bool HARD, bool WRITE_S, bool WRITE_H>
inline void forward_chunk(const float* __restrict__ x, int64_t x_stride, float* __restrict__ s, int64_t s_stride,
                          float* __restrict__ h, int64_t h_stride, int64_t T, int64_t m, float k, float v_threshold,
                          float v_reset) {
    const float v_rest = HARD ? v_reset : 0.0f;
    float v[SNN_HOST_CHUNK];
    for (int64_t j = 0; j < m; ++j) v[j] = v_rest;
    for (int64_t t = 0; t < T; ++t) {
#pragma omp simd
        for (int64_t j = 0; j < m; ++j) {
            const float ht = charge<KIND, DECAY>(x[t * x_stride + j], v[j], k, v_rest);
            const float st = fire(ht, v_threshold);
            v[j] = reset<HARD>(ht, st, v_threshold, v_reset);
            if (WRITE_H) h[t * h_stride + j] = ht;
            if (WRITE_S) s[t * s_stride + j] = st;
        }
    }
}

// Forward over neurons [begin, end) of [T, N] data: spikes only (the backward recomputes h from x).
template <int KIND, bool DECAY, bool HARD>
void forward_range(const float* __restrict__ x, float* __restrict__ s, int64_t T, int64_t N, int64_t begin,
                   int64_t end, float k, float v_threshold, float v_reset) {
    for (int64_t c = begin; c < end; c += SNN_HOST_CHUNK) {
        const int64_t m = std::min<int64_t>(SNN_HOST_CHUNK, end - c);
        forward_chunk<KIND, DECAY, HARD, true, false>(x + c, N, s + c, N, nullptr, 0, T, m, k, v_threshold, v_reset);
    }
}

// Backward of one chunk of m neurons, reading h at [t * h_stride + j]; returns its contribution to dL/dk (PLIF).
template <int KIND, bool DECAY, bool HARD, bool DETACH, int SG>
inline double backward_chunk(const float* __restrict__ grad_s, const float* __restrict__ h, int64_t h_stride,
                             const float* __restrict__ x, float* __restrict__ grad_x, int64_t T, int64_t N, int64_t m,
                             float k, float v_threshold, float v_reset, float alpha, float width) {
    const float v_rest = HARD ? v_reset : 0.0f;
    float grad_v[SNN_HOST_CHUNK];
    float gk[SNN_HOST_CHUNK];
    for (int64_t j = 0; j < m; ++j) grad_v[j] = 0.0f, gk[j] = 0.0f;
    for (int64_t t = T - 1; t >= 0; --t) {
        const int64_t base = t * N;
#pragma omp simd
        for (int64_t j = 0; j < m; ++j) {
            const StepGrad g = backward_step<KIND, DECAY, HARD, DETACH, SG>(
                grad_s[base + j], grad_v[j], h[t * h_stride + j], k, v_threshold, v_reset, alpha, width);
            grad_x[base + j] = g.x;
            if (KIND == SNN_PLIF) {
                const float v_prev =
                    t > 0 ? potential_from<HARD>(h[(t - 1) * h_stride + j], v_threshold, v_reset) : v_rest;
                gk[j] += leak_grad<DECAY>(g.h, DECAY ? x[base + j] : 0.0f, v_prev, v_rest);
            }
            grad_v[j] = g.v_prev;
        }
    }
    double total = 0.0;
    if (KIND == SNN_PLIF)
        for (int64_t j = 0; j < m; ++j) total += gk[j];
    return total;
}

// Backward over neurons [begin, end) from the input x alone: each chunk's h is recomputed into a small buffer
// ([T, SNN_HOST_CHUNK], cache-resident), so the forward needs to allocate and write no h at all.
template <int KIND, bool DECAY, bool HARD, bool DETACH, int SG>
double backward_range(const float* __restrict__ grad_s, const float* __restrict__ x,
                             float* __restrict__ grad_x, int64_t T, int64_t N, int64_t begin, int64_t end, float k,
                             float v_threshold, float v_reset, float alpha, float width) {
    std::vector<float> h(static_cast<size_t>(T) * SNN_HOST_CHUNK);
    double total = 0.0;
    for (int64_t c = begin; c < end; c += SNN_HOST_CHUNK) {
        const int64_t m = std::min<int64_t>(SNN_HOST_CHUNK, end - c);
        forward_chunk<KIND, DECAY, HARD, false, true>(x + c, N, nullptr, 0, h.data(), SNN_HOST_CHUNK, T, m, k,
                                                       v_threshold, v_reset);
        total += backward_chunk<KIND, DECAY, HARD, DETACH, SG>(grad_s + c, h.data(), SNN_HOST_CHUNK, x + c,
                                                               grad_x + c, T, N, m, k, v_threshold, v_reset, alpha,
                                                               width);
    }
    return total;
}

// ------------------------------------------------------------------------------------------- ternary

// Ternary forward of one chunk of m neurons: spikes (WRITE_S) and/or H (WRITE_H), rows at t * stride.
template <bool WRITE_S, bool WRITE_H>
inline void ternary_forward_chunk(const float* __restrict__ x, int64_t x_stride, float* __restrict__ s,
                                  int64_t s_stride, float* __restrict__ h, int64_t h_stride, int64_t T, int64_t m,
                                  float decay, float v_threshold) {
    float v[SNN_HOST_CHUNK];
    for (int64_t j = 0; j < m; ++j) v[j] = 0.0f;
    for (int64_t t = 0; t < T; ++t) {
#pragma omp simd
        for (int64_t j = 0; j < m; ++j) {
            const float ht = decay_charge(x[t * x_stride + j], v[j], decay);
            const float st = ternary_fire(ht, v_threshold);
            v[j] = ternary_reset(ht, st);
            if (WRITE_H) h[t * h_stride + j] = ht;
            if (WRITE_S) s[t * s_stride + j] = st;
        }
    }
}

inline void ternary_forward_range(const float* __restrict__ x, float* __restrict__ s, int64_t T, int64_t N,
                                  int64_t begin, int64_t end, float decay, float v_threshold) {
    for (int64_t c = begin; c < end; c += SNN_HOST_CHUNK) {
        const int64_t m = std::min<int64_t>(SNN_HOST_CHUNK, end - c);
        ternary_forward_chunk<true, false>(x + c, N, s + c, N, nullptr, 0, T, m, decay, v_threshold);
    }
}

// Backward over neurons [begin, end), recomputing each chunk's H from X (as backward_range does).
template <bool DETACH, int SG>
void ternary_backward_range(const float* __restrict__ grad_s, const float* __restrict__ x,
                            float* __restrict__ grad_x, int64_t T, int64_t N, int64_t begin, int64_t end, float decay,
                            float v_threshold, float alpha, float width) {
    std::vector<float> h(static_cast<size_t>(T) * SNN_HOST_CHUNK);
    float grad_v[SNN_HOST_CHUNK];
    for (int64_t c = begin; c < end; c += SNN_HOST_CHUNK) {
        const int64_t m = std::min<int64_t>(SNN_HOST_CHUNK, end - c);
        ternary_forward_chunk<false, true>(x + c, N, nullptr, 0, h.data(), SNN_HOST_CHUNK, T, m, decay, v_threshold);
        for (int64_t j = 0; j < m; ++j) grad_v[j] = 0.0f;
        for (int64_t t = T - 1; t >= 0; --t) {
            const float* hr = h.data() + t * SNN_HOST_CHUNK;
            const float* gs = grad_s + t * N + c;
            float* gx = grad_x + t * N + c;
#pragma omp simd
            for (int64_t j = 0; j < m; ++j) {
                const float grad_h = ternary_grad_h<DETACH, SG>(gs[j], grad_v[j], hr[j], v_threshold, alpha, width);
                gx[j] = grad_h;
                grad_v[j] = grad_h * decay;
            }
        }
    }
}

// ------------------------------------------------------------------------------------------ multi-level

// Multi-level forward of one chunk: output sum_l S_l (WRITE_OUT, rows at t * out_stride) and/or H of level l
// at h[(l * T + t) * h_stride + j] (WRITE_H).
template <bool WRITE_OUT, bool WRITE_H>
inline void multilevel_forward_chunk(const float* __restrict__ x, int64_t x_stride, float* __restrict__ out,
                                     int64_t out_stride, float* __restrict__ h, int64_t h_stride, int64_t T,
                                     int64_t m, int levels, float decay, float v_threshold, float level_spacing) {
    float v[SNN_MAX_LEVELS][SNN_HOST_CHUNK];
    float total[SNN_HOST_CHUNK];
    for (int l = 0; l < levels; ++l)
        for (int64_t j = 0; j < m; ++j) v[l][j] = 0.0f;
    for (int64_t t = 0; t < T; ++t) {
        for (int64_t j = 0; j < m; ++j) total[j] = 0.0f;
        for (int l = 0; l < levels; ++l) {
            const float theta = level_threshold(v_threshold, level_spacing, l);
            float* vl = v[l];
#pragma omp simd
            for (int64_t j = 0; j < m; ++j) {
                const float ht = decay_charge(x[t * x_stride + j], vl[j], decay);
                const float st = fire(ht, theta);
                vl[j] = level_reset(ht, st);
                if (WRITE_H) h[(l * T + t) * h_stride + j] = ht;
                total[j] += st;
            }
        }
        if (WRITE_OUT)
            for (int64_t j = 0; j < m; ++j) out[t * out_stride + j] = total[j];
    }
}

inline void multilevel_forward_range(const float* __restrict__ x, float* __restrict__ out, int64_t T, int64_t N,
                                     int64_t begin, int64_t end, int levels, float decay, float v_threshold,
                                     float level_spacing) {
    for (int64_t c = begin; c < end; c += SNN_HOST_CHUNK) {
        const int64_t m = std::min<int64_t>(SNN_HOST_CHUNK, end - c);
        multilevel_forward_chunk<true, false>(x + c, N, out + c, N, nullptr, 0, T, m, levels, decay, v_threshold,
                                              level_spacing);
    }
}

template <bool DETACH, int SG>
void multilevel_backward_range(const float* __restrict__ grad_out, const float* __restrict__ x,
                               float* __restrict__ grad_x, int64_t T, int64_t N, int64_t begin, int64_t end,
                               int levels, float decay, float v_threshold, float level_spacing, float alpha,
                               float width) {
    std::vector<float> h(static_cast<size_t>(levels) * T * SNN_HOST_CHUNK);
    float grad_v[SNN_MAX_LEVELS][SNN_HOST_CHUNK];
    float gx[SNN_HOST_CHUNK];
    for (int64_t c = begin; c < end; c += SNN_HOST_CHUNK) {
        const int64_t m = std::min<int64_t>(SNN_HOST_CHUNK, end - c);
        multilevel_forward_chunk<false, true>(x + c, N, nullptr, 0, h.data(), SNN_HOST_CHUNK, T, m, levels, decay,
                                              v_threshold, level_spacing);
        for (int l = 0; l < levels; ++l)
            for (int64_t j = 0; j < m; ++j) grad_v[l][j] = 0.0f;
        for (int64_t t = T - 1; t >= 0; --t) {
            const float* go = grad_out + t * N + c;
            for (int64_t j = 0; j < m; ++j) gx[j] = 0.0f;
            for (int l = 0; l < levels; ++l) {
                const float theta = level_threshold(v_threshold, level_spacing, l);
                const float* hr = h.data() + (l * T + t) * SNN_HOST_CHUNK;
                float* gvl = grad_v[l];
#pragma omp simd
                for (int64_t j = 0; j < m; ++j) {
                    const float grad_h = level_grad_h<DETACH, SG>(go[j], gvl[j], hr[j], theta, alpha, width);
                    gx[j] += grad_h;
                    gvl[j] = grad_h * decay;
                }
            }
            float* out = grad_x + t * N + c;
            for (int64_t j = 0; j < m; ++j) out[j] = gx[j];
        }
    }
}

// Runtime flags -> template arguments: f(std::integral_constant<...>...) for every combination.
template <typename F>
decltype(auto) dispatch_bool(bool flag, F&& f) {
    if (flag) return f(std::true_type{});
    return f(std::false_type{});
}

template <typename F>
decltype(auto) dispatch_kind(int kind, F&& f) {
    switch (kind) {
        case SNN_IF: return f(std::integral_constant<int, SNN_IF>{});
        case SNN_LIF: return f(std::integral_constant<int, SNN_LIF>{});
        default: return f(std::integral_constant<int, SNN_PLIF>{});
    }
}

template <typename F>
decltype(auto) dispatch_surrogate(int sg, F&& f) {
    switch (sg) {
        case SNN_SIGMOID: return f(std::integral_constant<int, SNN_SIGMOID>{});
        case SNN_ATAN: return f(std::integral_constant<int, SNN_ATAN>{});
        case SNN_TRIANGLE: return f(std::integral_constant<int, SNN_TRIANGLE>{});
        case SNN_RECTANGLE: return f(std::integral_constant<int, SNN_RECTANGLE>{});
        default: return f(std::integral_constant<int, SNN_DSPIKE>{});
    }
}

}  // namespace host
}  // namespace snn
