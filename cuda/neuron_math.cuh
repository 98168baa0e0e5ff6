// The prelude of the generated per-step math (neuron_steps.cuh, written by snnexp/kernels/generate.py from the
// neuron declarations): what the declaration language's functions compile to, for nvcc / NVRTC (__CUDACC__) and
// g++ alike. State is float32 whatever the storage dtype; build without FMA contraction (--fmad=false,
// -ffp-contract=off) so that float32 spikes equal the torch reference bit for bit.
#pragma once

#if defined(__CUDACC__)
#define SNN_HD __host__ __device__ __forceinline__
#else
#include <math.h>
#define SNN_HD inline
#endif

namespace snn {

// Heaviside(x) = 1 if x >= 0 else 0 (Heaviside(0) = 1): the spike
SNN_HD float heaviside(float x) { return x >= 0.0f ? 1.0f : 0.0f; }

// sign(x) in {-1, 0, 1}
SNN_HD float sign(float x) { return x > 0.0f ? 1.0f : (x < 0.0f ? -1.0f : 0.0f); }

// max(a, b) for finite values: a compare-and-select, which g++ vectorises in the CPU loops (fmaxf, whose NaN rule
// x86's max instructions do not follow, is a library call per element there); the GPU's fmaxf is one instruction
SNN_HD float maximum(float a, float b) {
#if defined(__CUDACC__)
    return fmaxf(a, b);
#else
    return a > b ? a : b;
#endif
}

}  // namespace snn
