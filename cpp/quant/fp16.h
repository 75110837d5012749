// Exact software conversions between fp32 and the two 16-bit float formats ggml stores:
// IEEE binary16 ("f16", ggml_half) and bfloat16 ("bf16", the upper half of an fp32).
//
// The f16 conversions are bit-identical to x86 F16C (VCVTPS2PH with round-to-nearest-even,
// VCVTPH2PS), including NaN handling, so scalar reference kernels and SIMD kernels agree bit for
// bit. The bf16 conversions follow ggml (ggml-impl.h): NaN -> quiet NaN, everything else rounds
// to nearest even, subnormals are kept (not flushed).
//
// All functions are `static inline` on purpose: this header is included by translation units
// compiled with -mavx2 / -mavx512f, and an external-linkage inline function instantiated there
// could be the copy the linker keeps for the baseline code too (and then execute AVX-512
// instructions on a CPU without them). Internal linkage gives every TU its own copy.
#pragma once

#include <cstdint>
#include <cstring>

namespace moe::quant {

static inline uint32_t f32_bits(float f) {
    uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    return u;
}

static inline float f32_from_bits(uint32_t u) {
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}

// binary16 -> fp32. Exact for every input. A signalling NaN comes back quiet (quiet bit set,
// payload kept), as F16C does.
static inline float fp16_to_fp32(uint16_t h) {
    const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
    const uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    if (exp == 0x1f) {  // inf / NaN
        const uint32_t quiet = mant ? 0x00400000u : 0u;
        return f32_from_bits(sign | 0x7f800000u | quiet | (mant << 13));
    }
    if (exp == 0) {
        if (mant == 0) return f32_from_bits(sign);  // +-0
        // Subnormal half m * 2^-24: shift the leading 1 up to the implicit-bit position (bit 10).
        // Starting from the smallest normal exponent (2^-14, fp32 biased 113), each shift halves.
        uint32_t e32 = 113;
        while ((mant & 0x400u) == 0) {
            mant <<= 1;
            --e32;
        }
        return f32_from_bits(sign | (e32 << 23) | ((mant & 0x3ffu) << 13));
    }
    // Normal: rebias the exponent from 15 to 127.
    return f32_from_bits(sign | ((exp + 112u) << 23) | (mant << 13));
}

// fp32 -> binary16, round to nearest, ties to even. Overflow goes to +-inf, tiny values to
// (signed) subnormals or zero. A NaN stays NaN: quiet bit set, the top 9 payload bits kept
// (what F16C produces).
static inline uint16_t fp32_to_fp16(float f) {
    const uint32_t x = f32_bits(f);
    const uint32_t sign = (x >> 16) & 0x8000u;
    const uint32_t ax = x & 0x7fffffffu;

    if (ax > 0x7f800000u) {  // NaN
        return static_cast<uint16_t>(sign | 0x7e00u | ((ax >> 13) & 0x3ffu));
    }
    if (ax >= 0x477ff000u) {  // >= 65520 = halfway between 65504 (max half) and 65536: inf
        return static_cast<uint16_t>(sign | 0x7c00u);
    }
    if (ax >= 0x38800000u) {  // >= 2^-14: normal half
        // Round the 13 dropped mantissa bits to nearest even; a carry out of the mantissa bumps
        // the exponent, which is the correct result. Then rebias 127 -> 15 (subtract 112 << 23).
        const uint32_t rounded = ax + 0x0fffu + ((ax >> 13) & 1u);
        return static_cast<uint16_t>(sign | ((rounded - (112u << 23)) >> 13));
    }
    if (ax <= 0x33000000u) {  // <= 2^-25: half of the smallest subnormal, ties to even -> 0
        return static_cast<uint16_t>(sign);
    }
    // Subnormal result: value = m * 2^(e - 150) with m the 24-bit significand; in units of the
    // smallest subnormal 2^-24 that is m >> (126 - e), rounded to nearest even. Here 102 <= e <= 112,
    // so the shift is 14..24. A result of 0x400 is the smallest normal, which is also correct.
    const uint32_t e = ax >> 23;
    const uint32_t m = (ax & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126u - e;
    uint32_t q = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1u);
    const uint32_t half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (q & 1u))) ++q;
    return static_cast<uint16_t>(sign | q);
}

// bfloat16 -> fp32: the bf16 bits are the upper half of the fp32 bits. Exact.
static inline float bf16_to_fp32(uint16_t b) {
    return f32_from_bits(static_cast<uint32_t>(b) << 16);
}

// fp32 -> bfloat16 with ggml's semantics: NaN -> quiet NaN (bit 6 of the bf16 = fp32 quiet bit
// forced on, sign and upper payload kept); everything else rounds to nearest even on the 16 dropped
// bits (finite values past the largest bf16 become inf, subnormals are kept).
static inline uint16_t fp32_to_bf16(float f) {
    const uint32_t x = f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) {
        return static_cast<uint16_t>((x >> 16) | 0x40u);
    }
    return static_cast<uint16_t>((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

}  // namespace moe::quant
