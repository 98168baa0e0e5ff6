// The CPU fused path as a PyTorch C++ extension (built by snnexp/kernels/cpu.py): tensors in and out of the loops
// of neuron_cpu.cuh, which the other neuron_cpu_*.cpp compile. float32 [T, N] contiguous tensors; the forward
// returns the output only (the caller keeps X, from which the backward recomputes H chunk by chunk). Only this
// file includes torch's (slow to compile) tensor and Python-binding headers, and only the parts it needs.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/scalar_tensor.h>
#include <torch/csrc/utils/pybind.h>
#include <cstdlib>
#include <mutex>
#include <unordered_map>
#include "neuron_cpu.cuh"

namespace cpu = snn::cpu;

// ---------------------------------------------------------------------------------------- output buffers
// Outputs (spikes, gradients) of a few MiB and more come from a cache of freed buffers of the same size, as
// PyTorch's CUDA caching allocator does on the GPU. Without it glibc serves each one with a fresh mmap and
// every 4 KiB page faults on first touch: for a 32 MiB output that costs more than the neuron's arithmetic.
// At most `cap` bytes of free buffers are kept; empty_cache() releases them.
class BufferPool {
  public:
    static BufferPool& instance() {
        static BufferPool* pool = new BufferPool();  // never destroyed: tensors may outlive static destructors
        return *pool;
    }

    at::Tensor empty(at::IntArrayRef sizes) {
        int64_t numel = 1;
        for (int64_t d : sizes) numel *= d;
        const size_t bytes = static_cast<size_t>(numel) * sizeof(float);
        if (bytes < kMinBytes) return at::empty(sizes, at::kFloat);
        void* data = take(bytes);
        if (data == nullptr) {
            data = std::aligned_alloc(kAlign, (bytes + kAlign - 1) / kAlign * kAlign);
            TORCH_CHECK(data != nullptr, "snnexp: out of memory allocating ", bytes, " bytes");
        }
        return at::from_blob(data, sizes, [bytes](void* p) { BufferPool::instance().give(p, bytes); },
                             at::TensorOptions().dtype(at::kFloat));
    }

    void set_cap(int64_t cap) {
        std::lock_guard<std::mutex> lock(mutex_);
        cap_ = static_cast<size_t>(std::max<int64_t>(cap, 0));
        trim();
    }

    void release() {
        std::lock_guard<std::mutex> lock(mutex_);
        const size_t cap = cap_;
        cap_ = 0;
        trim();
        cap_ = cap;
    }

    std::vector<int64_t> stats() {
        std::lock_guard<std::mutex> lock(mutex_);
        return {static_cast<int64_t>(cached_), static_cast<int64_t>(free_.size()), static_cast<int64_t>(cap_),
                static_cast<int64_t>(reused_)};
    }

  private:
    static constexpr size_t kAlign = 64;
    static constexpr size_t kMinBytes = size_t(1) << 20;

    void* take(size_t bytes) {
        std::lock_guard<std::mutex> lock(mutex_);
        auto it = free_.find(bytes);
        if (it == free_.end()) return nullptr;
        void* data = it->second;
        free_.erase(it);
        cached_ -= bytes;
        ++reused_;
        return data;
    }

    void give(void* data, size_t bytes) {
        std::lock_guard<std::mutex> lock(mutex_);
        if (cached_ + bytes > cap_) {
            std::free(data);
            return;
        }
        free_.emplace(bytes, data);
        cached_ += bytes;
    }

    void trim() {  // holds mutex_
        for (auto it = free_.begin(); it != free_.end() && cached_ > cap_;) {
            cached_ -= it->first;
            std::free(it->second);
            it = free_.erase(it);
        }
    }

    std::mutex mutex_;
    std::unordered_multimap<size_t, void*> free_;
    size_t cached_ = 0;
    size_t cap_ = size_t(1) << 30;
    size_t reused_ = 0;
};

static void check_input(const at::Tensor& t, const char* name) {
    TORCH_CHECK(t.scalar_type() == at::kFloat && t.is_contiguous() && t.dim() == 2, name,
                ": expected a contiguous float32 [T, N] tensor");
}

// ------------------------------------------------------------------------------------------ LIF / IF / PLIF

at::Tensor forward(at::Tensor x, int64_t kind, bool decay_input, bool hard, double k, double v_threshold,
                   double v_reset) {
    check_input(x, "x");
    auto s = BufferPool::instance().empty(x.sizes());
    snn::host::dispatch_kind((int)kind, [&](auto K) {
        cpu::forward<decltype(K)::value>(x.data_ptr<float>(), s.data_ptr<float>(), x.size(0), x.size(1), decay_input,
                                         hard, (float)k, (float)v_threshold, (float)v_reset);
        return 0;
    });
    return s;
}

// Returns (dL/dX, dL/dk as a float64 scalar; 0 unless PLIF).
std::vector<at::Tensor> backward(at::Tensor grad_s, at::Tensor x, int64_t kind, bool decay_input, bool hard,
                                 bool detach, int64_t surrogate, double k, double v_threshold, double v_reset,
                                 double alpha, double width) {
    check_input(grad_s, "grad_s");
    check_input(x, "x");
    auto grad_x = BufferPool::instance().empty(x.sizes());
    const double grad_k = snn::host::dispatch_kind((int)kind, [&](auto K) {
        return cpu::backward<decltype(K)::value>(grad_s.data_ptr<float>(), x.data_ptr<float>(),
                                                 grad_x.data_ptr<float>(), x.size(0), x.size(1), decay_input, hard,
                                                 detach, (int)surrogate, (float)k, (float)v_threshold,
                                                 (float)v_reset, (float)alpha, (float)width);
    });
    return {grad_x, at::scalar_tensor(grad_k, at::kDouble)};
}

// -------------------------------------------------------------------------------------------- ternary

at::Tensor ternary_forward(at::Tensor x, double decay, double v_threshold) {
    check_input(x, "x");
    auto s = BufferPool::instance().empty(x.sizes());
    cpu::ternary_forward(x.data_ptr<float>(), s.data_ptr<float>(), x.size(0), x.size(1), (float)decay,
                         (float)v_threshold);
    return s;
}

at::Tensor ternary_backward(at::Tensor grad_s, at::Tensor x, bool detach, int64_t surrogate, double decay,
                            double v_threshold, double alpha, double width) {
    check_input(grad_s, "grad_s");
    check_input(x, "x");
    auto grad_x = BufferPool::instance().empty(x.sizes());
    cpu::ternary_backward(grad_s.data_ptr<float>(), x.data_ptr<float>(), grad_x.data_ptr<float>(), x.size(0),
                          x.size(1), detach, (int)surrogate, (float)decay, (float)v_threshold, (float)alpha,
                          (float)width);
    return grad_x;
}

// ---------------------------------------------------------------------------------------- multi-level

static void check_levels(int64_t levels) {
    TORCH_CHECK(levels >= 1 && levels <= SNN_MAX_LEVELS, "levels must be in [1, ", SNN_MAX_LEVELS, "]");
}

at::Tensor multilevel_forward(at::Tensor x, int64_t levels, double decay, double v_threshold, double level_spacing) {
    check_input(x, "x");
    check_levels(levels);
    auto out = BufferPool::instance().empty(x.sizes());
    cpu::multilevel_forward(x.data_ptr<float>(), out.data_ptr<float>(), x.size(0), x.size(1), (int)levels,
                            (float)decay, (float)v_threshold, (float)level_spacing);
    return out;
}

at::Tensor multilevel_backward(at::Tensor grad_out, at::Tensor x, int64_t levels, bool detach, int64_t surrogate,
                               double decay, double v_threshold, double level_spacing, double alpha, double width) {
    check_input(grad_out, "grad_out");
    check_input(x, "x");
    check_levels(levels);
    auto grad_x = BufferPool::instance().empty(x.sizes());
    cpu::multilevel_backward(grad_out.data_ptr<float>(), x.data_ptr<float>(), grad_x.data_ptr<float>(), x.size(0),
                             x.size(1), (int)levels, detach, (int)surrogate, (float)decay, (float)v_threshold,
                             (float)level_spacing, (float)alpha, (float)width);
    return grad_x;
}

// ---------------------------------------------------------------------------------------------- pool

std::vector<int64_t> pool_stats() { return BufferPool::instance().stats(); }
void pool_set_cap(int64_t bytes) { BufferPool::instance().set_cap(bytes); }
void pool_release() { BufferPool::instance().release(); }

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.def("forward", &forward, "LIF / IF / PLIF forward: spikes");
    m.def("backward", &backward, "LIF / IF / PLIF backward: (dL/dX, dL/dk)");
    m.def("ternary_forward", &ternary_forward, "ternary forward: spikes in {-1, 0, 1}");
    m.def("ternary_backward", &ternary_backward, "ternary backward: dL/dX");
    m.def("multilevel_forward", &multilevel_forward, "multi-level forward: sum of the level spikes");
    m.def("multilevel_backward", &multilevel_backward, "multi-level backward: dL/dX");
    m.def("pool_stats", &pool_stats, "[cached bytes, cached buffers, cap bytes, reuses]");
    m.def("pool_set_cap", &pool_set_cap, "cap (bytes) on the cached free output buffers");
    m.def("pool_release", &pool_release, "free every cached output buffer");
}
