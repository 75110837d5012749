#include "dequantize.cuh"

#include <cuda_fp16.h>

#include "quant/block_layout.h"
#include "quant/ggml_types.h"

namespace moe::cuda {

namespace {

using quant::GgmlType;
namespace q = quant;

__device__ __forceinline__ uint16_t load_u16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }

__device__ __forceinline__ float load_f16(const uint8_t* p) {
    return __half2float(__ushort_as_half(load_u16(p)));
}

__device__ __forceinline__ float bf16_to_f32(uint16_t h) { return __uint_as_float(static_cast<uint32_t>(h) << 16); }

// Q4_K: 6-bit scale and min of sub-block j from the 12 packed bytes (see block_layout.h).
__device__ __forceinline__ void scale_min_k4(const uint8_t* s, int j, int* sc, int* m) {
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4);
        *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

__constant__ int8_t kMxfp4[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};

__device__ __forceinline__ float e8m0_half(uint8_t e) {
    const uint32_t bits = e < 2 ? (0x00200000u << e) : (static_cast<uint32_t>(e - 1) << 23);
    return __uint_as_float(bits);
}

// One thread per output element: i is the element index in the row.
__device__ float dequant_element(GgmlType type, const uint8_t* src, int64_t i) {
    switch (type) {
        case GgmlType::F32: return reinterpret_cast<const float*>(src)[i];
        case GgmlType::F16: return load_f16(src + 2 * i);
        case GgmlType::BF16: return bf16_to_f32(load_u16(src + 2 * i));
        case GgmlType::Q4_0: {
            const uint8_t* b = src + (i / q::kQK) * q::q4_0::kBytes;
            const int j = static_cast<int>(i % q::kQK);
            const uint8_t byte = b[q::q4_0::kQs + (j & 15)];
            const int v = (j < 16 ? (byte & 0xF) : (byte >> 4)) - 8;
            return static_cast<float>(v) * load_f16(b + q::q4_0::kD);
        }
        case GgmlType::Q8_0: {
            const uint8_t* b = src + (i / q::kQK) * q::q8_0::kBytes;
            const int8_t v = static_cast<int8_t>(b[q::q8_0::kQs + i % q::kQK]);
            return static_cast<float>(v) * load_f16(b + q::q8_0::kD);
        }
        case GgmlType::MXFP4: {
            const uint8_t* b = src + (i / q::kQK) * q::mxfp4::kBytes;
            const int j = static_cast<int>(i % q::kQK);
            const uint8_t byte = b[q::mxfp4::kQs + (j & 15)];
            return static_cast<float>(kMxfp4[j < 16 ? (byte & 0xF) : (byte >> 4)]) * e8m0_half(b[q::mxfp4::kE]);
        }
        case GgmlType::Q4_K: {
            // 4 chunks of 64; sub-blocks 2c and 2c+1 share qs[32c .. 32c+31] (low / high nibbles).
            const uint8_t* b = src + (i / q::kQKK) * q::q4_k::kBytes;
            const int e = static_cast<int>(i % q::kQKK);
            const int sub = e / 32, c = sub / 2, s = sub % 2, l = e % 32;
            int sc, m;
            scale_min_k4(b + q::q4_k::kScales, sub, &sc, &m);
            const float d1 = load_f16(b + q::q4_k::kD) * static_cast<float>(sc);
            const float m1 = load_f16(b + q::q4_k::kDmin) * static_cast<float>(m);
            return d1 * static_cast<float>((b[q::q4_k::kQs + 32 * c + l] >> (4 * s)) & 0xF) - m1;
        }
        case GgmlType::Q6_K: {
            // Two halves of 128; in each, element l + 32k (k = 0..3) takes its low 4 bits from
            // ql[l] / ql[l+32] (low, then high nibbles) and 2 high bits from qh[l] >> 2k.
            const uint8_t* b = src + (i / q::kQKK) * q::q6_k::kBytes;
            const int e = static_cast<int>(i % q::kQKK);
            const int half = e / 128, r = e % 128, k = r / 32, l = r % 32;
            const uint8_t* ql = b + q::q6_k::kQl + 64 * half;
            const uint8_t* qh = b + q::q6_k::kQh + 32 * half;
            const int8_t* sc = reinterpret_cast<const int8_t*>(b + q::q6_k::kScales) + 8 * half;
            const uint8_t lo_byte = ql[l + (k & 1) * 32];
            const int lo = (k < 2) ? (lo_byte & 0xF) : (lo_byte >> 4);
            const int v = (lo | (((qh[l] >> (2 * k)) & 3) << 4)) - 32;
            return load_f16(b + q::q6_k::kD) * static_cast<float>(sc[l / 16 + 2 * k]) * static_cast<float>(v);
        }
        default: return 0.0f;
    }
}

__global__ void dequantize_kernel(GgmlType type, const uint8_t* src, float* dst, int64_t n) {
    const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i < n) dst[i] = dequant_element(type, src, i);
}

}  // namespace

bool can_dequantize(uint32_t type_id) {
    switch (static_cast<GgmlType>(type_id)) {
        case GgmlType::F32:
        case GgmlType::F16:
        case GgmlType::BF16:
        case GgmlType::Q4_0:
        case GgmlType::Q8_0:
        case GgmlType::MXFP4:
        case GgmlType::Q4_K:
        case GgmlType::Q6_K: return true;
        default: return false;
    }
}

cudaError_t dequantize_row(uint32_t type_id, const void* d_src, float* d_dst, int64_t n, cudaStream_t stream) {
    const quant::TypeTraits* traits = quant::type_traits(type_id);
    if (!traits || !can_dequantize(type_id) || n < 0 || n % traits->block_size != 0) return cudaErrorInvalidValue;
    if (n == 0) return cudaSuccess;
    constexpr int kThreads = 256;
    const int64_t blocks = (n + kThreads - 1) / kThreads;
    dequantize_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
        static_cast<GgmlType>(type_id), static_cast<const uint8_t*>(d_src), d_dst, n);
    return cudaGetLastError();
}

}  // namespace moe::cuda
