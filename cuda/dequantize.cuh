// CUDA dequantization of ggml blocks to F32: the device twin of cpp/quant/quant_ref.cc. The block
// decoders live in quant_blocks.cuh (shared with the matmul kernels); they compute the same float
// operations in the same order as the CPU reference (and the CUDA build uses --fmad=false), so
// results are bit-identical; test/gpu/test_cuda_kernels.cu and test_cuda_matmul.cu check that.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace moe::cuda {

// True when dequantize_row has a kernel for this ggml type id: F32, F16, BF16, Q4_0, Q4_1, Q5_0,
// Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K and MXFP4.
bool can_dequantize(uint32_t type_id);

// d_src: n elements encoded as `type_id`, in device memory; d_dst: [n] floats in device memory.
// n must be a multiple of the type's block size, and d_src a multiple of the block's alignment
// (at most 8 bytes: any cudaMalloc'd pointer plus whole rows of a GGUF tensor is). Returns
// cudaErrorInvalidValue for a type without a kernel, a bad n or a misaligned d_src, else the launch
// status.
cudaError_t dequantize_row(uint32_t type_id, const void* d_src, float* d_dst, int64_t n, cudaStream_t stream);

}  // namespace moe::cuda
