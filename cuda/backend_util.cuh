// Small pieces the CUDA backend (backend.cu, backend_kv.cu) shares: CUDA status checks that throw
// moe::Error instead of aborting, owning device / pinned host buffers, and two fill kernels.
// Internal to cuda/.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace moe::cuda::backend {

// Throws moe::Error for a failed CUDA call: OutOfMemory for cudaErrorMemoryAllocation, else
// GpuUnavailable naming `what` and the CUDA error. Clears the (non-sticky) last error first.
[[noreturn]] void fail(cudaError_t err, const std::string& what);

inline void check(cudaError_t err, const char* what) {
    if (err != cudaSuccess) fail(err, what);
}

// Device memory owned by the object (cudaFree on reset / destruction).
class DeviceBuffer {
public:
    DeviceBuffer() = default;
    ~DeviceBuffer() { reset(); }
    DeviceBuffer(const DeviceBuffer&) = delete;
    DeviceBuffer& operator=(const DeviceBuffer&) = delete;

    // Frees what it held, then allocates `bytes` (at least 1). Throws Error(OutOfMemory) naming `what`.
    void allocate(size_t bytes, const char* what);
    void reset() noexcept;
    void* get() const noexcept { return p_; }
    size_t size() const noexcept { return n_; }

private:
    void* p_ = nullptr;
    size_t n_ = 0;
};

// Page-locked host memory owned by the object (cudaFreeHost), for asynchronous copies.
class PinnedBuffer {
public:
    PinnedBuffer() = default;
    ~PinnedBuffer() { reset(); }
    PinnedBuffer(const PinnedBuffer&) = delete;
    PinnedBuffer& operator=(const PinnedBuffer&) = delete;

    // Makes the buffer hold at least `bytes` (the contents are lost when it grows). The caller must
    // make sure no copy still uses the old memory (a synchronized stream).
    void reserve(size_t bytes, const char* what);
    void reset() noexcept;
    template <class T>
    T* as() const noexcept {
        return static_cast<T*>(p_);
    }
    size_t size() const noexcept { return n_; }

private:
    void* p_ = nullptr;
    size_t n_ = 0;
};

// d[i] = i for i < n.
cudaError_t fill_iota(int32_t* d, int64_t n, cudaStream_t stream);
// d[i] = value for i < n.
cudaError_t fill_f32(float* d, float value, int64_t n, cudaStream_t stream);

}  // namespace moe::cuda::backend
