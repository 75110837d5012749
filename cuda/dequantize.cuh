// CUDA dequantization of ggml blocks to F32: the device twin of cpp/quant/quant_ref.cc. Every kernel
// computes the same float operations in the same order as its CPU reference (and the CUDA build
// uses --fmad=false), so results are bit-identical; test/gpu/test_cuda_kernels.cu checks that.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace moe::cuda {

// True when dequantize_row has a kernel for this ggml type id.
bool can_dequantize(uint32_t type_id);

// d_src: n elements encoded as `type_id`, in device memory; d_dst: [n] floats in device memory.
// n must be a multiple of the type's block size. Returns cudaErrorInvalidValue for a type without a
// kernel or a bad n, else the launch status.
cudaError_t dequantize_row(uint32_t type_id, const void* d_src, float* d_dst, int64_t n, cudaStream_t stream);

}  // namespace moe::cuda
