// Helpers of the generated CPU loops (neuron_cpu_<neuron>_<kind>.cpp, written by snnexp/kernels/generate.py):
// parallel chunks of neurons and runtime flags -> template arguments. The loops handle [T, N] float32 data in
// chunks of SNN_HOST_CHUNK neurons, looping over T outside and over the chunk inside, so that each step reads and
// writes contiguous memory; at::parallel_for runs chunks of GRAIN neurons in parallel. None of the loop units
// includes torch's tensor and Python headers (which alone cost more compile time than all the loops).
#pragma once
#include <ATen/Parallel.h>
#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>
#ifdef SNN_LIBMVEC  // glibc's vector expf (libmvec): lets the sigmoid surrogate's backward loop vectorize
extern "C" {
#pragma omp declare simd notinbranch
float expf(float) noexcept;
}
#endif
#ifdef SNN_LIBMVEC_TANH  // and tanhf (glibc 2.35 on): Dspike's, 18x faster than a library call per element
extern "C" {
#pragma omp declare simd notinbranch
float tanhf(float) noexcept;
}
#endif
#include "neuron_math.cuh"

#ifndef SNN_HOST_CHUNK
#define SNN_HOST_CHUNK 256
#endif

namespace snn {
namespace cpu {

constexpr int64_t GRAIN = SNN_HOST_CHUNK * 4;

// Split N neurons into chunks of GRAIN run in parallel; returns the per-chunk results of f(begin, end).
template <typename F>
std::vector<double> for_each_chunk(int64_t N, F&& f) {
    const int64_t chunks = (N + GRAIN - 1) / GRAIN;
    std::vector<double> partial(std::max<int64_t>(chunks, 1), 0.0);
    at::parallel_for(0, chunks, 1, [&](int64_t cb, int64_t ce) {
        for (int64_t c = cb; c < ce; ++c) partial[c] = f(c * GRAIN, std::min(N, (c + 1) * GRAIN));
    });
    return partial;
}

// f(std::true_type{}) or f(std::false_type{})
template <typename F>
decltype(auto) dispatch_bool(bool flag, F&& f) {
    if (flag) return f(std::true_type{});
    return f(std::false_type{});
}

// f(std::integral_constant<int, value>{}) for value in [0, N)
template <int N, typename F>
decltype(auto) dispatch_int(int value, F&& f) {
    if constexpr (N == 1) {
        return f(std::integral_constant<int, 0>{});
    } else {
        if (value == N - 1) return f(std::integral_constant<int, N - 1>{});
        return dispatch_int<N - 1>(value, f);
    }
}

}  // namespace cpu
}  // namespace snn
