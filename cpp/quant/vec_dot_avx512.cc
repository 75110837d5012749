// AVX-512 (F/BW/VL/DQ) dot products, compiled with the AVX-512 flags and only entered after
// cpu::require_isa(Avx512). Specialises the formats that carry most of a MoE model's weights (Q4_0,
// Q8_0, MXFP4 and Q2_K..Q6_K); F32/F16/BF16, Q4_1, Q5_0 and Q5_1 are inherited from the AVX2 table.
//
// Same integer math as vec_dot_ref.cc on 512-bit vectors (four legacy blocks, or two 32-element
// sub-blocks, per vector). AVX-512 has no byte sign instruction (vpsignb), so signed 4-bit values
// use an offset instead of the AVX2 sign trick:
//   sum_j v_j a_j = sum_j (v_j + c) a_j - sum_j c a_j      (v_j + c an unsigned byte)
// with both sums from _mm512_maddubs_epi16 (Q4_0: c = 8, the raw nibble; MXFP4: c = 12 on the
// table value); Q8_0 weights negate the activation byte where the weight is negative (masked
// subtract) and multiply by |w|; Q6_K / Q3_K add their code bias back through the Q8_K bsums, Q5_K /
// Q3_K set their high bit with byte-masked adds. Block scales of eight legacy blocks are picked out
// of the row with word permutes and converted together.
// Float accumulation as in the AVX2 kernels: per-block (super-block) i32 sums converted to float and
// FMA-ed into float lanes; only the order differs from the scalar reference.
//
// Everything has internal linkage (see quant_avx2.cc for why).
#include "vec_dot.h"

#if defined(__x86_64__) || defined(_M_X64)

#if (defined(__GNUC__) || defined(__clang__)) && \
    !(defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512DQ__) && \
      defined(__AVX2__) && defined(__FMA__) && defined(__F16C__))
#error "vec_dot_avx512.cc must be compiled with -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx2 -mfma -mf16c"
#endif

// GCC 12's AVX-512 intrinsics trip -Wmaybe-uninitialized (GCC bug 105593); see quant_avx512.cc.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include "block_layout.h"

namespace moe::quant {

namespace {

const uint8_t* bytes(const void* p) { return static_cast<const uint8_t*>(p); }

inline __m128i load128(const uint8_t* p) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)); }
inline __m256i load256(const uint8_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
inline __m512i load512(const uint8_t* p) { return _mm512_loadu_si512(p); }
inline float f16_at(const uint8_t* p) { return _cvtsh_ss(load_u16(p)); }

inline __m512i splat8(int v) { return _mm512_set1_epi8(static_cast<char>(v)); }

// Four 16-byte pieces at p, p + stride, p + 2 * stride, p + 3 * stride as the four 128-bit lanes.
inline __m512i load4x128(const uint8_t* p, int stride) {
    __m512i v = _mm512_castsi128_si512(load128(p));
    v = _mm512_inserti32x4(v, load128(p + stride), 1);
    v = _mm512_inserti32x4(v, load128(p + 2 * stride), 2);
    return _mm512_inserti32x4(v, load128(p + 3 * stride), 3);
}

// Block scales of eight consecutive blocks, picked out of whole-row loads with word permutes
// (_mm512_permutex2var_epi16 selects any of the 64 words of two registers). Every load lies inside
// the eight blocks, so nothing past the row is read.

// Word indices for words8 (the upper 24 are unused).
inline __m512i word_index8(short i0, short i1, short i2, short i3, short i4, short i5, short i6, short i7) {
    return _mm512_zextsi128_si512(_mm_setr_epi16(i0, i1, i2, i3, i4, i5, i6, i7));
}

// The 16-bit words at word indices idx[0..7] of the 128 bytes at p (all indices < 64).
inline __m128i words8(const uint8_t* p, __m512i idx) {
    return _mm512_castsi512_si128(_mm512_permutex2var_epi16(load512(p), idx, load512(p + 64)));
}

// d of eight Q8_0 blocks (34 bytes = 17 words apart: words 0, 17, ..., 119 of 272 bytes).
inline __m256 q8_0_d8(const uint8_t* y) {
    const __m128i lo = words8(y, word_index8(0, 17, 34, 51, 0, 0, 0, 0));
    const __m128i hi = words8(y + 128, word_index8(0, 0, 0, 0, 4, 21, 38, 55));
    return _mm256_cvtph_ps(_mm_mask_blend_epi16(0xF0, lo, hi));
}

// d of eight Q4_0 blocks (18 bytes = 9 words apart, all within the first 128 bytes).
inline __m256 q4_0_d8(const uint8_t* x) {
    return _mm256_cvtph_ps(words8(x, word_index8(0, 9, 18, 27, 36, 45, 54, 63)));
}

// 2^(e-128) (e8m0_to_fp32_half) of eight MXFP4 blocks (17 bytes apart: byte 17k is the low byte of
// word 17k/2 for even k and the high byte of word (17k-1)/2 for odd k).
inline __m256 mxfp4_scale8(const uint8_t* x) {
    const __m128i w = words8(x, word_index8(0, 8, 17, 25, 34, 42, 51, 59));
    const __m128i b = _mm_and_si128(_mm_srlv_epi16(w, _mm_setr_epi16(0, 8, 0, 8, 0, 8, 0, 8)), _mm_set1_epi16(0xFF));
    const __m256i e = _mm256_cvtepu16_epi32(b);
    const __m256i normal = _mm256_slli_epi32(_mm256_sub_epi32(e, _mm256_set1_epi32(1)), 23);
    const __m256i tiny = _mm256_sllv_epi32(_mm256_set1_epi32(0x00200000), e);
    return _mm256_castsi256_ps(_mm256_mask_blend_epi32(_mm256_cmplt_epi32_mask(e, _mm256_set1_epi32(2)), normal, tiny));
}

// [lo | hi] as one vector, and v with a zero upper half. Written with masked moves because GCC 12's
// _mm512_inserti64x4 / _mm512_zextsi256_si512 trip -Wuninitialized (the bug mentioned above).
inline __m512i concat256(__m256i lo, __m256i hi) { return _mm512_mask_broadcast_i64x4(_mm512_castsi256_si512(lo), 0xF0, hi); }
inline __m512i zext256(__m256i v) { return _mm512_maskz_mov_epi64(0x0F, _mm512_castsi256_si512(v)); }

inline float hsum128(__m128 s) {
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

inline float hsum256(__m256 v) { return hsum128(_mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1))); }

inline float hsum512(__m512 v) {
    const __m256 s8 = _mm256_add_ps(_mm512_extractf32x8_ps(v, 0), _mm512_extractf32x8_ps(v, 1));
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

// ------------------------------------------------------------------------------------------------
// Q4_0, MXFP4, Q8_0 . Q8_0
// ------------------------------------------------------------------------------------------------

// Blocks go in groups of eight; their scale factors are formed at once (scale8: weight scale times
// activation d, natural order) and spread over the lanes of each product vector with one permute.
// Leftover blocks (fewer than eight) go one at a time on 256-bit vectors, with the factor from
// scale1.

// 4-bit formats, four blocks per vector, block g in 128-bit lane g. Low nibbles meet activation
// bytes 0..15 of their block, high nibbles bytes 16..31. `unsigned_values` maps nibbles to
// v + kOffset (<= 24); i16 lanes stay below 2 * 2 * 24 * 127 = 12192.
template <int kWBytes, int kQsOffset, int kOffset, typename Values, typename Scale8, typename Scale1>
inline float nibble_dot(int64_t n, const void* wv, const void* av, Values unsigned_values, Scale8 scale8, Scale1 scale1) {
    const uint8_t* x = bytes(wv);
    const uint8_t* y = bytes(av);
    const int64_t nb = n / kQK;
    const __m512i low4 = splat8(0x0F);
    const __m512i offset = splat8(kOffset);
    // Activation bytes 0..15 / 16..31 of four consecutive blocks. Every Q8_0 field starts at an even
    // byte, so word permutes over two registers pick them (of the 136 bytes: 0..127 and 8..135).
    const __m512i act_lo = _mm512_setr_epi32(0x00020001, 0x00040003, 0x00060005, 0x00080007, 0x00130012, 0x00150014,
                                             0x00170016, 0x00190018, 0x00240023, 0x00260025, 0x00280027, 0x002A0029,
                                             0x00350034, 0x00370036, 0x00390038, 0x003B003A);
    const __m512i act_hi = _mm512_add_epi16(act_lo, _mm512_set1_epi16(4));
    auto quad_sums = [&](const uint8_t* xq, const uint8_t* yq) {
        const __m512i qs = load4x128(xq + kQsOffset, kWBytes);
        const __m512i u_lo = unsigned_values(_mm512_and_si512(qs, low4));
        const __m512i u_hi = unsigned_values(_mm512_and_si512(_mm512_srli_epi16(qs, 4), low4));
        const __m512i a_lo = _mm512_permutex2var_epi16(load512(yq), act_lo, load512(yq + 64));
        const __m512i a_hi = _mm512_permutex2var_epi16(load512(yq + 8), act_hi, load512(yq + 72));
        const __m512i p = _mm512_add_epi16(_mm512_maddubs_epi16(u_lo, a_lo), _mm512_maddubs_epi16(u_hi, a_hi));
        const __m512i bias = _mm512_add_epi16(_mm512_maddubs_epi16(offset, a_lo), _mm512_maddubs_epi16(offset, a_hi));
        return _mm512_cvtepi32_ps(_mm512_madd_epi16(_mm512_sub_epi16(p, bias), _mm512_set1_epi16(1)));
    };
    const __m512i spread_lo = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
    const __m512i spread_hi = _mm512_setr_epi32(4, 4, 4, 4, 5, 5, 5, 5, 6, 6, 6, 6, 7, 7, 7, 7);
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= nb; i += 8, x += 8 * kWBytes, y += 8 * q8_0::kBytes) {
        const __m512 d = _mm512_castps256_ps512(scale8(x, y));
        acc0 = _mm512_fmadd_ps(_mm512_permutexvar_ps(spread_lo, d), quad_sums(x, y), acc0);
        acc1 = _mm512_fmadd_ps(_mm512_permutexvar_ps(spread_hi, d), quad_sums(x + 4 * kWBytes, y + 4 * q8_0::kBytes), acc1);
    }
    float sum = hsum512(_mm512_add_ps(acc0, acc1));
    for (; i < nb; ++i, x += kWBytes, y += q8_0::kBytes) {
        const __m128i qs = load128(x + kQsOffset);
        const __m256i nibbles = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(qs, 4), qs), _mm256_set1_epi8(0x0F));
        const __m256i u = _mm512_castsi512_si256(unsigned_values(zext256(nibbles)));
        const __m256i a = load256(y + q8_0::kQs);
        const __m256i p = _mm256_sub_epi16(_mm256_maddubs_epi16(u, a), _mm256_maddubs_epi16(_mm256_set1_epi8(kOffset), a));
        sum += scale1(x, y) * hsum256(_mm256_cvtepi32_ps(_mm256_madd_epi16(p, _mm256_set1_epi16(1))));
    }
    return sum;
}

float dot_q4_0(int64_t n, const void* w, const void* a) {
    return nibble_dot<q4_0::kBytes, q4_0::kQs, 8>(
        n, w, a, [](__m512i nibbles) { return nibbles; },
        [](const uint8_t* x, const uint8_t* y) { return _mm256_mul_ps(q4_0_d8(x), q8_0_d8(y)); },
        [](const uint8_t* x, const uint8_t* y) { return f16_at(x + q4_0::kD) * f16_at(y + q8_0::kD); });
}

// kMxfp4Values + 12 (0..24) as unsigned bytes, repeated in all four 128-bit lanes.
struct ShiftedValues {
    uint8_t v[64];
};
constexpr ShiftedValues make_shifted_values() {
    ShiftedValues t{};
    for (int i = 0; i < 64; ++i) t.v[i] = static_cast<uint8_t>(kMxfp4Values[i % 16] + 12);
    return t;
}
constexpr ShiftedValues kMxfp4Shifted = make_shifted_values();

float dot_mxfp4(int64_t n, const void* w, const void* a) {
    const __m512i table = load512(kMxfp4Shifted.v);
    return nibble_dot<mxfp4::kBytes, mxfp4::kQs, 12>(
        n, w, a, [table](__m512i nibbles) { return _mm512_shuffle_epi8(table, nibbles); },
        [](const uint8_t* x, const uint8_t* y) { return _mm256_mul_ps(q8_0_d8(y), mxfp4_scale8(x)); },
        [](const uint8_t* x, const uint8_t* y) { return f16_at(y + q8_0::kD) * e8m0_to_fp32_half(x[mxfp4::kE]); });
}

// Q8_0 . Q8_0: two blocks per vector (block A in the low 256 bits, B in the high). AVX-512 has no
// vpsignb, so |w| * (a negated where w < 0); |-128| reads as the unsigned byte 128, and activation
// codes are never -128 (vec_dot.h), so no i16 lane passes 2 * 128 * 127 = 32512.
float dot_q8_0(int64_t n, const void* wv, const void* av) {
    const uint8_t* x = bytes(wv);
    const uint8_t* y = bytes(av);
    const int64_t nb = n / kQK;
    auto pair_sums = [](const uint8_t* xp, const uint8_t* yp) {
        const __m512i w = concat256(load256(xp + q8_0::kQs), load256(xp + q8_0::kBytes + q8_0::kQs));
        const __m512i a = concat256(load256(yp + q8_0::kQs), load256(yp + q8_0::kBytes + q8_0::kQs));
        const __m512i a_signed = _mm512_mask_sub_epi8(a, _mm512_movepi8_mask(w), _mm512_setzero_si512(), a);
        const __m512i p = _mm512_maddubs_epi16(_mm512_abs_epi8(w), a_signed);
        return _mm512_cvtepi32_ps(_mm512_madd_epi16(p, _mm512_set1_epi16(1)));
    };
    // Scale lanes of pair j: d[2j] for the low 256 bits, d[2j + 1] for the high.
    __m512i spread[4];
    for (int j = 0; j < 4; ++j) spread[j] = _mm512_mask_blend_epi32(0xFF00, _mm512_set1_epi32(2 * j), _mm512_set1_epi32(2 * j + 1));
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= nb; i += 8, x += 8 * q8_0::kBytes, y += 8 * q8_0::kBytes) {
        const __m512 d = _mm512_castps256_ps512(_mm256_mul_ps(q8_0_d8(x), q8_0_d8(y)));
        for (int j = 0; j < 4; j += 2) {
            acc0 = _mm512_fmadd_ps(_mm512_permutexvar_ps(spread[j], d), pair_sums(x + 2 * j * q8_0::kBytes, y + 2 * j * q8_0::kBytes), acc0);
            acc1 = _mm512_fmadd_ps(_mm512_permutexvar_ps(spread[j + 1], d),
                                   pair_sums(x + (2 * j + 2) * q8_0::kBytes, y + (2 * j + 2) * q8_0::kBytes), acc1);
        }
    }
    float sum = hsum512(_mm512_add_ps(acc0, acc1));
    for (; i < nb; ++i, x += q8_0::kBytes, y += q8_0::kBytes) {
        const __m256i w = load256(x + q8_0::kQs);
        const __m256i a = load256(y + q8_0::kQs);
        const __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(a, w));
        sum += (f16_at(x + q8_0::kD) * f16_at(y + q8_0::kD)) *
               hsum256(_mm256_cvtepi32_ps(_mm256_madd_epi16(p, _mm256_set1_epi16(1))));
    }
    return sum;
}

// ------------------------------------------------------------------------------------------------
// K-quants . Q8_K
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

// i16 lanes 0..15 = lane j of v, lanes 16..31 = lane k of v.
inline __m512i spread_i16(int j, int k) {
    return _mm512_mask_blend_epi32(0xFF00, _mm512_set1_epi16(static_cast<short>(j)), _mm512_set1_epi16(static_cast<short>(k)));
}

// Q4_K / Q5_K: 64 bytes of codes hold four sub-blocks: low nibbles of bytes 0..31 / 32..63 are
// sub-blocks 4p and 4p + 2, high nibbles 4p + 1 and 4p + 3 (p = 0, 1). Each 512-bit product vector
// pairs two sub-blocks (256 bits each) and its scale vector carries their two scales. Q5_K adds 16
// where bit k of qh[l] is set (k = sub-block), as a byte-masked add.
template <bool kFiveBit>
float dot_q45_k(int64_t n, const void* wv, const void* av) {
    constexpr int kBytes = kFiveBit ? q5_k::kBytes : q4_k::kBytes;
    constexpr int kQs = kFiveBit ? q5_k::kQs : q4_k::kQs;
    const uint8_t* x = bytes(wv);
    const uint8_t* y = bytes(av);
    const __m512i low4 = splat8(0x0F);
    const __m512i sixteen = splat8(16);
    const __m512i pick[4] = {spread_i16(0, 2), spread_i16(1, 3), spread_i16(4, 6), spread_i16(5, 7)};
    // qh bit of the sub-block in each 256-bit half of product vector 2p (+1).
    auto bits = [](int j, int k) {
        return _mm512_mask_blend_epi32(0xFF00, _mm512_set1_epi8(static_cast<char>(1 << j)), _mm512_set1_epi8(static_cast<char>(1 << k)));
    };
    const __m512i hbit[4] = {bits(0, 2), bits(1, 3), bits(4, 6), bits(5, 7)};
    __m512 acc = _mm512_setzero_ps();
    __m128 acc_min = _mm_setzero_ps();
    for (int64_t i = 0; i < n / kQKK; ++i, x += kBytes, y += q8_k::kBytes) {
        const float da = load_f32(y + q8_k::kD);
        const float d = f16_at(x + q4_k::kD) * da;
        const float dmin = f16_at(x + q4_k::kDmin) * da;

        const __m256i sc_m = _mm256_cvtepu8_epi16(unpack_scale_min_k4_bytes(x + q4_k::kScales));
        const __m128i bsum_pairs = _mm_hadd_epi16(load128(y + q8_k::kBsums), load128(y + q8_k::kBsums + 16));
        const __m128i min_prod = _mm_madd_epi16(_mm256_extracti128_si256(sc_m, 1), bsum_pairs);
        acc_min = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(min_prod), acc_min);

        const __m512i scales = zext256(sc_m);
        __m512i qh = _mm512_setzero_si512();
        if (kFiveBit) {
            const __m256i h = load256(x + q5_k::kQh);
            qh = concat256(h, h);
        }
        const uint8_t* qa = y + q8_k::kQs;
        __m512i sumi = _mm512_setzero_si512();
        for (int p = 0; p < 2; ++p) {
            const __m512i q = load512(x + kQs + 64 * p);
            __m512i w_lo = _mm512_and_si512(q, low4);                        // sub-blocks 4p, 4p + 2
            __m512i w_hi = _mm512_and_si512(_mm512_srli_epi16(q, 4), low4);  // 4p + 1, 4p + 3
            if (kFiveBit) {
                w_lo = _mm512_mask_add_epi8(w_lo, _mm512_test_epi8_mask(qh, hbit[2 * p]), w_lo, sixteen);
                w_hi = _mm512_mask_add_epi8(w_hi, _mm512_test_epi8_mask(qh, hbit[2 * p + 1]), w_hi, sixteen);
            }
            const __m512i a_lo = concat256(load256(qa + 128 * p), load256(qa + 128 * p + 64));
            const __m512i a_hi =
                concat256(load256(qa + 128 * p + 32), load256(qa + 128 * p + 96));
            const __m512i s_lo = _mm512_permutexvar_epi16(pick[2 * p], scales);
            const __m512i s_hi = _mm512_permutexvar_epi16(pick[2 * p + 1], scales);
            sumi = _mm512_add_epi32(sumi, _mm512_madd_epi16(s_lo, _mm512_maddubs_epi16(w_lo, a_lo)));
            sumi = _mm512_add_epi32(sumi, _mm512_madd_epi16(s_hi, _mm512_maddubs_epi16(w_hi, a_hi)));
        }
        acc = _mm512_fmadd_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(sumi), acc);
    }
    return hsum512(acc) - hsum128(acc_min);
}

// The float steps of one Q4_K block in the repacked kernels' orders: t[p] holds the scaled integer
// sums of sub-block pairs (low / high 256 bits), min_pairs the scaled min products; the gemm order
// (kPerPair) adds one fused multiply-add per pair of sub-blocks, the gemv order one per block.
template <bool kPerPair>
static inline void q4_k_block_float_steps(const __m512i t[2], __m128i min_pairs, __m128 d, __m128 dmin, __m128& acc,
                                          __m128& acc_min) {
    if (kPerPair) {
        const __m256i p0 = _mm512_castsi512_si256(t[0]), p1 = _mm512_extracti64x4_epi64(t[0], 1);
        const __m256i p2 = _mm512_castsi512_si256(t[1]), p3 = _mm512_extracti64x4_epi64(t[1], 1);
        const __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(p0, p1), _mm256_hadd_epi32(p2, p3));
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
        const int32_t sum = _mm512_reduce_add_epi32(_mm512_add_epi32(t[0], t[1]));
        __m128i m = _mm_add_epi32(min_pairs, _mm_shuffle_epi32(min_pairs, 0x4E));
        m = _mm_add_epi32(m, _mm_shuffle_epi32(m, 0xB1));
        acc = _mm_fmadd_ss(_mm_cvtsi32_ss(_mm_setzero_ps(), sum), d, acc);
        acc_min = _mm_fmadd_ss(_mm_cvtepi32_ps(m), dmin, acc_min);
    }
}

// Repacked Q4_K in llama.cpp's gemv (kPerPair false) / gemm (true) float order (see
// VecDotKernels::repack in vec_dot.h and repack_q4_k in vec_dot_avx2.cc, which this equals bit for
// bit): the integer sums come from the 512-bit code path of dot_q45_k, the float steps are the
// same scalar FMAs.
template <bool kPerPair>
float repack_q4_k(int64_t n, const void* wv, const void* av) {
    const uint8_t* x = bytes(wv);
    const uint8_t* y = bytes(av);
    const __m512i low4 = splat8(0x0F);
    const __m512i pick[4] = {spread_i16(0, 2), spread_i16(1, 3), spread_i16(4, 6), spread_i16(5, 7)};
    __m128 acc = _mm_setzero_ps(), acc_min = _mm_setzero_ps();
    for (int64_t i = 0; i < n / kQKK; ++i, x += q4_k::kBytes, y += q8_k::kBytes) {
        const float da = load_f32(y + q8_k::kD);
        const __m128 d = _mm_set_ss(f16_at(x + q4_k::kD) * da);
        const __m128 dmin = _mm_set_ss(f16_at(x + q4_k::kDmin) * da);
        const __m256i sc_m = _mm256_cvtepu8_epi16(unpack_scale_min_k4_bytes(x + q4_k::kScales));
        // i32 lane c: m_2c * bsum(sub-block 2c) + m_2c+1 * bsum(sub-block 2c+1).
        const __m128i bsum_pairs = _mm_hadd_epi16(load128(y + q8_k::kBsums), load128(y + q8_k::kBsums + 16));
        const __m128i min_pairs = _mm_madd_epi16(_mm256_extracti128_si256(sc_m, 1), bsum_pairs);

        const __m512i scales = zext256(sc_m);
        const uint8_t* qa = y + q8_k::kQs;
        __m512i t[2];  // t[p]: low 256 bits sum to pair 2p (sub-blocks 4p, 4p+1), high to pair 2p+1
        for (int p = 0; p < 2; ++p) {
            const __m512i q = load512(x + q4_k::kQs + 64 * p);
            const __m512i w_lo = _mm512_and_si512(q, low4);                        // sub-blocks 4p, 4p + 2
            const __m512i w_hi = _mm512_and_si512(_mm512_srli_epi16(q, 4), low4);  // 4p + 1, 4p + 3
            const __m512i a_lo = concat256(load256(qa + 128 * p), load256(qa + 128 * p + 64));
            const __m512i a_hi = concat256(load256(qa + 128 * p + 32), load256(qa + 128 * p + 96));
            t[p] = _mm512_add_epi32(_mm512_madd_epi16(_mm512_permutexvar_epi16(pick[2 * p], scales), _mm512_maddubs_epi16(w_lo, a_lo)),
                                    _mm512_madd_epi16(_mm512_permutexvar_epi16(pick[2 * p + 1], scales), _mm512_maddubs_epi16(w_hi, a_hi)));
        }
        q4_k_block_float_steps<kPerPair>(t, min_pairs, d, dmin, acc, acc_min);
    }
    return _mm_cvtss_f32(acc) - _mm_cvtss_f32(acc_min);
}

// q4_k_block_float_steps for four rows at once, lane r of each __m128 being row r: the integer
// sums are reduced with other pairings (exact either way), and the float steps are the same fused
// multiply-adds in the same order, one lane per row, instead of scalar steps per row.
template <bool kPerPair>
static inline void q4_k_block_float_steps_x4(const __m512i t[4][2], const __m128i min_pairs[4], __m128 d, __m128 dmin,
                                             __m128& acc, __m128& acc_min) {
    if (kPerPair) {
        // Per row: [pair 0, 1, 2, 3] sums, then transposed so that vector j holds pair j of the rows.
        __m128 sums[4], mins[4];
        for (int r = 0; r < 4; ++r) {
            const __m256i p0 = _mm512_castsi512_si256(t[r][0]), p1 = _mm512_extracti64x4_epi64(t[r][0], 1);
            const __m256i p2 = _mm512_castsi512_si256(t[r][1]), p3 = _mm512_extracti64x4_epi64(t[r][1], 1);
            const __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(p0, p1), _mm256_hadd_epi32(p2, p3));
            sums[r] = _mm_cvtepi32_ps(_mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1)));
            mins[r] = _mm_cvtepi32_ps(min_pairs[r]);
        }
        _MM_TRANSPOSE4_PS(sums[0], sums[1], sums[2], sums[3]);
        _MM_TRANSPOSE4_PS(mins[0], mins[1], mins[2], mins[3]);
        for (int j = 0; j < 4; ++j) {
            acc = _mm_fmadd_ps(sums[j], d, acc);
            acc_min = _mm_fmadd_ps(mins[j], dmin, acc_min);
        }
    } else {
        __m256i v[4];
        for (int r = 0; r < 4; ++r) {
            const __m512i s = _mm512_add_epi32(t[r][0], t[r][1]);
            v[r] = _mm256_add_epi32(_mm512_castsi512_si256(s), _mm512_extracti64x4_epi64(s, 1));
        }
        const __m256i x = _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
        const __m128i sums = _mm_add_epi32(_mm256_castsi256_si128(x), _mm256_extracti128_si256(x, 1));  // [row 0..3]
        const __m128i mins = _mm_hadd_epi32(_mm_hadd_epi32(min_pairs[0], min_pairs[1]), _mm_hadd_epi32(min_pairs[2], min_pairs[3]));
        acc = _mm_fmadd_ps(_mm_cvtepi32_ps(sums), d, acc);
        acc_min = _mm_fmadd_ps(_mm_cvtepi32_ps(mins), dmin, acc_min);
    }
}

// repack_q4_k for four activation rows: the weight block is loaded, unpacked and its scales
// permuted once; each row then runs repack_q4_k's integer steps and, four rows in the lanes of one
// register, its float steps, so out[r] equals repack_q4_k<kPerPair>(n, wv, av[r]) bit for bit.
template <bool kPerPair>
void repack_q4_k_x4(int64_t n, const void* wv, const void* const* av, float* out) {
    const uint8_t* x = bytes(wv);
    const uint8_t* y[4] = {bytes(av[0]), bytes(av[1]), bytes(av[2]), bytes(av[3])};
    const __m512i low4 = splat8(0x0F);
    const __m512i pick[4] = {spread_i16(0, 2), spread_i16(1, 3), spread_i16(4, 6), spread_i16(5, 7)};
    __m128 acc = _mm_setzero_ps(), acc_min = _mm_setzero_ps();  // lane r: row r
    for (int64_t i = 0; i < n / kQKK; ++i, x += q4_k::kBytes) {
        const __m128 dw = _mm_set1_ps(f16_at(x + q4_k::kD)), dminw = _mm_set1_ps(f16_at(x + q4_k::kDmin));
        const __m256i sc_m = _mm256_cvtepu8_epi16(unpack_scale_min_k4_bytes(x + q4_k::kScales));
        const __m128i mins16 = _mm256_extracti128_si256(sc_m, 1);
        const __m512i scales = zext256(sc_m);
        __m512i w_lo[2], w_hi[2], s_lo[2], s_hi[2];
        for (int p = 0; p < 2; ++p) {
            const __m512i q = load512(x + q4_k::kQs + 64 * p);
            w_lo[p] = _mm512_and_si512(q, low4);
            w_hi[p] = _mm512_and_si512(_mm512_srli_epi16(q, 4), low4);
            s_lo[p] = _mm512_permutexvar_epi16(pick[2 * p], scales);
            s_hi[p] = _mm512_permutexvar_epi16(pick[2 * p + 1], scales);
        }
        __m512i t[4][2];
        __m128i min_pairs[4];
        alignas(16) float da[4];
        for (int r = 0; r < 4; ++r) {
            const uint8_t* yr = y[r] + static_cast<size_t>(i) * q8_k::kBytes;
            da[r] = load_f32(yr + q8_k::kD);
            const __m128i bsum_pairs = _mm_hadd_epi16(load128(yr + q8_k::kBsums), load128(yr + q8_k::kBsums + 16));
            min_pairs[r] = _mm_madd_epi16(mins16, bsum_pairs);
            const uint8_t* qa = yr + q8_k::kQs;
            for (int p = 0; p < 2; ++p) {
                const __m512i a_lo = concat256(load256(qa + 128 * p), load256(qa + 128 * p + 64));
                const __m512i a_hi = concat256(load256(qa + 128 * p + 32), load256(qa + 128 * p + 96));
                t[r][p] = _mm512_add_epi32(_mm512_madd_epi16(s_lo[p], _mm512_maddubs_epi16(w_lo[p], a_lo)),
                                           _mm512_madd_epi16(s_hi[p], _mm512_maddubs_epi16(w_hi[p], a_hi)));
            }
        }
        const __m128 da4 = _mm_load_ps(da);
        q4_k_block_float_steps_x4<kPerPair>(t, min_pairs, _mm_mul_ps(dw, da4), _mm_mul_ps(dminw, da4), acc, acc_min);
    }
    _mm_storeu_ps(out, _mm_sub_ps(acc, acc_min));
}

// Sums of the 8 int32 lanes of each 256-bit half, for eight 512-bit vectors v[o] at once (integer
// sums: exact in any pairing). Returns, per 128-bit lane q of the two results, [o0, o1, o2, o3]
// and [o4, o5, o6, o7] summed over that lane's four ints: lanes 0 + 1 are then the low halves,
// lanes 2 + 3 the high halves.
static inline void quarter_sums8(const __m512i v[8], __m512i& lo4, __m512i& hi4) {
    __m512i x[4];
    for (int m = 0; m < 4; ++m) {  // per 128-bit lane: [a0 + a2, b0 + b2, a1 + a3, b1 + b3]
        x[m] = _mm512_add_epi32(_mm512_unpacklo_epi32(v[2 * m], v[2 * m + 1]), _mm512_unpackhi_epi32(v[2 * m], v[2 * m + 1]));
    }
    lo4 = _mm512_add_epi32(_mm512_unpacklo_epi64(x[0], x[1]), _mm512_unpackhi_epi64(x[0], x[1]));
    hi4 = _mm512_add_epi32(_mm512_unpacklo_epi64(x[2], x[3]), _mm512_unpackhi_epi64(x[2], x[3]));
}

static inline __m128i lane128(__m512i v, int q) {
    switch (q) {
        case 0: return _mm512_castsi512_si128(v);
        case 1: return _mm512_extracti32x4_epi32(v, 1);
        case 2: return _mm512_extracti32x4_epi32(v, 2);
        default: return _mm512_extracti32x4_epi32(v, 3);
    }
}

static inline __m256 cvt8(__m128i lo, __m128i hi) {
    return _mm256_cvtepi32_ps(_mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1));
}

// repack_q4_k for two weight rows (wv and wv + w_stride) and four activation rows: out[4 w + r]
// equals repack_q4_k<kPerPair>(n, weight row w, av[r]) bit for bit. Each weight block is unpacked
// once for four rows and each activation block loaded once for two weight rows; the eight outputs'
// integer sums are reduced together and their float steps run in the eight lanes of one register,
// the same fused multiply-adds in the same order as the one-row kernel.
template <bool kPerPair>
void repack_q4_k_2x4(int64_t n, const void* wv, size_t w_stride, const void* const* av, float* out) {
    const uint8_t* x[2] = {bytes(wv), bytes(wv) + w_stride};
    const uint8_t* y[4] = {bytes(av[0]), bytes(av[1]), bytes(av[2]), bytes(av[3])};
    const __m512i low4 = splat8(0x0F);
    const __m512i pick[4] = {spread_i16(0, 2), spread_i16(1, 3), spread_i16(4, 6), spread_i16(5, 7)};
    __m256 acc = _mm256_setzero_ps(), acc_min = _mm256_setzero_ps();  // lane 4 w + r
    for (int64_t i = 0; i < n / kQKK; ++i) {
        alignas(32) float d8[8], dmin8[8];
        __m128i mins16[2];
        __m512i scales[2];
        for (int w = 0; w < 2; ++w) {
            const uint8_t* xw = x[w] + static_cast<size_t>(i) * q4_k::kBytes;
            const __m256i sc_m = _mm256_cvtepu8_epi16(unpack_scale_min_k4_bytes(xw + q4_k::kScales));
            mins16[w] = _mm256_extracti128_si256(sc_m, 1);
            scales[w] = zext256(sc_m);
        }
        __m128i min_pairs[8];
        const uint8_t* qa[4];
        for (int r = 0; r < 4; ++r) {
            const uint8_t* yr = y[r] + static_cast<size_t>(i) * q8_k::kBytes;
            const float da = load_f32(yr + q8_k::kD);
            for (int w = 0; w < 2; ++w) {
                const uint8_t* xw = x[w] + static_cast<size_t>(i) * q4_k::kBytes;
                d8[4 * w + r] = f16_at(xw + q4_k::kD) * da;
                dmin8[4 * w + r] = f16_at(xw + q4_k::kDmin) * da;
            }
            const __m128i bsum_pairs = _mm_hadd_epi16(load128(yr + q8_k::kBsums), load128(yr + q8_k::kBsums + 16));
            for (int w = 0; w < 2; ++w) min_pairs[4 * w + r] = _mm_madd_epi16(mins16[w], bsum_pairs);
            qa[r] = yr + q8_k::kQs;
        }
        __m512i t[2][8];  // t[p][4 w + r]: low 256 bits sum to pair 2p, high to pair 2p + 1
        for (int p = 0; p < 2; ++p) {
            __m512i w_lo[2], w_hi[2], s_lo[2], s_hi[2];
            for (int w = 0; w < 2; ++w) {
                const __m512i q = load512(x[w] + static_cast<size_t>(i) * q4_k::kBytes + q4_k::kQs + 64 * p);
                w_lo[w] = _mm512_and_si512(q, low4);
                w_hi[w] = _mm512_and_si512(_mm512_srli_epi16(q, 4), low4);
                s_lo[w] = _mm512_permutexvar_epi16(pick[2 * p], scales[w]);
                s_hi[w] = _mm512_permutexvar_epi16(pick[2 * p + 1], scales[w]);
            }
            for (int r = 0; r < 4; ++r) {
                const __m512i a_lo = concat256(load256(qa[r] + 128 * p), load256(qa[r] + 128 * p + 64));
                const __m512i a_hi = concat256(load256(qa[r] + 128 * p + 32), load256(qa[r] + 128 * p + 96));
                for (int w = 0; w < 2; ++w) {
                    t[p][4 * w + r] = _mm512_add_epi32(_mm512_madd_epi16(s_lo[w], _mm512_maddubs_epi16(w_lo[w], a_lo)),
                                                       _mm512_madd_epi16(s_hi[w], _mm512_maddubs_epi16(w_hi[w], a_hi)));
                }
            }
        }
        const __m256 d = _mm256_load_ps(d8), dmin = _mm256_load_ps(dmin8);
        if (kPerPair) {
            __m256 pair[4];
            for (int p = 0; p < 2; ++p) {
                __m512i lo4, hi4;  // outputs 0..3, 4..7
                quarter_sums8(t[p], lo4, hi4);
                pair[2 * p] = cvt8(_mm_add_epi32(lane128(lo4, 0), lane128(lo4, 1)), _mm_add_epi32(lane128(hi4, 0), lane128(hi4, 1)));
                pair[2 * p + 1] =
                    cvt8(_mm_add_epi32(lane128(lo4, 2), lane128(lo4, 3)), _mm_add_epi32(lane128(hi4, 2), lane128(hi4, 3)));
            }
            __m128 m[8];
            for (int o = 0; o < 8; ++o) m[o] = _mm_cvtepi32_ps(min_pairs[o]);
            _MM_TRANSPOSE4_PS(m[0], m[1], m[2], m[3]);
            _MM_TRANSPOSE4_PS(m[4], m[5], m[6], m[7]);
            for (int j = 0; j < 4; ++j) {
                acc = _mm256_fmadd_ps(pair[j], d, acc);
                acc_min = _mm256_fmadd_ps(_mm256_insertf128_ps(_mm256_castps128_ps256(m[j]), m[4 + j], 1), dmin, acc_min);
            }
        } else {
            __m512i whole[8];
            for (int o = 0; o < 8; ++o) whole[o] = _mm512_add_epi32(t[0][o], t[1][o]);
            __m512i lo4, hi4;
            quarter_sums8(whole, lo4, hi4);
            const __m256i lo = _mm256_add_epi32(_mm512_castsi512_si256(lo4), _mm512_extracti64x4_epi64(lo4, 1));
            const __m256i hi = _mm256_add_epi32(_mm512_castsi512_si256(hi4), _mm512_extracti64x4_epi64(hi4, 1));
            const __m128i sums_lo = _mm_add_epi32(_mm256_castsi256_si128(lo), _mm256_extracti128_si256(lo, 1));
            const __m128i sums_hi = _mm_add_epi32(_mm256_castsi256_si128(hi), _mm256_extracti128_si256(hi, 1));
            const __m128i mins_lo = _mm_hadd_epi32(_mm_hadd_epi32(min_pairs[0], min_pairs[1]), _mm_hadd_epi32(min_pairs[2], min_pairs[3]));
            const __m128i mins_hi = _mm_hadd_epi32(_mm_hadd_epi32(min_pairs[4], min_pairs[5]), _mm_hadd_epi32(min_pairs[6], min_pairs[7]));
            acc = _mm256_fmadd_ps(cvt8(sums_lo, sums_hi), d, acc);
            acc_min = _mm256_fmadd_ps(cvt8(mins_lo, mins_hi), dmin, acc_min);
        }
    }
    _mm256_storeu_ps(out, _mm256_sub_ps(acc, acc_min));
}

// Q6_K: per half h (128 elements), the 64 bytes ql hold elements 0..63 in their low nibbles and
// 64..127 in their high nibbles (contiguous, matching the activation bytes); the two high bits of
// element l + 32t come from bits 2t..2t+1 of qh[l]. The code bias 32 is removed through the bsums:
// sum_k sc_k sum_j (q - 32) a = sum_k sc_k sum_j q a - 32 sum_k sc_k bsum_k.
float dot_q6_k(int64_t n, const void* wv, const void* av) {
    const uint8_t* x = bytes(wv);
    const uint8_t* y = bytes(av);
    const __m512i low4 = splat8(0x0F);
    const __m512i high2 = splat8(0x30);
    // Per 256-bit half: move bits 0-1 (elements 0..31) / 2-3 (32..63) up to bits 4-5, or bits
    // 4-5 (64..95) / 6-7 (96..127) down to them.
    const __m512i up = _mm512_mask_blend_epi32(0xFF00, _mm512_set1_epi16(4), _mm512_set1_epi16(2));
    const __m512i down = _mm512_mask_blend_epi32(0xFF00, _mm512_set1_epi16(0), _mm512_set1_epi16(2));
    // Scales of sub-blocks 4t .. 4t + 3 (16 elements each) over the 32 i16 lanes of a product.
    __m512i pick[4];
    for (int t = 0; t < 4; ++t) {
        const __m512i lanes = _mm512_srli_epi16(
            _mm512_setr_epi32(0x00010000, 0x00030002, 0x00050004, 0x00070006, 0x00090008, 0x000B000A, 0x000D000C,
                              0x000F000E, 0x00110010, 0x00130012, 0x00150014, 0x00170016, 0x00190018, 0x001B001A,
                              0x001D001C, 0x001F001E),
            3);  // lane / 8 = sub-block within the product
        pick[t] = _mm512_add_epi16(lanes, _mm512_set1_epi16(static_cast<short>(4 * t)));
    }
    __m512 acc = _mm512_setzero_ps();
    for (int64_t i = 0; i < n / kQKK; ++i, x += q6_k::kBytes, y += q8_k::kBytes) {
        const float d = f16_at(x + q6_k::kD) * load_f32(y + q8_k::kD);
        const __m512i scales = zext256(_mm256_cvtepi8_epi16(load128(x + q6_k::kScales)));
        const __m256i bias = _mm256_madd_epi16(_mm512_castsi512_si256(scales), load256(y + q8_k::kBsums));
        const uint8_t* qa = y + q8_k::kQs;
        __m512i sumi = _mm512_setzero_si512();
        for (int h = 0; h < 2; ++h) {
            const __m512i ql = load512(x + q6_k::kQl + 64 * h);
            const __m256i qh256 = load256(x + q6_k::kQh + 32 * h);
            const __m512i qh = concat256(qh256, qh256);
            const __m512i q_lo = _mm512_or_si512(_mm512_and_si512(ql, low4), _mm512_and_si512(_mm512_sllv_epi16(qh, up), high2));
            const __m512i q_hi = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql, 4), low4),
                                                 _mm512_and_si512(_mm512_srlv_epi16(qh, down), high2));
            const __m512i p_lo = _mm512_maddubs_epi16(q_lo, load512(qa + 128 * h));
            const __m512i p_hi = _mm512_maddubs_epi16(q_hi, load512(qa + 128 * h + 64));
            sumi = _mm512_add_epi32(sumi, _mm512_madd_epi16(_mm512_permutexvar_epi16(pick[2 * h], scales), p_lo));
            sumi = _mm512_add_epi32(sumi, _mm512_madd_epi16(_mm512_permutexvar_epi16(pick[2 * h + 1], scales), p_hi));
        }
        const __m512i bias512 = zext256(_mm256_slli_epi32(bias, 5));
        acc = _mm512_fmadd_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(_mm512_sub_epi32(sumi, bias512)), acc);
    }
    return hsum512(acc);
}

// Q2_K / Q3_K: the 64 bytes of 2-bit codes are two halves of 32; pass j (shift 2j) yields elements
// 32j .. 32j + 31 of both halves at once (sub-blocks 2j, 2j + 1 in the low 256 bits, 8 + 2j,
// 9 + 2j in the high), against activation bytes 32j.. and 128 + 32j..
inline __m512i pass_scale_pick(int j) {
    // i16 lane i covers elements 2i, 2i + 1 of the product: sub-block group i / 8.
    const short g0 = static_cast<short>(2 * j), g1 = static_cast<short>(2 * j + 1);
    const short g2 = static_cast<short>(8 + 2 * j), g3 = static_cast<short>(9 + 2 * j);
    const __m256i lo = _mm256_setr_epi16(g0, g0, g0, g0, g0, g0, g0, g0, g1, g1, g1, g1, g1, g1, g1, g1);
    const __m256i hi = _mm256_setr_epi16(g2, g2, g2, g2, g2, g2, g2, g2, g3, g3, g3, g3, g3, g3, g3, g3);
    return concat256(lo, hi);
}

inline __m512i pass_acts(const uint8_t* qa, int j) {
    return concat256(load256(qa + 32 * j), load256(qa + 128 + 32 * j));
}

float dot_q2_k(int64_t n, const void* wv, const void* av) {
    const uint8_t* x = bytes(wv);
    const uint8_t* y = bytes(av);
    const __m512i pick[4] = {pass_scale_pick(0), pass_scale_pick(1), pass_scale_pick(2), pass_scale_pick(3)};
    const __m512i two_bits = splat8(0x03);
    __m512 acc = _mm512_setzero_ps();
    __m256 acc_min = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / kQKK; ++i, x += q2_k::kBytes, y += q8_k::kBytes) {
        const float da = load_f32(y + q8_k::kD);
        const float d = f16_at(x + q2_k::kD) * da;
        const float dmin = f16_at(x + q2_k::kDmin) * da;
        const __m128i sc_bytes = load128(x + q2_k::kScales);
        const __m512i scales = zext256(_mm256_cvtepu8_epi16(_mm_and_si128(sc_bytes, _mm_set1_epi8(0x0F))));
        const __m256i mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(sc_bytes, 4), _mm_set1_epi8(0x0F)));
        const __m256i min_prod = _mm256_madd_epi16(mins, load256(y + q8_k::kBsums));
        acc_min = _mm256_fmadd_ps(_mm256_set1_ps(dmin), _mm256_cvtepi32_ps(min_prod), acc_min);

        const uint8_t* qa = y + q8_k::kQs;
        __m512i q = load512(x + q2_k::kQs);
        __m512i sumi = _mm512_setzero_si512();
        for (int j = 0; j < 4; ++j) {
            const __m512i p = _mm512_maddubs_epi16(_mm512_and_si512(q, two_bits), pass_acts(qa, j));
            sumi = _mm512_add_epi32(sumi, _mm512_madd_epi16(_mm512_permutexvar_epi16(pick[j], scales), p));
            q = _mm512_srli_epi16(q, 2);
        }
        acc = _mm512_fmadd_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(sumi), acc);
    }
    return hsum512(acc) - hsum256(acc_min);
}

// Q3_K 12-byte scale block -> the 16 scales as signed bytes, bias 32 removed (see vec_dot_avx2.cc).
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

// Q3_K: as Q2_K, plus 4 where the hmask bit (4h + j of hmask[l]) is set; the stored code bias 4 is
// removed through the bsums (sum_k sc_k sum_j (c - 4) a = sum_k sc_k sum_j c a - 4 sum_k sc_k bsum_k).
float dot_q3_k(int64_t n, const void* wv, const void* av) {
    const uint8_t* x = bytes(wv);
    const uint8_t* y = bytes(av);
    const __m512i pick[4] = {pass_scale_pick(0), pass_scale_pick(1), pass_scale_pick(2), pass_scale_pick(3)};
    __m512i hbit[4];
    for (int j = 0; j < 4; ++j) {
        hbit[j] = _mm512_mask_blend_epi32(0xFF00, _mm512_set1_epi8(static_cast<char>(1 << j)),
                                          _mm512_set1_epi8(static_cast<char>(1 << (4 + j))));
    }
    const __m512i two_bits = splat8(0x03);
    const __m512i four = splat8(0x04);
    __m512 acc = _mm512_setzero_ps();
    for (int64_t i = 0; i < n / kQKK; ++i, x += q3_k::kBytes, y += q8_k::kBytes) {
        const float d = f16_at(x + q3_k::kD) * load_f32(y + q8_k::kD);
        const __m256i sc16 = _mm256_cvtepi8_epi16(unpack_scales_q3_k_bytes(x + q3_k::kScales));
        const __m512i scales = zext256(sc16);
        const __m256i bias = _mm256_madd_epi16(sc16, load256(y + q8_k::kBsums));
        const __m256i h = load256(x + q3_k::kHmask);
        const __m512i hmask = concat256(h, h);

        const uint8_t* qa = y + q8_k::kQs;
        __m512i q = load512(x + q3_k::kQs);
        __m512i sumi = _mm512_setzero_si512();
        for (int j = 0; j < 4; ++j) {
            __m512i c = _mm512_and_si512(q, two_bits);
            c = _mm512_mask_add_epi8(c, _mm512_test_epi8_mask(hmask, hbit[j]), c, four);
            const __m512i p = _mm512_maddubs_epi16(c, pass_acts(qa, j));
            sumi = _mm512_add_epi32(sumi, _mm512_madd_epi16(_mm512_permutexvar_epi16(pick[j], scales), p));
            q = _mm512_srli_epi16(q, 2);
        }
        sumi = _mm512_sub_epi32(sumi, zext256(_mm256_slli_epi32(bias, 2)));
        acc = _mm512_fmadd_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(sumi), acc);
    }
    return hsum512(acc);
}

}  // namespace

void fill_avx512_vec_dot(VecDotKernels& k) {
    auto set = [&k](GgmlType t, VecDotFn fn) { k.dot[static_cast<uint32_t>(t)] = fn; };
    // The kernels above stay out of the table for now: llama.cpp's AVX-512 builds run the
    // AVX2-shaped Q4_0 / Q8_0 / MXFP4 / K-quant dots (one or two 8-lane accumulators), and
    // conformance needs the same float order (16-lane sums move results by an ulp, which 8-bit
    // activation rounding downstream turns into different codes and expert choices). They come
    // back with the performance work, behind a numerics-compatible order.
    (void)set;
    (void)&dot_q4_0;
    (void)&dot_mxfp4;
    (void)&dot_q8_0;
    // Repacked Q4_K takes llama.cpp's gemv / gemm order, so its faster integer part may be used.
    k.repack[static_cast<uint32_t>(GgmlType::Q4_K)] = repack_q4_k<false>;
    k.repack_gemm[static_cast<uint32_t>(GgmlType::Q4_K)] = repack_q4_k<true>;
    k.repack4[static_cast<uint32_t>(GgmlType::Q4_K)] = {repack_q4_k_x4<false>, repack_q4_k<false>, repack_q4_k_2x4<false>};
    k.repack_gemm4[static_cast<uint32_t>(GgmlType::Q4_K)] = {repack_q4_k_x4<true>, repack_q4_k<true>, repack_q4_k_2x4<true>};
    (void)&dot_q45_k<false>;
    (void)&dot_q45_k<true>;
    (void)&dot_q6_k;
    (void)&dot_q2_k;
    (void)&dot_q3_k;
}

}  // namespace moe::quant

#else  // not x86-64: nothing to add

namespace moe::quant {
void fill_avx512_vec_dot(VecDotKernels&) {}
}  // namespace moe::quant

#endif
