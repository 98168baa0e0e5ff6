// The multi-step neurons on the CPU, from the same per-step math as the CUDA kernels (neuron_math.cuh).
// Data is [T, N] contiguous float32; a call handles neurons [begin, end) in chunks of SNN_HOST_CHUNK, looping
// over T outside and over the chunk inside, so that each step reads and writes contiguous memory.
// Used by the CPU fused path and by the host check (snnexp/kernels/cpu.py builds it as a torch extension).
#pragma once
#include <algorithm>
#include <cstdint>
#include <type_traits>
#include "neuron_math.cuh"

#ifndef SNN_HOST_CHUNK
#define SNN_HOST_CHUNK 256
#endif

namespace snn {
namespace host {

template <int KIND, bool DECAY, bool HARD>
void forward_range(const float* __restrict__ x, float* __restrict__ s, float* __restrict__ h, int64_t T, int64_t N, int64_t begin, int64_t end,
                   float k, float v_threshold, float v_reset) {
    const float v_rest = HARD ? v_reset : 0.0f;
    float v[SNN_HOST_CHUNK];
    for (int64_t c = begin; c < end; c += SNN_HOST_CHUNK) {
        const int64_t m = std::min<int64_t>(SNN_HOST_CHUNK, end - c);
        for (int64_t j = 0; j < m; ++j) v[j] = v_rest;
        for (int64_t t = 0; t < T; ++t) {
            const int64_t base = t * N + c;
#pragma omp simd
            for (int64_t j = 0; j < m; ++j) {
                const float ht = charge<KIND, DECAY>(x[base + j], v[j], k, v_rest);
                const float st = fire(ht, v_threshold);
                v[j] = reset<HARD>(ht, st, v_threshold, v_reset);
                h[base + j] = ht;
                s[base + j] = st;
            }
        }
    }
}

// Returns this range's contribution to dL/dk (PLIF; 0 otherwise).
template <int KIND, bool DECAY, bool HARD, bool DETACH, int SG>
double backward_range(const float* __restrict__ grad_s, const float* __restrict__ h, const float* __restrict__ x,
                      float* __restrict__ grad_x, int64_t T, int64_t N,
                      int64_t begin, int64_t end, float k, float v_threshold, float v_reset, float alpha,
                      float width) {
    const float v_rest = HARD ? v_reset : 0.0f;
    float grad_v[SNN_HOST_CHUNK];
    float gk[SNN_HOST_CHUNK];
    double total = 0.0;
    for (int64_t c = begin; c < end; c += SNN_HOST_CHUNK) {
        const int64_t m = std::min<int64_t>(SNN_HOST_CHUNK, end - c);
        for (int64_t j = 0; j < m; ++j) grad_v[j] = 0.0f, gk[j] = 0.0f;
        for (int64_t t = T - 1; t >= 0; --t) {
            const int64_t base = t * N + c;
#pragma omp simd
            for (int64_t j = 0; j < m; ++j) {
                const StepGrad g = backward_step<KIND, DECAY, HARD, DETACH, SG>(
                    grad_s[base + j], grad_v[j], h[base + j], k, v_threshold, v_reset, alpha, width);
                grad_x[base + j] = g.x;
                if (KIND == SNN_PLIF) {
                    const float v_prev = t > 0 ? potential_from<HARD>(h[base - N + j], v_threshold, v_reset) : v_rest;
                    gk[j] += leak_grad<DECAY>(g.h, DECAY ? x[base + j] : 0.0f, v_prev, v_rest);
                }
                grad_v[j] = g.v_prev;
            }
        }
        if (KIND == SNN_PLIF)
            for (int64_t j = 0; j < m; ++j) total += gk[j];
    }
    return total;
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
