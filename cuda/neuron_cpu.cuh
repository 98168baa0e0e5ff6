// The CPU fused path's loops over raw float32 [T, N] data (neuron_host.cuh), parallel over chunks of neurons with
// at::parallel_for. Shared by the translation units of the torch extension (built by snnexp/kernels/cpu.py):
// neuron_cpu.cpp wraps them for tensors; neuron_cpu_{if,lif,plif,levels}.cpp compile them, each on its own so that
// a build compiles them in parallel, and none with torch's tensor and Python headers (which alone cost more compile
// time than all the loops).
#pragma once
#include <ATen/Parallel.h>
#include <cstdint>
#include <vector>
#ifdef SNN_LIBMVEC  // glibc's vector expf (libmvec): lets the sigmoid surrogate's backward loop vectorize
extern "C" {
#pragma omp declare simd notinbranch
float expf(float) noexcept;
}
#define SNN_HOST_EXPF ::expf
#endif
#include "neuron_host.cuh"

namespace snn {
namespace cpu {

using namespace snn::host;

constexpr int64_t GRAIN = SNN_HOST_CHUNK * 4;

// Split [T, N] into chunks of GRAIN neurons run in parallel; returns the per-chunk results of f(begin, end).
template <typename F>
std::vector<double> for_each_chunk(int64_t N, F&& f) {
    const int64_t chunks = (N + GRAIN - 1) / GRAIN;
    std::vector<double> partial(std::max<int64_t>(chunks, 1), 0.0);
    at::parallel_for(0, chunks, 1, [&](int64_t cb, int64_t ce) {
        for (int64_t c = cb; c < ce; ++c) partial[c] = f(c * GRAIN, std::min(N, (c + 1) * GRAIN));
    });
    return partial;
}

// ------------------------------------------------------------------------------------------ LIF / IF / PLIF
// One translation unit per neuron kind: neuron_cpu_{if,lif,plif}.cpp instantiate these for their KIND, and the
// extern declarations below keep every other file from compiling them again. IF has no leak, so decay_input
// changes nothing there: only its DECAY = false variants are built.

template <int KIND>
void forward(const float* x, float* s, int64_t T, int64_t N, bool decay_input, bool hard, float k, float v_threshold,
             float v_reset) {
    dispatch_bool(decay_input, [&](auto D) { return dispatch_bool(hard, [&](auto H) {
        constexpr bool DECAY = KIND != SNN_IF && decltype(D)::value;
        for_each_chunk(N, [&](int64_t b, int64_t e) {
            forward_range<KIND, DECAY, decltype(H)::value>(x, s, T, N, b, e, k, v_threshold, v_reset);
            return 0.0;
        });
        return 0; }); });
}

// Writes dL/dX; returns dL/dk (0 unless PLIF).
template <int KIND>
double backward(const float* grad_s, const float* x, float* grad_x, int64_t T, int64_t N, bool decay_input, bool hard,
                bool detach, int surrogate, float k, float v_threshold, float v_reset, float alpha, float width) {
    double grad_k = 0.0;
    dispatch_bool(decay_input, [&](auto D) { return dispatch_bool(hard, [&](auto H) {
        return dispatch_bool(detach, [&](auto R) { return dispatch_surrogate(surrogate, [&](auto S) {
            constexpr bool DECAY = KIND != SNN_IF && decltype(D)::value;
            for (double p : for_each_chunk(N, [&](int64_t b, int64_t e) {
                     return backward_range<KIND, DECAY, decltype(H)::value, decltype(R)::value, decltype(S)::value>(
                         grad_s, x, grad_x, T, N, b, e, k, v_threshold, v_reset, alpha, width);
                 }))
                grad_k += p;
            return 0; }); }); }); });
    return grad_k;
}

// SNN_CPU_KIND(extern, KIND) declares the instantiations for KIND; SNN_CPU_KIND(, KIND) defines them.
#define SNN_CPU_KIND(EXTERN, KIND)                                                                                 \
    EXTERN template void forward<KIND>(const float*, float*, int64_t, int64_t, bool, bool, float, float, float);    \
    EXTERN template double backward<KIND>(const float*, const float*, float*, int64_t, int64_t, bool, bool, bool,  \
                                          int, float, float, float, float, float);
SNN_CPU_KIND(extern, SNN_IF)
SNN_CPU_KIND(extern, SNN_LIF)
SNN_CPU_KIND(extern, SNN_PLIF)

// ------------------------------------------------------------ ternary, multi-level (in neuron_cpu_levels.cpp)

void ternary_forward(const float* x, float* s, int64_t T, int64_t N, float decay, float v_threshold);
void ternary_backward(const float* grad_s, const float* x, float* grad_x, int64_t T, int64_t N, bool detach,
                      int surrogate, float decay, float v_threshold, float alpha, float width);
void multilevel_forward(const float* x, float* out, int64_t T, int64_t N, int levels, float decay,
                        float v_threshold, float level_spacing);
void multilevel_backward(const float* grad_out, const float* x, float* grad_x, int64_t T, int64_t N, int levels,
                         bool detach, int surrogate, float decay, float v_threshold, float level_spacing, float alpha,
                         float width);

}  // namespace cpu
}  // namespace snn
