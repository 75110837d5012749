#include "backend_util.cuh"

#include <algorithm>

#include "common/error.h"

namespace moe::cuda::backend {

void fail(cudaError_t err, const std::string& what) {
    cudaGetLastError();  // a non-sticky error must not be reported again by the next call
    if (err == cudaErrorMemoryAllocation) {
        throw Error(ErrorCode::OutOfMemory, "CUDA: not enough GPU memory for " + what);
    }
    throw Error(ErrorCode::GpuUnavailable,
                "CUDA error in " + what + ": " + cudaGetErrorName(err) + " (" + cudaGetErrorString(err) + ")");
}

void DeviceBuffer::allocate(size_t bytes, const char* what) {
    reset();
    void* p = nullptr;
    const cudaError_t err = cudaMalloc(&p, std::max<size_t>(bytes, 1));
    if (err != cudaSuccess) {
        cudaGetLastError();
        throw Error(ErrorCode::OutOfMemory, "CUDA: cannot allocate " + std::to_string(bytes) + " bytes of GPU memory for " +
                                                what + " (" + cudaGetErrorString(err) + ")");
    }
    p_ = p;
    n_ = bytes;
}

void DeviceBuffer::reset() noexcept {
    if (p_) cudaFree(p_);
    p_ = nullptr;
    n_ = 0;
}

void PinnedBuffer::reserve(size_t bytes, const char* what) {
    if (bytes <= n_ && p_) return;
    reset();
    void* p = nullptr;
    const cudaError_t err = cudaHostAlloc(&p, std::max<size_t>(bytes, 1), cudaHostAllocDefault);
    if (err != cudaSuccess) {
        cudaGetLastError();
        throw Error(ErrorCode::OutOfMemory, "CUDA: cannot allocate " + std::to_string(bytes) +
                                                " bytes of page-locked host memory for " + what + " (" +
                                                cudaGetErrorString(err) + ")");
    }
    p_ = p;
    n_ = bytes;
}

void PinnedBuffer::reset() noexcept {
    if (p_) cudaFreeHost(p_);
    p_ = nullptr;
    n_ = 0;
}

namespace {

__global__ void iota_kernel(int32_t* d, int64_t n) {
    const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i < n) d[i] = static_cast<int32_t>(i);
}

__global__ void fill_kernel(float* d, float value, int64_t n) {
    const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i < n) d[i] = value;
}

constexpr int kFillThreads = 256;

}  // namespace

cudaError_t fill_iota(int32_t* d, int64_t n, cudaStream_t stream) {
    if (n <= 0) return cudaSuccess;
    if (!d || n > INT32_MAX) return cudaErrorInvalidValue;
    iota_kernel<<<static_cast<unsigned>((n + kFillThreads - 1) / kFillThreads), kFillThreads, 0, stream>>>(d, n);
    return cudaGetLastError();
}

cudaError_t fill_f32(float* d, float value, int64_t n, cudaStream_t stream) {
    if (n <= 0) return cudaSuccess;
    if (!d || n > INT32_MAX) return cudaErrorInvalidValue;
    fill_kernel<<<static_cast<unsigned>((n + kFillThreads - 1) / kFillThreads), kFillThreads, 0, stream>>>(d, value, n);
    return cudaGetLastError();
}

}  // namespace moe::cuda::backend
