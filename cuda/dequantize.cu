#include "dequantize.cuh"

#include "quant/ggml_types.h"
#include "quant_blocks.cuh"

namespace moe::cuda {

namespace {

// One thread per group of 8 elements. src: n elements of Fmt; dst: [n].
template <class Fmt>
__global__ void dequantize_kernel(const uint8_t* src, float* dst, int64_t n) {
    const int64_t group = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    const int64_t first = group * kGroupElems;
    if (first >= n) return;
    constexpr int kGroupsPerBlock = Fmt::kElems / kGroupElems;
    const uint8_t* block = src + (group / kGroupsPerBlock) * Fmt::kBytes;
    float v[kGroupElems];
    const int valid = n - first < kGroupElems ? static_cast<int>(n - first) : kGroupElems;
    if constexpr (Fmt::kFloat) {
        if (valid < kGroupElems) {
            Fmt::dequant_partial(block, valid, v);
        } else {
            Fmt::dequant8(block, 0, v);
        }
    } else {
        Fmt::dequant8(block, static_cast<int>(group % kGroupsPerBlock), v);
    }
    // dst has no alignment guarantee beyond a float's, so plain stores.
    for (int i = 0; i < valid; ++i) dst[first + i] = v[i];
}

}  // namespace

bool can_dequantize(uint32_t type_id) { return block_alignment(type_id) != 0; }

cudaError_t dequantize_row(uint32_t type_id, const void* d_src, float* d_dst, int64_t n, cudaStream_t stream) {
    const quant::TypeTraits* traits = quant::type_traits(type_id);
    const int align = block_alignment(type_id);
    if (!traits || align == 0 || n < 0 || n % traits->block_size != 0 ||
        reinterpret_cast<uintptr_t>(d_src) % align != 0) {
        return cudaErrorInvalidValue;
    }
    if (n == 0) return cudaSuccess;
    if (!d_src || !d_dst) return cudaErrorInvalidValue;
    constexpr int kThreads = 256;
    const int64_t groups = (n + kGroupElems - 1) / kGroupElems;
    const int64_t blocks = (groups + kThreads - 1) / kThreads;
    if (blocks > 0x7FFFFFFF) return cudaErrorInvalidValue;
    visit_block_format(type_id, [&](auto fmt) {
        dequantize_kernel<decltype(fmt)><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
            static_cast<const uint8_t*>(d_src), d_dst, n);
    });
    return cudaGetLastError();
}

}  // namespace moe::cuda
