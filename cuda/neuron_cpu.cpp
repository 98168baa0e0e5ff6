// The CPU fused path as a PyTorch C++ extension (built by snnexp/kernels/cpu.py): the output buffers and the
// generated tensor entry points (neuron_bindings.inc) of the loops that the generated neuron_cpu_<neuron>_<kind>.cpp
// compile. float32 [T, N] contiguous tensors; the forward returns the output only (the caller keeps X, from which
// the backward recomputes H chunk by chunk). Only this file includes torch's (slow to compile) tensor and
// Python-binding headers, and only the parts it needs.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/zeros.h>
#include <torch/csrc/utils/pybind.h>
#include <pybind11/stl.h>
#include <algorithm>
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

// ---------------------------------------------------------------------------------------------- spike bits
// Binary spikes that autograd saves, kept as bits (snnexp/training/spike_packing.py): bit i of byte j is entry
// 8 j + i, set where the entry is not 0 (as torch's `ne(0)`). One pass each way; the unpacked spikes come from the
// buffer cache, like the neurons' outputs (they are as large, and as short-lived).

at::Tensor pack_bits(const at::Tensor& x) {
    TORCH_CHECK(x.scalar_type() == at::kFloat && x.is_contiguous(), "pack_bits: expected a contiguous float32 tensor");
    const int64_t n = x.numel(), bytes = (n + 7) / 8;
    at::Tensor packed = at::empty({bytes}, at::kByte);
    const float* values = x.data_ptr<float>();
    uint8_t* bits = packed.data_ptr<uint8_t>();
    at::parallel_for(0, bytes, 1 << 14, [&](int64_t begin, int64_t end) {
        for (int64_t j = begin; j < end; ++j) {
            const float* v = values + 8 * j;
            const int64_t count = std::min<int64_t>(8, n - 8 * j);
            uint8_t byte = 0;
            if (count == 8) {
                for (int i = 0; i < 8; ++i) byte |= static_cast<uint8_t>(v[i] != 0.f) << i;
            } else {
                for (int64_t i = 0; i < count; ++i) byte |= static_cast<uint8_t>(v[i] != 0.f) << i;
            }
            bits[j] = byte;
        }
    });
    return packed;
}

at::Tensor unpack_bits(const at::Tensor& packed, int64_t n) {
    TORCH_CHECK(packed.scalar_type() == at::kByte && packed.is_contiguous() && packed.numel() * 8 >= n && n >= 0,
                "unpack_bits: expected a contiguous uint8 tensor of at least n / 8 bytes");
    at::Tensor out = BufferPool::instance().empty({n});
    const uint8_t* bits = packed.data_ptr<uint8_t>();
    float* values = out.data_ptr<float>();
    const int64_t full = n / 8;
    at::parallel_for(0, full, 1 << 14, [&](int64_t begin, int64_t end) {
        for (int64_t j = begin; j < end; ++j)
            for (int i = 0; i < 8; ++i) values[8 * j + i] = static_cast<float>((bits[j] >> i) & 1);
    });
    for (int64_t k = 8 * full; k < n; ++k) values[k] = static_cast<float>((bits[full] >> (k - 8 * full)) & 1);
    return out;
}

// ---------------------------------------------------------------------------------------------- pool

std::vector<int64_t> pool_stats() { return BufferPool::instance().stats(); }
void pool_set_cap(int64_t bytes) { BufferPool::instance().set_cap(bytes); }
void pool_release() { BufferPool::instance().release(); }
at::Tensor pool_empty(std::vector<int64_t> sizes) { return BufferPool::instance().empty(sizes); }

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    bind_neurons(m);
    m.def("pool_stats", &pool_stats, "[cached bytes, cached buffers, cap bytes, reuses]");
    m.def("pool_set_cap", &pool_set_cap, "cap (bytes) on the cached free output buffers");
    m.def("pool_release", &pool_release, "free every cached output buffer");
    m.def("pool_empty", &pool_empty, "an uninitialised float32 tensor of sizes (1 MiB and more: from the cache)");
    m.def("pack_bits", &pack_bits, "float32 0/1 tensor -> ceil(numel / 8) bytes, bit i of byte j = entry 8 j + i");
    m.def("unpack_bits", &unpack_bits, "the inverse of pack_bits: bytes, numel -> float32 [numel]");
}
