// AVX2 + FMA + F16C dot products (compiled with -mavx2 -mfma -mf16c, only entered after
// cpu::require_isa(Avx2)): F32, F16, BF16, every legacy 32-element format and every K-quant.
//
// Integer parts are computed exactly as in vec_dot_ref.cc with byte multiplies
// (_mm256_maddubs_epi16: unsigned x signed byte pairs -> i16) widened by _mm256_madd_epi16
// (i16 pairs -> i32, optionally weighted by the integer sub-block scales). Signed weight bytes use
// the sign trick |w| * (a with w's sign). No i16 intermediate can saturate: the unsigned operand is
// a weight code (<= 63) or |w| <= 128, and the signed one an activation code in [-127, 127] (see
// vec_dot.h), so a pair is at most 2 * 128 * 127 = 32512. The i32 lane sums of one block (or
// super-block) are converted to float and accumulated with FMA into 8 float lanes, as ggml's AVX2
// kernels do; only that float order differs from the scalar reference.
//
// Tricks (same integers, fewer instructions):
//   Q4_0 / MXFP4: two blocks per vector (one per 128-bit half); low- and high-nibble products added
//     as i16 before widening (|v| <= 12 keeps them small); eight blocks' scale factors formed at once.
//   Q6_K: sum_k sc_k sum_j (q - 32) a = sum_k sc_k sum_j q a - 32 sum_k sc_k bsum_k
//   Q3_K: sum_k sc_k sum_j (q3 - 4 + 4h) a = sum_k sc_k sum_j (q3 + 4h) a - 4 sum_k sc_k bsum_k
//
// Everything has internal linkage (see quant_avx2.cc for why).
#include "vec_dot.h"

#if defined(__x86_64__) || defined(_M_X64)

#if (defined(__GNUC__) || defined(__clang__)) && !(defined(__AVX2__) && defined(__FMA__) && defined(__F16C__))
#error "vec_dot_avx2.cc must be compiled with -mavx2 -mfma -mf16c"
#endif

#include <cmath>
#include <immintrin.h>

#include "block_layout.h"

namespace moe::quant {

namespace {

// ------------------------------------------------------------------------------------------------
// Helpers
// ------------------------------------------------------------------------------------------------

const uint8_t* bytes(const void* p) { return static_cast<const uint8_t*>(p); }

inline __m256i load256(const uint8_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
inline __m128i load128(const uint8_t* p) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)); }
inline float f16_at(const uint8_t* p) { return _cvtsh_ss(load_u16(p)); }

inline __m256i splat8(int v) { return _mm256_set1_epi8(static_cast<char>(v)); }

inline float hsum128(__m128 s) {
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

inline float hsum256(__m256 v) { return hsum128(_mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1))); }

// 8 i32 lanes, each the sum of 4 adjacent products u[k] * s[k] of unsigned bytes u and signed
// bytes s (u[k] * s[k] pairs must not exceed the i16 range; see the file comment).
inline __m256i dot_u8_i8(__m256i u, __m256i s) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}

// The same for two signed byte vectors: |x| * (y with x's sign). y must not contain -128.
inline __m256i dot_i8_i8(__m256i x, __m256i y) { return dot_u8_i8(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x)); }

// 16 packed bytes -> 32 bytes: 0..15 the low nibbles, 16..31 the high nibbles (legacy element order).
inline __m256i unpack_nibbles32(const uint8_t* qs) {
    const __m128i v = load128(qs);
    return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(v, 4), v), splat8(0x0F));
}

// Byte j (0..31) = 0xFF if bit j of `bits` is set, else 0.
inline __m256i bits_to_bytes32(uint32_t bits) {
    // Byte j takes byte j/8 of the word, then every bit but bit j%8 is forced on.
    const __m256i spread = _mm256_shuffle_epi8(_mm256_set1_epi32(static_cast<int>(bits)),
                                               _mm256_setr_epi64x(0x0000000000000000LL, 0x0101010101010101LL,
                                                                  0x0202020202020202LL, 0x0303030303030303LL));
    const __m256i others = _mm256_set1_epi64x(0x7FBFDFEFF7FBFDFELL);
    return _mm256_cmpeq_epi8(_mm256_or_si256(spread, others), _mm256_set1_epi64x(-1));
}

// 16 scales (bytes of `scales`) -> 16 i16 lanes: 0..7 = scales[k], 8..15 = scales[k + 1], for the
// two 16-element halves of a 32-byte code vector. `scales` holds signed bytes.
inline __m256i scale_pair_i16(__m128i scales, int k) {
    const __m128i pick = _mm_set_epi64x(0x0101010101010101LL * (k + 1), 0x0101010101010101LL * k);
    return _mm256_cvtepi8_epi16(_mm_shuffle_epi8(scales, pick));
}

// ------------------------------------------------------------------------------------------------
// Float rows
// ------------------------------------------------------------------------------------------------

// Four independent FMA chains over 32 elements per step, then 8 at a time, then scalar products.
template <typename Load8, typename Scalar>
inline float dot_float_rows(int64_t n, Load8 load8, Scalar scalar) {
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    __m256 acc2 = _mm256_setzero_ps(), acc3 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m256 w, a;
        load8(i, w, a);
        acc0 = _mm256_fmadd_ps(w, a, acc0);
        load8(i + 8, w, a);
        acc1 = _mm256_fmadd_ps(w, a, acc1);
        load8(i + 16, w, a);
        acc2 = _mm256_fmadd_ps(w, a, acc2);
        load8(i + 24, w, a);
        acc3 = _mm256_fmadd_ps(w, a, acc3);
    }
    for (; i + 8 <= n; i += 8) {
        __m256 w, a;
        load8(i, w, a);
        acc0 = _mm256_fmadd_ps(w, a, acc0);
    }
    float sum = hsum256(_mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3)));
    for (; i < n; ++i) sum += scalar(i);
    return sum;
}

float dot_f32(int64_t n, const void* wv, const void* av) {
    const uint8_t* w = bytes(wv);
    const uint8_t* a = bytes(av);
    return dot_float_rows(
        n,
        [&](int64_t i, __m256& x, __m256& y) {
            x = _mm256_loadu_ps(reinterpret_cast<const float*>(w + 4 * i));
            y = _mm256_loadu_ps(reinterpret_cast<const float*>(a + 4 * i));
        },
        [&](int64_t i) { return load_f32(w + 4 * i) * load_f32(a + 4 * i); });
}

float dot_f16(int64_t n, const void* wv, const void* av) {
    const uint8_t* w = bytes(wv);
    const uint8_t* a = bytes(av);
    return dot_float_rows(
        n,
        [&](int64_t i, __m256& x, __m256& y) {
            x = _mm256_cvtph_ps(load128(w + 2 * i));
            y = _mm256_cvtph_ps(load128(a + 2 * i));
        },
        [&](int64_t i) { return f16_at(w + 2 * i) * f16_at(a + 2 * i); });
}

inline __m256 bf16x8_to_ps(const uint8_t* p) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(load128(p)), 16));
}

float dot_bf16(int64_t n, const void* wv, const void* av) {
    const uint8_t* w = bytes(wv);
    const uint8_t* a = bytes(av);
    return dot_float_rows(
        n,
        [&](int64_t i, __m256& x, __m256& y) {
            x = bf16x8_to_ps(w + 2 * i);
            y = bf16x8_to_ps(a + 2 * i);
        },
        [&](int64_t i) { return bf16_to_fp32(load_u16(w + 2 * i)) * bf16_to_fp32(load_u16(a + 2 * i)); });
}

// ------------------------------------------------------------------------------------------------
// Legacy 32-element blocks
// ------------------------------------------------------------------------------------------------

// Runs block(x, y, acc) over the n/32 blocks into one accumulator, as ggml's AVX2 Q4_0 / Q5_0 /
// Q8_0 dots do (their float order: one FMA per block into the same eight lanes, then hsum).
template <int kWBytes, int kABytes, typename Block>
inline float legacy_dot(int64_t n, const void* wv, const void* av, Block block) {
    const uint8_t* x = bytes(wv);
    const uint8_t* y = bytes(av);
    const int64_t nb = n / kQK;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < nb; ++i, x += kWBytes, y += kABytes) acc = block(x, y, acc);
    return hsum256(acc);
}

// Eight f16 values at p, p + stride, ..., p + 7 * stride as floats.
inline __m256 f16x8_strided(const uint8_t* p, int stride) {
    return _mm256_cvtph_ps(_mm_setr_epi16(
        static_cast<short>(load_u16(p)), static_cast<short>(load_u16(p + stride)),
        static_cast<short>(load_u16(p + 2 * stride)), static_cast<short>(load_u16(p + 3 * stride)),
        static_cast<short>(load_u16(p + 4 * stride)), static_cast<short>(load_u16(p + 5 * stride)),
        static_cast<short>(load_u16(p + 6 * stride)), static_cast<short>(load_u16(p + 7 * stride))));
}

// 2^(e-128) (e8m0_to_fp32_half) of the eight E8M0 bytes at p, p + stride, ...: (e-1) << 23 as fp32
// bits, or the subnormals 0x00200000 << e for e < 2.
inline __m256 e8m0_half_x8(const uint8_t* p, int stride) {
    const __m256i e = _mm256_setr_epi32(p[0], p[stride], p[2 * stride], p[3 * stride], p[4 * stride], p[5 * stride],
                                        p[6 * stride], p[7 * stride]);
    const __m256i normal = _mm256_slli_epi32(_mm256_sub_epi32(e, _mm256_set1_epi32(1)), 23);
    const __m256i tiny = _mm256_sllv_epi32(_mm256_set1_epi32(0x00200000), e);
    return _mm256_castsi256_ps(_mm256_blendv_epi8(normal, tiny, _mm256_cmpgt_epi32(_mm256_set1_epi32(2), e)));
}

// The 32 signed 4-bit values of a Q4_0 / MXFP4 block in element order: low nibbles (elements
// 0..15) in bytes 0..15, high nibbles (16..31) in bytes 16..31.
template <typename Values>
inline __m256i nibble_values32(const uint8_t* qs, Values values) {
    const __m128i q = load128(qs);
    return values(_mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), splat8(0x0F)));
}

float dot_q4_0(int64_t n, const void* w, const void* a) {
    return legacy_dot<q4_0::kBytes, q8_0::kBytes>(n, w, a, [](const uint8_t* x, const uint8_t* y, __m256 acc) {
        const __m256 d = _mm256_set1_ps(f16_at(x + q4_0::kD) * f16_at(y + q8_0::kD));
        const __m256i q = nibble_values32(x + q4_0::kQs, [](__m256i v) { return _mm256_sub_epi8(v, splat8(8)); });
        return _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(dot_i8_i8(q, load256(y + q8_0::kQs))), acc);
    });
}

// ggml's AVX2 MXFP4 dot: block pairs alternate between two accumulators, an odd last block is
// added as a scalar (its integer sum times the scale, contracted to an FMA).
float dot_mxfp4(int64_t n, const void* w, const void* a) {
    const __m256i table = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kMxfp4Values)));
    const auto values = [table](__m256i v) { return _mm256_shuffle_epi8(table, v); };
    const uint8_t* x = bytes(w);
    const uint8_t* y = bytes(a);
    const int64_t nb = n / kQK;
    const auto scale = [](const uint8_t* xb, const uint8_t* yb) { return f16_at(yb + q8_0::kD) * e8m0_to_fp32_half(xb[mxfp4::kE]); };
    const auto block = [&](const uint8_t* xb, const uint8_t* yb) {
        return _mm256_cvtepi32_ps(dot_i8_i8(nibble_values32(xb + mxfp4::kQs, values), load256(yb + q8_0::kQs)));
    };
    __m256 acc1 = _mm256_setzero_ps(), acc2 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 1 < nb; i += 2, x += 2 * mxfp4::kBytes, y += 2 * q8_0::kBytes) {
        acc1 = _mm256_fmadd_ps(_mm256_set1_ps(scale(x, y)), block(x, y), acc1);
        acc2 = _mm256_fmadd_ps(_mm256_set1_ps(scale(x + mxfp4::kBytes, y + q8_0::kBytes)),
                               block(x + mxfp4::kBytes, y + q8_0::kBytes), acc2);
    }
    float sum = hsum256(_mm256_add_ps(acc1, acc2));
    if (i < nb) {
        const __m256i p = dot_i8_i8(nibble_values32(x + mxfp4::kQs, values), load256(y + q8_0::kQs));
        __m128i t = _mm_add_epi32(_mm256_castsi256_si128(p), _mm256_extracti128_si256(p, 1));
        t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0x4E));
        t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0xB1));
        sum = std::fma(scale(x, y), static_cast<float>(_mm_cvtsi128_si32(t)), sum);
    }
    return sum;
}

float dot_q5_0(int64_t n, const void* w, const void* a) {
    return legacy_dot<q5_0::kBytes, q8_0::kBytes>(n, w, a, [](const uint8_t* x, const uint8_t* y, __m256 acc) {
        const __m256 d = _mm256_set1_ps(f16_at(x + q5_0::kD) * f16_at(y + q8_0::kD));
        // code - 16 as a signed byte: the nibble, with 0xF0 or-ed in where the 5th bit is clear.
        const __m256i high = _mm256_andnot_si256(bits_to_bytes32(load_u32(x + q5_0::kQh)), splat8(0xF0));
        const __m256i q = _mm256_or_si256(unpack_nibbles32(x + q5_0::kQs), high);
        return _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(dot_i8_i8(q, load256(y + q8_0::kQs))), acc);
    });
}

float dot_q8_0(int64_t n, const void* w, const void* a) {
    return legacy_dot<q8_0::kBytes, q8_0::kBytes>(n, w, a, [](const uint8_t* x, const uint8_t* y, __m256 acc) {
        const __m256 d = _mm256_set1_ps(f16_at(x + q8_0::kD) * f16_at(y + q8_0::kD));
        return _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(dot_i8_i8(load256(x + q8_0::kQs), load256(y + q8_0::kQs))), acc);
    });
}

// ------------------------------------------------------------------------------------------------
// llama.cpp's batched orders (VecDotKernels::tinyblas / repack): same integer block sums, other
// float accumulation.
// ------------------------------------------------------------------------------------------------

// tinyBLAS_Q0_AVX: one 8-lane accumulator; each block's 4-byte partial sums (the i32 lanes of
// dot_i8_i8, the same integers tinyBLAS's updot forms with VNNI or maddubs) are multiplied by the
// block's scale product and added with one FMA; hsum256 is tinyBLAS's hsum tree. The tile shape
// tinyBLAS picks (4xN, Mx4, RMxRN) changes which outputs share loads, never an output's order.
template <int kWBytes, typename Codes, typename Scale>
inline float tinyblas_q0(int64_t n, const void* wv, const void* av, Codes codes, Scale scale) {
    const uint8_t* x = bytes(wv);
    const uint8_t* y = bytes(av);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / kQK; ++i, x += kWBytes, y += q8_0::kBytes) {
        const __m256 p = _mm256_cvtepi32_ps(dot_i8_i8(codes(x), load256(y + q8_0::kQs)));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(scale(x, y)), p, acc);
    }
    return hsum256(acc);
}

// Repacked x8 kernels: each output is one float lane; per block, the block's whole integer sum
// (exact) as float times the scale product, fused-added to it.
template <int kWBytes, typename Codes, typename Scale>
inline float repack_q0(int64_t n, const void* wv, const void* av, Codes codes, Scale scale) {
    const uint8_t* x = bytes(wv);
    const uint8_t* y = bytes(av);
    __m128 acc = _mm_setzero_ps();
    for (int64_t i = 0; i < n / kQK; ++i, x += kWBytes, y += q8_0::kBytes) {
        const __m256i s8 = dot_i8_i8(codes(x), load256(y + q8_0::kQs));
        __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s8), _mm256_extracti128_si256(s8, 1));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4E));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xB1));
        acc = _mm_fmadd_ss(_mm_cvtepi32_ps(s4), _mm_set_ss(scale(x, y)), acc);
    }
    return _mm_cvtss_f32(acc);
}

inline __m256i q8_0_codes(const uint8_t* x) { return load256(x + q8_0::kQs); }
inline __m256i q4_0_codes(const uint8_t* x) { return _mm256_sub_epi8(unpack_nibbles32(x + q4_0::kQs), splat8(8)); }
inline float q8_0_scale(const uint8_t* x, const uint8_t* y) { return f16_at(x + q8_0::kD) * f16_at(y + q8_0::kD); }
inline float q4_0_scale(const uint8_t* x, const uint8_t* y) { return f16_at(x + q4_0::kD) * f16_at(y + q8_0::kD); }

float tinyblas_q8_0(int64_t n, const void* w, const void* a) {
    return tinyblas_q0<q8_0::kBytes>(n, w, a, q8_0_codes, q8_0_scale);
}
float tinyblas_q4_0(int64_t n, const void* w, const void* a) {
    return tinyblas_q0<q4_0::kBytes>(n, w, a, q4_0_codes, q4_0_scale);
}
// tinyBLAS_Q0_AVX also takes Q5_0: the same signed 5-bit codes as ggml_vec_dot_q5_0_q8_0.
inline __m256i q5_0_codes(const uint8_t* x) {
    const __m256i high = _mm256_andnot_si256(bits_to_bytes32(load_u32(x + q5_0::kQh)), splat8(0xF0));
    return _mm256_or_si256(unpack_nibbles32(x + q5_0::kQs), high);
}
inline float q5_0_scale(const uint8_t* x, const uint8_t* y) { return f16_at(x + q5_0::kD) * f16_at(y + q8_0::kD); }
float tinyblas_q5_0(int64_t n, const void* w, const void* a) {
    return tinyblas_q0<q5_0::kBytes>(n, w, a, q5_0_codes, q5_0_scale);
}
float repack_q4_0(int64_t n, const void* w, const void* a) {
    return repack_q0<q4_0::kBytes>(n, w, a, q4_0_codes, q4_0_scale);
}
float repack_mxfp4(int64_t n, const void* w, const void* a) {
    const __m256i table = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kMxfp4Values)));
    return repack_q0<mxfp4::kBytes>(
        n, w, a, [table](const uint8_t* x) { return _mm256_shuffle_epi8(table, unpack_nibbles32(x + mxfp4::kQs)); },
        [](const uint8_t* x, const uint8_t* y) { return f16_at(y + q8_0::kD) * e8m0_to_fp32_half(x[mxfp4::kE]); });
}

// Q4_1 / Q5_1 . Q8_1: unsigned codes, plus the block min times the activation's s = d * sum(qs).
template <bool kFiveBit>
float dot_q45_1(int64_t n, const void* wv, const void* av) {
    constexpr int kBytes = kFiveBit ? q5_1::kBytes : q4_1::kBytes;
    constexpr int kQs = kFiveBit ? q5_1::kQs : q4_1::kQs;
    static_assert(q4_1::kD == q5_1::kD && q4_1::kM == q5_1::kM, "");
    const uint8_t* x = bytes(wv);
    const uint8_t* y = bytes(av);
    __m256 acc = _mm256_setzero_ps();
    float mins = 0.0f;
    for (int64_t i = 0; i < n / kQK; ++i, x += kBytes, y += q8_1::kBytes) {
        __m256i q = unpack_nibbles32(x + kQs);
        if (kFiveBit) q = _mm256_or_si256(q, _mm256_and_si256(bits_to_bytes32(load_u32(x + q5_1::kQh)), splat8(0x10)));
        const __m256 d = _mm256_set1_ps(f16_at(x + q4_1::kD) * f16_at(y + q8_1::kD));
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(dot_u8_i8(q, load256(y + q8_1::kQs))), acc);
        mins += f16_at(x + q4_1::kM) * f16_at(y + q8_1::kS);
    }
    return hsum256(acc) + mins;
}

// ------------------------------------------------------------------------------------------------
// K-quants against Q8_K
// ------------------------------------------------------------------------------------------------

// Q4_K / Q5_K 12-byte scale block -> 16 bytes: sc0..7 then m0..7 (layout in block_layout.h), with
// dword lanes of the words w0, w1, w2 (the 16-byte load reads 4 bytes of codes after the scales):
//   [w0 & 0x3F.., (w2 & 0x0F..) | ((w0 >> 2) & 0x30..), w1 & 0x3F.., ((w2 >> 4) & 0x0F..) | ((w1 >> 2) & 0x30..)]
inline __m128i unpack_scale_min_k4_bytes(const uint8_t* s) {
    const __m128i v = load128(s);
    const __m128i a = _mm_shuffle_epi32(v, _MM_SHUFFLE(2, 1, 2, 0));  // w0 w2 w1 w2
    const __m128i b = _mm_shuffle_epi32(v, _MM_SHUFFLE(1, 1, 0, 0));  // w0 w0 w1 w1
    const __m128i low = _mm_and_si128(_mm_srlv_epi32(a, _mm_setr_epi32(0, 0, 0, 4)),
                                      _mm_setr_epi32(0x3F3F3F3F, 0x0F0F0F0F, 0x3F3F3F3F, 0x0F0F0F0F));
    const __m128i top = _mm_and_si128(_mm_srli_epi32(b, 2), _mm_setr_epi32(0, 0x30303030, 0, 0x30303030));
    return _mm_or_si128(low, top);
}

// Q3_K 12-byte scale block -> the 16 scales as signed bytes, bias 32 removed.
inline __m128i unpack_scales_q3_k_bytes(const uint8_t* b) {
    const uint32_t lo = load_u32(b), mid = load_u32(b + 4), hi = load_u32(b + 8);
    const uint32_t s0 = (lo & 0x0F0F0F0Fu) | ((hi << 4) & 0x30303030u);
    const uint32_t s1 = (mid & 0x0F0F0F0Fu) | ((hi << 2) & 0x30303030u);
    const uint32_t s2 = ((lo >> 4) & 0x0F0F0F0Fu) | (hi & 0x30303030u);
    const uint32_t s3 = ((mid >> 4) & 0x0F0F0F0Fu) | ((hi >> 2) & 0x30303030u);
    const __m128i biased = _mm_set_epi32(static_cast<int>(s3), static_cast<int>(s2), static_cast<int>(s1),
                                         static_cast<int>(s0));
    return _mm_sub_epi8(biased, _mm_set1_epi8(32));
}

// All 16 i16 lanes = i16 lane k of v (v holds the same 8 values in both 128-bit halves).
inline __m256i broadcast_i16(__m256i v, int k) { return _mm256_shuffle_epi8(v, _mm256_set1_epi16(static_cast<short>(((2 * k + 1) << 8) | (2 * k)))); }

template <bool kFiveBit>
float dot_q45_k(int64_t n, const void* wv, const void* av) {
    constexpr int kBytes = kFiveBit ? q5_k::kBytes : q4_k::kBytes;
    constexpr int kQs = kFiveBit ? q5_k::kQs : q4_k::kQs;
    const uint8_t* x = bytes(wv);
    const uint8_t* y = bytes(av);
    __m256 acc = _mm256_setzero_ps();
    __m128 acc_min = _mm_setzero_ps();
    float summs = 0.0f;
    const __m256i low4 = splat8(0x0F);
    for (int64_t i = 0; i < n / kQKK; ++i, x += kBytes, y += q8_k::kBytes) {
        const float da = load_f32(y + q8_k::kD);
        const float d = f16_at(x + q4_k::kD) * da;
        const float dmin = f16_at(x + q4_k::kDmin) * da;

        const __m256i sc_m = _mm256_cvtepu8_epi16(unpack_scale_min_k4_bytes(x + q4_k::kScales));
        // Mins: sub-block k covers bsums 2k and 2k+1.
        const __m128i bsum_pairs = _mm_hadd_epi16(load128(y + q8_k::kBsums), load128(y + q8_k::kBsums + 16));
        const __m128i min_prod = _mm_madd_epi16(_mm256_extracti128_si256(sc_m, 1), bsum_pairs);
        if (kFiveBit) {
            // ggml's Q5_K: the mins' integer sum (exact), then one scalar multiply-add per super-block
            // (GCC contracts `summs += dmin * sum` to an FMA in its FMA builds).
            __m128i t = _mm_add_epi32(min_prod, _mm_shuffle_epi32(min_prod, 0x4E));
            t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0xB1));
            summs = std::fma(-dmin, static_cast<float>(_mm_cvtsi128_si32(t)), summs);
        } else {
            // ggml's Q4_K: four float lanes of min products, reduced at the end.
            acc_min = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(min_prod), acc_min);
        }

        const __m256i scales = _mm256_broadcastsi128_si256(_mm256_castsi256_si128(sc_m));
        const uint8_t* qa = y + q8_k::kQs;
        __m256i high = kFiveBit ? load256(x + q5_k::kQh) : _mm256_setzero_si256();
        __m256i sumi = _mm256_setzero_si256();
        for (int c = 0; c < 4; ++c) {
            const __m256i q = load256(x + kQs + 32 * c);
            __m256i q_lo = _mm256_and_si256(q, low4);
            __m256i q_hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), low4);
            if (kFiveBit) {
                // Bit k of qh[l] is the 5th bit of sub-block k; shift one bit down per sub-block
                // (bits leaking in from the neighbouring byte land above bit 0 and are masked).
                const __m256i one = splat8(1);
                q_lo = _mm256_or_si256(q_lo, _mm256_slli_epi16(_mm256_and_si256(high, one), 4));
                high = _mm256_srli_epi16(high, 1);
                q_hi = _mm256_or_si256(q_hi, _mm256_slli_epi16(_mm256_and_si256(high, one), 4));
                high = _mm256_srli_epi16(high, 1);
            }
            const __m256i p_lo = _mm256_madd_epi16(broadcast_i16(scales, 2 * c),
                                                   _mm256_maddubs_epi16(q_lo, load256(qa + 64 * c)));
            const __m256i p_hi = _mm256_madd_epi16(broadcast_i16(scales, 2 * c + 1),
                                                   _mm256_maddubs_epi16(q_hi, load256(qa + 64 * c + 32)));
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p_lo, p_hi));
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    if (kFiveBit) return hsum256(acc) + summs;
    return hsum256(acc) - hsum128(acc_min);
}

// Repacked Q4_K (ggml_gemv_q4_K_8x8_q8_K / ggml_gemm_q4_K_8x8_q8_K): one float per output for the
// scaled sums and one for the mins, the outputs their difference. The integer sums (exact) are
// fused-multiply-added with d * da (mins: dmin * da) once per super-block by the gemv (kPerPair
// false), once per pair of 32-element sub-blocks (sb loop) by the gemm.
template <bool kPerPair>
float repack_q4_k(int64_t n, const void* wv, const void* av) {
    const uint8_t* x = bytes(wv);
    const uint8_t* y = bytes(av);
    __m128 acc = _mm_setzero_ps(), acc_min = _mm_setzero_ps();
    const __m256i low4 = splat8(0x0F);
    const auto hsum_i32x4 = [](__m128i v) {
        v = _mm_add_epi32(v, _mm_shuffle_epi32(v, 0x4E));
        return _mm_add_epi32(v, _mm_shuffle_epi32(v, 0xB1));
    };
    const auto hsum_i32x8 = [&](__m256i v) {
        return hsum_i32x4(_mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1)));
    };
    for (int64_t i = 0; i < n / kQKK; ++i, x += q4_k::kBytes, y += q8_k::kBytes) {
        const float da = load_f32(y + q8_k::kD);
        const __m128 d = _mm_set_ss(f16_at(x + q4_k::kD) * da);
        const __m128 dmin = _mm_set_ss(f16_at(x + q4_k::kDmin) * da);
        const __m256i sc_m = _mm256_cvtepu8_epi16(unpack_scale_min_k4_bytes(x + q4_k::kScales));
        // i32 lane c: m_2c * bsum(sub-block 2c) + m_2c+1 * bsum(sub-block 2c+1).
        const __m128i bsum_pairs = _mm_hadd_epi16(load128(y + q8_k::kBsums), load128(y + q8_k::kBsums + 16));
        const __m128i min_pairs = _mm_madd_epi16(_mm256_extracti128_si256(sc_m, 1), bsum_pairs);

        const __m256i scales = _mm256_broadcastsi128_si256(_mm256_castsi256_si128(sc_m));
        const uint8_t* qa = y + q8_k::kQs;
        __m256i pair[4];  // i32 lanes whose sum is sub-blocks 2c and 2c+1's scaled dot
        for (int c = 0; c < 4; ++c) {
            const __m256i q = load256(x + q4_k::kQs + 32 * c);
            const __m256i p_lo = _mm256_madd_epi16(broadcast_i16(scales, 2 * c),
                                                   _mm256_maddubs_epi16(_mm256_and_si256(q, low4), load256(qa + 64 * c)));
            const __m256i p_hi = _mm256_madd_epi16(
                broadcast_i16(scales, 2 * c + 1),
                _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(q, 4), low4), load256(qa + 64 * c + 32)));
            pair[c] = _mm256_add_epi32(p_lo, p_hi);
        }
        if (kPerPair) {
            // The four pair sums at once (lane c = pair c), then one FMA each, in order.
            const __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(pair[0], pair[1]), _mm256_hadd_epi32(pair[2], pair[3]));
            const __m128 sums = _mm_cvtepi32_ps(_mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1)));
            const __m128 mins = _mm_cvtepi32_ps(min_pairs);
            acc = _mm_fmadd_ss(sums, d, acc);
            acc_min = _mm_fmadd_ss(mins, dmin, acc_min);
            acc = _mm_fmadd_ss(_mm_shuffle_ps(sums, sums, 0x55), d, acc);
            acc_min = _mm_fmadd_ss(_mm_shuffle_ps(mins, mins, 0x55), dmin, acc_min);
            acc = _mm_fmadd_ss(_mm_shuffle_ps(sums, sums, 0xAA), d, acc);
            acc_min = _mm_fmadd_ss(_mm_shuffle_ps(mins, mins, 0xAA), dmin, acc_min);
            acc = _mm_fmadd_ss(_mm_shuffle_ps(sums, sums, 0xFF), d, acc);
            acc_min = _mm_fmadd_ss(_mm_shuffle_ps(mins, mins, 0xFF), dmin, acc_min);
        } else {
            const __m256i sumi = _mm256_add_epi32(_mm256_add_epi32(pair[0], pair[1]), _mm256_add_epi32(pair[2], pair[3]));
            acc = _mm_fmadd_ss(_mm_cvtepi32_ps(hsum_i32x8(sumi)), d, acc);
            acc_min = _mm_fmadd_ss(_mm_cvtepi32_ps(hsum_i32x4(min_pairs)), dmin, acc_min);
        }
    }
    return _mm_cvtss_f32(acc) - _mm_cvtss_f32(acc_min);
}

// The 6-bit codes of half h (128 elements) of a Q6_K block, as four 32-byte groups in activation
// order (see the layout comment above).
static inline void q6_k_codes(const uint8_t* x, int h, __m256i q[4]) {
    const __m256i low4 = splat8(0x0F);
    const __m256i qh = load256(x + q6_k::kQh + 32 * h);
    const __m256i l1 = load256(x + q6_k::kQl + 64 * h);
    const __m256i l2 = load256(x + q6_k::kQl + 64 * h + 32);
    q[0] = _mm256_or_si256(_mm256_and_si256(l1, low4), _mm256_slli_epi16(_mm256_and_si256(qh, splat8(0x03)), 4));
    q[1] = _mm256_or_si256(_mm256_and_si256(l2, low4), _mm256_slli_epi16(_mm256_and_si256(qh, splat8(0x0C)), 2));
    q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), low4), _mm256_and_si256(qh, splat8(0x30)));
    q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l2, 4), low4), _mm256_and_si256(_mm256_srli_epi16(qh, 2), splat8(0x30)));
}

float dot_q6_k(int64_t n, const void* wv, const void* av) {
    const uint8_t* x = bytes(wv);
    const uint8_t* y = bytes(av);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / kQKK; ++i, x += q6_k::kBytes, y += q8_k::kBytes) {
        const float d = f16_at(x + q6_k::kD) * load_f32(y + q8_k::kD);
        const __m128i scales = load128(x + q6_k::kScales);
        // 32 * sum_k sc_k * bsum_k removes the code bias (file comment).
        const __m256i bias = _mm256_madd_epi16(_mm256_cvtepi8_epi16(scales), load256(y + q8_k::kBsums));
        const uint8_t* qa = y + q8_k::kQs;
        __m256i sumi = _mm256_setzero_si256();
        for (int h = 0; h < 2; ++h) {
            __m256i q[4];
            q6_k_codes(x, h, q);
            for (int t = 0; t < 4; ++t) {
                const __m256i p = _mm256_maddubs_epi16(q[t], load256(qa + 128 * h + 32 * t));
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(scale_pair_i16(scales, 8 * h + 2 * t), p));
            }
        }
        sumi = _mm256_sub_epi32(sumi, _mm256_slli_epi32(bias, 5));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    return hsum256(acc);
}

// dot_q6_k for four activation rows: each block's codes are rebuilt once; per row, the integer sum
// (exact whatever its order) and the float steps are dot_q6_k's, so out[r] equals it bit for bit.
void dot_q6_k_x4(int64_t n, const void* wv, const void* const* av, float* out) {
    const uint8_t* x = bytes(wv);
    const uint8_t* y[4] = {bytes(av[0]), bytes(av[1]), bytes(av[2]), bytes(av[3])};
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int64_t i = 0; i < n / kQKK; ++i, x += q6_k::kBytes) {
        const float dw = f16_at(x + q6_k::kD);
        const __m128i scales = load128(x + q6_k::kScales);
        const __m256i scales16 = _mm256_cvtepi8_epi16(scales);
        __m256i sumi[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256()};
        for (int h = 0; h < 2; ++h) {
            __m256i q[4];
            q6_k_codes(x, h, q);
            for (int t = 0; t < 4; ++t) {
                const __m256i sc = scale_pair_i16(scales, 8 * h + 2 * t);
                for (int r = 0; r < 4; ++r) {
                    const uint8_t* qa = y[r] + static_cast<size_t>(i) * q8_k::kBytes + q8_k::kQs;
                    const __m256i p = _mm256_maddubs_epi16(q[t], load256(qa + 128 * h + 32 * t));
                    sumi[r] = _mm256_add_epi32(sumi[r], _mm256_madd_epi16(sc, p));
                }
            }
        }
        for (int r = 0; r < 4; ++r) {
            const uint8_t* yr = y[r] + static_cast<size_t>(i) * q8_k::kBytes;
            const float d = dw * load_f32(yr + q8_k::kD);
            const __m256i bias = _mm256_madd_epi16(scales16, load256(yr + q8_k::kBsums));
            const __m256i s = _mm256_sub_epi32(sumi[r], _mm256_slli_epi32(bias, 5));
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(s), acc[r]);
        }
    }
    for (int r = 0; r < 4; ++r) out[r] = hsum256(acc[r]);
}

float dot_q2_k(int64_t n, const void* wv, const void* av) {
    const uint8_t* x = bytes(wv);
    const uint8_t* y = bytes(av);
    __m256 acc = _mm256_setzero_ps();
    __m256 acc_min = _mm256_setzero_ps();
    const __m256i two_bits = splat8(0x03);
    for (int64_t i = 0; i < n / kQKK; ++i, x += q2_k::kBytes, y += q8_k::kBytes) {
        const float da = load_f32(y + q8_k::kD);
        const float d = f16_at(x + q2_k::kD) * da;
        const float dmin = f16_at(x + q2_k::kDmin) * da;
        const __m128i sc_bytes = load128(x + q2_k::kScales);
        const __m128i scales = _mm_and_si128(sc_bytes, _mm_set1_epi8(0x0F));
        const __m256i mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(sc_bytes, 4), _mm_set1_epi8(0x0F)));
        const __m256i min_prod = _mm256_madd_epi16(mins, load256(y + q8_k::kBsums));
        acc_min = _mm256_fmadd_ps(_mm256_set1_ps(dmin), _mm256_cvtepi32_ps(min_prod), acc_min);

        const uint8_t* qa = y + q8_k::kQs;
        __m256i sumi = _mm256_setzero_si256();
        for (int h = 0; h < 2; ++h) {
            __m256i q = load256(x + q2_k::kQs + 32 * h);
            for (int j = 0; j < 4; ++j) {
                // Bytes 0..15: sub-block 8h+2j, bytes 16..31: sub-block 8h+2j+1.
                const __m256i p = _mm256_maddubs_epi16(_mm256_and_si256(q, two_bits), load256(qa + 128 * h + 32 * j));
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(scale_pair_i16(scales, 8 * h + 2 * j), p));
                q = _mm256_srli_epi16(q, 2);
            }
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    return hsum256(acc) - hsum256(acc_min);
}

float dot_q3_k(int64_t n, const void* wv, const void* av) {
    const uint8_t* x = bytes(wv);
    const uint8_t* y = bytes(av);
    __m256 acc = _mm256_setzero_ps();
    const __m256i two_bits = splat8(0x03);
    const __m256i one = splat8(0x01);
    for (int64_t i = 0; i < n / kQKK; ++i, x += q3_k::kBytes, y += q8_k::kBytes) {
        const float d = f16_at(x + q3_k::kD) * load_f32(y + q8_k::kD);
        const __m128i scales = unpack_scales_q3_k_bytes(x + q3_k::kScales);
        // 4 * sum_k sc_k * bsum_k removes the code bias (file comment).
        const __m256i bias = _mm256_madd_epi16(_mm256_cvtepi8_epi16(scales), load256(y + q8_k::kBsums));
        const uint8_t* qa = y + q8_k::kQs;
        __m256i hmask = load256(x + q3_k::kHmask);  // bit 4h + j of byte l; shifted down one per pass
        __m256i sumi = _mm256_setzero_si256();
        for (int h = 0; h < 2; ++h) {
            __m256i q = load256(x + q3_k::kQs + 32 * h);
            for (int j = 0; j < 4; ++j) {
                const __m256i hbit = _mm256_slli_epi16(_mm256_and_si256(hmask, one), 2);
                const __m256i code = _mm256_or_si256(_mm256_and_si256(q, two_bits), hbit);  // q3 + 4h in 0..7
                const __m256i p = _mm256_maddubs_epi16(code, load256(qa + 128 * h + 32 * j));
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(scale_pair_i16(scales, 8 * h + 2 * j), p));
                q = _mm256_srli_epi16(q, 2);
                hmask = _mm256_srli_epi16(hmask, 1);
            }
        }
        sumi = _mm256_sub_epi32(sumi, _mm256_slli_epi32(bias, 2));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    return hsum256(acc);
}

}  // namespace

void fill_avx2_vec_dot(VecDotKernels& k) {
    auto set = [&k](GgmlType t, VecDotFn fn) { k.dot[static_cast<uint32_t>(t)] = fn; };
    k.tinyblas[static_cast<uint32_t>(GgmlType::Q8_0)] = tinyblas_q8_0;
    k.tinyblas[static_cast<uint32_t>(GgmlType::Q4_0)] = tinyblas_q4_0;
    k.tinyblas[static_cast<uint32_t>(GgmlType::Q5_0)] = tinyblas_q5_0;
    k.repack[static_cast<uint32_t>(GgmlType::Q4_0)] = repack_q4_0;
    k.repack[static_cast<uint32_t>(GgmlType::MXFP4)] = repack_mxfp4;
    k.repack[static_cast<uint32_t>(GgmlType::Q4_K)] = repack_q4_k<false>;
    k.repack_gemm[static_cast<uint32_t>(GgmlType::Q4_K)] = repack_q4_k<true>;
    set(GgmlType::F32, dot_f32);
    set(GgmlType::F16, dot_f16);
    set(GgmlType::BF16, dot_bf16);
    set(GgmlType::Q4_0, dot_q4_0);
    set(GgmlType::Q4_1, dot_q45_1<false>);
    set(GgmlType::Q5_0, dot_q5_0);
    set(GgmlType::Q5_1, dot_q45_1<true>);
    set(GgmlType::Q8_0, dot_q8_0);
    set(GgmlType::MXFP4, dot_mxfp4);
    set(GgmlType::Q2_K, dot_q2_k);
    set(GgmlType::Q3_K, dot_q3_k);
    set(GgmlType::Q4_K, dot_q45_k<false>);
    set(GgmlType::Q5_K, dot_q45_k<true>);
    set(GgmlType::Q6_K, dot_q6_k);
    k.dot4[static_cast<uint32_t>(GgmlType::Q6_K)] = {dot_q6_k_x4, dot_q6_k};
}

}  // namespace moe::quant

#else  // not x86-64: nothing to add

namespace moe::quant {
void fill_avx2_vec_dot(VecDotKernels&) {}
}  // namespace moe::quant

#endif
