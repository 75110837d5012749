// The element-wise and dot-product kernels of ggml's AVX2 + FMA CPU build (llama.cpp's "haswell"
// variant), reproduced operation for operation so results match it bit for bit (see ops.h):
//   - ggml_v_expf / ggml_v_silu: the 8-lane exp polynomial (an ARM optimized-routines adaptation)
//     with its large-|x| fix-up, and SiLU as x / (1 + exp(-x));
//   - ggml_vec_soft_max_f32: exp chunks of 8, each summed by a 128-bit fold + movehl + movehdup
//     and added to a double;
//   - tinyBLAS (llamafile sgemm) dots: one 8-lane FMA chain, hsum = fold, movehl, movehdup;
//   - ggml_vec_dot: four 8-lane FMA accumulators over steps of 32, GGML_F32x8_REDUCE (x0 + x2,
//     x1 + x3, x0 + x1, fold, two hadds), the tail added one by one;
//   - RoPE's pair rotation with GCC's contraction of a·b ± c·d into fma(a, b, ±c·d) (shared with
//     the AVX-512 level: both builds compile that C with FMA).
// Compiled with -mavx2 -mfma -mf16c; entered only at the Avx2 / Avx512 kernel levels.
#include "ops.h"

#if defined(__x86_64__) || defined(_M_X64)

#if (defined(__GNUC__) || defined(__clang__)) && !(defined(__AVX2__) && defined(__FMA__) && defined(__F16C__))
#error "ops_avx2.cc must be compiled with -mavx2 -mfma -mf16c"
#endif

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <limits>

namespace moe::kernels {

namespace {

// exp(x) as ggml's AVX2 build computes it: x = n ln2 + b with n = round(x / ln2) (the 1.5·2^23
// shift trick), exp(b) - 1 by a degree-5 polynomial j, result k + k·j with k = 2^n built in the
// exponent bits; |n| > 126 takes a two-factor scaling so the result does not overflow early, and
// |n| > 192 saturates to 0 or +inf.
inline __m256 v_expf(__m256 x) {
    const __m256 shift = _mm256_set1_ps(0x1.8p23f);
    const __m256 z = _mm256_fmadd_ps(x, _mm256_set1_ps(0x1.715476p+0f), shift);
    const __m256 n = _mm256_sub_ps(z, shift);
    const __m256 b = _mm256_fnmadd_ps(n, _mm256_set1_ps(0x1.7f7d1cp-20f),
                                      _mm256_fnmadd_ps(n, _mm256_set1_ps(0x1.62e4p-1f), x));
    const __m256i e = _mm256_slli_epi32(_mm256_castps_si256(z), 23);
    const __m256 k = _mm256_castsi256_ps(_mm256_add_epi32(e, _mm256_castps_si256(_mm256_set1_ps(1.0f))));
    const __m256 abs_n = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), n);
    const __m256 big = _mm256_cmp_ps(abs_n, _mm256_set1_ps(126.0f), _CMP_GT_OQ);
    const __m256 u = _mm256_mul_ps(b, b);
    const __m256 hi = _mm256_fmadd_ps(_mm256_set1_ps(0x1.0e4020p-7f), b, _mm256_set1_ps(0x1.573e2ep-5f));
    const __m256 mid = _mm256_fmadd_ps(_mm256_set1_ps(0x1.555e66p-3f), b, _mm256_set1_ps(0x1.fffdb6p-2f));
    const __m256 j = _mm256_fmadd_ps(_mm256_fmadd_ps(hi, u, mid), u, _mm256_mul_ps(_mm256_set1_ps(0x1.ffffecp-1f), b));
    if (!_mm256_movemask_ps(big)) return _mm256_fmadd_ps(j, k, k);
    const __m256i g = _mm256_and_si256(_mm256_castps_si256(_mm256_cmp_ps(n, _mm256_setzero_ps(), _CMP_LE_OQ)),
                                       _mm256_set1_epi32(static_cast<int>(0x82000000u)));
    const __m256 s1 = _mm256_castsi256_ps(_mm256_add_epi32(g, _mm256_set1_epi32(0x7f000000)));
    const __m256 s2 = _mm256_castsi256_ps(_mm256_sub_epi32(e, g));
    const __m256 huge = _mm256_cmp_ps(abs_n, _mm256_set1_ps(192.0f), _CMP_GT_OQ);
    const __m256 scaled = _mm256_mul_ps(_mm256_fmadd_ps(s2, j, s2), s1);
    const __m256 normal = _mm256_fmadd_ps(k, j, k);
    const __m256 finite = _mm256_or_ps(_mm256_and_ps(big, scaled), _mm256_andnot_ps(big, normal));
    return _mm256_or_ps(_mm256_and_ps(huge, _mm256_mul_ps(s1, s1)), _mm256_andnot_ps(huge, finite));
}

inline __m256 v_silu(__m256 x) {
    const __m256 e = v_expf(_mm256_sub_ps(_mm256_setzero_ps(), x));
    return _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
}

// hi128 + lo128, then lane 0 + 2 / 1 + 3 (movehl), then lane 0 + 1 (movehdup).
inline float fold8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_extractf128_ps(v, 1), _mm256_castps256_ps128(v));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

// GGML_F32x8_REDUCE of four accumulators.
inline float reduce_ggml(__m256 x0, __m256 x1, __m256 x2, __m256 x3) {
    x0 = _mm256_add_ps(x0, x2);
    x1 = _mm256_add_ps(x1, x3);
    x0 = _mm256_add_ps(x0, x1);
    const __m128 t0 = _mm_add_ps(_mm256_castps256_ps128(x0), _mm256_extractf128_ps(x0, 1));
    const __m128 t1 = _mm_hadd_ps(t0, t0);
    return _mm_cvtss_f32(_mm_hadd_ps(t1, t1));
}

// Lanes [0, count) of 8 set (count in [0, 8]).
inline __m256i lane_mask(int64_t count) {
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(count)), idx);
}

}  // namespace

float expf_avx2(float x) { return _mm256_cvtss_f32(v_expf(_mm256_set1_ps(x))); }

void softmax_avx2(float* x, int64_t n, int64_t n_simd, float sink) {
    float max = -std::numeric_limits<float>::infinity();
    for (int64_t i = 0; i < n; ++i) max = max > x[i] ? max : x[i];  // ggml_vec_max_f32
    max = max > sink ? max : sink;  // ggml's MAX(max, sink)
    const __m256 vmax = _mm256_set1_ps(max);
    const __m256 neg_inf = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
    double sum = 0.0;
    const int64_t vec_end = std::min(n, n_simd);
    for (int64_t i = 0; i < vec_end; i += 8) {
        // Lanes past n are masked cells of llama.cpp's padded row: exp(-inf) = 0.
        const int64_t cnt = std::min<int64_t>(8, n - i);
        const __m256i m = lane_mask(cnt);
        const __m256 v = _mm256_blendv_ps(neg_inf, _mm256_maskload_ps(x + i, m), _mm256_castsi256_ps(m));
        const __m256 e = v_expf(_mm256_sub_ps(v, vmax));
        _mm256_maskstore_ps(x + i, m, e);
        sum += static_cast<double>(fold8(e));
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

void swiglu_avx2(const float* g, const float* u, float* y, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        _mm256_storeu_ps(y + i, _mm256_mul_ps(v_silu(_mm256_loadu_ps(g + i)), _mm256_loadu_ps(u + i)));
    }
    for (; i < n; ++i) y[i] = silu(g[i]) * u[i];
}

float dot_gemm_avx2(const float* a, const float* b, int64_t n) {
    __m256 acc = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc);
    if (i < n) {
        const __m256i m = lane_mask(n - i);
        acc = _mm256_fmadd_ps(_mm256_maskload_ps(a + i, m), _mm256_maskload_ps(b + i, m), acc);
    }
    return fold8(acc);
}

void dot_gemm_4x4_avx2(const float* const a[4], const float* const b[4], int64_t n, float out[16]) {
    // Two 4 x 2 passes with named accumulators: eight accumulators plus six loaded vectors fit the
    // 16 ymm registers (GCC keeps named variables in registers, not arrays).
    for (int c0 = 0; c0 < 4; c0 += 2) {
        __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00;
        const float *a0 = a[0], *a1 = a[1], *a2 = a[2], *a3 = a[3], *b0 = b[c0], *b1 = b[c0 + 1];
        const auto step = [&](__m256 x0, __m256 x1, __m256 x2, __m256 x3, __m256 y0, __m256 y1) {
            c00 = _mm256_fmadd_ps(x0, y0, c00), c01 = _mm256_fmadd_ps(x0, y1, c01);
            c10 = _mm256_fmadd_ps(x1, y0, c10), c11 = _mm256_fmadd_ps(x1, y1, c11);
            c20 = _mm256_fmadd_ps(x2, y0, c20), c21 = _mm256_fmadd_ps(x2, y1, c21);
            c30 = _mm256_fmadd_ps(x3, y0, c30), c31 = _mm256_fmadd_ps(x3, y1, c31);
        };
        int64_t i = 0;
        for (; i + 8 <= n; i += 8) {
            step(_mm256_loadu_ps(a0 + i), _mm256_loadu_ps(a1 + i), _mm256_loadu_ps(a2 + i), _mm256_loadu_ps(a3 + i),
                 _mm256_loadu_ps(b0 + i), _mm256_loadu_ps(b1 + i));
        }
        if (i < n) {
            const __m256i m = lane_mask(n - i);
            step(_mm256_maskload_ps(a0 + i, m), _mm256_maskload_ps(a1 + i, m), _mm256_maskload_ps(a2 + i, m),
                 _mm256_maskload_ps(a3 + i, m), _mm256_maskload_ps(b0 + i, m), _mm256_maskload_ps(b1 + i, m));
        }
        out[c0] = fold8(c00), out[c0 + 1] = fold8(c01), out[4 + c0] = fold8(c10), out[5 + c0] = fold8(c11);
        out[8 + c0] = fold8(c20), out[9 + c0] = fold8(c21), out[12 + c0] = fold8(c30), out[13 + c0] = fold8(c31);
    }
}

void round_f16_row_avx2(float* x, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT);
        _mm256_storeu_ps(x + i, _mm256_cvtph_ps(h));
    }
    for (; i < n; ++i) x[i] = _cvtsh_ss(_cvtss_sh(x[i], _MM_FROUND_TO_NEAREST_INT));
}

float dot_gemv_avx2(const float* a, const float* b, int64_t n, int64_t n_vec, bool double_tail) {
    __m256 x[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    const int64_t nv = std::min(n, n_vec);
    int64_t i = 0;
    for (; i + 32 <= nv; i += 32) {
        for (int r = 0; r < 4; ++r) {
            x[r] = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8 * r), _mm256_loadu_ps(b + i + 8 * r), x[r]);
        }
    }
    for (int r = 0; r < 4 && i + 8 * r < nv; ++r) {  // a partial step: entries past n are zero
        const __m256i m = lane_mask(std::min<int64_t>(8, nv - i - 8 * r));
        x[r] = _mm256_fmadd_ps(_mm256_maskload_ps(a + i + 8 * r, m), _mm256_maskload_ps(b + i + 8 * r, m), x[r]);
    }
    const float res = reduce_ggml(x[0], x[1], x[2], x[3]);
    if (double_tail) {
        double sum = res;
        for (int64_t t = std::max<int64_t>(n_vec, 0); t < n; ++t) sum += static_cast<double>(a[t] * b[t]);
        return static_cast<float>(sum);
    }
    float sum = res;
    for (int64_t t = std::max<int64_t>(n_vec, 0); t < n; ++t) sum = std::fma(a[t], b[t], sum);
    return sum;
}

void rope_rotate_fma(const float* cache, float* head, int n_rot, int offset) {
    // Scalar on purpose: ggml's rotate_pairs is scalar C; compiled here std::fma is one vfmadd.
    for (int i0 = 0; i0 < n_rot; i0 += 2) {
        const int ic = offset == 1 ? i0 : i0 / 2;
        const float cos_t = cache[i0 + 0];
        const float sin_t = cache[i0 + 1];
        const float x0 = head[ic];
        const float x1 = head[ic + offset];
        head[ic] = std::fma(x0, cos_t, -(x1 * sin_t));
        head[ic + offset] = std::fma(x0, sin_t, x1 * cos_t);
    }
}

void f16_to_f32_row_avx2(const uint16_t* src, float* dst, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
    }
    for (; i < n; ++i) dst[i] = _cvtsh_ss(src[i]);
}

}  // namespace moe::kernels

#endif  // x86-64
