// The element-wise and dot-product kernels of ggml's AVX-512 CPU build (llama.cpp's zen4,
// skylakex, icelake, ... variants), reproduced operation for operation so results match it bit for
// bit (see ops.h):
//   - ggml_v_expf / ggml_v_silu: the 16-lane exp polynomial with its +1 folded into the
//     polynomial and the scaling by 2^n done by vscalefps, saturating when |n| > 192;
//   - ggml_vec_soft_max_f32: exp chunks of 16, each summed by _mm512_reduce_add_ps and added to a
//     double;
//   - tinyBLAS (llamafile sgemm) dots: one 16-lane FMA chain, hsum = _mm512_reduce_add_ps;
//   - ggml_vec_dot: four 16-lane FMA accumulators over steps of 64, GGML_F32x16_REDUCE (x0 + x2,
//     x1 + x3, x0 + x1, then _mm512_reduce_add_ps), the tail added one by one.
// _mm512_reduce_add_ps is spelled out as GCC defines it (hi256 + lo256, hi128 + lo128, lanes
// 0 + 2 / 1 + 3, lane 0 + 1) so the tree does not depend on this compiler's header.
// Compiled with AVX-512 F/BW/VL/DQ + AVX2/FMA/F16C flags; entered only at the Avx512 level.
#include "ops.h"

#if defined(__x86_64__) || defined(_M_X64)

#if (defined(__GNUC__) || defined(__clang__)) && !(defined(__AVX512F__) && defined(__AVX512DQ__) && defined(__FMA__))
#error "ops_avx512.cc must be compiled with the AVX-512 F/BW/VL/DQ flags"
#endif

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace moe::kernels {

namespace {

// exp(x) as ggml's AVX-512 build computes it: n = round(x / ln2), b = x - n ln2 (two-part ln2),
// exp(b) by a degree-5 polynomial ending in +1, scaled by 2^n with vscalefps; |n| > 192 gives 0
// (n <= 0) or +inf.
inline __m512 v_expf(__m512 x) {
    const __m512 shift = _mm512_set1_ps(0x1.8p23f);
    const __m512 z = _mm512_fmadd_ps(x, _mm512_set1_ps(0x1.715476p+0f), shift);
    const __m512 n = _mm512_sub_ps(z, shift);
    const __m512 b = _mm512_fnmadd_ps(n, _mm512_set1_ps(0x1.7f7d1cp-20f),
                                      _mm512_fnmadd_ps(n, _mm512_set1_ps(0x1.62e4p-1f), x));
    const __mmask16 huge = _mm512_cmp_ps_mask(_mm512_abs_ps(n), _mm512_set1_ps(192.0f), _CMP_GT_OQ);
    const __m512 u = _mm512_mul_ps(b, b);
    const __m512 hi = _mm512_fmadd_ps(_mm512_set1_ps(0x1.0e4020p-7f), b, _mm512_set1_ps(0x1.573e2ep-5f));
    const __m512 mid = _mm512_fmadd_ps(_mm512_set1_ps(0x1.555e66p-3f), b, _mm512_set1_ps(0x1.fffdb6p-2f));
    const __m512 lo = _mm512_fmadd_ps(_mm512_set1_ps(0x1.ffffecp-1f), b, _mm512_set1_ps(1.0f));
    const __m512 j = _mm512_fmadd_ps(_mm512_fmadd_ps(hi, u, mid), u, lo);
    // (the zero-masked form with every lane selected: GCC 12's plain _mm512_scalef_ps trips
    // -Wuninitialized on its own header)
    const __m512 res = _mm512_maskz_scalef_ps(static_cast<__mmask16>(0xffff), j, n);
    if (huge == 0) return res;
    const __mmask16 non_positive = _mm512_cmp_ps_mask(n, _mm512_setzero_ps(), _CMP_LE_OQ);
    const __m512 saturated = _mm512_mask_blend_ps(non_positive, _mm512_set1_ps(std::numeric_limits<float>::infinity()),
                                                  _mm512_setzero_ps());
    return _mm512_mask_blend_ps(huge, res, saturated);
}

inline __m512 v_silu(__m512 x) {
    const __m512 e = v_expf(_mm512_sub_ps(_mm512_setzero_ps(), x));
    return _mm512_div_ps(x, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
}

// GCC's _mm512_reduce_add_ps tree.
inline float reduce16(__m512 v) {
    const __m256 t3 = _mm256_add_ps(_mm512_extractf32x8_ps(v, 1), _mm512_extractf32x8_ps(v, 0));
    const __m128 t6 = _mm_add_ps(_mm256_extractf128_ps(t3, 1), _mm256_castps256_ps128(t3));
    const __m128 t8 = _mm_add_ps(t6, _mm_shuffle_ps(t6, t6, _MM_SHUFFLE(1, 0, 3, 2)));
    return _mm_cvtss_f32(_mm_add_ss(t8, _mm_movehdup_ps(t8)));
}

// _mm512_cvtph_ps with every lane selected: the same instruction, without GCC 12's false
// "may be used uninitialized" about the unmasked form's undefined pass-through operand.
inline __m512 cvtph(__m256i h) { return _mm512_maskz_cvtph_ps(static_cast<__mmask16>(0xFFFF), h); }

inline __mmask16 lane_mask(int64_t count) {
    return count >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << count) - 1u);
}

}  // namespace

float expf_avx512(float x) { return _mm512_cvtss_f32(v_expf(_mm512_set1_ps(x))); }

void softmax_avx512(float* x, int64_t n, int64_t n_simd, float sink) {
    float max = -std::numeric_limits<float>::infinity();
    for (int64_t i = 0; i < n; ++i) max = max > x[i] ? max : x[i];  // ggml_vec_max_f32
    max = max > sink ? max : sink;  // ggml's MAX(max, sink)
    const __m512 vmax = _mm512_set1_ps(max);
    const __m512 neg_inf = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
    double sum = 0.0;
    const int64_t vec_end = std::min(n, n_simd);
    for (int64_t i = 0; i < vec_end; i += 16) {
        // Lanes past n are masked cells of llama.cpp's padded row: exp(-inf) = 0.
        const __mmask16 m = lane_mask(n - i);
        const __m512 e = v_expf(_mm512_sub_ps(_mm512_mask_loadu_ps(neg_inf, m, x + i), vmax));
        _mm512_mask_storeu_ps(x + i, m, e);
        sum += static_cast<double>(reduce16(e));
    }
    for (int64_t i = std::max<int64_t>(n_simd, 0); i < n; ++i) {
        const float e = std::exp(x[i] - max);
        sum += static_cast<double>(e);
        x[i] = e;
    }
    sum += static_cast<double>(std::exp(sink - max));  // exp(-inf) = 0 without a sink
    const float inv = static_cast<float>(1.0 / sum);
    for (int64_t i = 0; i < n; ++i) x[i] *= inv;
}

void swiglu_avx512(const float* g, const float* u, float* y, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        _mm512_storeu_ps(y + i, _mm512_mul_ps(v_silu(_mm512_loadu_ps(g + i)), _mm512_loadu_ps(u + i)));
    }
    for (; i < n; ++i) y[i] = silu(g[i]) * u[i];
}

float dot_gemm_avx512(const float* a, const float* b, int64_t n) {
    __m512 acc = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) acc = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc);
    if (i < n) {
        const __mmask16 m = lane_mask(n - i);
        acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), acc);
    }
    return reduce16(acc);
}

void dot_gemm_4x4_avx512(const float* const a[4], const float* const b[4], int64_t n, float out[16]) {
    // Sixteen named accumulators: GCC keeps them in zmm registers only when they are not an array.
    __m512 c00 = _mm512_setzero_ps(), c01 = c00, c02 = c00, c03 = c00, c10 = c00, c11 = c00, c12 = c00, c13 = c00;
    __m512 c20 = c00, c21 = c00, c22 = c00, c23 = c00, c30 = c00, c31 = c00, c32 = c00, c33 = c00;
    const float *a0 = a[0], *a1 = a[1], *a2 = a[2], *a3 = a[3], *b0 = b[0], *b1 = b[1], *b2 = b[2], *b3 = b[3];
    const auto step = [&](__m512 x0, __m512 x1, __m512 x2, __m512 x3, __m512 y0, __m512 y1, __m512 y2, __m512 y3) {
        c00 = _mm512_fmadd_ps(x0, y0, c00), c01 = _mm512_fmadd_ps(x0, y1, c01);
        c02 = _mm512_fmadd_ps(x0, y2, c02), c03 = _mm512_fmadd_ps(x0, y3, c03);
        c10 = _mm512_fmadd_ps(x1, y0, c10), c11 = _mm512_fmadd_ps(x1, y1, c11);
        c12 = _mm512_fmadd_ps(x1, y2, c12), c13 = _mm512_fmadd_ps(x1, y3, c13);
        c20 = _mm512_fmadd_ps(x2, y0, c20), c21 = _mm512_fmadd_ps(x2, y1, c21);
        c22 = _mm512_fmadd_ps(x2, y2, c22), c23 = _mm512_fmadd_ps(x2, y3, c23);
        c30 = _mm512_fmadd_ps(x3, y0, c30), c31 = _mm512_fmadd_ps(x3, y1, c31);
        c32 = _mm512_fmadd_ps(x3, y2, c32), c33 = _mm512_fmadd_ps(x3, y3, c33);
    };
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        step(_mm512_loadu_ps(a0 + i), _mm512_loadu_ps(a1 + i), _mm512_loadu_ps(a2 + i), _mm512_loadu_ps(a3 + i),
             _mm512_loadu_ps(b0 + i), _mm512_loadu_ps(b1 + i), _mm512_loadu_ps(b2 + i), _mm512_loadu_ps(b3 + i));
    }
    if (i < n) {
        const __mmask16 m = lane_mask(n - i);
        step(_mm512_maskz_loadu_ps(m, a0 + i), _mm512_maskz_loadu_ps(m, a1 + i), _mm512_maskz_loadu_ps(m, a2 + i),
             _mm512_maskz_loadu_ps(m, a3 + i), _mm512_maskz_loadu_ps(m, b0 + i), _mm512_maskz_loadu_ps(m, b1 + i),
             _mm512_maskz_loadu_ps(m, b2 + i), _mm512_maskz_loadu_ps(m, b3 + i));
    }
    const __m512 acc[16] = {c00, c01, c02, c03, c10, c11, c12, c13, c20, c21, c22, c23, c30, c31, c32, c33};
    for (int t = 0; t < 16; ++t) out[t] = reduce16(acc[t]);
}

float dot_gemv_avx512(const float* a, const float* b, int64_t n, int64_t n_vec, bool double_tail) {
    __m512 x[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    const int64_t nv = std::min(n, n_vec);
    int64_t i = 0;
    for (; i + 64 <= nv; i += 64) {
        for (int r = 0; r < 4; ++r) {
            x[r] = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16 * r), _mm512_loadu_ps(b + i + 16 * r), x[r]);
        }
    }
    for (int r = 0; r < 4 && i + 16 * r < nv; ++r) {  // a partial step: entries past n are zero
        const __mmask16 m = lane_mask(nv - i - 16 * r);
        x[r] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i + 16 * r), _mm512_maskz_loadu_ps(m, b + i + 16 * r), x[r]);
    }
    x[0] = _mm512_add_ps(x[0], x[2]);
    x[1] = _mm512_add_ps(x[1], x[3]);
    x[0] = _mm512_add_ps(x[0], x[1]);
    const float res = reduce16(x[0]);
    if (double_tail) {
        double sum = res;
        for (int64_t t = std::max<int64_t>(n_vec, 0); t < n; ++t) sum += static_cast<double>(a[t] * b[t]);
        return static_cast<float>(sum);
    }
    float sum = res;
    for (int64_t t = std::max<int64_t>(n_vec, 0); t < n; ++t) sum = std::fma(a[t], b[t], sum);
    return sum;
}


void dot_gemv_f16_4x4_avx512(const float* const a[4], const uint16_t* const b[4], int64_t n, float out[16]) {
    // ggml_vec_dot_f16 keeps four accumulators: chain ch takes elements [64 i + 16 ch, 64 i + 16 ch + 16).
    // The chains are independent sums, so each runs on its own pass over the sixteen dots, which
    // keeps a 4 x 4 tile of accumulators in registers and every loaded vector used four times. The
    // passes go block by block (kBlock elements of the eight rows stay in L1 for the four chains).
    constexpr int64_t kBlock = 1024;
    __m512 chains[4][16];
    for (auto& ch : chains) {
        for (auto& c : ch) c = _mm512_setzero_ps();
    }
    const float *a0 = a[0], *a1 = a[1], *a2 = a[2], *a3 = a[3];
    const uint16_t *b0 = b[0], *b1 = b[1], *b2 = b[2], *b3 = b[3];
    const auto h = [](const uint16_t* p) { return cvtph(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); };
    const auto hm = [](__mmask16 m, const uint16_t* p) {
        return cvtph(_mm256_maskz_loadu_epi16(m, reinterpret_cast<const __m256i*>(p)));
    };
    for (int64_t base = 0; base < n; base += kBlock) {
        const int64_t end = std::min(n, base + kBlock);
        for (int ch = 0; ch < 4; ++ch) {
            __m512* acc = chains[ch];
            __m512 c00 = acc[0], c01 = acc[1], c02 = acc[2], c03 = acc[3], c10 = acc[4], c11 = acc[5], c12 = acc[6],
                   c13 = acc[7], c20 = acc[8], c21 = acc[9], c22 = acc[10], c23 = acc[11], c30 = acc[12], c31 = acc[13],
                   c32 = acc[14], c33 = acc[15];
            const auto step = [&](__m512 x0, __m512 x1, __m512 x2, __m512 x3, __m512 y0, __m512 y1, __m512 y2, __m512 y3) {
                c00 = _mm512_fmadd_ps(x0, y0, c00), c01 = _mm512_fmadd_ps(x0, y1, c01);
                c02 = _mm512_fmadd_ps(x0, y2, c02), c03 = _mm512_fmadd_ps(x0, y3, c03);
                c10 = _mm512_fmadd_ps(x1, y0, c10), c11 = _mm512_fmadd_ps(x1, y1, c11);
                c12 = _mm512_fmadd_ps(x1, y2, c12), c13 = _mm512_fmadd_ps(x1, y3, c13);
                c20 = _mm512_fmadd_ps(x2, y0, c20), c21 = _mm512_fmadd_ps(x2, y1, c21);
                c22 = _mm512_fmadd_ps(x2, y2, c22), c23 = _mm512_fmadd_ps(x2, y3, c23);
                c30 = _mm512_fmadd_ps(x3, y0, c30), c31 = _mm512_fmadd_ps(x3, y1, c31);
                c32 = _mm512_fmadd_ps(x3, y2, c32), c33 = _mm512_fmadd_ps(x3, y3, c33);
            };
            int64_t i = base + 16 * ch;
            for (; i + 16 <= end; i += 64) {
                step(_mm512_loadu_ps(a0 + i), _mm512_loadu_ps(a1 + i), _mm512_loadu_ps(a2 + i), _mm512_loadu_ps(a3 + i),
                     h(b0 + i), h(b1 + i), h(b2 + i), h(b3 + i));
            }
            if (i < end) {  // the partial step (last block only): entries past n count as zero
                const __mmask16 m = lane_mask(end - i);
                step(_mm512_maskz_loadu_ps(m, a0 + i), _mm512_maskz_loadu_ps(m, a1 + i), _mm512_maskz_loadu_ps(m, a2 + i),
                     _mm512_maskz_loadu_ps(m, a3 + i), hm(m, b0 + i), hm(m, b1 + i), hm(m, b2 + i), hm(m, b3 + i));
            }
            acc[0] = c00, acc[1] = c01, acc[2] = c02, acc[3] = c03, acc[4] = c10, acc[5] = c11, acc[6] = c12, acc[7] = c13;
            acc[8] = c20, acc[9] = c21, acc[10] = c22, acc[11] = c23, acc[12] = c30, acc[13] = c31, acc[14] = c32, acc[15] = c33;
        }
    }
    for (int t = 0; t < 16; ++t) {  // GGML_F32x16_REDUCE
        const __m512 x0 = _mm512_add_ps(chains[0][t], chains[2][t]);
        const __m512 x1 = _mm512_add_ps(chains[1][t], chains[3][t]);
        out[t] = reduce16(_mm512_add_ps(x0, x1));
    }
}

void dot_gemv_rows_f16_x64_avx512(const float* const* p, float* const* out, int n_heads, const uint16_t* const* rows,
                                  int64_t d_off, int64_t n) {
    // out[h][d] = Σ_k p[h][k] · rows[k][d_off + d] in ggml_vec_dot_f16's order over k, with the rows
    // in memory (no transposed copy). In that order the product of element k lands in lane k % 16
    // of chain (k / 16) % 4: 64 running sums per output, each a chain of fused multiply-adds in
    // increasing k. Here the vector runs over 16 outputs d instead of over the lanes, so each
    // register lane is one such running sum, accumulated with the same operations in the same
    // order; the lane/chain tree is then applied across registers. Rows go in blocks of kBlock
    // (their 128-byte segments stay in L2 while every head uses them).
    constexpr int64_t kBlock = 1024;
    const int n_quads = n_heads / 4;
    static thread_local std::vector<float> partial_store;
    partial_store.assign(static_cast<size_t>(n_quads) * 64 * 16 * 16, 0.0f);
    float* partial = partial_store.data();  // partial: [quad][k % 64][4 h + d / 16][16 lanes]
    for (int64_t base = 0; base < n; base += kBlock) {
        const int64_t end = std::min(n, base + kBlock);
        for (int quad = 0; quad < n_quads; ++quad) {
            const float *p0 = p[4 * quad], *p1 = p[4 * quad + 1], *p2 = p[4 * quad + 2], *p3 = p[4 * quad + 3];
            for (int r = 0; r < 64; ++r) {
                float* acc = partial + (static_cast<size_t>(quad) * 64 + r) * 256;
                const auto ld = [acc](int t) { return _mm512_loadu_ps(acc + 16 * t); };
                __m512 c00 = ld(0), c01 = ld(1), c02 = ld(2), c03 = ld(3), c10 = ld(4), c11 = ld(5), c12 = ld(6),
                       c13 = ld(7), c20 = ld(8), c21 = ld(9), c22 = ld(10), c23 = ld(11), c30 = ld(12), c31 = ld(13),
                       c32 = ld(14), c33 = ld(15);
                for (int64_t k = base + r; k < end; k += 64) {
                    const uint16_t* row = rows[k] + d_off;
                    const __m512 v0 = cvtph(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(row)));
                    const __m512 v1 = cvtph(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + 16)));
                    const __m512 v2 = cvtph(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + 32)));
                    const __m512 v3 = cvtph(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + 48)));
                    const __m512 w0 = _mm512_set1_ps(p0[k]), w1 = _mm512_set1_ps(p1[k]);
                    const __m512 w2 = _mm512_set1_ps(p2[k]), w3 = _mm512_set1_ps(p3[k]);
                    c00 = _mm512_fmadd_ps(w0, v0, c00), c01 = _mm512_fmadd_ps(w0, v1, c01);
                    c02 = _mm512_fmadd_ps(w0, v2, c02), c03 = _mm512_fmadd_ps(w0, v3, c03);
                    c10 = _mm512_fmadd_ps(w1, v0, c10), c11 = _mm512_fmadd_ps(w1, v1, c11);
                    c12 = _mm512_fmadd_ps(w1, v2, c12), c13 = _mm512_fmadd_ps(w1, v3, c13);
                    c20 = _mm512_fmadd_ps(w2, v0, c20), c21 = _mm512_fmadd_ps(w2, v1, c21);
                    c22 = _mm512_fmadd_ps(w2, v2, c22), c23 = _mm512_fmadd_ps(w2, v3, c23);
                    c30 = _mm512_fmadd_ps(w3, v0, c30), c31 = _mm512_fmadd_ps(w3, v1, c31);
                    c32 = _mm512_fmadd_ps(w3, v2, c32), c33 = _mm512_fmadd_ps(w3, v3, c33);
                }
                const __m512 done[16] = {c00, c01, c02, c03, c10, c11, c12, c13, c20, c21, c22, c23, c30, c31, c32, c33};
                for (int t = 0; t < 16; ++t) _mm512_storeu_ps(acc + 16 * t, done[t]);
            }
        }
    }
    for (int quad = 0; quad < n_quads; ++quad) {
        const float* part = partial + static_cast<size_t>(quad) * 64 * 256;
        const auto at = [part](int r, int t) { return _mm512_loadu_ps(part + r * 256 + 16 * t); };
        for (int t = 0; t < 16; ++t) {
            // x0 + x2, x1 + x3, x0 + x1 per lane l (chains are k / 16 % 4), then reduce16's tree over
            // the lanes: l + 8, then + 4, then + 2, then + 1.
            __m512 y[16];
            for (int l = 0; l < 16; ++l) {
                y[l] = _mm512_add_ps(_mm512_add_ps(at(l, t), at(32 + l, t)), _mm512_add_ps(at(16 + l, t), at(48 + l, t)));
            }
            for (int l = 0; l < 8; ++l) y[l] = _mm512_add_ps(y[8 + l], y[l]);
            for (int l = 0; l < 4; ++l) y[l] = _mm512_add_ps(y[4 + l], y[l]);
            const __m512 t0 = _mm512_add_ps(y[0], y[2]), t1 = _mm512_add_ps(y[1], y[3]);
            _mm512_storeu_ps(out[4 * quad + t / 4] + 16 * (t % 4), _mm512_add_ps(t0, t1));
        }
    }
}

}  // namespace moe::kernels

#endif  // x86-64
