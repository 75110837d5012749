// What matmul.cu (argument checks, path choice) shares with the two kernel files: the argument block
// every kernel takes, the launchers, and the device helpers both kernels use on activations.
// Internal to cuda/.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "matmul.cuh"

namespace moe::cuda::detail {

// One product as the kernels see it (shapes already checked by matmul.cu). A dense product is the
// expert-grouped one with a single expert owning every row, rows reading x in order.
struct ProductArgs {
    const uint8_t* w[2] = {nullptr, nullptr};  // the weight (w[0]); SwiGLU: gate (w[0]) and up (w[1])
    size_t row_bytes[2] = {0, 0};
    size_t expert_bytes[2] = {0, 0};
    int n_in = 0;                       // < 2^30: group indices fit an int
    int n_out = 0;
    int n_expert = 1;
    const float* x = nullptr;           // [*, n_in], row stride x_stride
    int64_t x_stride = 0;
    const int32_t* row_src = nullptr;   // [n_rows]: the x row of each row; null: row r reads x row r
    const int32_t* offsets = nullptr;   // [n_expert + 1]: expert e owns rows [offsets[e], offsets[e+1]); null: dense
    int64_t n_rows = 0;
    float* y = nullptr;                 // [n_rows, n_out], row stride y_stride
    int64_t y_stride = 0;
};

// Matrix-vector kernel for every row group of at most kMatvecMaxRows rows (dense: the whole call,
// which must have at most kMatvecMaxRows rows; experts: every expert with 1..kMatvecMaxRows rows).
cudaError_t launch_matvec(uint32_t type, bool swiglu, const ProductArgs& a, cudaStream_t stream);

// Tensor-core tile kernel for the rest (dense: the whole call; experts: every expert with more than
// kMatvecMaxRows rows).
cudaError_t launch_tiles(uint32_t type, bool swiglu, const ProductArgs& a, cudaStream_t stream);

// x[k0 .. k0 + 8) of one activation row (elements at or past n_in read as 0). vec: the row starts
// on a 16-byte boundary, so whole groups (k0 is a multiple of 8) load as two float4.
__device__ __forceinline__ void load_x8(const float* row, int k0, int n_in, bool vec, float out[8]) {
    if (vec && k0 + 8 <= n_in) {
        const float4 lo = *reinterpret_cast<const float4*>(row + k0);
        const float4 hi = *reinterpret_cast<const float4*>(row + k0 + 4);
        out[0] = lo.x, out[1] = lo.y, out[2] = lo.z, out[3] = lo.w;
        out[4] = hi.x, out[5] = hi.y, out[6] = hi.z, out[7] = hi.w;
    } else {
#pragma unroll
        for (int i = 0; i < 8; ++i) out[i] = k0 + i < n_in ? row[k0 + i] : 0.0f;
    }
}

__device__ __forceinline__ bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

// silu(v) = v / (1 + expf(-v)), as the public header states (and the CPU reference's definition).
__device__ __forceinline__ float silu(float v) { return v / (1.0f + expf(-v)); }

}  // namespace moe::cuda::detail
