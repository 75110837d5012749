// Matrix products of GGUF weights (any format quant_blocks.cuh decodes) with F32 activations on the
// GPU: the device twin of cpp/kernels/matmul.h (matmul, matmul_experts, matmul_experts_swiglu).
// Weights are dequantized in registers; nothing is allocated and no library (cuBLAS, CUTLASS) is
// used.
//
// Numerics: not llama.cpp's integer dot products but a float product of the bit-exact dequantized
// weights. Products of at most kMatvecMaxRows rows per weight run a matrix-vector kernel that
// accumulates in fp32 (error ~1e-6 relative to sum |w x|); larger ones run tensor-core tiles that
// round weights and activations to half (fp16: 11-bit significand, largest finite 65504; activations
// beyond that overflow) and accumulate in fp32 (error ~1e-3 relative to sum |w x|).
//
// Every call is asynchronous on `stream`; pointers named d_* and all weight, x and y pointers are
// device memory. Returns cudaErrorInvalidValue for an unsupported type, bad shapes or strides, a
// misaligned weight or a null buffer with work to do; otherwise the launch status.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace moe::cuda {

// A 2-D weight in GGUF layout: n_out rows of n_in elements (ggml {ne0 = n_in, ne1 = n_out}), rows
// row_bytes apart. data, row_bytes must be multiples of the format's block alignment (1, 2, 4 or 8
// bytes: a cudaMalloc'd tensor, or a GGUF blob uploaded whole, always is).
struct DeviceWeight {
    const void* data = nullptr;
    uint32_t type = 0;  // ggml type id
    int64_t n_in = 0;
    int64_t n_out = 0;
    size_t row_bytes = 0;
};

// A 3-D expert weight: n_expert matrices of n_out rows of n_in (ggml {n_in, n_out, n_expert}),
// matrices expert_bytes apart (>= n_out * row_bytes; same alignment rule as row_bytes).
struct DeviceExperts {
    const void* data = nullptr;
    uint32_t type = 0;
    int64_t n_in = 0;
    int64_t n_out = 0;
    int64_t n_expert = 0;
    size_t row_bytes = 0;
    size_t expert_bytes = 0;
};

// Products with at most this many activation rows per weight (a dense call's n_tokens, an expert's
// row count) take the fp32 matrix-vector kernel; more take the half-precision tensor-core tiles.
constexpr int64_t kMatvecMaxRows = 8;

// True when the kernels below handle this ggml type id: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1,
// Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, MXFP4.
bool can_matmul(uint32_t type);

// y[t, o] = sum_k W[o, k] x[t, k]
// x: [n_tokens, n_in] (row stride x_stride floats); y: [n_tokens, n_out] (row stride y_stride floats).
cudaError_t matmul(const DeviceWeight& w, const float* x, int64_t x_stride, int64_t n_tokens, float* y,
                   int64_t y_stride, cudaStream_t s);

// Expert-grouped product (ggml mul_mat_id). Rows are already sorted by expert: expert e owns rows
// [d_offsets[e], d_offsets[e+1]) (d_offsets: [n_expert + 1] int32, non-decreasing, within
// [0, n_rows]; as a counting sort makes them). For every row r:
//   y[r, :] = W[e] · x[d_row_src[r], :]
// x: [*, n_in] (stride x_stride; d_row_src: [n_rows], each a row of x); y: [n_rows, n_out]
// (stride y_stride). The host need not know the offsets: experts with no rows are never scheduled,
// and each expert's weights are streamed once per call by the matrix-vector kernel (all of its <= 8
// rows at once) or once per 64-row tile by the tensor-core kernel.
cudaError_t matmul_experts(const DeviceExperts& w, const float* x, int64_t x_stride, const int32_t* d_row_src,
                           const int32_t* d_offsets, int64_t n_rows, float* y, int64_t y_stride, cudaStream_t s);

// Fused MoE gate/up projections and SwiGLU: for every row r (expert e as above),
//   y[r, :] = silu(gate[e] · x[d_row_src[r], :]) * (up[e] · x[d_row_src[r], :]),  silu(v) = v / (1 + expf(-v))
// gate and up must have the same type and shape (their strides may differ); both products share one
// pass over the activations.
cudaError_t matmul_experts_swiglu(const DeviceExperts& gate, const DeviceExperts& up, const float* x,
                                  int64_t x_stride, const int32_t* d_row_src, const int32_t* d_offsets,
                                  int64_t n_rows, float* y, int64_t y_stride, cudaStream_t s);

}  // namespace moe::cuda
