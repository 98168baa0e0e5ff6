// Multi-step LIF / IF / PLIF, ternary and multi-level kernels: one thread per neuron, looping over T.
// Data is [T, N] contiguous.
// forward stores H (in the storage dtype, so that backward recomputes exactly the spikes of forward) and S;
// backward walks t = T-1 .. 0, recomputes S and the surrogate from H, and (PLIF) reduces dL/dk per block in
// shared memory, then atomically across blocks into one float.
// Variant = template arguments <scalar_t, KIND, DECAY, HARD, DETACH, SG> (ternary / multi-level backward:
// <scalar_t, DETACH, SG>, forward <scalar_t>), instantiated through NVRTC name expressions
// (snnexp/kernels/variants.py). scalar_t: float, __half or __nv_bfloat16; state is float32.
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include "neuron_math.cuh"

#ifndef SNN_BLOCK
#define SNN_BLOCK 256
#endif

namespace snn {

template <typename T> __device__ __forceinline__ float to_float(T v);
template <> __device__ __forceinline__ float to_float<float>(float v) { return v; }
template <> __device__ __forceinline__ float to_float<__half>(__half v) { return __half2float(v); }
template <> __device__ __forceinline__ float to_float<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> __device__ __forceinline__ T from_float(float v);
template <> __device__ __forceinline__ float from_float<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

template <typename scalar_t, int KIND, bool DECAY, bool HARD, bool DETACH, int SG>
__global__ void __launch_bounds__(SNN_BLOCK) multistep_forward(
    const scalar_t* __restrict__ x, scalar_t* __restrict__ s, scalar_t* __restrict__ h,
    const int T, const long long N, const float k, const float v_threshold, const float v_reset) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N) return;
    const float v_rest = HARD ? v_reset : 0.0f;
    float v = v_rest;
    for (int t = 0; t < T; ++t) {
        const long long idx = (long long)t * N + i;
        const scalar_t h_store = from_float<scalar_t>(charge<KIND, DECAY>(to_float(x[idx]), v, k, v_rest));
        const float ht = to_float(h_store);  // fire on the stored H, as backward will
        const float st = fire(ht, v_threshold);
        v = reset<HARD>(ht, st, v_threshold, v_reset);
        h[idx] = h_store;
        s[idx] = from_float<scalar_t>(st);
    }
}

template <typename scalar_t, int KIND, bool DECAY, bool HARD, bool DETACH, int SG>
__global__ void __launch_bounds__(SNN_BLOCK) multistep_backward(
    const scalar_t* __restrict__ grad_s, const scalar_t* __restrict__ h, const scalar_t* __restrict__ x,
    scalar_t* __restrict__ grad_x, float* __restrict__ grad_k,
    const int T, const long long N, const float k, const float v_threshold, const float v_reset,
    const float alpha, const float width) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const bool active = i < N;
    const float v_rest = HARD ? v_reset : 0.0f;
    float grad_v = 0.0f;  // dL/dV[T-1]
    float gk = 0.0f;
    if (active) {
        float h_next = to_float(h[(long long)(T - 1) * N + i]);
        for (int t = T - 1; t >= 0; --t) {
            const long long idx = (long long)t * N + i;
            const float ht = h_next;
            if (t > 0) h_next = to_float(h[idx - N]);
            const StepGrad g = backward_step<KIND, DECAY, HARD, DETACH, SG>(
                to_float(grad_s[idx]), grad_v, ht, k, v_threshold, v_reset, alpha, width);
            grad_x[idx] = from_float<scalar_t>(g.x);
            if (KIND == SNN_PLIF) {
                const float v_prev = t > 0 ? potential_from<HARD>(h_next, v_threshold, v_reset) : v_rest;
                gk += leak_grad<DECAY>(g.h, DECAY ? to_float(x[idx]) : 0.0f, v_prev, v_rest);
            }
            grad_v = g.v_prev;
        }
    }
    if (KIND == SNN_PLIF) {
        __shared__ float partial[SNN_BLOCK];
        partial[threadIdx.x] = gk;
        __syncthreads();
        for (int stride = SNN_BLOCK / 2; stride > 0; stride >>= 1) {
            if (threadIdx.x < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
            __syncthreads();
        }
        if (threadIdx.x == 0) atomicAdd(grad_k, partial[0]);
    }
}

// ------------------------------------------------------------------------------------------- ternary

// X [T, N] -> S [T, N] in {-1, 0, 1}, H [T, N] (storage dtype: backward recomputes the same spikes)
template <typename scalar_t>
__global__ void __launch_bounds__(SNN_BLOCK) ternary_forward(
    const scalar_t* __restrict__ x, scalar_t* __restrict__ s, scalar_t* __restrict__ h,
    const int T, const long long N, const float decay, const float v_threshold) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N) return;
    float v = 0.0f;
    for (int t = 0; t < T; ++t) {
        const long long idx = (long long)t * N + i;
        const scalar_t h_store = from_float<scalar_t>(decay_charge(to_float(x[idx]), v, decay));
        const float ht = to_float(h_store);
        const float st = ternary_fire(ht, v_threshold);
        v = ternary_reset(ht, st);
        h[idx] = h_store;
        s[idx] = from_float<scalar_t>(st);
    }
}

template <typename scalar_t, bool DETACH, int SG>
__global__ void __launch_bounds__(SNN_BLOCK) ternary_backward(
    const scalar_t* __restrict__ grad_s, const scalar_t* __restrict__ h, scalar_t* __restrict__ grad_x,
    const int T, const long long N, const float decay, const float v_threshold, const float alpha,
    const float width) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N) return;
    float grad_v = 0.0f;
    for (int t = T - 1; t >= 0; --t) {
        const long long idx = (long long)t * N + i;
        const float grad_h = ternary_grad_h<DETACH, SG>(to_float(grad_s[idx]), grad_v, to_float(h[idx]), v_threshold,
                                                        alpha, width);
        grad_x[idx] = from_float<scalar_t>(grad_h);
        grad_v = grad_h * decay;
    }
}

// ------------------------------------------------------------------------------------------ multi-level
// One thread per neuron, its `levels` membranes in registers (the level loop is unrolled to SNN_MAX_LEVELS).

// X [T, N] -> O [T, N] = sum_l S_l, H [levels, T, N]
template <typename scalar_t>
__global__ void __launch_bounds__(SNN_BLOCK) multilevel_forward(
    const scalar_t* __restrict__ x, scalar_t* __restrict__ out, scalar_t* __restrict__ h,
    const int T, const long long N, const int levels, const float decay, const float v_threshold,
    const float level_spacing) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N) return;
    float v[SNN_MAX_LEVELS];
#pragma unroll
    for (int l = 0; l < SNN_MAX_LEVELS; ++l) v[l] = 0.0f;
    for (int t = 0; t < T; ++t) {
        const long long idx = (long long)t * N + i;
        const float xt = to_float(x[idx]);
        float total = 0.0f;
#pragma unroll
        for (int l = 0; l < SNN_MAX_LEVELS; ++l) {
            if (l < levels) {
                const scalar_t h_store = from_float<scalar_t>(decay_charge(xt, v[l], decay));
                const float ht = to_float(h_store);
                const float st = fire(ht, level_threshold(v_threshold, level_spacing, l));
                v[l] = level_reset(ht, st);
                h[((long long)l * T + t) * N + i] = h_store;
                total += st;
            }
        }
        out[idx] = from_float<scalar_t>(total);
    }
}

template <typename scalar_t, bool DETACH, int SG>
__global__ void __launch_bounds__(SNN_BLOCK) multilevel_backward(
    const scalar_t* __restrict__ grad_out, const scalar_t* __restrict__ h, scalar_t* __restrict__ grad_x,
    const int T, const long long N, const int levels, const float decay, const float v_threshold,
    const float level_spacing, const float alpha, const float width) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N) return;
    float grad_v[SNN_MAX_LEVELS];
#pragma unroll
    for (int l = 0; l < SNN_MAX_LEVELS; ++l) grad_v[l] = 0.0f;
    for (int t = T - 1; t >= 0; --t) {
        const long long idx = (long long)t * N + i;
        const float go = to_float(grad_out[idx]);
        float gx = 0.0f;
#pragma unroll
        for (int l = 0; l < SNN_MAX_LEVELS; ++l) {
            if (l < levels) {
                const float grad_h = level_grad_h<DETACH, SG>(go, grad_v[l], to_float(h[((long long)l * T + t) * N + i]),
                                                              level_threshold(v_threshold, level_spacing, l), alpha,
                                                              width);
                gx += grad_h;
                grad_v[l] = grad_h * decay;
            }
        }
        grad_x[idx] = from_float<scalar_t>(gx);
    }
}

}  // namespace snn
