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
#include <cmath>
#include <cstdlib>
#include <list>
#include <mutex>
#include <unordered_map>
#ifdef __linux__
#include <sys/mman.h>
#endif
#include "neuron_cpu_decls.cuh"  // generated: the loops' entry points, SNN_MAX_LEVELS

// ---------------------------------------------------------------------------------------- output buffers
// Outputs (spikes, gradients) of 1 MiB and more come from a cache of freed buffers of the same size, as PyTorch's
// CUDA caching allocator does on the GPU. Without it glibc serves each one with a fresh mmap and every 4 KiB page
// faults on first touch: for a 32 MiB output that costs more than the neuron's arithmetic.
// The pool is also a c10::Allocator: install(true) routes every torch CPU tensor through it (blocks under kMinBytes
// go straight to c10's alloc_cpu / free_cpu), so torch's own large tensors (BN outputs, oneDNN's convolution outputs
// and input gradients) reuse last step's pages too.
// A block of a size that is not cached is made, on Linux, of the oldest cached blocks' pages, moved (mremap) into
// one new mapping: they are already faulted in, and the process does not grow by caching (each large block is its
// own mapping, so sizes never fragment). Elsewhere the oldest cached blocks are freed until live + cached bytes fit
// within the most ever live at once (a training step's peak). The cache holds at most `cap` bytes (and, while not
// torch's allocator, one block per size); release_all() frees them.
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
        std::vector<Block> evicted;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            cap_ = static_cast<size_t>(std::max<int64_t>(cap, 0));
            evict_until(cap_, evicted);
        }
        for (const Block& block : evicted) unmap(block);
    }

    void release_all() {
        std::vector<Block> evicted;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            evict_until(0, evicted);
        }
        for (const Block& block : evicted) unmap(block);
    }

    std::vector<int64_t> stats() {
        std::lock_guard<std::mutex> lock(mutex_);
        return {static_cast<int64_t>(cached_), static_cast<int64_t>(order_.size()), static_cast<int64_t>(cap_),
                static_cast<int64_t>(reused_), static_cast<int64_t>(installed_), static_cast<int64_t>(live_bytes_),
                static_cast<int64_t>(peak_live_), static_cast<int64_t>(moved_)};
    }

  private:
    struct Block {
        void* data;
        size_t bytes;  // whole pages
    };
    static constexpr size_t kMinBytes = size_t(1) << 20;
    static constexpr size_t kPage = 4096;
    static constexpr uint8_t kPriority = 0;  // c10's default CPU allocator is registered at 0: equal replaces it

    static void release(void* data) { instance().give(data); }

    void* take_or_alloc(size_t requested) {
        const size_t bytes = (requested + kPage - 1) / kPage * kPage;
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
#ifdef __linux__
        // A new size: its pages come from the oldest cached blocks, moved (mremap) into one new mapping with their
        // contents, so no page faults in afresh; what they lack is new pages. The process does not grow.
        char* data = static_cast<char*>(map(bytes));
        size_t filled = 0;
        while (filled < bytes && !order_.empty()) {
            const Block oldest = order_.front();
            forget(order_.begin());
            const size_t take = std::min(oldest.bytes, bytes - filled);
            if (oldest.bytes > take) remember({static_cast<char*>(oldest.data) + take, oldest.bytes - take}, true);
            if (mremap(oldest.data, take, take, MREMAP_MAYMOVE | MREMAP_FIXED, data + filled) == MAP_FAILED)
                munmap(oldest.data, take);  // the new mapping's own pages serve instead
            else
                moved_ += take;
            filled += take;
        }
#else
        // a new size: first make room within the largest footprint seen, oldest cached blocks first
        const size_t budget = std::max(peak_live_, live_bytes_ + bytes);
        std::vector<Block> evicted;
        while (cached_ > budget - live_bytes_ - bytes && !order_.empty()) {
            evicted.push_back(order_.front());
            forget(order_.begin());
        }
        for (const Block& block : evicted) unmap(block);
        void* data = map(bytes);
#endif
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
        const Block block{data, live->second};
        live_.erase(live);
        live_bytes_ -= block.bytes;
        // over the cap, or (not torch's allocator: the pool sees only its own blocks, whose peak need not be the
        // process's) a second free block of its size: back to the system
        if (block.bytes > cap_ || (!installed_ && by_size_.count(block.bytes) != 0)) {
            lock.unlock();
            unmap(block);
            return;
        }
        std::vector<Block> evicted;
        evict_until(cap_ - block.bytes, evicted);
        remember(block, false);
        lock.unlock();
        for (const Block& old : evicted) unmap(old);
    }

    void mark_live(void* data, size_t bytes) {  // holds mutex_
        live_.emplace(data, bytes);
        live_bytes_ += bytes;
        peak_live_ = std::max(peak_live_, live_bytes_);
    }

    void remember(const Block& block, bool oldest) {  // holds mutex_: cache a free block, as the newest (or oldest)
        auto it = oldest ? order_.insert(order_.begin(), block) : order_.insert(order_.end(), block);
        by_size_.emplace(block.bytes, it);
        cached_ += block.bytes;
    }

    void forget(std::list<Block>::iterator block) {  // holds mutex_: take a block out of the cache
        auto range = by_size_.equal_range(block->bytes);
        for (auto it = range.first; it != range.second; ++it) {
            if (it->second == block) {
                by_size_.erase(it);
                break;
            }
        }
        cached_ -= block->bytes;
        order_.erase(block);
    }

    void evict_until(size_t limit, std::vector<Block>& evicted) {  // holds mutex_; the caller unmaps `evicted`
        while (cached_ > limit && !order_.empty()) {
            evicted.push_back(order_.front());
            forget(order_.begin());
        }
    }

#ifdef __linux__
    static void* map(size_t bytes) {  // a mapping of its own: its pages can move to another block (mremap)
        void* data = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        TORCH_CHECK_WITH(OutOfMemoryError, data != MAP_FAILED, "snnexp: out of memory allocating ", bytes,
                         " bytes (CPU buffer cache)");
        return data;
    }
    static void unmap(const Block& block) { munmap(block.data, block.bytes); }
#else
    static void* map(size_t bytes) { return c10::alloc_cpu(bytes); }  // 64-byte aligned; raises when out of memory
    static void unmap(const Block& block) { c10::free_cpu(block.data); }
#endif

    std::mutex mutex_;
    std::list<Block> order_;  // cached free blocks, oldest first
    std::unordered_multimap<size_t, std::list<Block>::iterator> by_size_;
    std::unordered_map<void*, size_t> live_;  // blocks handed out, by address
    size_t live_bytes_ = 0, peak_live_ = 0, cached_ = 0, reused_ = 0, moved_ = 0;
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

// ---------------------------------------------------------------------------------------------- BN recompute
// A training-mode BatchNorm's output again, from its input and the batch statistics it saved (one pass, where
// running BN again would first recompute the statistics): beta = fma(-mean, alpha, bias), out = fma(x, alpha,
// beta) per channel, with alpha = invstd * weight given. That is how torch's CPU kernel rounds (its vector code is
// contracted to FMA); snnexp/models/recompute.py checks the equality once per process before relying on it.
at::Tensor bn_affine(const at::Tensor& x, const at::Tensor& alpha, const at::Tensor& mean, const at::Tensor& bias) {
    TORCH_CHECK(x.scalar_type() == at::kFloat && x.is_contiguous() && x.dim() >= 2,
                "bn_affine: expected a contiguous float32 [N, C, ...] tensor");
    const int64_t N = x.size(0), C = x.size(1), inner = C == 0 ? 0 : x.numel() / (N * C);
    for (const at::Tensor* t : {&alpha, &mean, &bias})
        TORCH_CHECK(t->scalar_type() == at::kFloat && t->is_contiguous() && t->numel() == C,
                    "bn_affine: expected float32 [C] statistics");
    std::vector<float> beta(static_cast<size_t>(C));
    const float *a = alpha.data_ptr<float>(), *m = mean.data_ptr<float>(), *b = bias.data_ptr<float>();
    for (int64_t c = 0; c < C; ++c) beta[c] = std::fmaf(-m[c], a[c], b[c]);
    at::Tensor out = BufferPool::instance().empty(x.sizes());
    const float* in = x.data_ptr<float>();
    float* o = out.data_ptr<float>();
    at::parallel_for(0, N * C, std::max<int64_t>(1, (1 << 16) / std::max<int64_t>(inner, 1)),
                     [&](int64_t begin, int64_t end) {
        for (int64_t plane = begin; plane < end; ++plane) {
            const float scale = a[plane % C], shift = beta[plane % C];
            const float* src = in + plane * inner;
            float* dst = o + plane * inner;
#pragma omp simd
            for (int64_t i = 0; i < inner; ++i) dst[i] = std::fmaf(src[i], scale, shift);
        }
    });
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
    m.def("pool_stats", &pool_stats, "[cached bytes, cached buffers, cap bytes, reuses, installed, live bytes, peak live bytes, moved bytes]");
    m.def("pool_install", &pool_install, "route torch's CPU allocations through the buffer cache (or stop)");
    m.def("pool_set_cap", &pool_set_cap, "cap (bytes) on the cached free output buffers");
    m.def("pool_release", &pool_release, "free every cached output buffer");
    m.def("pool_empty", &pool_empty, "an uninitialised float32 tensor of sizes (1 MiB and more: from the cache)");
    m.def("bn_affine", &bn_affine, "training-mode BN output from x, alpha = invstd * weight, mean, bias (FMA rounding)");
    m.def("pack_bits", &pack_bits, "float32 0/1 tensor -> ceil(numel / 8) bytes, bit i of byte j = entry 8 j + i");
    m.def("unpack_bits", &unpack_bits, "the inverse of pack_bits: bytes, numel -> float32 [numel]");
}
