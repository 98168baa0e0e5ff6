// The CPU fused path as a PyTorch C++ extension (built by snnexp/kernels/cpu.py): the output buffers and the
// generated tensor entry points (neuron_bindings.inc) of the loops that the generated neuron_cpu_<neuron>_<kind>.cpp
// compile. float32 [T, N] contiguous tensors; the forward returns the output only (the caller keeps X, from which
// the backward recomputes H chunk by chunk). Only this file includes torch's (slow to compile) tensor and
// Python-binding headers, and only the parts it needs.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/zeros.h>
#include <torch/csrc/utils/pybind.h>
#include <pybind11/stl.h>
#include <cstdlib>
#include <mutex>
#include <unordered_map>
#include "neuron_cpu_decls.cuh"  // generated: the loops' entry points, SNN_MAX_LEVELS

// ---------------------------------------------------------------------------------------- output buffers
// Outputs (spikes, gradients) of a few MiB and more come from a cache of freed buffers of the same size, as
// PyTorch's CUDA caching allocator does on the GPU. Without it glibc serves each one with a fresh mmap and
// every 4 KiB page faults on first touch: for a 32 MiB output that costs more than the neuron's arithmetic.
// At most one free buffer per size and `cap` bytes in all are kept; empty_cache() releases them.
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
    static constexpr size_t kPerSize = 1;

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
        // one free buffer per size: the next output of that size reuses it; a second one mostly sits idle, at
        // the end of a forward that packed its spikes (BPTT's peak) among others
        if (cached_ + bytes > cap_ || free_.count(bytes) >= kPerSize) {
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

static void check_call(size_t params, size_t expected, int64_t levels) {
    TORCH_CHECK(params == expected, "expected ", expected, " neuron parameters, got ", params);
    TORCH_CHECK(levels >= 1 && levels <= SNN_MAX_LEVELS, "levels must be in [1, ", SNN_MAX_LEVELS, "]");
}

// the generated entry points of every declared neuron: <neuron>_forward, <neuron>_backward, bind_neurons(m)
#include "neuron_bindings.inc"

// ---------------------------------------------------------------------------------------------- pool

std::vector<int64_t> pool_stats() { return BufferPool::instance().stats(); }
void pool_set_cap(int64_t bytes) { BufferPool::instance().set_cap(bytes); }
void pool_release() { BufferPool::instance().release(); }

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    bind_neurons(m);
    m.def("pool_stats", &pool_stats, "[cached bytes, cached buffers, cap bytes, reuses]");
    m.def("pool_set_cap", &pool_set_cap, "cap (bytes) on the cached free output buffers");
    m.def("pool_release", &pool_release, "free every cached output buffer");
}
