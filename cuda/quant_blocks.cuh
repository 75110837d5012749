// Device dequantization of ggml weight blocks, eight elements at a time: the CUDA twin of the
// dequantizers in cpp/quant/quant_ref.cc, shared by dequantize.cu and the matmul kernels.
//
// Every function computes the reference's float operations in the reference's order (Q4_K:
// (d*sc)*q - (dmin*m); Q6_K: (d*sc)*q; ...), and the CUDA build compiles with --fmad=false so no
// multiply-add is contracted: the floats are bit-identical to the CPU's (test_cuda_matmul.cu checks
// every type through dequantize_row).
//
// A call produces elements [8g, 8g + 8) of one block ("group" g): eight elements of a block always
// share one scale, and eight is what a thread converts per step in the kernels. F32 / F16 / BF16 have
// 1-element ggml blocks; here they are read as 8-element pseudo-blocks, and a row whose length is not
// a multiple of 8 ends inside its last one (dequant_partial).
//
// Alignment: loads are as wide as the block layout allows when the block itself starts at a multiple
// of BlockFormat::kAlign (a multiple-of-8 cudaMalloc'd base plus whole rows of whole blocks always
// does); callers check that once per tensor (matmul.cu, dequantize.cu).
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "quant/block_layout.h"
#include "quant/ggml_types.h"

namespace moe::cuda {

constexpr int kGroupElems = 8;  // elements per dequantizing call

namespace blocks {

namespace q = quant;

__device__ __forceinline__ uint32_t load_u8(const uint8_t* p) { return *p; }
__device__ __forceinline__ uint32_t load_u16(const uint8_t* p) { return *reinterpret_cast<const uint16_t*>(p); }
__device__ __forceinline__ float load_f16(const uint8_t* p) {
    return __half2float(__ushort_as_half(static_cast<unsigned short>(load_u16(p))));
}

// 8 bytes at p as two little-endian words (byte i of the 8 is byte i % 4 of word i / 4), read with
// loads of kAlign bytes: p must be a multiple of kAlign (1, 2, 4 or 8).
template <int kAlign>
__device__ __forceinline__ uint2 load8(const uint8_t* p) {
    if constexpr (kAlign >= 8) {
        return *reinterpret_cast<const uint2*>(p);
    } else if constexpr (kAlign == 4) {
        const uint32_t* w = reinterpret_cast<const uint32_t*>(p);
        return make_uint2(w[0], w[1]);
    } else if constexpr (kAlign == 2) {
        const uint16_t* h = reinterpret_cast<const uint16_t*>(p);
        return make_uint2(h[0] | (static_cast<uint32_t>(h[1]) << 16), h[2] | (static_cast<uint32_t>(h[3]) << 16));
    } else {
        return make_uint2(p[0] | (p[1] << 8) | (p[2] << 16) | (static_cast<uint32_t>(p[3]) << 24),
                          p[4] | (p[5] << 8) | (p[6] << 16) | (static_cast<uint32_t>(p[7]) << 24));
    }
}

// Byte i (0..7, a compile-time constant once loops are unrolled) of an 8-byte load8 result.
__device__ __forceinline__ uint32_t byte_of(uint2 v, int i) { return ((i < 4 ? v.x : v.y) >> (8 * (i & 3))) & 0xFFu; }

// float(v) for |v| < 2^22, exactly as static_cast<float>(v), without the integer-to-float
// conversion unit (quarter rate on sm_80 / sm_90, and the kernels convert every weight code):
// 1.5 * 2^23 + v is exact and keeps v in the low mantissa bits, so subtracting 1.5 * 2^23 leaves v
// exactly (and +0.0 for v = 0, as the cast gives).
__device__ __forceinline__ float exact_float(int v) { return __int_as_float(0x4B400000 + v) - 12582912.0f; }

// Q4_K / Q5_K: 6-bit scale and min of sub-block j (0..7) from the 12 packed bytes (block_layout.h).
__device__ __forceinline__ void scale_min_k4(const uint8_t* s, int j, int* sc, int* m) {
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4);
        *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

// Q3_K: the 6-bit scale k (0..15), still biased by 32, from the 12 packed bytes: unpack_scales_q3_k
// for one index (its low nibble from byte k % 8, nibble k / 8; its top 2 bits from byte 8 + k % 4,
// bit pair k / 4).
__device__ __forceinline__ int scale_q3_k(const uint8_t* s, int k) {
    const int low = (s[k & 7] >> (4 * (k >> 3))) & 0xF;
    const int high = (s[8 + (k & 3)] >> (2 * (k >> 2))) & 3;
    return low | (high << 4);
}

// 2^(e-128), half of the E8M0 scale, from bits as ggml builds it (e8m0_to_fp32_half).
__device__ __forceinline__ float e8m0_half(uint32_t e) {
    const uint32_t bits = e < 2 ? (0x00200000u << e) : ((e - 1) << 23);
    return __uint_as_float(bits);
}

// MXFP4 code (sign bit 3) -> its kMxfp4Values entry {0,1,2,3,4,6,8,12} with sign, from a nibble table
// in a register (a __constant__ table would serialise divergent lookups).
__device__ __forceinline__ int mxfp4_value(uint32_t code) {
    const int mag = static_cast<int>((0xC8643210u >> (4 * (code & 7))) & 0xF);
    return (code & 8) ? -mag : mag;
}

}  // namespace blocks

// Block geometry and the group dequantizer of one weight format.
//   kElems: elements per block (8 for the float pseudo-blocks); kBytes: bytes per block;
//   kAlign: the block-start alignment dequant8's loads assume; kFloat: 1-element ggml blocks (a row
//   may end inside a pseudo-block).
//   dequant8(b, g, out): out[i] = element 8g + i of the block at b.
template <quant::GgmlType T>
struct BlockFormat;

// Shared by the float formats: a pseudo-block of 8 elements of kSize bytes.
template <int kSize>
struct FloatFormat {
    static constexpr int kElems = 8, kBytes = 8 * kSize, kAlign = kSize;
    static constexpr bool kFloat = true;
};

template <>
struct BlockFormat<quant::GgmlType::F32> : FloatFormat<4> {
    __device__ static void dequant8(const uint8_t* b, int, float out[8]) {
        const float* f = reinterpret_cast<const float*>(b);
        if ((reinterpret_cast<uintptr_t>(b) & 15) == 0) {
            const float4 lo = reinterpret_cast<const float4*>(b)[0], hi = reinterpret_cast<const float4*>(b)[1];
            out[0] = lo.x, out[1] = lo.y, out[2] = lo.z, out[3] = lo.w;
            out[4] = hi.x, out[5] = hi.y, out[6] = hi.z, out[7] = hi.w;
        } else {
#pragma unroll
            for (int i = 0; i < 8; ++i) out[i] = f[i];
        }
    }
    __device__ static void dequant_partial(const uint8_t* b, int n, float out[8]) {
        const float* f = reinterpret_cast<const float*>(b);
#pragma unroll
        for (int i = 0; i < 8; ++i) out[i] = i < n ? f[i] : 0.0f;
    }
};

// F16 and BF16 differ only in how 16 bits become a float.
template <bool kBf16>
struct HalfFormat : FloatFormat<2> {
    __device__ static float to_float(uint32_t h) {
        if constexpr (kBf16) {
            return __uint_as_float(h << 16);
        } else {
            return __half2float(__ushort_as_half(static_cast<unsigned short>(h)));
        }
    }
    __device__ static void dequant8(const uint8_t* b, int, float out[8]) {
        if ((reinterpret_cast<uintptr_t>(b) & 15) == 0) {
            const uint4 v = *reinterpret_cast<const uint4*>(b);
            const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
            for (int i = 0; i < 8; ++i) out[i] = to_float((w[i / 2] >> (16 * (i & 1))) & 0xFFFFu);
        } else {
#pragma unroll
            for (int i = 0; i < 8; ++i) out[i] = to_float(blocks::load_u16(b + 2 * i));
        }
    }
    __device__ static void dequant_partial(const uint8_t* b, int n, float out[8]) {
#pragma unroll
        for (int i = 0; i < 8; ++i) out[i] = i < n ? to_float(blocks::load_u16(b + 2 * i)) : 0.0f;
    }
};

template <>
struct BlockFormat<quant::GgmlType::F16> : HalfFormat<false> {};
template <>
struct BlockFormat<quant::GgmlType::BF16> : HalfFormat<true> {};

// Shared by the quantized formats.
template <int kElemsPerBlock, int kBlockBytes, int kBlockAlign>
struct QuantFormat {
    static constexpr int kElems = kElemsPerBlock, kBytes = kBlockBytes, kAlign = kBlockAlign;
    static constexpr bool kFloat = false;
};

// Legacy 32-element blocks: group g covers qs[8 (g & 1) ..] in the low (g < 2) or high nibbles
// (element j < 16 is the low nibble of qs[j], element j + 16 its high nibble).

template <>
struct BlockFormat<quant::GgmlType::Q4_0> : QuantFormat<32, quant::q4_0::kBytes, 2> {
    __device__ static void dequant8(const uint8_t* b, int g, float out[8]) {
        namespace L = quant::q4_0;
        const float d = blocks::load_f16(b + L::kD);
        const uint2 qs = blocks::load8<2>(b + L::kQs + 8 * (g & 1));
        const int shift = 4 * (g >> 1);
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            const int q = static_cast<int>((blocks::byte_of(qs, i) >> shift) & 0xF);
            out[i] = blocks::exact_float(q - 8) * d;
        }
    }
};

template <>
struct BlockFormat<quant::GgmlType::Q4_1> : QuantFormat<32, quant::q4_1::kBytes, 4> {
    __device__ static void dequant8(const uint8_t* b, int g, float out[8]) {
        namespace L = quant::q4_1;
        const float d = blocks::load_f16(b + L::kD);
        const float m = blocks::load_f16(b + L::kM);
        const uint2 qs = blocks::load8<4>(b + L::kQs + 8 * (g & 1));
        const int shift = 4 * (g >> 1);
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            const int q = static_cast<int>((blocks::byte_of(qs, i) >> shift) & 0xF);
            out[i] = blocks::exact_float(q) * d + m;
        }
    }
};

// Q5_0 / Q5_1: element j's 5th bit is bit j of qh, so group g's eight are the bits of qh byte g.
template <>
struct BlockFormat<quant::GgmlType::Q5_0> : QuantFormat<32, quant::q5_0::kBytes, 2> {
    __device__ static void dequant8(const uint8_t* b, int g, float out[8]) {
        namespace L = quant::q5_0;
        const float d = blocks::load_f16(b + L::kD);
        const uint32_t qh = blocks::load_u8(b + L::kQh + g);
        const uint2 qs = blocks::load8<2>(b + L::kQs + 8 * (g & 1));
        const int shift = 4 * (g >> 1);
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            const int q = static_cast<int>(((blocks::byte_of(qs, i) >> shift) & 0xF) | (((qh >> i) & 1) << 4));
            out[i] = blocks::exact_float(q - 16) * d;
        }
    }
};

template <>
struct BlockFormat<quant::GgmlType::Q5_1> : QuantFormat<32, quant::q5_1::kBytes, 8> {
    __device__ static void dequant8(const uint8_t* b, int g, float out[8]) {
        namespace L = quant::q5_1;
        const float d = blocks::load_f16(b + L::kD);
        const float m = blocks::load_f16(b + L::kM);
        const uint32_t qh = blocks::load_u8(b + L::kQh + g);
        const uint2 qs = blocks::load8<8>(b + L::kQs + 8 * (g & 1));
        const int shift = 4 * (g >> 1);
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            const int q = static_cast<int>(((blocks::byte_of(qs, i) >> shift) & 0xF) | (((qh >> i) & 1) << 4));
            out[i] = blocks::exact_float(q) * d + m;
        }
    }
};

template <>
struct BlockFormat<quant::GgmlType::Q8_0> : QuantFormat<32, quant::q8_0::kBytes, 2> {
    __device__ static void dequant8(const uint8_t* b, int g, float out[8]) {
        namespace L = quant::q8_0;
        const float d = blocks::load_f16(b + L::kD);
        const uint2 qs = blocks::load8<2>(b + L::kQs + 8 * g);
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            const int q = static_cast<int8_t>(blocks::byte_of(qs, i));
            out[i] = blocks::exact_float(q) * d;
        }
    }
};

template <>
struct BlockFormat<quant::GgmlType::MXFP4> : QuantFormat<32, quant::mxfp4::kBytes, 1> {
    __device__ static void dequant8(const uint8_t* b, int g, float out[8]) {
        namespace L = quant::mxfp4;
        const float s = blocks::e8m0_half(blocks::load_u8(b + L::kE));
        const uint2 qs = blocks::load8<1>(b + L::kQs + 8 * (g & 1));
        const int shift = 4 * (g >> 1);
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            out[i] = blocks::exact_float(blocks::mxfp4_value((blocks::byte_of(qs, i) >> shift) & 0xF)) * s;
        }
    }
};

// K-quant super-blocks of 256: group g is elements 8g..8g+7.
//
// Q2_K / Q3_K: half h = g / 16 (128 elements, qs[32h ..]); within it pass j = (g / 4) % 4 takes bit
// pair j of qs[32h + l] for l = 8 (g % 4) + i; the sub-block (scale index) is 8h + 2j + (g % 4) / 2.
template <>
struct BlockFormat<quant::GgmlType::Q2_K> : QuantFormat<256, quant::q2_k::kBytes, 4> {
    __device__ static void dequant8(const uint8_t* b, int g, float out[8]) {
        namespace L = quant::q2_k;
        const int half = g >> 4, j = (g >> 2) & 3, l0 = 8 * (g & 3);
        const uint32_t sc = blocks::load_u8(b + L::kScales + 8 * half + 2 * j + ((g & 3) >> 1));
        const float dl = blocks::load_f16(b + L::kD) * blocks::exact_float(static_cast<int>(sc & 0xF));
        const float ml = blocks::load_f16(b + L::kDmin) * blocks::exact_float(static_cast<int>(sc >> 4));
        const uint2 qs = blocks::load8<4>(b + L::kQs + 32 * half + l0);
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            out[i] = dl * blocks::exact_float(static_cast<int>((blocks::byte_of(qs, i) >> (2 * j)) & 3)) - ml;
        }
    }
};

// Q3_K: as Q2_K, plus the high bit of element (h, j, l) = bit 4h + j of hmask[l] (a clear bit
// subtracts 4).
template <>
struct BlockFormat<quant::GgmlType::Q3_K> : QuantFormat<256, quant::q3_k::kBytes, 2> {
    __device__ static void dequant8(const uint8_t* b, int g, float out[8]) {
        namespace L = quant::q3_k;
        const int half = g >> 4, j = (g >> 2) & 3, l0 = 8 * (g & 3);
        const int scale = blocks::scale_q3_k(b + L::kScales, 8 * half + 2 * j + ((g & 3) >> 1));
        const float dl = blocks::load_f16(b + L::kD) * blocks::exact_float(scale - 32);
        const uint2 hm = blocks::load8<2>(b + L::kHmask + l0);
        const uint2 qs = blocks::load8<2>(b + L::kQs + 32 * half + l0);
        const int hbit = 4 * half + j;
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            // (low 2 bits | high bit << 2) - 4 is the reference's low 2 bits - (high bit ? 0 : 4).
            const int u = static_cast<int>(((blocks::byte_of(qs, i) >> (2 * j)) & 3) |
                                           (((blocks::byte_of(hm, i) >> hbit) & 1) << 2));
            out[i] = dl * blocks::exact_float(u - 4);
        }
    }
};

// Q4_K / Q5_K: sub-block s = g / 4 (32 elements) lives in qs[32 (s / 2) ..], low nibbles for even s,
// high for odd; l = 8 (g % 4) + i. Q5_K's 5th bit of element 32s + l is bit s of qh[l].
template <>
struct BlockFormat<quant::GgmlType::Q4_K> : QuantFormat<256, quant::q4_k::kBytes, 8> {
    __device__ static void dequant8(const uint8_t* b, int g, float out[8]) {
        namespace L = quant::q4_k;
        const int sub = g >> 2, l0 = 8 * (g & 3);
        int sc, m;
        blocks::scale_min_k4(b + L::kScales, sub, &sc, &m);
        const float d1 = blocks::load_f16(b + L::kD) * blocks::exact_float(sc);
        const float m1 = blocks::load_f16(b + L::kDmin) * blocks::exact_float(m);
        const uint2 qs = blocks::load8<8>(b + L::kQs + 32 * (sub >> 1) + l0);
        const int shift = 4 * (sub & 1);
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            out[i] = d1 * blocks::exact_float(static_cast<int>((blocks::byte_of(qs, i) >> shift) & 0xF)) - m1;
        }
    }
};

template <>
struct BlockFormat<quant::GgmlType::Q5_K> : QuantFormat<256, quant::q5_k::kBytes, 8> {
    __device__ static void dequant8(const uint8_t* b, int g, float out[8]) {
        namespace L = quant::q5_k;
        const int sub = g >> 2, l0 = 8 * (g & 3);
        int sc, m;
        blocks::scale_min_k4(b + L::kScales, sub, &sc, &m);
        const float d1 = blocks::load_f16(b + L::kD) * blocks::exact_float(sc);
        const float m1 = blocks::load_f16(b + L::kDmin) * blocks::exact_float(m);
        const uint2 qh = blocks::load8<8>(b + L::kQh + l0);
        const uint2 qs = blocks::load8<8>(b + L::kQs + 32 * (sub >> 1) + l0);
        const int shift = 4 * (sub & 1);
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            const int q = static_cast<int>(((blocks::byte_of(qs, i) >> shift) & 0xF) |
                                           (((blocks::byte_of(qh, i) >> sub) & 1) << 4));
            out[i] = d1 * blocks::exact_float(q) - m1;
        }
    }
};

// Q6_K: half h = g / 16; within it k = (g / 4) % 4 selects ql[64h + 32 (k & 1) + l] (low nibble for
// k < 2, high for k >= 2) and bit pair k of qh[32h + l], l = 8 (g % 4) + i; scale 8h + l / 16 + 2k.
template <>
struct BlockFormat<quant::GgmlType::Q6_K> : QuantFormat<256, quant::q6_k::kBytes, 2> {
    __device__ static void dequant8(const uint8_t* b, int g, float out[8]) {
        namespace L = quant::q6_k;
        const int half = g >> 4, k = (g >> 2) & 3, l0 = 8 * (g & 3);
        const int sc = static_cast<int8_t>(blocks::load_u8(b + L::kScales + 8 * half + ((g & 3) >> 1) + 2 * k));
        const float ds = blocks::load_f16(b + L::kD) * blocks::exact_float(sc);  // the reference's d * sc
        const uint2 ql = blocks::load8<2>(b + L::kQl + 64 * half + 32 * (k & 1) + l0);
        const uint2 qh = blocks::load8<2>(b + L::kQh + 32 * half + l0);
        const int lo_shift = 4 * (k >> 1);
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            const int q = static_cast<int>(((blocks::byte_of(ql, i) >> lo_shift) & 0xF) |
                                           (((blocks::byte_of(qh, i) >> (2 * k)) & 3) << 4));
            out[i] = ds * blocks::exact_float(q - 32);
        }
    }
};

// Elements [8 gi, 8 gi + 8) of a row of n elements starting at `row` (elements past n read as 0;
// only float rows can end inside a group).
template <class Fmt>
__device__ __forceinline__ void dequant_group(const uint8_t* row, int gi, int n, float out[8]) {
    constexpr int kGroupsPerBlock = Fmt::kElems / kGroupElems;
    const uint8_t* block = row + static_cast<size_t>(gi / kGroupsPerBlock) * Fmt::kBytes;
    if constexpr (Fmt::kFloat) {
        const int valid = n - kGroupElems * gi;
        if (valid >= kGroupElems) {
            Fmt::dequant8(block, 0, out);
        } else {
            Fmt::dequant_partial(block, valid, out);
        }
    } else {
        Fmt::dequant8(block, gi % kGroupsPerBlock, out);
    }
}

// Calls f(BlockFormat<T>{}) for the weight type `type_id`; false (and no call) for a type without a
// device dequantizer. Host code uses it to instantiate and launch one kernel per format.
template <class F>
bool visit_block_format(uint32_t type_id, F&& f) {
    using quant::GgmlType;
    switch (static_cast<GgmlType>(type_id)) {
        case GgmlType::F32: f(BlockFormat<GgmlType::F32>{}); return true;
        case GgmlType::F16: f(BlockFormat<GgmlType::F16>{}); return true;
        case GgmlType::BF16: f(BlockFormat<GgmlType::BF16>{}); return true;
        case GgmlType::Q4_0: f(BlockFormat<GgmlType::Q4_0>{}); return true;
        case GgmlType::Q4_1: f(BlockFormat<GgmlType::Q4_1>{}); return true;
        case GgmlType::Q5_0: f(BlockFormat<GgmlType::Q5_0>{}); return true;
        case GgmlType::Q5_1: f(BlockFormat<GgmlType::Q5_1>{}); return true;
        case GgmlType::Q8_0: f(BlockFormat<GgmlType::Q8_0>{}); return true;
        case GgmlType::Q2_K: f(BlockFormat<GgmlType::Q2_K>{}); return true;
        case GgmlType::Q3_K: f(BlockFormat<GgmlType::Q3_K>{}); return true;
        case GgmlType::Q4_K: f(BlockFormat<GgmlType::Q4_K>{}); return true;
        case GgmlType::Q5_K: f(BlockFormat<GgmlType::Q5_K>{}); return true;
        case GgmlType::Q6_K: f(BlockFormat<GgmlType::Q6_K>{}); return true;
        case GgmlType::MXFP4: f(BlockFormat<GgmlType::MXFP4>{}); return true;
        default: return false;
    }
}

// The block-start alignment dequant8 assumes for a type, or 0 for a type visit_block_format refuses.
inline int block_alignment(uint32_t type_id) {
    int align = 0;
    visit_block_format(type_id, [&](auto fmt) { align = decltype(fmt)::kAlign; });
    return align;
}

}  // namespace moe::cuda
