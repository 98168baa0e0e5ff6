// Per-step math of the multi-step LIF / IF / PLIF, ternary and multi-level neurons, shared by the CUDA kernels (neuron_kernels.cu),
// the host check and the CPU fused path (neuron_host.cuh). Compiles with nvcc / NVRTC (__CUDACC__) and g++.
//
// State is float32 whatever the storage dtype. Variants are template arguments (compile-time):
//   KIND     SNN_IF (no leak), SNN_LIF (k = 1/tau), SNN_PLIF (k = sigmoid(w), learnt)
//   DECAY    decay_input:  H = V + k (X - (V - V_rest))   else  H = V - k (V - V_rest) + X
//   HARD     hard reset V = H (1 - S) + V_reset S,  else soft  V = H - S V_threshold
//   DETACH   detach_reset: no gradient through S in the reset
//   SG       surrogate: SNN_SIGMOID, SNN_ATAN, SNN_TRIANGLE, SNN_RECTANGLE, SNN_DSPIKE
// V_rest = V_reset for the hard reset and 0 for the soft reset. Operation order follows the torch reference
// (snnexp/neurons/functional.py) so that spikes are bit-identical in float32 (compile without FMA contraction).
#pragma once

#if defined(__CUDACC__)
#define SNN_HD __host__ __device__ __forceinline__
#else
#include <cmath>
#define SNN_HD inline
#endif

#if defined(__CUDACC_RTC__) || defined(__CUDA_ARCH__)
#define SNN_EXPF expf
#define SNN_TANHF tanhf
#define SNN_FABSF fabsf
#define SNN_FMAXF fmaxf
#else
#ifdef SNN_HOST_EXPF
#define SNN_EXPF SNN_HOST_EXPF
#else
#define SNN_EXPF std::exp
#endif
#define SNN_TANHF std::tanh
#define SNN_FABSF std::fabs
#define SNN_FMAXF std::fmax
#endif

namespace snn {

enum Kind { SNN_IF = 0, SNN_LIF = 1, SNN_PLIF = 2 };
enum SurrogateKind { SNN_SIGMOID = 0, SNN_ATAN = 1, SNN_TRIANGLE = 2, SNN_RECTANGLE = 3, SNN_DSPIKE = 4 };

// Multi-level firing keeps one membrane per level in registers: at most this many levels (the paper uses 3).
#define SNN_MAX_LEVELS 8

// ------------------------------------------------------------------------------------------ forward step

// H[t] = V[t-1] + k (X[t] - (V[t-1] - V_rest))   (decay_input)
// H[t] = V[t-1] - k (V[t-1] - V_rest) + X[t]     (not decay_input)
// H[t] = V[t-1] + X[t]                           (IF)
template <int KIND, bool DECAY>
SNN_HD float charge(float x, float v, float k, float v_rest) {
    if (KIND == SNN_IF) return v + x;
    if (DECAY) return v + (x - (v - v_rest)) * k;
    return v - (v - v_rest) * k + x;
}

// S[t] = Heaviside(H[t] - V_threshold), Heaviside(0) = 1
SNN_HD float fire(float h, float v_threshold) { return (h - v_threshold) >= 0.0f ? 1.0f : 0.0f; }

// soft: V[t] = H[t] - S[t] V_threshold;  hard: V[t] = H[t] (1 - S[t]) + V_reset S[t]
template <bool HARD>
SNN_HD float reset(float h, float s, float v_threshold, float v_reset) {
    if (HARD) return h * (1.0f - s) + v_reset * s;
    return h - s * v_threshold;
}

// ------------------------------------------------------------------------------------------- surrogates
// dS/dx at x = H - V_threshold; same functions as Surrogate.derivative / Surrogate.cuda_snippet.

template <int SG>
SNN_HD float surrogate_grad(float x, float alpha, float width) {
    if (SG == SNN_SIGMOID) {  // alpha sigmoid(alpha x) (1 - sigmoid(alpha x))
        const float sg = 1.0f / (1.0f + SNN_EXPF(-alpha * x));
        return alpha * sg * (1.0f - sg);
    } else if (SG == SNN_ATAN) {  // (alpha / 2) / (1 + (pi/2 alpha x)^2)
        const float u = 1.5707963267948966f * alpha * x;
        return alpha / 2.0f / (1.0f + u * u);
    } else if (SG == SNN_TRIANGLE) {  // max(0, alpha - |x|) / alpha^2
        return SNN_FMAXF(0.0f, alpha - SNN_FABSF(x)) / (alpha * alpha);
    } else if (SG == SNN_RECTANGLE) {  // 1[|x| < alpha / 2] / alpha
        return (SNN_FABSF(x) < 0.5f * alpha ? 1.0f : 0.0f) / alpha;
    } else {  // Dspike: 1[|x| <= width] alpha / (2 tanh(alpha width)) (1 - tanh^2(alpha x))
        if (!(SNN_FABSF(x) <= width)) return 0.0f;
        const float th = SNN_TANHF(alpha * x);
        return alpha / (2.0f * SNN_TANHF(alpha * width)) * (1.0f - th * th);
    }
}

// ------------------------------------------------------------------------------------------ backward step

struct StepGrad {
    float h;       // dL/dH[t]
    float x;       // dL/dX[t]
    float v_prev;  // dL/dV[t-1]
};

// dL/dH[t] = dL/dS[t] sg + dL/dV[t] dV[t]/dH[t]
//   dV/dH = 1 - V_threshold sg (soft) | (1 - S) + (V_reset - H) sg (hard); detach_reset drops the sg term
// dL/dX[t] = dL/dH[t] k (LIF/PLIF, decay_input), else dL/dH[t]
// dL/dV[t-1] = dL/dH[t] (1 - k)  (IF: k = 0)
template <int KIND, bool DECAY, bool HARD, bool DETACH, int SG>
SNN_HD StepGrad backward_step(float grad_s, float grad_v, float h, float k, float v_threshold, float v_reset,
                              float alpha, float width) {
    const float sg = surrogate_grad<SG>(h - v_threshold, alpha, width);
    float dv_dh;
    if (HARD) {
        const float s = fire(h, v_threshold);
        dv_dh = DETACH ? (1.0f - s) : (1.0f - s) + (v_reset - h) * sg;
    } else {
        dv_dh = DETACH ? 1.0f : 1.0f - v_threshold * sg;
    }
    StepGrad g;
    g.h = grad_s * sg + grad_v * dv_dh;
    g.x = (KIND == SNN_IF || !DECAY) ? g.h : g.h * k;
    g.v_prev = (KIND == SNN_IF) ? g.h : g.h * (1.0f - k);
    return g;
}

// PLIF: dL/dk += dL/dH[t] (X[t] - (V[t-1] - V_rest))  (decay_input),  dL/dH[t] (-(V[t-1] - V_rest)) otherwise
template <bool DECAY>
SNN_HD float leak_grad(float grad_h, float x, float v_prev, float v_rest) {
    if (DECAY) return grad_h * (x - (v_prev - v_rest));
    return grad_h * -(v_prev - v_rest);
}

// V[t-1] recomputed from H[t-1] (t > 0) by fire + reset
template <bool HARD>
SNN_HD float potential_from(float h, float v_threshold, float v_reset) {
    return reset<HARD>(h, fire(h, v_threshold), v_threshold, v_reset);
}

// ------------------------------------------------------------ ternary and multi-level neurons (reset to 0)
// Ternary Spike (Guo et al., AAAI 2024) and multi-level firing (Feng et al., IJCAI 2022) both charge
//   H[t] = decay V[t-1] + X[t]
// and reset to 0 where they fire; dL/dV[t-1] = dL/dH[t] decay and dL/dX[t] = dL/dH[t] (summed over levels).
// Same operation order as snnexp/neurons/ternary.py and mlf.py.

SNN_HD float decay_charge(float x, float v, float decay) { return decay * v + x; }

// Ternary: S[t] = sign(H[t]) Heaviside(|H[t]| - V_threshold) in {-1, 0, 1}
SNN_HD float ternary_fire(float h, float v_threshold) {
    if (!(SNN_FABSF(h) - v_threshold >= 0.0f)) return 0.0f;
    return h > 0.0f ? 1.0f : (h < 0.0f ? -1.0f : 0.0f);
}

// Ternary: V[t] = H[t] (1 - |S[t]|)
SNN_HD float ternary_reset(float h, float s) { return h * (1.0f - SNN_FABSF(s)); }

// Ternary: dL/dH[t] = dL/dS[t] sg + dL/dV[t] dV[t]/dH[t], with
//   sg    = surrogate(|H| - V_threshold) where H != 0, else 0 (d|H|/dH = sign(H) enters twice)
//   dV/dH = (1 - |S|) - |H| |S| sg   (detach_reset: 1 - |S|)
template <bool DETACH, int SG>
SNN_HD float ternary_grad_h(float grad_s, float grad_v, float h, float v_threshold, float alpha, float width) {
    const float sg = h != 0.0f ? surrogate_grad<SG>(SNN_FABSF(h) - v_threshold, alpha, width) : 0.0f;
    const float fired = SNN_FABSF(ternary_fire(h, v_threshold));
    const float dv_dh = DETACH ? 1.0f - fired : (1.0f - fired) - SNN_FABSF(h) * fired * sg;
    return grad_s * sg + grad_v * dv_dh;
}

// Multi-level firing, level l: threshold theta_l = V_threshold + l level_spacing,
// S_l[t] = Heaviside(H_l[t] - theta_l), V_l[t] = H_l[t] (1 - S_l[t]); the output is sum_l S_l[t].
SNN_HD float level_threshold(float v_threshold, float level_spacing, int level) {
    return v_threshold + level_spacing * (float)level;
}

SNN_HD float level_reset(float h, float s) { return h * (1.0f - s); }

// dL/dH_l[t] = dL/dO[t] sg_l + dL/dV_l[t] ((1 - S_l) - H_l sg_l)   (detach_reset: 1 - S_l)
template <bool DETACH, int SG>
SNN_HD float level_grad_h(float grad_out, float grad_v, float h, float theta, float alpha, float width) {
    const float sg = surrogate_grad<SG>(h - theta, alpha, width);
    const float s = fire(h, theta);
    const float dv_dh = DETACH ? 1.0f - s : (1.0f - s) - h * sg;
    return grad_out * sg + grad_v * dv_dh;
}

}  // namespace snn
