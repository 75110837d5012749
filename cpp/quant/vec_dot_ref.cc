// Scalar reference dot products (see vec_dot.h for the formats and the numerics contract).
//
// Every quantized dot is ggml's math (ggml-cpu/quants.c, the *_generic functions): per block or
// super-block an exact integer sum of code products, weighted by the integer sub-block scales where
// the format has them, then multiplied by the float block scales and accumulated block by block in
// float, e.g.
//   Q4_0 . Q8_0:  sum_b  float(sum_j (q_w - 8) * q_a) * d_w * d_a
//   Q4_1 . Q8_1:  sum_b  (d_w * d_a) * float(sum_j q_w * q_a) + m_w * s_a
//   MXFP4 . Q8_0: sum_b  (d_a * 2^(e-128)) * float(sum_j kvalues_mxfp4[q_w] * q_a)
//   Q4_K . Q8_K:  sum_sb (d_w * d_a) * float(sum_k sc_k * sum_j q_w * q_a)
//                        - (dmin_w * d_a) * float(sum_k m_k * (bsum_2k + bsum_2k+1))
// ggml's scalar code spreads some of these sums over 8 float lanes; the integer values are the same
// and only the float order differs. F32/F16/BF16 rows: exact float products, double accumulation
// (ggml_float), rounded to float once at the end.
#include <cstring>

#include "block_layout.h"
#include "vec_dot.h"

namespace moe::quant {

namespace {

const uint8_t* bytes(const void* p) { return static_cast<const uint8_t*>(p); }
const int8_t* codes(const uint8_t* p) { return reinterpret_cast<const int8_t*>(p); }
int16_t load_i16(const uint8_t* p) { return static_cast<int16_t>(load_u16(p)); }

// ------------------------------------------------------------------------------------------------
// Float rows
// ------------------------------------------------------------------------------------------------

float dot_f32(int64_t n, const void* w, const void* a) {
    const uint8_t* x = bytes(w);
    const uint8_t* y = bytes(a);
    double sum = 0.0;
    for (int64_t i = 0; i < n; ++i) sum += static_cast<double>(load_f32(x + 4 * i) * load_f32(y + 4 * i));
    return static_cast<float>(sum);
}

// Products of two halves (11-bit significands) or two bf16 values (8-bit) are exact in float.
float dot_f16(int64_t n, const void* w, const void* a) {
    const uint8_t* x = bytes(w);
    const uint8_t* y = bytes(a);
    double sum = 0.0;
    for (int64_t i = 0; i < n; ++i) sum += static_cast<double>(load_f16(x + 2 * i) * load_f16(y + 2 * i));
    return static_cast<float>(sum);
}

float dot_bf16(int64_t n, const void* w, const void* a) {
    const uint8_t* x = bytes(w);
    const uint8_t* y = bytes(a);
    double sum = 0.0;
    for (int64_t i = 0; i < n; ++i) {
        sum += static_cast<double>(bf16_to_fp32(load_u16(x + 2 * i)) * bf16_to_fp32(load_u16(y + 2 * i)));
    }
    return static_cast<float>(sum);
}

// ------------------------------------------------------------------------------------------------
// Legacy 32-element blocks
// ------------------------------------------------------------------------------------------------

float dot_q4_0(int64_t n, const void* w, const void* a) {
    const uint8_t* x = bytes(w);
    const uint8_t* y = bytes(a);
    float sum = 0.0f;
    for (int64_t i = 0; i < n / kQK; ++i, x += q4_0::kBytes, y += q8_0::kBytes) {
        const uint8_t* qw = x + q4_0::kQs;
        const int8_t* qa = codes(y + q8_0::kQs);
        int sumi = 0;
        for (int j = 0; j < 16; ++j) {
            sumi += ((qw[j] & 0xF) - 8) * qa[j];
            sumi += ((qw[j] >> 4) - 8) * qa[j + 16];
        }
        sum += static_cast<float>(sumi) * load_f16(x + q4_0::kD) * load_f16(y + q8_0::kD);
    }
    return sum;
}

float dot_q4_1(int64_t n, const void* w, const void* a) {
    const uint8_t* x = bytes(w);
    const uint8_t* y = bytes(a);
    float sum = 0.0f;
    for (int64_t i = 0; i < n / kQK; ++i, x += q4_1::kBytes, y += q8_1::kBytes) {
        const uint8_t* qw = x + q4_1::kQs;
        const int8_t* qa = codes(y + q8_1::kQs);
        int sumi = 0;
        for (int j = 0; j < 16; ++j) {
            sumi += (qw[j] & 0xF) * qa[j];
            sumi += (qw[j] >> 4) * qa[j + 16];
        }
        sum += (load_f16(x + q4_1::kD) * load_f16(y + q8_1::kD)) * static_cast<float>(sumi) +
               load_f16(x + q4_1::kM) * load_f16(y + q8_1::kS);
    }
    return sum;
}

// The 5-bit code of element j (0..31) of a Q5_0/Q5_1 block: nibble plus bit j of qh on top.
int q5_code(const uint8_t* qs, uint32_t qh, int j) {
    const int nibble = j < 16 ? (qs[j] & 0xF) : (qs[j - 16] >> 4);
    return nibble | static_cast<int>(((qh >> j) & 1u) << 4);
}

float dot_q5_0(int64_t n, const void* w, const void* a) {
    const uint8_t* x = bytes(w);
    const uint8_t* y = bytes(a);
    float sum = 0.0f;
    for (int64_t i = 0; i < n / kQK; ++i, x += q5_0::kBytes, y += q8_0::kBytes) {
        const uint32_t qh = load_u32(x + q5_0::kQh);
        const int8_t* qa = codes(y + q8_0::kQs);
        int sumi = 0;
        for (int j = 0; j < kQK; ++j) sumi += (q5_code(x + q5_0::kQs, qh, j) - 16) * qa[j];
        sum += (load_f16(x + q5_0::kD) * load_f16(y + q8_0::kD)) * static_cast<float>(sumi);
    }
    return sum;
}

float dot_q5_1(int64_t n, const void* w, const void* a) {
    const uint8_t* x = bytes(w);
    const uint8_t* y = bytes(a);
    float sum = 0.0f;
    for (int64_t i = 0; i < n / kQK; ++i, x += q5_1::kBytes, y += q8_1::kBytes) {
        const uint32_t qh = load_u32(x + q5_1::kQh);
        const int8_t* qa = codes(y + q8_1::kQs);
        int sumi = 0;
        for (int j = 0; j < kQK; ++j) sumi += q5_code(x + q5_1::kQs, qh, j) * qa[j];
        sum += (load_f16(x + q5_1::kD) * load_f16(y + q8_1::kD)) * static_cast<float>(sumi) +
               load_f16(x + q5_1::kM) * load_f16(y + q8_1::kS);
    }
    return sum;
}

float dot_q8_0(int64_t n, const void* w, const void* a) {
    const uint8_t* x = bytes(w);
    const uint8_t* y = bytes(a);
    float sum = 0.0f;
    for (int64_t i = 0; i < n / kQK; ++i, x += q8_0::kBytes, y += q8_0::kBytes) {
        const int8_t* qw = codes(x + q8_0::kQs);
        const int8_t* qa = codes(y + q8_0::kQs);
        int sumi = 0;
        for (int j = 0; j < kQK; ++j) sumi += qw[j] * qa[j];
        sum += static_cast<float>(sumi) * (load_f16(x + q8_0::kD) * load_f16(y + q8_0::kD));
    }
    return sum;
}

// The E2M1 codes are worth twice their value (kMxfp4Values), the scale is half the E8M0 scale.
float dot_mxfp4(int64_t n, const void* w, const void* a) {
    const uint8_t* x = bytes(w);
    const uint8_t* y = bytes(a);
    float sum = 0.0f;
    for (int64_t i = 0; i < n / kQK; ++i, x += mxfp4::kBytes, y += q8_0::kBytes) {
        const uint8_t* qw = x + mxfp4::kQs;
        const int8_t* qa = codes(y + q8_0::kQs);
        int sumi = 0;
        for (int j = 0; j < 16; ++j) {
            sumi += kMxfp4Values[qw[j] & 0xF] * qa[j];
            sumi += kMxfp4Values[qw[j] >> 4] * qa[j + 16];
        }
        const float d = load_f16(y + q8_0::kD) * e8m0_to_fp32_half(x[mxfp4::kE]);
        sum += d * static_cast<float>(sumi);
    }
    return sum;
}

// ------------------------------------------------------------------------------------------------
// K-quants against Q8_K (d: f32, qs: i8[256], bsums: i16[16] = sums of 16 codes each)
// ------------------------------------------------------------------------------------------------

// Q2_K: element 128h + 32j + 16s + l (h half, j shift pass, s sub-block of the pass, l < 16) is
// bits 2j..2j+1 of qs[32h + 16s + l]; sub-block index 8h + 2j + s; scale byte: low nibble scale,
// high nibble min.
float dot_q2_k(int64_t n, const void* w, const void* a) {
    const uint8_t* x = bytes(w);
    const uint8_t* y = bytes(a);
    float sum = 0.0f;
    for (int64_t i = 0; i < n / kQKK; ++i, x += q2_k::kBytes, y += q8_k::kBytes) {
        const uint8_t* scales = x + q2_k::kScales;
        const int8_t* qa = codes(y + q8_k::kQs);
        int msum = 0;
        for (int k = 0; k < 16; ++k) msum += load_i16(y + q8_k::kBsums + 2 * k) * (scales[k] >> 4);
        int isum = 0;
        for (int h = 0; h < 2; ++h) {
            const uint8_t* q = x + q2_k::kQs + 32 * h;
            for (int j = 0; j < 4; ++j) {
                for (int s = 0; s < 2; ++s) {
                    const int8_t* qa_sub = qa + 128 * h + 32 * j + 16 * s;
                    int sub = 0;
                    for (int l = 0; l < 16; ++l) sub += ((q[16 * s + l] >> (2 * j)) & 3) * qa_sub[l];
                    isum += (scales[8 * h + 2 * j + s] & 0xF) * sub;
                }
            }
        }
        const float da = load_f32(y + q8_k::kD);
        sum += (load_f16(x + q2_k::kD) * da) * static_cast<float>(isum) -
               (load_f16(x + q2_k::kDmin) * da) * static_cast<float>(msum);
    }
    return sum;
}

// Q3_K: element order as Q2_K; the high bit of element 128h + 32j + l (l < 32) is bit 4h + j of
// hmask[l], and a clear bit subtracts 4. Scales are 6-bit, biased by 32.
float dot_q3_k(int64_t n, const void* w, const void* a) {
    const uint8_t* x = bytes(w);
    const uint8_t* y = bytes(a);
    float sum = 0.0f;
    for (int64_t i = 0; i < n / kQKK; ++i, x += q3_k::kBytes, y += q8_k::kBytes) {
        int sc[16];
        unpack_scales_q3_k(x + q3_k::kScales, sc);
        const uint8_t* hmask = x + q3_k::kHmask;
        const int8_t* qa = codes(y + q8_k::kQs);
        int isum = 0;
        for (int h = 0; h < 2; ++h) {
            const uint8_t* q = x + q3_k::kQs + 32 * h;
            for (int j = 0; j < 4; ++j) {
                const int hbit = 1 << (4 * h + j);
                for (int s = 0; s < 2; ++s) {
                    const int8_t* qa_sub = qa + 128 * h + 32 * j + 16 * s;
                    int sub = 0;
                    for (int l = 16 * s; l < 16 * s + 16; ++l) {
                        const int v = ((q[l] >> (2 * j)) & 3) - ((hmask[l] & hbit) ? 0 : 4);
                        sub += v * qa_sub[l - 16 * s];
                    }
                    isum += (sc[8 * h + 2 * j + s] - 32) * sub;
                }
            }
        }
        sum += (load_f16(x + q3_k::kD) * load_f32(y + q8_k::kD)) * static_cast<float>(isum);
    }
    return sum;
}

// Q4_K / Q5_K: sub-block k (32 elements, 64c + 32s with k = 2c + s) is nibble s of qs[32c + l];
// Q5_K adds bit k of qh[l] as the 5th bit. Mins go through the bsums of the sub-block's two halves.
template <bool kFiveBit>
float dot_q45_k(int64_t n, const void* w, const void* a) {
    constexpr int kBytes = kFiveBit ? q5_k::kBytes : q4_k::kBytes;
    constexpr int kQs = kFiveBit ? q5_k::kQs : q4_k::kQs;
    static_assert(q4_k::kD == q5_k::kD && q4_k::kDmin == q5_k::kDmin && q4_k::kScales == q5_k::kScales, "");
    const uint8_t* x = bytes(w);
    const uint8_t* y = bytes(a);
    float sum = 0.0f;
    for (int64_t i = 0; i < n / kQKK; ++i, x += kBytes, y += q8_k::kBytes) {
        const int8_t* qa = codes(y + q8_k::kQs);
        int isum = 0, msum = 0;
        for (int k = 0; k < 8; ++k) {
            int sc, m;
            unpack_scale_min_k4(x + q4_k::kScales, k, &sc, &m);
            const uint8_t* q = x + kQs + 32 * (k / 2);
            const int shift = 4 * (k % 2);
            int sub = 0;
            for (int l = 0; l < 32; ++l) {
                int v = (q[l] >> shift) & 0xF;
                if (kFiveBit) v |= ((x[q5_k::kQh + l] >> k) & 1) << 4;
                sub += v * qa[32 * k + l];
            }
            isum += sc * sub;
            msum += m * (load_i16(y + q8_k::kBsums + 4 * k) + load_i16(y + q8_k::kBsums + 4 * k + 2));
        }
        const float da = load_f32(y + q8_k::kD);
        sum += (load_f16(x + q4_k::kD) * da) * static_cast<float>(isum) -
               (load_f16(x + q4_k::kDmin) * da) * static_cast<float>(msum);
    }
    return sum;
}

// Q6_K: for half h and l < 32, elements 128h + l + 32t (t = 0..3) are the low nibble of ql[64h + l],
// low nibble of ql[64h + l + 32], high nibble of ql[64h + l], high nibble of ql[64h + l + 32], with
// bits 2t..2t+1 of qh[32h + l] on top; codes biased by 32; signed scale per 16 elements.
float dot_q6_k(int64_t n, const void* w, const void* a) {
    const uint8_t* x = bytes(w);
    const uint8_t* y = bytes(a);
    float sum = 0.0f;
    for (int64_t i = 0; i < n / kQKK; ++i, x += q6_k::kBytes, y += q8_k::kBytes) {
        const int8_t* scales = codes(x + q6_k::kScales);
        const int8_t* qa = codes(y + q8_k::kQs);
        int sub[16] = {};
        for (int h = 0; h < 2; ++h) {
            const uint8_t* ql = x + q6_k::kQl + 64 * h;
            const uint8_t* qh = x + q6_k::kQh + 32 * h;
            for (int l = 0; l < 32; ++l) {
                const int q[4] = {
                    (ql[l] & 0xF) | ((qh[l] & 3) << 4),
                    (ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4),
                    (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4),
                    (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4),
                };
                for (int t = 0; t < 4; ++t) {
                    const int e = 128 * h + 32 * t + l;
                    sub[e / 16] += (q[t] - 32) * qa[e];
                }
            }
        }
        int isum = 0;
        for (int k = 0; k < 16; ++k) isum += scales[k] * sub[k];
        sum += (load_f16(x + q6_k::kD) * load_f32(y + q8_k::kD)) * static_cast<float>(isum);
    }
    return sum;
}

}  // namespace

void fill_scalar_vec_dot(VecDotKernels& k) {
    auto set = [&k](GgmlType t, VecDotFn fn) { k.dot[static_cast<uint32_t>(t)] = fn; };
    set(GgmlType::F32, dot_f32);
    set(GgmlType::F16, dot_f16);
    set(GgmlType::BF16, dot_bf16);
    set(GgmlType::Q4_0, dot_q4_0);
    set(GgmlType::Q4_1, dot_q4_1);
    set(GgmlType::Q5_0, dot_q5_0);
    set(GgmlType::Q5_1, dot_q5_1);
    set(GgmlType::Q8_0, dot_q8_0);
    set(GgmlType::MXFP4, dot_mxfp4);
    set(GgmlType::Q2_K, dot_q2_k);
    set(GgmlType::Q3_K, dot_q3_k);
    set(GgmlType::Q4_K, dot_q45_k<false>);
    set(GgmlType::Q5_K, dot_q45_k<true>);
    set(GgmlType::Q6_K, dot_q6_k);
}

}  // namespace moe::quant
