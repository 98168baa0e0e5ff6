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
#include <ATen/EmptyTensor.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>
#include <torch/csrc/utils/pybind.h>
#include <pybind11/stl.h>
#include <algorithm>
#include <cstdlib>
#include <list>
#include <mutex>
#include <unordered_map>
#include "neuron_cpu_decls.cuh"  // generated: the loops' entry points, SNN_MAX_LEVELS

// ---------------------------------------------------------------------------------------- output buffers
// Outputs (spikes, gradients) of 1 MiB and more come from a cache of freed buffers of the same size, as PyTorch's
// CUDA caching allocator does on the GPU. Without it glibc serves each one with a fresh mmap and every 4 KiB page
// faults on first touch: for a 32 MiB output that costs more than the neuron's arithmetic.
// The pool is also a c10::Allocator: install(true) routes every torch CPU tensor through it (blocks under kMinBytes
// go straight to c10's alloc_cpu / free_cpu), so torch's own large tensors (BN outputs, oneDNN's convolution outputs
// and input gradients) reuse last step's pages too.
// The cache never makes the process larger than it has already been: live + cached bytes stay within the most
// bytes ever live at once (a training step's peak), so a new block first evicts the oldest cached ones. It also
// holds at most `cap` bytes (and, while not torch's allocator, one block per size); release_all() frees them.
class BufferPool final : public c10::Allocator {
  public:
    static BufferPool& instance() {
        static BufferPool* pool = new BufferPool();  // never destroyed: tensors may outlive static destructors
        return *pool;
    }

    at::DataPtr allocate(size_t bytes) override {
        void* data = bytes >= kMinBytes ? take_or_alloc(bytes) : c10::alloc_cpu(bytes);
        return {data, data, &release, at::Device(at::kCPU)};
    }

    c10::DeleterFnPtr raw_deleter() const override { return &release; }

    void copy_data(void* dest, const void* src, std::size_t count) const override {
        default_copy_data(dest, src, count);
    }

    at::Tensor empty(at::IntArrayRef sizes) {
        return at::detail::empty_generic(sizes, this, c10::DispatchKeySet(c10::DispatchKey::CPU), at::kFloat,
                                         std::nullopt);
    }

    void install(bool on) {
        std::lock_guard<std::mutex> lock(mutex_);
        if (on && !installed_) {
            previous_ = c10::GetCPUAllocator();
            c10::SetCPUAllocator(this, kPriority);
        } else if (!on && installed_) {
            c10::SetCPUAllocator(previous_, kPriority);
        }
        installed_ = on;
    }

    void set_cap(int64_t cap) {
        std::vector<void*> evicted;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            cap_ = static_cast<size_t>(std::max<int64_t>(cap, 0));
            evict_until(cap_, evicted);
        }
        for (void* data : evicted) c10::free_cpu(data);
    }

    void release_all() {
        std::vector<void*> evicted;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            evict_until(0, evicted);
        }
        for (void* data : evicted) c10::free_cpu(data);
    }

    std::vector<int64_t> stats() {
        std::lock_guard<std::mutex> lock(mutex_);
        return {static_cast<int64_t>(cached_), static_cast<int64_t>(order_.size()), static_cast<int64_t>(cap_),
                static_cast<int64_t>(reused_), static_cast<int64_t>(installed_), static_cast<int64_t>(live_bytes_),
                static_cast<int64_t>(peak_live_)};
    }

  private:
    struct Free {
        void* data;
        size_t bytes;
    };
    static constexpr size_t kMinBytes = size_t(1) << 20;
    static constexpr uint8_t kPriority = 0;  // c10's default CPU allocator is registered at 0: equal replaces it

    static void release(void* data) { instance().give(data); }

    void* take_or_alloc(size_t bytes) {
        std::vector<void*> evicted;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            auto hit = by_size_.find(bytes);
            if (hit != by_size_.end()) {
                void* data = hit->second->data;
                order_.erase(hit->second);
                by_size_.erase(hit);
                cached_ -= bytes;
                ++reused_;
                mark_live(data, bytes);
                return data;
            }
            // a new block: first make room within the largest footprint seen, oldest cached blocks first
            const size_t budget = std::max(peak_live_, live_bytes_ + bytes);
            evict_until(budget - live_bytes_ - bytes, evicted);
        }
        for (void* data : evicted) c10::free_cpu(data);
        void* data = c10::alloc_cpu(bytes);  // 64-byte aligned; raises c10's out-of-memory error
        std::lock_guard<std::mutex> lock(mutex_);
        mark_live(data, bytes);
        return data;
    }

    void give(void* data) {
        std::unique_lock<std::mutex> lock(mutex_);
        auto live = live_.find(data);
        if (live == live_.end()) {  // a small block (or nullptr): c10's own
            lock.unlock();
            c10::free_cpu(data);
            return;
        }
        const size_t bytes = live->second;
        live_.erase(live);
        live_bytes_ -= bytes;
        if (bytes > cap_) {
            lock.unlock();
            c10::free_cpu(data);
            return;
        }
        // not torch's allocator, the pool sees only its own blocks, whose peak need not be the process's: then it
        // keeps one free block per size (the next output of that size), as before it allocated torch's tensors
        if (!installed_ && by_size_.count(bytes) != 0) {
            lock.unlock();
            c10::free_cpu(data);
            return;
        }
        std::vector<void*> evicted;
        evict_until(cap_ - bytes, evicted);
        order_.push_back({data, bytes});
        by_size_.emplace(bytes, std::prev(order_.end()));
        cached_ += bytes;
        lock.unlock();
        for (void* block : evicted) c10::free_cpu(block);
    }

    void mark_live(void* data, size_t bytes) {  // holds mutex_
        live_.emplace(data, bytes);
        live_bytes_ += bytes;
        peak_live_ = std::max(peak_live_, live_bytes_);
    }

    void evict_until(size_t limit, std::vector<void*>& evicted) {  // holds mutex_; the caller frees `evicted`
        while (cached_ > limit && !order_.empty()) {
            const Free oldest = order_.front();
            auto range = by_size_.equal_range(oldest.bytes);
            for (auto it = range.first; it != range.second; ++it) {
                if (it->second == order_.begin()) {
                    by_size_.erase(it);
                    break;
                }
            }
            order_.pop_front();
            cached_ -= oldest.bytes;
            evicted.push_back(oldest.data);
        }
    }

    std::mutex mutex_;
    std::list<Free> order_;  // cached free blocks, oldest first
    std::unordered_multimap<size_t, std::list<Free>::iterator> by_size_;
    std::unordered_map<void*, size_t> live_;  // blocks handed out, by address
    size_t live_bytes_ = 0, peak_live_ = 0, cached_ = 0, reused_ = 0;
    size_t cap_ = size_t(4) << 30;
    bool installed_ = false;
    c10::Allocator* previous_ = nullptr;
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
void pool_release() { BufferPool::instance().release_all(); }
void pool_install(bool on) { BufferPool::instance().install(on); }
at::Tensor pool_empty(std::vector<int64_t> sizes) { return BufferPool::instance().empty(sizes); }

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    bind_neurons(m);
    m.def("pool_stats", &pool_stats, "[cached bytes, cached buffers, cap bytes, reuses, installed, live bytes, peak live bytes]");
    m.def("pool_install", &pool_install, "route torch's CPU allocations through the buffer cache (or stop)");
    m.def("pool_set_cap", &pool_set_cap, "cap (bytes) on the cached free output buffers");
    m.def("pool_release", &pool_release, "free every cached output buffer");
    m.def("pool_empty", &pool_empty, "an uninitialised float32 tensor of sizes (1 MiB and more: from the cache)");
    m.def("pack_bits", &pack_bits, "float32 0/1 tensor -> ceil(numel / 8) bytes, bit i of byte j = entry 8 j + i");
    m.def("unpack_bits", &unpack_bits, "the inverse of pack_bits: bytes, numel -> float32 [numel]");
}
