// Scalar reference kernels: dequantize and quantize one row for every type this build supports.
//
// Dequantizers compute exactly ggml's float expressions, in ggml's order (e.g. Q4_K:
// (d*sc)*q - (dmin*m)); the SIMD kernels repeat the same operations, so with -ffp-contract=off all
// levels agree bit for bit.
//
// Quantizers: F16/BF16 round to nearest even; Q8_0, Q8_1, Q8_K and MXFP4 follow ggml's reference
// semantics exactly (they are activation formats or have a single natural encoding). The weight
// formats (Q4_0..Q5_1, Q2_K..Q6_K) use this file's own least-squares scale search: for each (sub-)block
// a small grid of candidate scales, each refined by a least-squares fit of scale (and offset) to the
// resulting codes; K-quants then quantize the sub-block scales against the super-block scale and
// re-derive every code from the scales actually stored.
//
// Quantizer inputs are expected to be finite; NaN/inf give unspecified codes (never out-of-bounds
// writes). F16 and BF16 convert every input exactly as documented in fp16.h.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "block_layout.h"
#include "quant.h"

namespace moe::quant {

namespace {

// ------------------------------------------------------------------------------------------------
// Dequantization
// ------------------------------------------------------------------------------------------------

const uint8_t* as_bytes(const void* p) { return static_cast<const uint8_t*>(p); }

void dequant_f32(const void* src, float* dst, int64_t n) {
    std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
}

void dequant_f16(const void* src, float* dst, int64_t n) {
    const uint8_t* p = as_bytes(src);
    for (int64_t i = 0; i < n; ++i) dst[i] = load_f16(p + 2 * i);
}

void dequant_bf16(const void* src, float* dst, int64_t n) {
    const uint8_t* p = as_bytes(src);
    for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_fp32(load_u16(p + 2 * i));
}

void dequant_q4_0(const void* src, float* dst, int64_t n) {
    const uint8_t* b = as_bytes(src);
    for (int64_t i = 0; i < n / kQK; ++i, b += q4_0::kBytes, dst += kQK) {
        const float d = load_f16(b + q4_0::kD);
        const uint8_t* qs = b + q4_0::kQs;
        for (int j = 0; j < 16; ++j) {
            dst[j] = static_cast<float>((qs[j] & 0xF) - 8) * d;
            dst[j + 16] = static_cast<float>((qs[j] >> 4) - 8) * d;
        }
    }
}

void dequant_q4_1(const void* src, float* dst, int64_t n) {
    const uint8_t* b = as_bytes(src);
    for (int64_t i = 0; i < n / kQK; ++i, b += q4_1::kBytes, dst += kQK) {
        const float d = load_f16(b + q4_1::kD);
        const float m = load_f16(b + q4_1::kM);
        const uint8_t* qs = b + q4_1::kQs;
        for (int j = 0; j < 16; ++j) {
            dst[j] = static_cast<float>(qs[j] & 0xF) * d + m;
            dst[j + 16] = static_cast<float>(qs[j] >> 4) * d + m;
        }
    }
}

// Q5_0 / Q5_1: the 5th bit of element j is bit j of the little-endian u32 qh.
void dequant_q5_0(const void* src, float* dst, int64_t n) {
    const uint8_t* b = as_bytes(src);
    for (int64_t i = 0; i < n / kQK; ++i, b += q5_0::kBytes, dst += kQK) {
        const float d = load_f16(b + q5_0::kD);
        const uint32_t qh = load_u32(b + q5_0::kQh);
        const uint8_t* qs = b + q5_0::kQs;
        for (int j = 0; j < 16; ++j) {
            const int lo = (qs[j] & 0xF) | static_cast<int>(((qh >> j) & 1u) << 4);
            const int hi = (qs[j] >> 4) | static_cast<int>(((qh >> (j + 16)) & 1u) << 4);
            dst[j] = static_cast<float>(lo - 16) * d;
            dst[j + 16] = static_cast<float>(hi - 16) * d;
        }
    }
}

void dequant_q5_1(const void* src, float* dst, int64_t n) {
    const uint8_t* b = as_bytes(src);
    for (int64_t i = 0; i < n / kQK; ++i, b += q5_1::kBytes, dst += kQK) {
        const float d = load_f16(b + q5_1::kD);
        const float m = load_f16(b + q5_1::kM);
        const uint32_t qh = load_u32(b + q5_1::kQh);
        const uint8_t* qs = b + q5_1::kQs;
        for (int j = 0; j < 16; ++j) {
            const int lo = (qs[j] & 0xF) | static_cast<int>(((qh >> j) & 1u) << 4);
            const int hi = (qs[j] >> 4) | static_cast<int>(((qh >> (j + 16)) & 1u) << 4);
            dst[j] = static_cast<float>(lo) * d + m;
            dst[j + 16] = static_cast<float>(hi) * d + m;
        }
    }
}

// Q8_0 and Q8_1 share the element encoding; block size and qs offset differ.
template <int kBytes, int kQsOffset>
void dequant_q8_legacy(const void* src, float* dst, int64_t n) {
    const uint8_t* b = as_bytes(src);
    for (int64_t i = 0; i < n / kQK; ++i, b += kBytes, dst += kQK) {
        const float d = load_f16(b);  // d is the first field of both
        const int8_t* qs = reinterpret_cast<const int8_t*>(b + kQsOffset);
        for (int j = 0; j < kQK; ++j) dst[j] = static_cast<float>(qs[j]) * d;
    }
}

// Q2_K: 16 sub-blocks of 16. Half n (128 elements) uses qs[32n .. 32n+31]; pass j (shift 2j) emits
// two sub-blocks: elements 32j + l (l < 16) from q[l], 32j + 16 + l from q[16 + l].
// scales[k]: low nibble = scale, high nibble = min of sub-block k (= element / 16).
void dequant_q2_k(const void* src, float* dst, int64_t n) {
    const uint8_t* b = as_bytes(src);
    for (int64_t i = 0; i < n / kQKK; ++i, b += q2_k::kBytes) {
        const float d = load_f16(b + q2_k::kD);
        const float dmin = load_f16(b + q2_k::kDmin);
        const uint8_t* scales = b + q2_k::kScales;
        for (int half = 0; half < 2; ++half) {
            const uint8_t* q = b + q2_k::kQs + 32 * half;
            for (int j = 0; j < 4; ++j) {
                for (int s = 0; s < 2; ++s) {
                    const uint8_t sc = scales[8 * half + 2 * j + s];
                    const float dl = d * static_cast<float>(sc & 0xF);
                    const float ml = dmin * static_cast<float>(sc >> 4);
                    for (int l = 0; l < 16; ++l) {
                        *dst++ = dl * static_cast<float>((q[16 * s + l] >> (2 * j)) & 3) - ml;
                    }
                }
            }
        }
    }
}

// Q3_K: element order as Q2_K; the high bit of element 32j + l of half n is bit (4n + j) of
// hmask[l] (l = 0..31), and a clear bit subtracts 4. Scales are 6-bit, biased by 32.
void dequant_q3_k(const void* src, float* dst, int64_t n) {
    const uint8_t* b = as_bytes(src);
    for (int64_t i = 0; i < n / kQKK; ++i, b += q3_k::kBytes) {
        const float d = load_f16(b + q3_k::kD);
        const uint8_t* hmask = b + q3_k::kHmask;
        int sc[16];
        unpack_scales_q3_k(b + q3_k::kScales, sc);
        for (int half = 0; half < 2; ++half) {
            const uint8_t* q = b + q3_k::kQs + 32 * half;
            for (int j = 0; j < 4; ++j) {
                const uint8_t hbit = static_cast<uint8_t>(1u << (4 * half + j));
                for (int s = 0; s < 2; ++s) {
                    const float dl = d * static_cast<float>(sc[8 * half + 2 * j + s] - 32);
                    for (int l = 16 * s; l < 16 * s + 16; ++l) {
                        const int v = ((q[l] >> (2 * j)) & 3) - ((hmask[l] & hbit) ? 0 : 4);
                        *dst++ = dl * static_cast<float>(v);
                    }
                }
            }
        }
    }
}

// Q4_K: chunk c (64 elements) takes low nibbles of qs[32c..32c+31] for sub-block 2c and high
// nibbles for sub-block 2c+1.
void dequant_q4_k(const void* src, float* dst, int64_t n) {
    const uint8_t* b = as_bytes(src);
    for (int64_t i = 0; i < n / kQKK; ++i, b += q4_k::kBytes) {
        const float d = load_f16(b + q4_k::kD);
        const float dmin = load_f16(b + q4_k::kDmin);
        for (int c = 0; c < 4; ++c) {
            const uint8_t* q = b + q4_k::kQs + 32 * c;
            for (int s = 0; s < 2; ++s) {
                int sc, m;
                unpack_scale_min_k4(b + q4_k::kScales, 2 * c + s, &sc, &m);
                const float d1 = d * static_cast<float>(sc);
                const float m1 = dmin * static_cast<float>(m);
                for (int l = 0; l < 32; ++l) {
                    *dst++ = d1 * static_cast<float>((q[l] >> (4 * s)) & 0xF) - m1;
                }
            }
        }
    }
}

// Q5_K: as Q4_K plus a 5th bit: bit k of qh[l] belongs to element 32k + l (k = sub-block).
void dequant_q5_k(const void* src, float* dst, int64_t n) {
    const uint8_t* b = as_bytes(src);
    for (int64_t i = 0; i < n / kQKK; ++i, b += q5_k::kBytes) {
        const float d = load_f16(b + q5_k::kD);
        const float dmin = load_f16(b + q5_k::kDmin);
        const uint8_t* qh = b + q5_k::kQh;
        for (int c = 0; c < 4; ++c) {
            const uint8_t* q = b + q5_k::kQs + 32 * c;
            for (int s = 0; s < 2; ++s) {
                const int sub = 2 * c + s;
                int sc, m;
                unpack_scale_min_k4(b + q5_k::kScales, sub, &sc, &m);
                const float d1 = d * static_cast<float>(sc);
                const float m1 = dmin * static_cast<float>(m);
                for (int l = 0; l < 32; ++l) {
                    const int v = ((q[l] >> (4 * s)) & 0xF) | (((qh[l] >> sub) & 1) << 4);
                    *dst++ = d1 * static_cast<float>(v) - m1;
                }
            }
        }
    }
}

// Q6_K: half n (128 elements) uses ql[64n..], qh[32n..], scales[8n..]. For l = 0..31 the four
// elements l, l+32, l+64, l+96 are: low nibble of ql[l] / ql[l+32], high nibble of ql[l] / ql[l+32],
// with bits 0-1 / 2-3 / 4-5 / 6-7 of qh[l] on top; codes are biased by 32. Sub-block = element / 16.
void dequant_q6_k(const void* src, float* dst, int64_t n) {
    const uint8_t* b = as_bytes(src);
    for (int64_t i = 0; i < n / kQKK; ++i, b += q6_k::kBytes, dst += kQKK) {
        const float d = load_f16(b + q6_k::kD);
        const int8_t* scales = reinterpret_cast<const int8_t*>(b + q6_k::kScales);
        for (int half = 0; half < 2; ++half) {
            const uint8_t* ql = b + q6_k::kQl + 64 * half;
            const uint8_t* qh = b + q6_k::kQh + 32 * half;
            float* y = dst + 128 * half;
            const int8_t* sc = scales + 8 * half;
            for (int l = 0; l < 32; ++l) {
                const int is = l / 16;
                const int q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) - 32;
                const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                y[l] = d * static_cast<float>(sc[is]) * static_cast<float>(q1);
                y[l + 32] = d * static_cast<float>(sc[is + 2]) * static_cast<float>(q2);
                y[l + 64] = d * static_cast<float>(sc[is + 4]) * static_cast<float>(q3);
                y[l + 96] = d * static_cast<float>(sc[is + 6]) * static_cast<float>(q4);
            }
        }
    }
}

void dequant_q8_k(const void* src, float* dst, int64_t n) {
    const uint8_t* b = as_bytes(src);
    for (int64_t i = 0; i < n / kQKK; ++i, b += q8_k::kBytes, dst += kQKK) {
        const float d = load_f32(b + q8_k::kD);
        const int8_t* qs = reinterpret_cast<const int8_t*>(b + q8_k::kQs);
        for (int j = 0; j < kQKK; ++j) dst[j] = d * static_cast<float>(qs[j]);
    }
}

void dequant_mxfp4(const void* src, float* dst, int64_t n) {
    const uint8_t* b = as_bytes(src);
    for (int64_t i = 0; i < n / kQK; ++i, b += mxfp4::kBytes, dst += kQK) {
        const float s = e8m0_to_fp32_half(b[mxfp4::kE]);
        const uint8_t* qs = b + mxfp4::kQs;
        for (int j = 0; j < 16; ++j) {
            dst[j] = static_cast<float>(kMxfp4Values[qs[j] & 0xF]) * s;
            dst[j + 16] = static_cast<float>(kMxfp4Values[qs[j] >> 4]) * s;
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Quantization helpers
// ------------------------------------------------------------------------------------------------

uint8_t* as_bytes(void* p) { return static_cast<uint8_t*>(p); }

// Round half to even, valid for |v| < 2^22: adding 1.5 * 2^23 leaves the rounded integer in the
// low mantissa bits (ggml's nearest_int does the same).
int round_even(float v) {
    const float t = v + 12582912.f;
    int32_t i;
    std::memcpy(&i, &t, sizeof i);
    return (i & 0x007fffff) - 0x00400000;
}

// round_even(v) clamped to [lo, hi]; NaN gives lo. Clamping first keeps round_even in its range.
int round_clamp(float v, int lo, int hi) {
    if (!(v > static_cast<float>(lo))) return lo;
    if (!(v < static_cast<float>(hi))) return hi;
    return round_even(v);
}

// Codes of x / scale in [lo, hi] (0 everywhere when the scale is 0 or not finite).
void requantize_symmetric(const float* x, int n, float scale, int lo, int hi, int* L) {
    const bool ok = scale != 0.0f && std::isfinite(scale);
    const float inv = ok ? 1.0f / scale : 0.0f;
    for (int i = 0; i < n; ++i) L[i] = ok ? round_clamp(x[i] * inv, lo, hi) : 0;
}

// Codes of (x + min) / scale in [0, hi] for x ≈ scale * L - min.
void requantize_affine(const float* x, int n, float scale, float min, int hi, int* L) {
    const bool ok = scale > 0.0f && std::isfinite(scale);
    const float inv = ok ? 1.0f / scale : 0.0f;
    for (int i = 0; i < n; ++i) L[i] = ok ? round_clamp((x[i] + min) * inv, 0, hi) : 0;
}

constexpr int kMaxGroup = 32;  // largest (sub-)block any fit below sees

// Fits x[0..n) ≈ scale * L with integer codes L in [lo, hi] (lo = -hi - 1 for every caller),
// approximately minimising the squared error. Returns the scale (may be negative: the element of
// largest magnitude is mapped onto the longer, negative side of the code range) and leaves the
// codes in L.
//
// Candidates: the extreme element mapped to -(|lo| + t) for t on a grid around 0, each followed by
// the least-squares scale for its codes (sum(x*L) / sum(L*L)), then two re-quantize/re-fit rounds
// from the best. For a fixed code vector the least-squares error is sum(x^2) - sum(xL)^2 / sum(L^2),
// so candidates are ranked by sum(xL)^2 / sum(L^2).
float fit_symmetric(const float* x, int n, int lo, int hi, int* L) {
    float amax = 0.0f, max = 0.0f;
    for (int i = 0; i < n; ++i) {
        if (std::fabs(x[i]) > amax) {
            amax = std::fabs(x[i]);
            max = x[i];
        }
    }
    if (amax == 0.0f || !std::isfinite(amax)) {
        std::fill(L, L + n, 0);
        return 0.0f;
    }

    int trial[kMaxGroup];
    double best_score = -1.0;
    float best_scale = 0.0f;
    auto consider = [&](float iscale) {
        double sxl = 0.0, sll = 0.0;
        for (int i = 0; i < n; ++i) {
            trial[i] = round_clamp(x[i] * iscale, lo, hi);
            sxl += static_cast<double>(x[i]) * trial[i];
            sll += static_cast<double>(trial[i]) * trial[i];
        }
        if (sll <= 0.0) return;
        const double score = sxl * sxl / sll;
        if (score > best_score) {
            best_score = score;
            best_scale = static_cast<float>(sxl / sll);
            std::copy(trial, trial + n, L);
        }
    };

    const float span = static_cast<float>(-lo);
    for (int k = -10; k <= 10; ++k) consider(-(span + 0.1f * static_cast<float>(k)) / max);
    for (int round = 0; round < 2 && best_scale != 0.0f; ++round) consider(1.0f / best_scale);

    if (best_score < 0.0) std::fill(L, L + n, 0);
    return best_scale;
}

// Fits x[0..n) ≈ scale * L + offset with codes L in [0, hi], approximately minimising the squared
// error; returns scale (>= 0) and stores offset. With `nonpositive_offset` the offset is kept <= 0
// (K-quants store it as -dmin * m with m >= 0).
//
// Candidates: [min, max] (min clamped to <= 0 when required) mapped onto [0, hi + t] for t on a
// grid, each followed by the joint least-squares (scale, offset) for its codes, then two
// re-quantize/re-fit rounds from the best; ranked by the actual squared error.
float fit_affine(const float* x, int n, int hi, bool nonpositive_offset, int* L, float* offset) {
    float mn = x[0], mx = x[0];
    for (int i = 1; i < n; ++i) {
        mn = std::min(mn, x[i]);
        mx = std::max(mx, x[i]);
    }
    if (nonpositive_offset) mn = std::min(mn, 0.0f);
    if (!(mx > mn) || !std::isfinite(mx - mn)) {  // constant block (or non-finite input)
        std::fill(L, L + n, 0);
        *offset = std::isfinite(mn) ? mn : 0.0f;
        return 0.0f;
    }

    int trial[kMaxGroup];
    double best_err = INFINITY;
    float best_scale = 0.0f, best_offset = mn;

    auto evaluate = [&](float scale, float off, const int* codes) {
        double err = 0.0;
        for (int i = 0; i < n; ++i) {
            const double e = static_cast<double>(scale) * codes[i] + off - x[i];
            err += e * e;
        }
        if (err < best_err) {
            best_err = err;
            best_scale = scale;
            best_offset = off;
            std::copy(codes, codes + n, L);
        }
    };

    // Least-squares (scale, offset) for the codes in `trial`.
    auto refit = [&]() {
        double sl = 0.0, sll = 0.0, sx = 0.0, sxl = 0.0;
        for (int i = 0; i < n; ++i) {
            sl += trial[i];
            sll += static_cast<double>(trial[i]) * trial[i];
            sx += x[i];
            sxl += static_cast<double>(x[i]) * trial[i];
        }
        const double det = n * sll - sl * sl;
        if (det <= 0.0) return;  // all codes equal: nothing to fit
        double scale = (n * sxl - sl * sx) / det;
        double off = (sll * sx - sl * sxl) / det;
        if (nonpositive_offset && off > 0.0) {
            off = 0.0;
            scale = sxl / sll;
        }
        if (scale <= 0.0) return;
        evaluate(static_cast<float>(scale), static_cast<float>(off), trial);
    };

    auto quantize_with = [&](float scale, float off) {
        requantize_affine(x, n, scale, -off, hi, trial);
    };

    const float range = mx - mn;
    quantize_with(range / static_cast<float>(hi), mn);
    evaluate(range / static_cast<float>(hi), mn, trial);
    for (int k = -5; k <= 10; ++k) {
        quantize_with(range / (static_cast<float>(hi) + 0.1f * static_cast<float>(k)), mn);
        refit();
    }
    for (int round = 0; round < 2; ++round) {
        quantize_with(best_scale, best_offset);
        refit();
    }

    *offset = best_offset;
    return best_scale;
}

// ------------------------------------------------------------------------------------------------
// Quantization: float formats and ggml-defined activation formats
// ------------------------------------------------------------------------------------------------

void quant_f32(const float* src, void* dst, int64_t n) {
    std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
}

void quant_f16(const float* src, void* dst, int64_t n) {
    uint8_t* p = as_bytes(dst);
    for (int64_t i = 0; i < n; ++i) store_f16(p + 2 * i, src[i]);
}

void quant_bf16(const float* src, void* dst, int64_t n) {
    uint8_t* p = as_bytes(dst);
    for (int64_t i = 0; i < n; ++i) store_u16(p + 2 * i, fp32_to_bf16(src[i]));
}

// ggml's quantize_row_q8_0_ref semantics: d = amax / 127 (stored f16), codes = roundf(x * (1/d))
// with the unrounded d, i.e. half away from zero.
void quant_q8_0(const float* src, void* dst, int64_t n) {
    uint8_t* b = as_bytes(dst);
    for (int64_t i = 0; i < n / kQK; ++i, b += q8_0::kBytes, src += kQK) {
        float amax = 0.0f;
        for (int j = 0; j < kQK; ++j) amax = std::max(amax, std::fabs(src[j]));
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        store_f16(b + q8_0::kD, d);
        int8_t* qs = reinterpret_cast<int8_t*>(b + q8_0::kQs);
        for (int j = 0; j < kQK; ++j) qs[j] = static_cast<int8_t>(std::round(src[j] * id));
    }
}

// As Q8_0, plus s = d * sum(qs) (float d, then rounded to f16), as quantize_row_q8_1_ref.
void quant_q8_1(const float* src, void* dst, int64_t n) {
    uint8_t* b = as_bytes(dst);
    for (int64_t i = 0; i < n / kQK; ++i, b += q8_1::kBytes, src += kQK) {
        float amax = 0.0f;
        for (int j = 0; j < kQK; ++j) amax = std::max(amax, std::fabs(src[j]));
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        store_f16(b + q8_1::kD, d);
        int8_t* qs = reinterpret_cast<int8_t*>(b + q8_1::kQs);
        int sum = 0;
        for (int j = 0; j < kQK; ++j) {
            qs[j] = static_cast<int8_t>(std::round(src[j] * id));
            sum += qs[j];
        }
        store_f16(b + q8_1::kS, static_cast<float>(sum) * d);
    }
}

// ggml's quantize_row_q8_K_ref semantics: the element with the largest |x| (first one on ties),
// with its sign, maps to -127; codes round half to even and are capped at 127; d = 1/iscale;
// bsums[k] = sum of codes 16k..16k+15. An all-zero block stores d = 0 and zero codes.
void quant_q8_k(const float* src, void* dst, int64_t n) {
    uint8_t* b = as_bytes(dst);
    for (int64_t i = 0; i < n / kQKK; ++i, b += q8_k::kBytes, src += kQKK) {
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < kQKK; ++j) {
            const float ax = std::fabs(src[j]);
            if (ax > amax) {
                amax = ax;
                max = src[j];
            }
        }
        int8_t* qs = reinterpret_cast<int8_t*>(b + q8_k::kQs);
        if (amax == 0.0f) {
            std::memset(b, 0, q8_k::kBytes);
            continue;
        }
        const float iscale = -127.0f / max;
        for (int j = 0; j < kQKK; ++j) qs[j] = static_cast<int8_t>(std::min(127, round_even(iscale * src[j])));
        for (int k = 0; k < 16; ++k) {
            int sum = 0;
            for (int j = 0; j < 16; ++j) sum += qs[16 * k + j];
            store_u16(b + q8_k::kBsums + 2 * k, static_cast<uint16_t>(static_cast<int16_t>(sum)));
        }
        store_f32(b + q8_k::kD, 1.0f / iscale);
    }
}

// Index of the doubled-E2M1 magnitude {0,1,2,3,4,6,8,12} * s nearest to ax >= 0, first on ties.
int nearest_mxfp4_magnitude(float ax, float s) {
    int best = 0;
    float best_err = ax;  // |0 * s - ax|
    for (int k = 1; k < 8; ++k) {
        const float err = std::fabs(static_cast<float>(kMxfp4Values[k]) * s - ax);
        if (err < best_err) {
            best_err = err;
            best = k;
        }
    }
    return best;
}

// Same encoding as ggml's quantize_row_mxfp4_ref: e = floor(log2(amax)) - 2 + 127 (0 for an
// all-zero block; clamped to the byte range), each element the nearest table value times
// S = 2^(e-128). Searching magnitudes and attaching the sign gives the same code as ggml's search
// over all 16 signed values (ties resolve to the smaller magnitude; zero is always +0).
void quant_mxfp4(const float* src, void* dst, int64_t n) {
    uint8_t* b = as_bytes(dst);
    for (int64_t i = 0; i < n / kQK; ++i, b += mxfp4::kBytes, src += kQK) {
        float amax = 0.0f;
        for (int j = 0; j < kQK; ++j) amax = std::max(amax, std::fabs(src[j]));
        int e = 0;
        if (amax > 0.0f) {
            const float fe = std::floor(std::log2(amax)) - 2.0f + 127.0f;
            e = static_cast<int>(std::min(255.0f, std::max(0.0f, fe)));
        }
        const float s = e8m0_to_fp32_half(static_cast<uint8_t>(e));
        b[mxfp4::kE] = static_cast<uint8_t>(e);
        auto code = [s](float v) {
            const int mag = nearest_mxfp4_magnitude(std::fabs(v), s);
            return (mag != 0 && v < 0.0f) ? mag | 8 : mag;
        };
        uint8_t* qs = b + mxfp4::kQs;
        for (int j = 0; j < 16; ++j) qs[j] = static_cast<uint8_t>(code(src[j]) | (code(src[j + 16]) << 4));
    }
}

// ------------------------------------------------------------------------------------------------
// Quantization: legacy weight formats (own scale search)
// ------------------------------------------------------------------------------------------------

// Packs 32 codes in [0, 15] (or the low 4 bits of 5-bit codes): element j -> low nibble of qs[j],
// element j+16 -> high nibble.
void pack_nibbles_32(const int* L, uint8_t* qs) {
    for (int j = 0; j < 16; ++j) qs[j] = static_cast<uint8_t>((L[j] & 0xF) | ((L[j + 16] & 0xF) << 4));
}

// The 5th bits of 32 codes as the little-endian u32 qh (bit j = element j).
void pack_high_bits_32(const int* L, uint8_t* qh) {
    uint32_t h = 0;
    for (int j = 0; j < 32; ++j) h |= static_cast<uint32_t>((L[j] >> 4) & 1) << j;
    std::memcpy(qh, &h, sizeof h);
}

// Symmetric legacy block: fit, store d as f16, re-derive the codes from the stored d, return codes
// biased into [0, 2*half) (Q4_0: half = 8, Q5_0: half = 16).
void quantize_symmetric_block(const float* x, int half, uint8_t* d_out, int* L) {
    const float d = fit_symmetric(x, kQK, -half, half - 1, L);
    store_f16(d_out, d);
    requantize_symmetric(x, kQK, load_f16(d_out), -half, half - 1, L);
    for (int j = 0; j < kQK; ++j) L[j] += half;
}

// Affine legacy block: fit x ≈ d * L + m, store d and m as f16, re-derive the codes.
void quantize_affine_block(const float* x, int hi, uint8_t* d_out, uint8_t* m_out, int* L) {
    float m;
    const float d = fit_affine(x, kQK, hi, false, L, &m);
    store_f16(d_out, d);
    store_f16(m_out, m);
    requantize_affine(x, kQK, load_f16(d_out), -load_f16(m_out), hi, L);
}

void quant_q4_0(const float* src, void* dst, int64_t n) {
    uint8_t* b = as_bytes(dst);
    int L[kQK];
    for (int64_t i = 0; i < n / kQK; ++i, b += q4_0::kBytes, src += kQK) {
        quantize_symmetric_block(src, 8, b + q4_0::kD, L);
        pack_nibbles_32(L, b + q4_0::kQs);
    }
}

void quant_q5_0(const float* src, void* dst, int64_t n) {
    uint8_t* b = as_bytes(dst);
    int L[kQK];
    for (int64_t i = 0; i < n / kQK; ++i, b += q5_0::kBytes, src += kQK) {
        quantize_symmetric_block(src, 16, b + q5_0::kD, L);
        pack_high_bits_32(L, b + q5_0::kQh);
        pack_nibbles_32(L, b + q5_0::kQs);
    }
}

void quant_q4_1(const float* src, void* dst, int64_t n) {
    uint8_t* b = as_bytes(dst);
    int L[kQK];
    for (int64_t i = 0; i < n / kQK; ++i, b += q4_1::kBytes, src += kQK) {
        quantize_affine_block(src, 15, b + q4_1::kD, b + q4_1::kM, L);
        pack_nibbles_32(L, b + q4_1::kQs);
    }
}

void quant_q5_1(const float* src, void* dst, int64_t n) {
    uint8_t* b = as_bytes(dst);
    int L[kQK];
    for (int64_t i = 0; i < n / kQK; ++i, b += q5_1::kBytes, src += kQK) {
        quantize_affine_block(src, 31, b + q5_1::kD, b + q5_1::kM, L);
        pack_high_bits_32(L, b + q5_1::kQh);
        pack_nibbles_32(L, b + q5_1::kQs);
    }
}

// ------------------------------------------------------------------------------------------------
// Quantization: K-quants (own scale search, ggml packing)
// ------------------------------------------------------------------------------------------------

// Affine K-quant super-block (Q2_K, Q4_K, Q5_K): x ≈ (d*sc[k]) * L - (dmin*m[k]) for sub-block k of
// `sub` elements, codes in [0, qmax], sc/m unsigned integers in [0, smax].
// Fills sc, m, the final codes L[256] and returns d and dmin as the f16 values actually stored.
struct AffineSuperBlock {
    uint16_t d, dmin;      // f16 bits
    int sc[16], m[16];     // per sub-block (8 or 16 used)
    int L[kQKK];
};

void quantize_affine_super_block(const float* x, int sub, int qmax, int smax, AffineSuperBlock& out) {
    const int nsub = kQKK / sub;
    float scale[16], min[16];
    float max_scale = 0.0f, max_min = 0.0f;
    for (int k = 0; k < nsub; ++k) {
        float off;
        scale[k] = fit_affine(x + sub * k, sub, qmax, true, out.L + sub * k, &off);
        min[k] = -off;  // >= 0
        max_scale = std::max(max_scale, scale[k]);
        max_min = std::max(max_min, min[k]);
    }
    out.d = fp32_to_fp16(max_scale / static_cast<float>(smax));
    out.dmin = fp32_to_fp16(max_min / static_cast<float>(smax));
    const float d = fp16_to_fp32(out.d), dmin = fp16_to_fp32(out.dmin);
    const bool d_ok = d > 0.0f && std::isfinite(d), dmin_ok = dmin > 0.0f && std::isfinite(dmin);
    for (int k = 0; k < nsub; ++k) {
        out.sc[k] = d_ok ? round_clamp(scale[k] / d, 0, smax) : 0;
        out.m[k] = dmin_ok ? round_clamp(min[k] / dmin, 0, smax) : 0;
        // Codes from the scale and min exactly as the dequantizer will form them.
        const float dl = d * static_cast<float>(out.sc[k]);
        const float ml = dmin * static_cast<float>(out.m[k]);
        requantize_affine(x + sub * k, sub, dl, ml, qmax, out.L + sub * k);
    }
}

// Symmetric K-quant super-block (Q3_K, Q6_K): x ≈ (d*sc[k]) * L for sub-blocks of 16, codes in
// [-half, half-1], signed scales in [slo, shi]; the sub-block scale of largest magnitude maps to slo.
struct SymmetricSuperBlock {
    uint16_t d;  // f16 bits
    int sc[16];  // signed sub-block scales
    int L[kQKK]; // signed codes
};

void quantize_symmetric_super_block(const float* x, int half, int slo, int shi, SymmetricSuperBlock& out) {
    float scale[16];
    float amax = 0.0f, max = 0.0f;
    for (int k = 0; k < 16; ++k) {
        scale[k] = fit_symmetric(x + 16 * k, 16, -half, half - 1, out.L + 16 * k);
        if (std::fabs(scale[k]) > amax) {
            amax = std::fabs(scale[k]);
            max = scale[k];
        }
    }
    out.d = fp32_to_fp16(max / static_cast<float>(slo));
    const float d = fp16_to_fp32(out.d);
    const bool d_ok = d != 0.0f && std::isfinite(d);
    for (int k = 0; k < 16; ++k) {
        out.sc[k] = d_ok ? round_clamp(scale[k] / d, slo, shi) : 0;
        requantize_symmetric(x + 16 * k, 16, d * static_cast<float>(out.sc[k]), -half, half - 1, out.L + 16 * k);
    }
}

// Inverse of unpack_scale_min_k4 (layout in block_layout.h).
void pack_scale_min_k4(const int* sc, const int* m, uint8_t* s) {
    for (int j = 0; j < 4; ++j) {
        s[j] = static_cast<uint8_t>(sc[j] | ((sc[j + 4] >> 4) << 6));
        s[j + 4] = static_cast<uint8_t>(m[j] | ((m[j + 4] >> 4) << 6));
        s[j + 8] = static_cast<uint8_t>((sc[j + 4] & 0xF) | ((m[j + 4] & 0xF) << 4));
    }
}

void quant_q2_k(const float* src, void* dst, int64_t n) {
    uint8_t* b = as_bytes(dst);
    AffineSuperBlock sb;
    for (int64_t i = 0; i < n / kQKK; ++i, b += q2_k::kBytes, src += kQKK) {
        quantize_affine_super_block(src, 16, 3, 15, sb);
        for (int k = 0; k < 16; ++k) b[q2_k::kScales + k] = static_cast<uint8_t>(sb.sc[k] | (sb.m[k] << 4));
        // Element 128*half + 32*j + l (l < 32) -> bits 2j..2j+1 of qs[32*half + l].
        uint8_t* qs = b + q2_k::kQs;
        std::memset(qs, 0, 64);
        for (int e = 0; e < kQKK; ++e) {
            const int half = e / 128, j = (e % 128) / 32, l = e % 32;
            qs[32 * half + l] |= static_cast<uint8_t>(sb.L[e] << (2 * j));
        }
        store_u16(b + q2_k::kD, sb.d);
        store_u16(b + q2_k::kDmin, sb.dmin);
    }
}

void quant_q3_k(const float* src, void* dst, int64_t n) {
    uint8_t* b = as_bytes(dst);
    SymmetricSuperBlock sb;
    for (int64_t i = 0; i < n / kQKK; ++i, b += q3_k::kBytes, src += kQKK) {
        quantize_symmetric_super_block(src, 4, -32, 31, sb);
        // Codes L in [-4, 3] are stored as L + 4 in [0, 7]: low 2 bits in qs (order as Q2_K), bit 2 in
        // hmask bit (4*half + j) of hmask[l].
        uint8_t* hmask = b + q3_k::kHmask;
        uint8_t* qs = b + q3_k::kQs;
        std::memset(b, 0, q3_k::kScales);  // hmask and qs
        for (int e = 0; e < kQKK; ++e) {
            const int half = e / 128, j = (e % 128) / 32, l = e % 32;
            const int u = sb.L[e] + 4;
            qs[32 * half + l] |= static_cast<uint8_t>((u & 3) << (2 * j));
            hmask[l] |= static_cast<uint8_t>((u >> 2) << (4 * half + j));
        }
        // Inverse of unpack_scales_q3_k, on the biased scales s = sc + 32.
        int s[16];
        for (int k = 0; k < 16; ++k) s[k] = sb.sc[k] + 32;
        uint8_t* sp = b + q3_k::kScales;
        for (int j = 0; j < 4; ++j) {
            sp[j] = static_cast<uint8_t>((s[j] & 0xF) | ((s[8 + j] & 0xF) << 4));
            sp[4 + j] = static_cast<uint8_t>((s[4 + j] & 0xF) | ((s[12 + j] & 0xF) << 4));
            sp[8 + j] = static_cast<uint8_t>((s[j] >> 4) | ((s[4 + j] >> 4) << 2) | ((s[8 + j] >> 4) << 4) |
                                             ((s[12 + j] >> 4) << 6));
        }
        store_u16(b + q3_k::kD, sb.d);
    }
}

void quant_q4_k(const float* src, void* dst, int64_t n) {
    uint8_t* b = as_bytes(dst);
    AffineSuperBlock sb;
    for (int64_t i = 0; i < n / kQKK; ++i, b += q4_k::kBytes, src += kQKK) {
        quantize_affine_super_block(src, 32, 15, 63, sb);
        store_u16(b + q4_k::kD, sb.d);
        store_u16(b + q4_k::kDmin, sb.dmin);
        pack_scale_min_k4(sb.sc, sb.m, b + q4_k::kScales);
        // Chunk c: sub-block 2c in the low nibbles of qs[32c..32c+31], sub-block 2c+1 in the high.
        uint8_t* qs = b + q4_k::kQs;
        for (int c = 0; c < 4; ++c) {
            for (int l = 0; l < 32; ++l) {
                qs[32 * c + l] = static_cast<uint8_t>(sb.L[64 * c + l] | (sb.L[64 * c + 32 + l] << 4));
            }
        }
    }
}

void quant_q5_k(const float* src, void* dst, int64_t n) {
    uint8_t* b = as_bytes(dst);
    AffineSuperBlock sb;
    for (int64_t i = 0; i < n / kQKK; ++i, b += q5_k::kBytes, src += kQKK) {
        quantize_affine_super_block(src, 32, 31, 63, sb);
        store_u16(b + q5_k::kD, sb.d);
        store_u16(b + q5_k::kDmin, sb.dmin);
        pack_scale_min_k4(sb.sc, sb.m, b + q5_k::kScales);
        // Low 4 bits as Q4_K; bit 4 of element 32k + l -> bit k of qh[l].
        uint8_t* qh = b + q5_k::kQh;
        uint8_t* qs = b + q5_k::kQs;
        std::memset(qh, 0, 32);
        for (int c = 0; c < 4; ++c) {
            for (int l = 0; l < 32; ++l) {
                qs[32 * c + l] = static_cast<uint8_t>((sb.L[64 * c + l] & 0xF) | ((sb.L[64 * c + 32 + l] & 0xF) << 4));
            }
        }
        for (int e = 0; e < kQKK; ++e) qh[e % 32] |= static_cast<uint8_t>(((sb.L[e] >> 4) & 1) << (e / 32));
    }
}

void quant_q6_k(const float* src, void* dst, int64_t n) {
    uint8_t* b = as_bytes(dst);
    SymmetricSuperBlock sb;
    for (int64_t i = 0; i < n / kQKK; ++i, b += q6_k::kBytes, src += kQKK) {
        quantize_symmetric_super_block(src, 32, -128, 127, sb);
        // Codes L + 32 in [0, 63]; see dequant_q6_k for where the four elements of each l go.
        for (int half = 0; half < 2; ++half) {
            const int* u = sb.L + 128 * half;
            uint8_t* ql = b + q6_k::kQl + 64 * half;
            uint8_t* qh = b + q6_k::kQh + 32 * half;
            for (int l = 0; l < 32; ++l) {
                const int u1 = u[l] + 32, u2 = u[l + 32] + 32, u3 = u[l + 64] + 32, u4 = u[l + 96] + 32;
                ql[l] = static_cast<uint8_t>((u1 & 0xF) | ((u3 & 0xF) << 4));
                ql[l + 32] = static_cast<uint8_t>((u2 & 0xF) | ((u4 & 0xF) << 4));
                qh[l] = static_cast<uint8_t>((u1 >> 4) | ((u2 >> 4) << 2) | ((u3 >> 4) << 4) | ((u4 >> 4) << 6));
            }
        }
        for (int k = 0; k < 16; ++k) b[q6_k::kScales + k] = static_cast<uint8_t>(static_cast<int8_t>(sb.sc[k]));
        store_u16(b + q6_k::kD, sb.d);
    }
}

}  // namespace

void fill_scalar_kernels(QuantKernels& k) {
    auto set = [&k](GgmlType t, DequantizeRowFn deq, QuantizeRowFn q) {
        k.dequantize[static_cast<uint32_t>(t)] = deq;
        k.quantize[static_cast<uint32_t>(t)] = q;
    };
    set(GgmlType::F32, dequant_f32, quant_f32);
    set(GgmlType::F16, dequant_f16, quant_f16);
    set(GgmlType::BF16, dequant_bf16, quant_bf16);
    set(GgmlType::Q4_0, dequant_q4_0, quant_q4_0);
    set(GgmlType::Q4_1, dequant_q4_1, quant_q4_1);
    set(GgmlType::Q5_0, dequant_q5_0, quant_q5_0);
    set(GgmlType::Q5_1, dequant_q5_1, quant_q5_1);
    set(GgmlType::Q8_0, dequant_q8_legacy<q8_0::kBytes, q8_0::kQs>, quant_q8_0);
    set(GgmlType::Q8_1, dequant_q8_legacy<q8_1::kBytes, q8_1::kQs>, quant_q8_1);
    set(GgmlType::Q2_K, dequant_q2_k, quant_q2_k);
    set(GgmlType::Q3_K, dequant_q3_k, quant_q3_k);
    set(GgmlType::Q4_K, dequant_q4_k, quant_q4_k);
    set(GgmlType::Q5_K, dequant_q5_k, quant_q5_k);
    set(GgmlType::Q6_K, dequant_q6_k, quant_q6_k);
    set(GgmlType::Q8_K, dequant_q8_k, quant_q8_k);
    set(GgmlType::MXFP4, dequant_mxfp4, quant_mxfp4);
}

}  // namespace moe::quant
