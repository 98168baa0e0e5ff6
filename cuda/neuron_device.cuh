// CUDA helpers of the generated kernels (neuron_kernels.cu, written by snnexp/kernels/generate.py): storage dtype
// conversions (state is float32; scalar_t is float, __half or __nv_bfloat16) and the block-wide sum of a learnable
// parameter's gradient.
#pragma once
#include <cuda_fp16.h>
#include <cuda_bf16.h>

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

// Sum `value` over the block in shared memory, then add it to *target atomically. Every thread must call it.
template <int BLOCK>
__device__ __forceinline__ void block_sum_atomic(float value, float* target) {
    __shared__ float partial[BLOCK];
    partial[threadIdx.x] = value;
    __syncthreads();
    for (int stride = BLOCK / 2; stride > 0; stride >>= 1) {
        if (threadIdx.x < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
        __syncthreads();
    }
    if (threadIdx.x == 0) atomicAdd(target, partial[0]);
    __syncthreads();  // partial is reused by the next parameter's sum
}

}  // namespace snn
