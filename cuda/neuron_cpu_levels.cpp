// The CPU fused path's ternary and multi-level neurons (see neuron_cpu.cuh).
#include "neuron_cpu.cuh"

namespace snn {
namespace cpu {

void ternary_forward(const float* x, float* s, int64_t T, int64_t N, float decay, float v_threshold) {
    for_each_chunk(N, [&](int64_t b, int64_t e) {
        ternary_forward_range(x, s, T, N, b, e, decay, v_threshold);
        return 0.0;
    });
}

void ternary_backward(const float* grad_s, const float* x, float* grad_x, int64_t T, int64_t N, bool detach,
                      int surrogate, float decay, float v_threshold, float alpha, float width) {
    dispatch_bool(detach, [&](auto R) { return dispatch_surrogate(surrogate, [&](auto S) {
        for_each_chunk(N, [&](int64_t b, int64_t e) {
            ternary_backward_range<decltype(R)::value, decltype(S)::value>(grad_s, x, grad_x, T, N, b, e, decay,
                                                                           v_threshold, alpha, width);
            return 0.0;
        });
        return 0; }); });
}

void multilevel_forward(const float* x, float* out, int64_t T, int64_t N, int levels, float decay,
                        float v_threshold, float level_spacing) {
    for_each_chunk(N, [&](int64_t b, int64_t e) {
        multilevel_forward_range(x, out, T, N, b, e, levels, decay, v_threshold, level_spacing);
        return 0.0;
    });
}

void multilevel_backward(const float* grad_out, const float* x, float* grad_x, int64_t T, int64_t N, int levels,
                         bool detach, int surrogate, float decay, float v_threshold, float level_spacing, float alpha,
                         float width) {
    dispatch_bool(detach, [&](auto R) { return dispatch_surrogate(surrogate, [&](auto S) {
        for_each_chunk(N, [&](int64_t b, int64_t e) {
            multilevel_backward_range<decltype(R)::value, decltype(S)::value>(
                grad_out, x, grad_x, T, N, b, e, levels, decay, v_threshold, level_spacing, alpha, width);
            return 0.0;
        });
        return 0; }); });
}

}  // namespace cpu
}  // namespace snn
