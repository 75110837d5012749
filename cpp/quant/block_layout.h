// Byte layouts of the ggml blocks this build handles (reference note §2), shared by the scalar
// reference (quant_ref.cc) and the SIMD kernels. Internal to cpp/quant/.
//
// Blocks are addressed as raw bytes with the field offsets below rather than through structs: a
// row pointer only has to be byte-aligned (MXFP4 blocks are 17 bytes, Q4_0 18, ...), and multi-byte
// fields are read with memcpy, which compiles to a plain unaligned load. All fields are
// little-endian; so is every host we build for.
//
// Helpers are `static inline` for the reason given in fp16.h (SIMD TUs include this header).
#pragma once

#include <cstdint>
#include <cstring>

#include "fp16.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "ggml blocks are little-endian; big-endian hosts are not supported"
#endif

namespace moe::quant {

constexpr int kQK = 32;    // elements per legacy block (Q4_0 .. Q8_1, MXFP4)
constexpr int kQKK = 256;  // elements per K-quant super-block

// Legacy 32-element blocks. For every 4-bit layout, element j (0..15) is the low nibble of qs[j]
// and element j+16 the high nibble.
namespace q4_0 { constexpr int kBytes = 18, kD = 0, kQs = 2; }                     // d:f16 qs:u8[16]
namespace q4_1 { constexpr int kBytes = 20, kD = 0, kM = 2, kQs = 4; }             // d:f16 m:f16 qs:u8[16]
namespace q5_0 { constexpr int kBytes = 22, kD = 0, kQh = 2, kQs = 6; }            // d:f16 qh:u8[4] qs:u8[16]
namespace q5_1 { constexpr int kBytes = 24, kD = 0, kM = 2, kQh = 4, kQs = 8; }    // d:f16 m:f16 qh:u8[4] qs:u8[16]
namespace q8_0 { constexpr int kBytes = 34, kD = 0, kQs = 2; }                     // d:f16 qs:i8[32]
namespace q8_1 { constexpr int kBytes = 36, kD = 0, kS = 2, kQs = 4; }             // d:f16 s:f16 qs:i8[32]
namespace mxfp4 { constexpr int kBytes = 17, kE = 0, kQs = 1; }                    // e:E8M0 qs:u8[16]

// K-quant 256-element super-blocks.
namespace q2_k { constexpr int kBytes = 84, kScales = 0, kQs = 16, kD = 80, kDmin = 82; }   // scales:u8[16] qs:u8[64] d dmin
namespace q3_k { constexpr int kBytes = 110, kHmask = 0, kQs = 32, kScales = 96, kD = 108; }  // hmask:u8[32] qs:u8[64] scales:u8[12] d
namespace q4_k { constexpr int kBytes = 144, kD = 0, kDmin = 2, kScales = 4, kQs = 16; }    // d dmin scales:u8[12] qs:u8[128]
namespace q5_k { constexpr int kBytes = 176, kD = 0, kDmin = 2, kScales = 4, kQh = 16, kQs = 48; }  // d dmin scales qh:u8[32] qs:u8[128]
namespace q6_k { constexpr int kBytes = 210, kQl = 0, kQh = 128, kScales = 192, kD = 208; }  // ql:u8[128] qh:u8[64] scales:i8[16] d
namespace q8_k { constexpr int kBytes = 292, kD = 0, kQs = 4, kBsums = 260; }               // d:f32 qs:i8[256] bsums:i16[16]

static inline uint16_t load_u16(const uint8_t* p) {
    uint16_t v;
    std::memcpy(&v, p, sizeof v);
    return v;
}

static inline uint32_t load_u32(const uint8_t* p) {
    uint32_t v;
    std::memcpy(&v, p, sizeof v);
    return v;
}

static inline float load_f16(const uint8_t* p) { return fp16_to_fp32(load_u16(p)); }

static inline float load_f32(const uint8_t* p) {
    float v;
    std::memcpy(&v, p, sizeof v);
    return v;
}

static inline void store_u16(uint8_t* p, uint16_t v) { std::memcpy(p, &v, sizeof v); }
static inline void store_f16(uint8_t* p, float v) { store_u16(p, fp32_to_fp16(v)); }
static inline void store_f32(uint8_t* p, float v) { std::memcpy(p, &v, sizeof v); }

// Q4_K / Q5_K: 6-bit scale sc[j] and min m[j] of sub-block j (0..7) from the 12 packed bytes s.
//   bytes 0-3:  low 6 bits sc0..3, top 2 bits = bits 4-5 of sc4..7
//   bytes 4-7:  low 6 bits m0..3,  top 2 bits = bits 4-5 of m4..7
//   bytes 8-11: low nibble = bits 0-3 of sc4..7, high nibble = bits 0-3 of m4..7
static inline void unpack_scale_min_k4(const uint8_t* s, int j, int* sc, int* m) {
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4);
        *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

// Q3_K: the 16 6-bit scales (still biased by 32) from the 12 packed bytes b.
//   bytes 0-3 / 4-7: low nibble = bits 0-3 of s0..3 / s4..7, high nibble = bits 0-3 of s8..11 / s12..15
//   bytes 8-11: 2-bit pairs, byte 8+j holds bits 4-5 of s[j], s[4+j], s[8+j], s[12+j] (low to high)
static inline void unpack_scales_q3_k(const uint8_t* b, int out[16]) {
    for (int j = 0; j < 4; ++j) {
        out[j] = (b[j] & 0xF) | ((b[8 + j] & 3) << 4);
        out[4 + j] = (b[4 + j] & 0xF) | (((b[8 + j] >> 2) & 3) << 4);
        out[8 + j] = (b[j] >> 4) | (((b[8 + j] >> 4) & 3) << 4);
        out[12 + j] = (b[4 + j] >> 4) | (((b[8 + j] >> 6) & 3) << 4);
    }
}

// MXFP4 element values: twice the E2M1 value of each 4-bit code (sign bit 3), so that an E8M0 scale
// can be applied as 2^(e-128) instead of 2^(e-127).
constexpr int8_t kMxfp4Values[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};

// Half of the E8M0 scale, 2^(e-128), built from bits as ggml does: e = 0 and 1 give the fp32
// subnormals 2^-128 and 2^-127, e >= 2 the normal 2^(e-128). e = 255 (NaN in the MX spec) is not
// special-cased and yields 2^127.
static inline float e8m0_to_fp32_half(uint8_t e) {
    const uint32_t bits = e < 2 ? (0x00200000u << e) : (static_cast<uint32_t>(e - 1) << 23);
    return f32_from_bits(bits);
}

}  // namespace moe::quant
