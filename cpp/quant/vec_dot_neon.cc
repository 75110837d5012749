// NEON (AArch64 Advanced SIMD, ARMv8-A baseline: no dot-product extension) dot products: F32, F16,
// BF16, Q4_0, Q8_0, MXFP4 and Q2_K..Q6_K; Q4_1, Q5_0 and Q5_1 stay scalar. Advanced SIMD is part of
// ARMv8-A, so this file needs no extra flags; on other architectures it only provides an empty fill.
//
// Byte products: vmull_s8 / vmlal_high_s8 form i16 lanes of two products each (|w| <= 128 and
// activation codes in [-127, 127] keep them within 2 * 128 * 127 = 32512), vpadalq_s16 widens them
// into i32 lanes. Every quantized kernel reduces each block (super-block) to the same exact integer
// sums as vec_dot_ref.cc and then evaluates the reference's float expression in the reference's
// order, so its results equal the scalar ones bit for bit. Float rows accumulate in float lanes
// (the reference uses double), so they agree within rounding.
#include "vec_dot.h"

#if defined(__aarch64__)

#include <arm_neon.h>

#include "block_layout.h"

namespace moe::quant {

namespace {

const uint8_t* bytes(const void* p) { return static_cast<const uint8_t*>(p); }
inline int8x16_t load_s8(const uint8_t* p) { return vreinterpretq_s8_u8(vld1q_u8(p)); }
inline int16_t load_i16(const uint8_t* p) { return static_cast<int16_t>(load_u16(p)); }

// acc + the 16 products w[k] * a[k], in 4 i32 lanes.
inline int32x4_t dot16(int32x4_t acc, int8x16_t w, int8x16_t a) {
    return vpadalq_s16(acc, vmlal_high_s8(vmull_s8(vget_low_s8(w), vget_low_s8(a)), w, a));
}

inline int8x16_t low_nibbles(uint8x16_t v) { return vreinterpretq_s8_u8(vandq_u8(v, vdupq_n_u8(0x0F))); }
inline int8x16_t high_nibbles(uint8x16_t v) { return vreinterpretq_s8_u8(vshrq_n_u8(v, 4)); }

// ------------------------------------------------------------------------------------------------
// Float rows
// ------------------------------------------------------------------------------------------------

template <typename Load4, typename Scalar>
inline float dot_float_rows(int64_t n, Load4 load4, Scalar scalar) {
    float32x4_t acc0 = vdupq_n_f32(0.0f), acc1 = acc0, acc2 = acc0, acc3 = acc0;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        float32x4_t w, a;
        load4(i, w, a);
        acc0 = vfmaq_f32(acc0, w, a);
        load4(i + 4, w, a);
        acc1 = vfmaq_f32(acc1, w, a);
        load4(i + 8, w, a);
        acc2 = vfmaq_f32(acc2, w, a);
        load4(i + 12, w, a);
        acc3 = vfmaq_f32(acc3, w, a);
    }
    for (; i + 4 <= n; i += 4) {
        float32x4_t w, a;
        load4(i, w, a);
        acc0 = vfmaq_f32(acc0, w, a);
    }
    float sum = vaddvq_f32(vaddq_f32(vaddq_f32(acc0, acc1), vaddq_f32(acc2, acc3)));
    for (; i < n; ++i) sum += scalar(i);
    return sum;
}

float dot_f32(int64_t n, const void* wv, const void* av) {
    const uint8_t* w = bytes(wv);
    const uint8_t* a = bytes(av);
    return dot_float_rows(
        n,
        [&](int64_t i, float32x4_t& x, float32x4_t& y) {
            x = vreinterpretq_f32_u8(vld1q_u8(w + 4 * i));
            y = vreinterpretq_f32_u8(vld1q_u8(a + 4 * i));
        },
        [&](int64_t i) { return load_f32(w + 4 * i) * load_f32(a + 4 * i); });
}

float dot_f16(int64_t n, const void* wv, const void* av) {
    const uint8_t* w = bytes(wv);
    const uint8_t* a = bytes(av);
    return dot_float_rows(
        n,
        [&](int64_t i, float32x4_t& x, float32x4_t& y) {
            x = vcvt_f32_f16(vreinterpret_f16_u8(vld1_u8(w + 2 * i)));
            y = vcvt_f32_f16(vreinterpret_f16_u8(vld1_u8(a + 2 * i)));
        },
        [&](int64_t i) { return load_f16(w + 2 * i) * load_f16(a + 2 * i); });
}

float dot_bf16(int64_t n, const void* wv, const void* av) {
    const uint8_t* w = bytes(wv);
    const uint8_t* a = bytes(av);
    return dot_float_rows(
        n,
        [&](int64_t i, float32x4_t& x, float32x4_t& y) {
            x = vreinterpretq_f32_u32(vshll_n_u16(vreinterpret_u16_u8(vld1_u8(w + 2 * i)), 16));
            y = vreinterpretq_f32_u32(vshll_n_u16(vreinterpret_u16_u8(vld1_u8(a + 2 * i)), 16));
        },
        [&](int64_t i) { return bf16_to_fp32(load_u16(w + 2 * i)) * bf16_to_fp32(load_u16(a + 2 * i)); });
}

// ------------------------------------------------------------------------------------------------
// Legacy 32-element blocks against Q8_0
// ------------------------------------------------------------------------------------------------

// The integer sum of one block: low values against activation bytes 0..15, high against 16..31.
inline int block_sum(int8x16_t lo, int8x16_t hi, const uint8_t* qa) {
    return vaddvq_s32(dot16(dot16(vdupq_n_s32(0), lo, load_s8(qa)), hi, load_s8(qa + 16)));
}

float dot_q4_0(int64_t n, const void* wv, const void* av) {
    const uint8_t* x = bytes(wv);
    const uint8_t* y = bytes(av);
    const int8x16_t eight = vdupq_n_s8(8);
    float sum = 0.0f;
    for (int64_t i = 0; i < n / kQK; ++i, x += q4_0::kBytes, y += q8_0::kBytes) {
        const uint8x16_t qs = vld1q_u8(x + q4_0::kQs);
        const int sumi = block_sum(vsubq_s8(low_nibbles(qs), eight), vsubq_s8(high_nibbles(qs), eight), y + q8_0::kQs);
        sum += static_cast<float>(sumi) * load_f16(x + q4_0::kD) * load_f16(y + q8_0::kD);
    }
    return sum;
}

float dot_q8_0(int64_t n, const void* wv, const void* av) {
    const uint8_t* x = bytes(wv);
    const uint8_t* y = bytes(av);
    float sum = 0.0f;
    for (int64_t i = 0; i < n / kQK; ++i, x += q8_0::kBytes, y += q8_0::kBytes) {
        const int sumi = block_sum(load_s8(x + q8_0::kQs), load_s8(x + q8_0::kQs + 16), y + q8_0::kQs);
        sum += static_cast<float>(sumi) * (load_f16(x + q8_0::kD) * load_f16(y + q8_0::kD));
    }
    return sum;
}

float dot_mxfp4(int64_t n, const void* wv, const void* av) {
    const uint8_t* x = bytes(wv);
    const uint8_t* y = bytes(av);
    const int8x16_t values = vld1q_s8(kMxfp4Values);
    float sum = 0.0f;
    for (int64_t i = 0; i < n / kQK; ++i, x += mxfp4::kBytes, y += q8_0::kBytes) {
        const uint8x16_t qs = vld1q_u8(x + mxfp4::kQs);
        const int8x16_t lo = vqtbl1q_s8(values, vandq_u8(qs, vdupq_n_u8(0x0F)));
        const int8x16_t hi = vqtbl1q_s8(values, vshrq_n_u8(qs, 4));
        const int sumi = block_sum(lo, hi, y + q8_0::kQs);
        const float d = load_f16(y + q8_0::kD) * e8m0_to_fp32_half(x[mxfp4::kE]);
        sum += d * static_cast<float>(sumi);
    }
    return sum;
}

// ------------------------------------------------------------------------------------------------
// K-quants against Q8_K
// ------------------------------------------------------------------------------------------------

// sum_k m[k] * (bsum[2k] + bsum[2k+1]) for the 8 mins of a Q4_K / Q5_K super-block.
inline int mins_dot_pair_bsums(const uint8_t* m8, const uint8_t* bsums) {
    const int16x8_t b0 = vreinterpretq_s16_u8(vld1q_u8(bsums)), b1 = vreinterpretq_s16_u8(vld1q_u8(bsums + 16));
    const int16x8_t pairs = vpaddq_s16(b0, b1);
    const int16x8_t m = vreinterpretq_s16_u16(vmovl_u8(vld1_u8(m8)));
    return vaddvq_s32(vmlal_high_s16(vmull_s16(vget_low_s16(m), vget_low_s16(pairs)), m, pairs));
}

// Q2_K: element 128h + 32j + 16s + l is bits 2j..2j+1 of qs[32h + 16s + l], sub-block 8h + 2j + s.
float dot_q2_k(int64_t n, const void* wv, const void* av) {
    const uint8_t* x = bytes(wv);
    const uint8_t* y = bytes(av);
    const uint8x16_t three = vdupq_n_u8(3);
    float sum = 0.0f;
    for (int64_t i = 0; i < n / kQKK; ++i, x += q2_k::kBytes, y += q8_k::kBytes) {
        const uint8_t* scales = x + q2_k::kScales;
        // Mins: sum_k (scales[k] >> 4) * bsum[k].
        const uint8x16_t sc = vld1q_u8(scales);
        const int16x8_t m_lo = vreinterpretq_s16_u16(vmovl_u8(vget_low_u8(vshrq_n_u8(sc, 4))));
        const int16x8_t m_hi = vreinterpretq_s16_u16(vmovl_high_u8(vshrq_n_u8(sc, 4)));
        const int16x8_t b0 = vreinterpretq_s16_u8(vld1q_u8(y + q8_k::kBsums));
        const int16x8_t b1 = vreinterpretq_s16_u8(vld1q_u8(y + q8_k::kBsums + 16));
        int32x4_t mp = vmull_s16(vget_low_s16(m_lo), vget_low_s16(b0));
        mp = vmlal_high_s16(mp, m_lo, b0);
        mp = vmlal_s16(mp, vget_low_s16(m_hi), vget_low_s16(b1));
        mp = vmlal_high_s16(mp, m_hi, b1);
        const int msum = vaddvq_s32(mp);

        const uint8_t* qa = y + q8_k::kQs;
        int32x4_t isum = vdupq_n_s32(0);
        for (int h = 0; h < 2; ++h) {
            uint8x16_t q0 = vld1q_u8(x + q2_k::kQs + 32 * h), q1 = vld1q_u8(x + q2_k::kQs + 32 * h + 16);
            for (int j = 0; j < 4; ++j) {
                const uint8_t* a = qa + 128 * h + 32 * j;
                const int32x4_t s0 = dot16(vdupq_n_s32(0), vreinterpretq_s8_u8(vandq_u8(q0, three)), load_s8(a));
                const int32x4_t s1 = dot16(vdupq_n_s32(0), vreinterpretq_s8_u8(vandq_u8(q1, three)), load_s8(a + 16));
                isum = vmlaq_n_s32(isum, s0, scales[8 * h + 2 * j] & 0xF);
                isum = vmlaq_n_s32(isum, s1, scales[8 * h + 2 * j + 1] & 0xF);
                q0 = vshrq_n_u8(q0, 2);
                q1 = vshrq_n_u8(q1, 2);
            }
        }
        const float da = load_f32(y + q8_k::kD);
        sum += (load_f16(x + q2_k::kD) * da) * static_cast<float>(vaddvq_s32(isum)) -
               (load_f16(x + q2_k::kDmin) * da) * static_cast<float>(msum);
    }
    return sum;
}

// Q3_K: as Q2_K, minus 4 where the hmask bit 4h + j of hmask[l] is clear; 6-bit scales biased by 32.
float dot_q3_k(int64_t n, const void* wv, const void* av) {
    const uint8_t* x = bytes(wv);
    const uint8_t* y = bytes(av);
    const uint8x16_t three = vdupq_n_u8(3);
    const int8x16_t four = vdupq_n_s8(4);
    float sum = 0.0f;
    for (int64_t i = 0; i < n / kQKK; ++i, x += q3_k::kBytes, y += q8_k::kBytes) {
        int sc[16];
        unpack_scales_q3_k(x + q3_k::kScales, sc);
        const uint8x16_t hm0 = vld1q_u8(x + q3_k::kHmask), hm1 = vld1q_u8(x + q3_k::kHmask + 16);
        const uint8_t* qa = y + q8_k::kQs;
        int32x4_t isum = vdupq_n_s32(0);
        for (int h = 0; h < 2; ++h) {
            uint8x16_t q0 = vld1q_u8(x + q3_k::kQs + 32 * h), q1 = vld1q_u8(x + q3_k::kQs + 32 * h + 16);
            for (int j = 0; j < 4; ++j) {
                const uint8x16_t bit = vdupq_n_u8(static_cast<uint8_t>(1u << (4 * h + j)));
                // code = (q & 3) - 4 + (4 where the bit is set)
                const int8x16_t c0 = vaddq_s8(vsubq_s8(vreinterpretq_s8_u8(vandq_u8(q0, three)), four),
                                              vreinterpretq_s8_u8(vandq_u8(vtstq_u8(hm0, bit), vdupq_n_u8(4))));
                const int8x16_t c1 = vaddq_s8(vsubq_s8(vreinterpretq_s8_u8(vandq_u8(q1, three)), four),
                                              vreinterpretq_s8_u8(vandq_u8(vtstq_u8(hm1, bit), vdupq_n_u8(4))));
                const uint8_t* a = qa + 128 * h + 32 * j;
                isum = vmlaq_n_s32(isum, dot16(vdupq_n_s32(0), c0, load_s8(a)), sc[8 * h + 2 * j] - 32);
                isum = vmlaq_n_s32(isum, dot16(vdupq_n_s32(0), c1, load_s8(a + 16)), sc[8 * h + 2 * j + 1] - 32);
                q0 = vshrq_n_u8(q0, 2);
                q1 = vshrq_n_u8(q1, 2);
            }
        }
        sum += (load_f16(x + q3_k::kD) * load_f32(y + q8_k::kD)) * static_cast<float>(vaddvq_s32(isum));
    }
    return sum;
}

// Q4_K / Q5_K: sub-block k = 2c + s is nibble s of qs[32c + l] (l < 32); Q5_K adds bit k of qh[l].
template <bool kFiveBit>
float dot_q45_k(int64_t n, const void* wv, const void* av) {
    constexpr int kBytes = kFiveBit ? q5_k::kBytes : q4_k::kBytes;
    constexpr int kQs = kFiveBit ? q5_k::kQs : q4_k::kQs;
    const uint8_t* x = bytes(wv);
    const uint8_t* y = bytes(av);
    float sum = 0.0f;
    for (int64_t i = 0; i < n / kQKK; ++i, x += kBytes, y += q8_k::kBytes) {
        uint8_t sc[8], m[8];
        for (int k = 0; k < 8; ++k) {
            int s, mm;
            unpack_scale_min_k4(x + q4_k::kScales, k, &s, &mm);
            sc[k] = static_cast<uint8_t>(s);
            m[k] = static_cast<uint8_t>(mm);
        }
        const int msum = mins_dot_pair_bsums(m, y + q8_k::kBsums);
        uint8x16_t qh0 = vdupq_n_u8(0), qh1 = vdupq_n_u8(0);
        if (kFiveBit) {
            qh0 = vld1q_u8(x + q5_k::kQh);
            qh1 = vld1q_u8(x + q5_k::kQh + 16);
        }
        const uint8_t* qa = y + q8_k::kQs;
        int32x4_t isum = vdupq_n_s32(0);
        for (int c = 0; c < 4; ++c) {
            const uint8x16_t q0 = vld1q_u8(x + kQs + 32 * c), q1 = vld1q_u8(x + kQs + 32 * c + 16);
            int8x16_t v[4] = {low_nibbles(q0), low_nibbles(q1), high_nibbles(q0), high_nibbles(q1)};
            if (kFiveBit) {
                const uint8x16_t sixteen = vdupq_n_u8(16);
                const uint8x16_t b_lo = vdupq_n_u8(static_cast<uint8_t>(1u << (2 * c)));
                const uint8x16_t b_hi = vdupq_n_u8(static_cast<uint8_t>(1u << (2 * c + 1)));
                v[0] = vorrq_s8(v[0], vreinterpretq_s8_u8(vandq_u8(vtstq_u8(qh0, b_lo), sixteen)));
                v[1] = vorrq_s8(v[1], vreinterpretq_s8_u8(vandq_u8(vtstq_u8(qh1, b_lo), sixteen)));
                v[2] = vorrq_s8(v[2], vreinterpretq_s8_u8(vandq_u8(vtstq_u8(qh0, b_hi), sixteen)));
                v[3] = vorrq_s8(v[3], vreinterpretq_s8_u8(vandq_u8(vtstq_u8(qh1, b_hi), sixteen)));
            }
            const uint8_t* a = qa + 64 * c;
            const int32x4_t s_lo = dot16(dot16(vdupq_n_s32(0), v[0], load_s8(a)), v[1], load_s8(a + 16));
            const int32x4_t s_hi = dot16(dot16(vdupq_n_s32(0), v[2], load_s8(a + 32)), v[3], load_s8(a + 48));
            isum = vmlaq_n_s32(isum, s_lo, sc[2 * c]);
            isum = vmlaq_n_s32(isum, s_hi, sc[2 * c + 1]);
        }
        const float da = load_f32(y + q8_k::kD);
        sum += (load_f16(x + q4_k::kD) * da) * static_cast<float>(vaddvq_s32(isum)) -
               (load_f16(x + q4_k::kDmin) * da) * static_cast<float>(msum);
    }
    return sum;
}

// Q6_K: for half h and l < 32, elements 128h + l + 32t are (t = 0..3) the low nibble of ql[l], low
// nibble of ql[l + 32], high nibble of ql[l], high nibble of ql[l + 32], with bits 2t..2t+1 of qh[l]
// on top, biased by 32; signed scale per 16 elements.
float dot_q6_k(int64_t n, const void* wv, const void* av) {
    const uint8_t* x = bytes(wv);
    const uint8_t* y = bytes(av);
    const uint8x16_t low4 = vdupq_n_u8(0x0F), three = vdupq_n_u8(3);
    const int8x16_t bias = vdupq_n_s8(32);
    float sum = 0.0f;
    for (int64_t i = 0; i < n / kQKK; ++i, x += q6_k::kBytes, y += q8_k::kBytes) {
        const int8_t* scales = reinterpret_cast<const int8_t*>(x + q6_k::kScales);
        const uint8_t* qa = y + q8_k::kQs;
        int32x4_t isum = vdupq_n_s32(0);
        for (int h = 0; h < 2; ++h) {
            const uint8_t* ql = x + q6_k::kQl + 64 * h;
            const uint8_t* qh = x + q6_k::kQh + 32 * h;
            for (int g = 0; g < 2; ++g) {  // l = 16g .. 16g + 15
                const uint8x16_t la = vld1q_u8(ql + 16 * g), lb = vld1q_u8(ql + 32 + 16 * g);
                const uint8x16_t hb = vld1q_u8(qh + 16 * g);
                const uint8x16_t u[4] = {
                    vorrq_u8(vandq_u8(la, low4), vshlq_n_u8(vandq_u8(hb, three), 4)),
                    vorrq_u8(vandq_u8(lb, low4), vshlq_n_u8(vandq_u8(vshrq_n_u8(hb, 2), three), 4)),
                    vorrq_u8(vshrq_n_u8(la, 4), vshlq_n_u8(vandq_u8(vshrq_n_u8(hb, 4), three), 4)),
                    vorrq_u8(vshrq_n_u8(lb, 4), vshlq_n_u8(vshrq_n_u8(hb, 6), 4)),
                };
                for (int t = 0; t < 4; ++t) {
                    const int8x16_t q = vsubq_s8(vreinterpretq_s8_u8(u[t]), bias);
                    const int32x4_t s = dot16(vdupq_n_s32(0), q, load_s8(qa + 128 * h + 32 * t + 16 * g));
                    isum = vmlaq_n_s32(isum, s, scales[8 * h + 2 * t + g]);
                }
            }
        }
        sum += (load_f16(x + q6_k::kD) * load_f32(y + q8_k::kD)) * static_cast<float>(vaddvq_s32(isum));
    }
    return sum;
}

}  // namespace

void fill_neon_vec_dot(VecDotKernels& k) {
    auto set = [&k](GgmlType t, VecDotFn fn) { k.dot[static_cast<uint32_t>(t)] = fn; };
    set(GgmlType::F32, dot_f32);
    set(GgmlType::F16, dot_f16);
    set(GgmlType::BF16, dot_bf16);
    set(GgmlType::Q4_0, dot_q4_0);
    set(GgmlType::Q8_0, dot_q8_0);
    set(GgmlType::MXFP4, dot_mxfp4);
    set(GgmlType::Q2_K, dot_q2_k);
    set(GgmlType::Q3_K, dot_q3_k);
    set(GgmlType::Q4_K, dot_q45_k<false>);
    set(GgmlType::Q5_K, dot_q45_k<true>);
    set(GgmlType::Q6_K, dot_q6_k);
}

}  // namespace moe::quant

#else  // not AArch64: nothing to add

namespace moe::quant {
void fill_neon_vec_dot(VecDotKernels&) {}
}  // namespace moe::quant

#endif
