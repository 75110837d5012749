// AVX2 + FMA + F16C kernels (this file is compiled with -mavx2 -mfma -mf16c and only entered after
// cpu::require_isa(Avx2)). Dequantize for every supported type, quantize for F16, BF16, Q8_0 and
// Q8_K; the other quantizers stay scalar.
//
// Every kernel performs the same float operations, in the same order, as its scalar reference in
// quant_ref.cc: per-block (or per-sub-block) factors are formed as scalar floats exactly as the
// reference forms them, then each element is one multiply (plus one add/sub where the reference
// has it). The project builds with -ffp-contract=off, so the compiler never fuses those into FMAs
// (GCC would otherwise contract _mm256_mul_ps + _mm256_add_ps) and results match bit for bit.
//
// Everything here has internal linkage, so no AVX2-compiled copy of a shared inline function can
// be picked by the linker for baseline code.
#include "quant.h"

#if defined(__x86_64__) || defined(_M_X64)

#if (defined(__GNUC__) || defined(__clang__)) && !(defined(__AVX2__) && defined(__FMA__) && defined(__F16C__))
#error "quant_avx2.cc must be compiled with -mavx2 -mfma -mf16c"
#endif

#include <immintrin.h>

#include <cstring>

#include "block_layout.h"

namespace moe::quant {

namespace {

// ------------------------------------------------------------------------------------------------
// Helpers
// ------------------------------------------------------------------------------------------------

inline float f16_at(const uint8_t* p) { return _cvtsh_ss(load_u16(p)); }

// Bytes 0..7 of v (signed) as 8 floats.
inline __m256 low8_i8_to_ps(__m128i v) { return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v)); }

// y[k] = float(q[k]) * d for the 16 signed bytes of q.
inline void store_mul16(__m128i q, __m256 d, float* y) {
    _mm256_storeu_ps(y, _mm256_mul_ps(low8_i8_to_ps(q), d));
    _mm256_storeu_ps(y + 8, _mm256_mul_ps(low8_i8_to_ps(_mm_srli_si128(q, 8)), d));
}

// y[k] = float(q[k]) * d + m.
inline void store_mul_add16(__m128i q, __m256 d, __m256 m, float* y) {
    _mm256_storeu_ps(y, _mm256_add_ps(_mm256_mul_ps(low8_i8_to_ps(q), d), m));
    _mm256_storeu_ps(y + 8, _mm256_add_ps(_mm256_mul_ps(low8_i8_to_ps(_mm_srli_si128(q, 8)), d), m));
}

// y[k] = float(q[k]) * d - m.
inline void store_mul_sub16(__m128i q, __m256 d, __m256 m, float* y) {
    _mm256_storeu_ps(y, _mm256_sub_ps(_mm256_mul_ps(low8_i8_to_ps(q), d), m));
    _mm256_storeu_ps(y + 8, _mm256_sub_ps(_mm256_mul_ps(low8_i8_to_ps(_mm_srli_si128(q, 8)), d), m));
}

inline __m128i lo128(__m256i v) { return _mm256_castsi256_si128(v); }
inline __m128i hi128(__m256i v) { return _mm256_extracti128_si256(v, 1); }

// Low / high nibbles of 16 bytes (element j / j+16 of a legacy 4-bit block).
inline __m128i low_nibbles(__m128i v) { return _mm_and_si128(v, _mm_set1_epi8(0x0F)); }
inline __m128i high_nibbles(__m128i v) { return _mm_and_si128(_mm_srli_epi16(v, 4), _mm_set1_epi8(0x0F)); }

// 16 bits -> 16 bytes: byte k = 0x10 if bit k of `bits` is set, else 0 (the 5th bit of Q5_0/Q5_1).
inline __m128i bits_to_0x10(uint32_t bits) {
    const __m128i spread = _mm_shuffle_epi8(_mm_cvtsi32_si128(static_cast<int>(bits)),
                                            _mm_set_epi8(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0));
    const __m128i select = _mm_set_epi8(-128, 64, 32, 16, 8, 4, 2, 1, -128, 64, 32, 16, 8, 4, 2, 1);
    const __m128i set = _mm_cmpeq_epi8(_mm_and_si128(spread, select), select);
    return _mm_and_si128(set, _mm_set1_epi8(0x10));
}

// Bit `k` (0..7) of every byte of v, as 0 / 16.
inline __m256i bit_to_16(__m256i v, int k) {
    const __m256i b = _mm256_and_si256(_mm256_srl_epi16(v, _mm_cvtsi32_si128(k)), _mm256_set1_epi8(1));
    return _mm256_slli_epi16(b, 4);
}

// Bits [shift, shift+1] of every byte of v, as 0..3.
inline __m256i two_bits(__m256i v, int shift) {
    return _mm256_and_si256(_mm256_srl_epi16(v, _mm_cvtsi32_si128(shift)), _mm256_set1_epi8(3));
}

inline __m256i low_nibbles256(__m256i v) { return _mm256_and_si256(v, _mm256_set1_epi8(0x0F)); }
inline __m256i high_nibbles256(__m256i v) {
    return _mm256_and_si256(_mm256_srli_epi16(v, 4), _mm256_set1_epi8(0x0F));
}

inline __m256i load256(const uint8_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
inline __m128i load128(const uint8_t* p) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)); }

// ------------------------------------------------------------------------------------------------
// Dequantize
// ------------------------------------------------------------------------------------------------

void dequant_f32(const void* src, float* dst, int64_t n) {
    const float* x = static_cast<const float*>(src);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, _mm256_loadu_ps(x + i));
    std::memcpy(dst + i, x + i, static_cast<size_t>(n - i) * sizeof(float));
}

void dequant_f16(const void* src, float* dst, int64_t n) {
    const uint8_t* p = static_cast<const uint8_t*>(src);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(load128(p + 2 * i)));
    for (; i < n; ++i) dst[i] = fp16_to_fp32(load_u16(p + 2 * i));
}

void dequant_bf16(const void* src, float* dst, int64_t n) {
    const uint8_t* p = static_cast<const uint8_t*>(src);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256i w = _mm256_cvtepu16_epi32(load128(p + 2 * i));
        _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(_mm256_slli_epi32(w, 16)));
    }
    for (; i < n; ++i) dst[i] = bf16_to_fp32(load_u16(p + 2 * i));
}

void dequant_q4_0(const void* src, float* dst, int64_t n) {
    const uint8_t* b = static_cast<const uint8_t*>(src);
    const __m128i eight = _mm_set1_epi8(8);
    for (int64_t i = 0; i < n / kQK; ++i, b += q4_0::kBytes, dst += kQK) {
        const __m256 d = _mm256_set1_ps(f16_at(b + q4_0::kD));
        const __m128i qs = load128(b + q4_0::kQs);
        store_mul16(_mm_sub_epi8(low_nibbles(qs), eight), d, dst);
        store_mul16(_mm_sub_epi8(high_nibbles(qs), eight), d, dst + 16);
    }
}

void dequant_q4_1(const void* src, float* dst, int64_t n) {
    const uint8_t* b = static_cast<const uint8_t*>(src);
    for (int64_t i = 0; i < n / kQK; ++i, b += q4_1::kBytes, dst += kQK) {
        const __m256 d = _mm256_set1_ps(f16_at(b + q4_1::kD));
        const __m256 m = _mm256_set1_ps(f16_at(b + q4_1::kM));
        const __m128i qs = load128(b + q4_1::kQs);
        store_mul_add16(low_nibbles(qs), d, m, dst);
        store_mul_add16(high_nibbles(qs), d, m, dst + 16);
    }
}

void dequant_q5_0(const void* src, float* dst, int64_t n) {
    const uint8_t* b = static_cast<const uint8_t*>(src);
    const __m128i sixteen = _mm_set1_epi8(16);
    for (int64_t i = 0; i < n / kQK; ++i, b += q5_0::kBytes, dst += kQK) {
        const __m256 d = _mm256_set1_ps(f16_at(b + q5_0::kD));
        const uint32_t qh = load_u32(b + q5_0::kQh);
        const __m128i qs = load128(b + q5_0::kQs);
        const __m128i lo = _mm_or_si128(low_nibbles(qs), bits_to_0x10(qh & 0xFFFF));
        const __m128i hi = _mm_or_si128(high_nibbles(qs), bits_to_0x10(qh >> 16));
        store_mul16(_mm_sub_epi8(lo, sixteen), d, dst);
        store_mul16(_mm_sub_epi8(hi, sixteen), d, dst + 16);
    }
}

void dequant_q5_1(const void* src, float* dst, int64_t n) {
    const uint8_t* b = static_cast<const uint8_t*>(src);
    for (int64_t i = 0; i < n / kQK; ++i, b += q5_1::kBytes, dst += kQK) {
        const __m256 d = _mm256_set1_ps(f16_at(b + q5_1::kD));
        const __m256 m = _mm256_set1_ps(f16_at(b + q5_1::kM));
        const uint32_t qh = load_u32(b + q5_1::kQh);
        const __m128i qs = load128(b + q5_1::kQs);
        store_mul_add16(_mm_or_si128(low_nibbles(qs), bits_to_0x10(qh & 0xFFFF)), d, m, dst);
        store_mul_add16(_mm_or_si128(high_nibbles(qs), bits_to_0x10(qh >> 16)), d, m, dst + 16);
    }
}

template <int kBytes, int kQsOffset>
void dequant_q8_legacy(const void* src, float* dst, int64_t n) {
    const uint8_t* b = static_cast<const uint8_t*>(src);
    for (int64_t i = 0; i < n / kQK; ++i, b += kBytes, dst += kQK) {
        const __m256 d = _mm256_set1_ps(f16_at(b));
        store_mul16(load128(b + kQsOffset), d, dst);
        store_mul16(load128(b + kQsOffset + 16), d, dst + 16);
    }
}

void dequant_q2_k(const void* src, float* dst, int64_t n) {
    const uint8_t* b = static_cast<const uint8_t*>(src);
    for (int64_t i = 0; i < n / kQKK; ++i, b += q2_k::kBytes) {
        const float d = f16_at(b + q2_k::kD);
        const float dmin = f16_at(b + q2_k::kDmin);
        const uint8_t* scales = b + q2_k::kScales;
        for (int half = 0; half < 2; ++half) {
            const __m256i q = load256(b + q2_k::kQs + 32 * half);  // byte l: bits 2j..2j+1 for pass j
            for (int j = 0; j < 4; ++j, dst += 32) {
                const __m256i v = two_bits(q, 2 * j);
                const uint8_t sc0 = scales[8 * half + 2 * j], sc1 = scales[8 * half + 2 * j + 1];
                store_mul_sub16(lo128(v), _mm256_set1_ps(d * static_cast<float>(sc0 & 0xF)),
                                _mm256_set1_ps(dmin * static_cast<float>(sc0 >> 4)), dst);
                store_mul_sub16(hi128(v), _mm256_set1_ps(d * static_cast<float>(sc1 & 0xF)),
                                _mm256_set1_ps(dmin * static_cast<float>(sc1 >> 4)), dst + 16);
            }
        }
    }
}

void dequant_q3_k(const void* src, float* dst, int64_t n) {
    const uint8_t* b = static_cast<const uint8_t*>(src);
    const __m256i zero = _mm256_setzero_si256();
    const __m256i four = _mm256_set1_epi8(4);
    for (int64_t i = 0; i < n / kQKK; ++i, b += q3_k::kBytes) {
        const float d = f16_at(b + q3_k::kD);
        const __m256i hmask = load256(b + q3_k::kHmask);
        int sc[16];
        unpack_scales_q3_k(b + q3_k::kScales, sc);
        for (int half = 0; half < 2; ++half) {
            const __m256i q = load256(b + q3_k::kQs + 32 * half);
            for (int j = 0; j < 4; ++j, dst += 32) {
                // 4 where the hmask bit (4*half + j) is clear, else 0.
                const __m256i bit = _mm256_set1_epi8(static_cast<char>(1u << (4 * half + j)));
                const __m256i clear = _mm256_cmpeq_epi8(_mm256_and_si256(hmask, bit), zero);
                const __m256i v = _mm256_sub_epi8(two_bits(q, 2 * j), _mm256_and_si256(clear, four));
                const int s = 8 * half + 2 * j;
                store_mul16(lo128(v), _mm256_set1_ps(d * static_cast<float>(sc[s] - 32)), dst);
                store_mul16(hi128(v), _mm256_set1_ps(d * static_cast<float>(sc[s + 1] - 32)), dst + 16);
            }
        }
    }
}

// 32 codes of one sub-block: y = (d*sc) * q - (dmin*m), as the scalar Q4_K / Q5_K reference.
inline void store_k4_sub_block(__m256i q, const uint8_t* scales, int sub, float d, float dmin, float* y) {
    int sc, m;
    unpack_scale_min_k4(scales, sub, &sc, &m);
    const __m256 d1 = _mm256_set1_ps(d * static_cast<float>(sc));
    const __m256 m1 = _mm256_set1_ps(dmin * static_cast<float>(m));
    store_mul_sub16(lo128(q), d1, m1, y);
    store_mul_sub16(hi128(q), d1, m1, y + 16);
}

void dequant_q4_k(const void* src, float* dst, int64_t n) {
    const uint8_t* b = static_cast<const uint8_t*>(src);
    for (int64_t i = 0; i < n / kQKK; ++i, b += q4_k::kBytes) {
        const float d = f16_at(b + q4_k::kD);
        const float dmin = f16_at(b + q4_k::kDmin);
        for (int c = 0; c < 4; ++c, dst += 64) {
            const __m256i q = load256(b + q4_k::kQs + 32 * c);
            store_k4_sub_block(low_nibbles256(q), b + q4_k::kScales, 2 * c, d, dmin, dst);
            store_k4_sub_block(high_nibbles256(q), b + q4_k::kScales, 2 * c + 1, d, dmin, dst + 32);
        }
    }
}

void dequant_q5_k(const void* src, float* dst, int64_t n) {
    const uint8_t* b = static_cast<const uint8_t*>(src);
    for (int64_t i = 0; i < n / kQKK; ++i, b += q5_k::kBytes) {
        const float d = f16_at(b + q5_k::kD);
        const float dmin = f16_at(b + q5_k::kDmin);
        const __m256i qh = load256(b + q5_k::kQh);
        for (int c = 0; c < 4; ++c, dst += 64) {
            const __m256i q = load256(b + q5_k::kQs + 32 * c);
            const __m256i lo = _mm256_or_si256(low_nibbles256(q), bit_to_16(qh, 2 * c));
            const __m256i hi = _mm256_or_si256(high_nibbles256(q), bit_to_16(qh, 2 * c + 1));
            store_k4_sub_block(lo, b + q5_k::kScales, 2 * c, d, dmin, dst);
            store_k4_sub_block(hi, b + q5_k::kScales, 2 * c + 1, d, dmin, dst + 32);
        }
    }
}

void dequant_q6_k(const void* src, float* dst, int64_t n) {
    const uint8_t* b = static_cast<const uint8_t*>(src);
    const __m256i bias = _mm256_set1_epi8(32);
    for (int64_t i = 0; i < n / kQKK; ++i, b += q6_k::kBytes) {
        const float d = f16_at(b + q6_k::kD);
        const int8_t* scales = reinterpret_cast<const int8_t*>(b + q6_k::kScales);
        for (int half = 0; half < 2; ++half, dst += 128) {
            const __m256i ql0 = load256(b + q6_k::kQl + 64 * half);       // ql[l],      l = 0..31
            const __m256i ql1 = load256(b + q6_k::kQl + 64 * half + 32);  // ql[l + 32]
            const __m256i qh = load256(b + q6_k::kQh + 32 * half);
            // Element groups l, l+32, l+64, l+96 (see the scalar reference).
            const __m256i q[4] = {
                _mm256_or_si256(low_nibbles256(ql0), _mm256_slli_epi16(two_bits(qh, 0), 4)),
                _mm256_or_si256(low_nibbles256(ql1), _mm256_slli_epi16(two_bits(qh, 2), 4)),
                _mm256_or_si256(high_nibbles256(ql0), _mm256_slli_epi16(two_bits(qh, 4), 4)),
                _mm256_or_si256(high_nibbles256(ql1), _mm256_slli_epi16(two_bits(qh, 6), 4)),
            };
            for (int g = 0; g < 4; ++g) {
                const __m256i v = _mm256_sub_epi8(q[g], bias);
                const int s = 8 * half + 2 * g;  // sub-block of elements 32g .. 32g+15 of this half
                store_mul16(lo128(v), _mm256_set1_ps(d * static_cast<float>(scales[s])), dst + 32 * g);
                store_mul16(hi128(v), _mm256_set1_ps(d * static_cast<float>(scales[s + 1])), dst + 32 * g + 16);
            }
        }
    }
}

void dequant_q8_k(const void* src, float* dst, int64_t n) {
    const uint8_t* b = static_cast<const uint8_t*>(src);
    for (int64_t i = 0; i < n / kQKK; ++i, b += q8_k::kBytes, dst += kQKK) {
        const __m256 d = _mm256_set1_ps(load_f32(b + q8_k::kD));
        for (int j = 0; j < kQKK; j += 16) store_mul16(load128(b + q8_k::kQs + j), d, dst + j);
    }
}

void dequant_mxfp4(const void* src, float* dst, int64_t n) {
    const uint8_t* b = static_cast<const uint8_t*>(src);
    const __m128i values = _mm_loadu_si128(reinterpret_cast<const __m128i*>(kMxfp4Values));
    for (int64_t i = 0; i < n / kQK; ++i, b += mxfp4::kBytes, dst += kQK) {
        const __m256 s = _mm256_set1_ps(e8m0_to_fp32_half(b[mxfp4::kE]));
        const __m128i qs = load128(b + mxfp4::kQs);
        store_mul16(_mm_shuffle_epi8(values, low_nibbles(qs)), s, dst);
        store_mul16(_mm_shuffle_epi8(values, high_nibbles(qs)), s, dst + 16);
    }
}

// ------------------------------------------------------------------------------------------------
// Quantize
// ------------------------------------------------------------------------------------------------

inline float hmax8(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

inline int hsum8_epi32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 1));
    return _mm_cvtsi128_si32(s);
}

inline __m256 abs_ps(__m256 v) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v); }

// Four vectors of 8 int32 (elements 0-7, 8-15, 16-23, 24-31) -> 32 int8 in element order.
inline void store_i32x32_as_i8(__m256i a, __m256i b, __m256i c, __m256i d, uint8_t* out) {
    // packs works per 128-bit lane; the dword permutation puts the 4-byte groups back in order.
    const __m256i ab = _mm256_packs_epi32(a, b);
    const __m256i cd = _mm256_packs_epi32(c, d);
    const __m256i abcd = _mm256_packs_epi16(ab, cd);
    const __m256i ordered = _mm256_permutevar8x32_epi32(abcd, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), ordered);
}

void quant_f16(const float* src, void* dst, int64_t n) {
    uint8_t* p = static_cast<uint8_t*>(dst);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(p + 2 * i), h);
    }
    for (; i < n; ++i) store_u16(p + 2 * i, fp32_to_fp16(src[i]));
}

// 8 floats -> 8 bf16 (in the low 16 bits of each int32 lane), ggml semantics as fp32_to_bf16.
inline __m256i bf16x8(__m256 v) {
    const __m256i x = _mm256_castps_si256(v);
    const __m256i ax = _mm256_and_si256(x, _mm256_set1_epi32(0x7fffffff));
    const __m256i is_nan = _mm256_cmpgt_epi32(ax, _mm256_set1_epi32(0x7f800000));
    const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(x, 16), _mm256_set1_epi32(1));
    const __m256i rounded =
        _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(x, _mm256_set1_epi32(0x7fff)), lsb), 16);
    const __m256i quiet = _mm256_or_si256(_mm256_srli_epi32(x, 16), _mm256_set1_epi32(0x40));
    return _mm256_blendv_epi8(rounded, quiet, is_nan);
}

void quant_bf16(const float* src, void* dst, int64_t n) {
    uint8_t* p = static_cast<uint8_t*>(dst);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        // Values are <= 0xffff, so the unsigned-saturating pack is exact; it interleaves lanes.
        const __m256i packed = _mm256_packus_epi32(bf16x8(_mm256_loadu_ps(src + i)), bf16x8(_mm256_loadu_ps(src + i + 8)));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(p + 2 * i), _mm256_permute4x64_epi64(packed, 0xD8));
    }
    for (; i < n; ++i) store_u16(p + 2 * i, fp32_to_bf16(src[i]));
}

// roundf semantics (half away from zero) on 8 lanes: truncate, then step one away from zero when
// the dropped fraction (exact for |v| < 2^23) is at least 0.5.
inline __m256i round_half_away(__m256 v) {
    const __m256 t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    const __m256 frac = abs_ps(_mm256_sub_ps(v, t));
    const __m256 step = _mm256_or_ps(_mm256_and_ps(v, _mm256_set1_ps(-0.0f)), _mm256_set1_ps(1.0f));
    const __m256 up = _mm256_and_ps(_mm256_cmp_ps(frac, _mm256_set1_ps(0.5f), _CMP_GE_OQ), step);
    return _mm256_cvttps_epi32(_mm256_add_ps(t, up));
}

void quant_q8_0(const float* src, void* dst, int64_t n) {
    uint8_t* b = static_cast<uint8_t*>(dst);
    for (int64_t i = 0; i < n / kQK; ++i, b += q8_0::kBytes, src += kQK) {
        __m256 x[4];
        __m256 amax = _mm256_setzero_ps();
        for (int k = 0; k < 4; ++k) {
            x[k] = _mm256_loadu_ps(src + 8 * k);
            amax = _mm256_max_ps(amax, abs_ps(x[k]));
        }
        // Scale exactly as the reference: d from amax, id = 1/d with the unrounded d.
        const float d = hmax8(amax) / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        store_u16(b + q8_0::kD, fp32_to_fp16(d));
        const __m256 vid = _mm256_set1_ps(id);
        store_i32x32_as_i8(round_half_away(_mm256_mul_ps(x[0], vid)), round_half_away(_mm256_mul_ps(x[1], vid)),
                           round_half_away(_mm256_mul_ps(x[2], vid)), round_half_away(_mm256_mul_ps(x[3], vid)),
                           b + q8_0::kQs);
    }
}

void quant_q8_k(const float* src, void* dst, int64_t n) {
    uint8_t* b = static_cast<uint8_t*>(dst);
    for (int64_t i = 0; i < n / kQKK; ++i, b += q8_k::kBytes, src += kQKK) {
        __m256 vmax = _mm256_setzero_ps();
        for (int j = 0; j < kQKK; j += 8) vmax = _mm256_max_ps(vmax, abs_ps(_mm256_loadu_ps(src + j)));
        const float amax = hmax8(vmax);
        if (amax == 0.0f) {
            std::memset(b, 0, q8_k::kBytes);
            continue;
        }
        // The reference keeps the sign of the first element with the largest magnitude.
        const __m256 vamax = _mm256_set1_ps(amax);
        float max = 0.0f;
        for (int j = 0; j < kQKK; j += 8) {
            const int hit = _mm256_movemask_ps(_mm256_cmp_ps(abs_ps(_mm256_loadu_ps(src + j)), vamax, _CMP_EQ_OQ));
            if (hit) {
                int lane = 0;
                while (!((hit >> lane) & 1)) ++lane;
                max = src[j + lane];
                break;
            }
        }
        const float iscale = -127.0f / max;
        const __m256 vscale = _mm256_set1_ps(iscale);
        const __m256i cap = _mm256_set1_epi32(127);
        for (int g = 0; g < kQKK; g += 32) {
            __m256i q[4];
            for (int k = 0; k < 4; ++k) {
                // cvtps rounds half to even under the default MXCSR mode, like the reference's nearest_int.
                q[k] = _mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(src + g + 8 * k), vscale)), cap);
            }
            store_i32x32_as_i8(q[0], q[1], q[2], q[3], b + q8_k::kQs + g);
            store_u16(b + q8_k::kBsums + 2 * (g / 16), static_cast<uint16_t>(hsum8_epi32(_mm256_add_epi32(q[0], q[1]))));
            store_u16(b + q8_k::kBsums + 2 * (g / 16 + 1), static_cast<uint16_t>(hsum8_epi32(_mm256_add_epi32(q[2], q[3]))));
        }
        store_f32(b + q8_k::kD, 1.0f / iscale);
    }
}

}  // namespace

void fill_avx2_kernels(QuantKernels& k) {
    auto deq = [&k](GgmlType t, DequantizeRowFn fn) { k.dequantize[static_cast<uint32_t>(t)] = fn; };
    auto qnt = [&k](GgmlType t, QuantizeRowFn fn) { k.quantize[static_cast<uint32_t>(t)] = fn; };
    deq(GgmlType::F32, dequant_f32);
    deq(GgmlType::F16, dequant_f16);
    deq(GgmlType::BF16, dequant_bf16);
    deq(GgmlType::Q4_0, dequant_q4_0);
    deq(GgmlType::Q4_1, dequant_q4_1);
    deq(GgmlType::Q5_0, dequant_q5_0);
    deq(GgmlType::Q5_1, dequant_q5_1);
    deq(GgmlType::Q8_0, dequant_q8_legacy<q8_0::kBytes, q8_0::kQs>);
    deq(GgmlType::Q8_1, dequant_q8_legacy<q8_1::kBytes, q8_1::kQs>);
    deq(GgmlType::Q2_K, dequant_q2_k);
    deq(GgmlType::Q3_K, dequant_q3_k);
    deq(GgmlType::Q4_K, dequant_q4_k);
    deq(GgmlType::Q5_K, dequant_q5_k);
    deq(GgmlType::Q6_K, dequant_q6_k);
    deq(GgmlType::Q8_K, dequant_q8_k);
    deq(GgmlType::MXFP4, dequant_mxfp4);
    qnt(GgmlType::F16, quant_f16);
    qnt(GgmlType::BF16, quant_bf16);
    qnt(GgmlType::Q8_0, quant_q8_0);
    qnt(GgmlType::Q8_K, quant_q8_k);
}

}  // namespace moe::quant

#else  // not x86-64: nothing to add

namespace moe::quant {
void fill_avx2_kernels(QuantKernels&) {}
}  // namespace moe::quant

#endif
