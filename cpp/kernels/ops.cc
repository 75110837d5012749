#include "ops.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "../common/error.h"
#include "../quant/fp16.h"
#include "../quant/ggml_types.h"
#include "../quant/quant.h"

namespace moe::kernels {

namespace {

constexpr uint32_t kF32 = static_cast<uint32_t>(quant::GgmlType::F32);
constexpr uint32_t kF16 = static_cast<uint32_t>(quant::GgmlType::F16);
constexpr uint32_t kQ8_0 = static_cast<uint32_t>(quant::GgmlType::Q8_0);
constexpr int kQ8Block = 32;          // elements per Q8_0 block
constexpr size_t kQ8BlockBytes = 34;  // f16 scale + 32 int8

enum class Level { Scalar, Avx2, Avx512 };

// The ggml build a kernel level reproduces (see ops.h).
Level level_of(cpu::Isa isa) {
#if defined(__x86_64__) || defined(_M_X64)
    if (isa == cpu::Isa::Avx512) return Level::Avx512;
    if (isa == cpu::Isa::Avx2) return Level::Avx2;
#else
    (void)isa;
#endif
    return Level::Scalar;
}

const float* f16_table() {
    // 256 KiB, built once (thread-safe static init); exact for all 65536 inputs.
    static const std::vector<float> table = [] {
        std::vector<float> t(65536);
        for (uint32_t i = 0; i < 65536; ++i) t[i] = quant::fp16_to_fp32(static_cast<uint16_t>(i));
        return t;
    }();
    return table.data();
}

// ggml's rope_yarn_ramp: i0 / 2 is an integer division before the float arithmetic.
float rope_yarn_ramp(float low, float high, int i0) {
    const float y = static_cast<float>(i0 / 2) - low;
    const float r = y / std::max(0.001f, high - low);
    return 1.0f - std::min(1.0f, std::max(0.0f, r));
}

float rope_corr_dim(int n_dims, int n_ctx_orig, float beta, float base) {
    const float pi = 3.14159265358979323846f;
    return static_cast<float>(n_dims) * std::log(static_cast<float>(n_ctx_orig) / (beta * 2.0f * pi)) /
           (2.0f * std::log(base));
}

}  // namespace

float f16_to_f32(uint16_t h) { return f16_table()[h]; }

// ------------------------------------------------------------------------------------------------
// Normalisation, activations, softmax
// ------------------------------------------------------------------------------------------------

void rms_norm(const float* x, const float* w, float* y, int64_t n, float eps) {
    double sum = 0.0;
    for (int64_t i = 0; i < n; ++i) {
        const float sq = x[i] * x[i];  // the square is an fp32 value, as in ggml
        sum += static_cast<double>(sq);
    }
    const float mean = static_cast<float>(sum / static_cast<double>(n));
    const float scale = 1.0f / std::sqrt(mean + eps);
    if (w) {
        for (int64_t i = 0; i < n; ++i) {
            const float s = x[i] * scale;
            y[i] = s * w[i];
        }
    } else {
        for (int64_t i = 0; i < n; ++i) y[i] = x[i] * scale;
    }
}

void rms_norm_rows(const float* x, int64_t x_stride, const float* w, float* y, int64_t y_stride, int64_t n_rows,
                   int64_t n, float eps, runtime::ThreadPool& pool) {
    // Rows are independent; hand out enough rows per chunk that a chunk is ~64K values of work.
    const int64_t min_rows = std::max<int64_t>(1, 65536 / std::max<int64_t>(1, n));
    pool.parallel_for(n_rows, min_rows, [&](int64_t begin, int64_t end, int) {
        for (int64_t r = begin; r < end; ++r) rms_norm(x + r * x_stride, w, y + r * y_stride, n, eps);
    });
}

int simd_width(cpu::Isa isa) noexcept {
    switch (level_of(isa)) {
        case Level::Avx512: return 16;
        case Level::Avx2: return 8;
        case Level::Scalar: break;
    }
    return 1;
}

float ggml_expf(float x, cpu::Isa isa) {
#if defined(__x86_64__) || defined(_M_X64)
    switch (level_of(isa)) {
        case Level::Avx512: return expf_avx512(x);
        case Level::Avx2: return expf_avx2(x);
        case Level::Scalar: break;
    }
#else
    (void)isa;
#endif
    return std::exp(x);
}

void softmax(float* x, int64_t n, int64_t n_simd, cpu::Isa isa, float sink) {
#if defined(__x86_64__) || defined(_M_X64)
    switch (level_of(isa)) {
        case Level::Avx512: return softmax_avx512(x, n, n_simd, sink);
        case Level::Avx2: return softmax_avx2(x, n, n_simd, sink);
        case Level::Scalar: break;
    }
#else
    (void)isa;
#endif
    (void)n_simd;  // scalar ggml: every entry through expf, summed one by one in double
    float max = -std::numeric_limits<float>::infinity();
    for (int64_t i = 0; i < n; ++i) max = max > x[i] ? max : x[i];  // ggml's MAX(max, x[i])
    max = max > sink ? max : sink;
    double sum = 0.0;
    for (int64_t i = 0; i < n; ++i) {
        const float e = std::exp(x[i] - max);
        x[i] = e;
        sum += static_cast<double>(e);
    }
    sum += static_cast<double>(std::exp(sink - max));
    const float inv = static_cast<float>(1.0 / sum);
    for (int64_t i = 0; i < n; ++i) x[i] *= inv;
}

void softmax(float* x, int64_t n, cpu::Isa isa) {
    const int64_t w = simd_width(isa);
    softmax(x, n, n / w * w, isa);
}

float silu(float x) { return x / (1.0f + std::exp(-x)); }

void swiglu(const float* g, const float* u, float* y, int64_t n, cpu::Isa isa) {
#if defined(__x86_64__) || defined(_M_X64)
    switch (level_of(isa)) {
        case Level::Avx512: return swiglu_avx512(g, u, y, n);
        case Level::Avx2: return swiglu_avx2(g, u, y, n);
        case Level::Scalar: break;
    }
#else
    (void)isa;
#endif
    for (int64_t i = 0; i < n; ++i) y[i] = silu(g[i]) * u[i];
}

// ------------------------------------------------------------------------------------------------
// RoPE
// ------------------------------------------------------------------------------------------------

void rope_corr_dims(const RopeConfig& c, float dims[2]) {
    const float start = std::floor(rope_corr_dim(c.n_rot, c.n_ctx_orig, c.beta_fast, c.freq_base));
    const float end = std::ceil(rope_corr_dim(c.n_rot, c.n_ctx_orig, c.beta_slow, c.freq_base));
    dims[0] = std::max(0.0f, start);
    dims[1] = std::min(static_cast<float>(c.n_rot - 1), end);
}

void rope_cache(const RopeConfig& c, int64_t pos, float* cache, cpu::Isa isa) {
    const bool fused = level_of(isa) != Level::Scalar;  // see ops.h: the FMA builds contract
    const float theta_scale = std::pow(c.freq_base, -2.0f / static_cast<float>(c.n_rot));
    float corr[2];
    rope_corr_dims(c, corr);
    float theta = static_cast<float>(pos);
    for (int i0 = 0; i0 < c.n_rot; i0 += 2) {
        const float ff = c.freq_factors ? c.freq_factors[i0 / 2] : 1.0f;
        // ggml's rope_yarn: interpolate, blend in the extrapolated angle over the ramp, and
        // correct the magnitude when the YaRN blend is on.
        const float theta_extrap = theta / ff;
        const float theta_interp = c.freq_scale * theta_extrap;
        float th = theta_interp;
        float mscale = c.attn_factor;
        if (c.ext_factor != 0.0f) {
            const float ramp_mix = rope_yarn_ramp(corr[0], corr[1], i0) * c.ext_factor;
            const float b = theta_extrap * ramp_mix;
            const float lg = std::log(1.0f / c.freq_scale);
            if (fused) {
                th = std::fma(theta_interp, 1.0f - ramp_mix, b);
                mscale *= std::fma(0.1f, lg, 1.0f);
            } else {
                const float a = theta_interp * (1.0f - ramp_mix);
                th = a + b;
                mscale *= 1.0f + 0.1f * lg;
            }
        }
        cache[i0 + 0] = std::cos(th) * mscale;
        cache[i0 + 1] = std::sin(th) * mscale;
        theta *= theta_scale;
    }
}

void rope_apply(const RopeConfig& c, const float* cache, float* head, cpu::Isa isa) {
    // NORM pairs (2i, 2i+1); NEOX pairs (i, i + n_rot/2). Dims past n_rot stay as they are.
    const int offset = c.type == RopeType::Norm ? 1 : c.n_rot / 2;
#if defined(__x86_64__) || defined(_M_X64)
    if (level_of(isa) != Level::Scalar) return rope_rotate_fma(cache, head, c.n_rot, offset);
#else
    (void)isa;
#endif
    for (int i0 = 0; i0 < c.n_rot; i0 += 2) {
        const int ic = offset == 1 ? i0 : i0 / 2;
        const float cos_t = cache[i0 + 0];
        const float sin_t = cache[i0 + 1];
        const float x0 = head[ic];
        const float x1 = head[ic + offset];
        head[ic] = x0 * cos_t - x1 * sin_t;
        head[ic + offset] = x0 * sin_t + x1 * cos_t;
    }
}

void rope_rows(const RopeConfig& c, float* x, int64_t x_stride, int64_t n_tokens, int n_heads, int head_dim,
               const int32_t* positions, runtime::ThreadPool& pool, cpu::Isa isa) {
    pool.parallel_for(n_tokens, 8, [&](int64_t begin, int64_t end, int) {
        std::vector<float> cache(static_cast<size_t>(std::max(c.n_rot, 2)));
        for (int64_t t = begin; t < end; ++t) {
            rope_cache(c, positions[t], cache.data(), isa);
            float* row = x + t * x_stride;
            for (int h = 0; h < n_heads; ++h) rope_apply(c, cache.data(), row + static_cast<int64_t>(h) * head_dim, isa);
        }
    });
}

// ------------------------------------------------------------------------------------------------
// Vector helpers
// ------------------------------------------------------------------------------------------------

float dot_gemm(const float* a, const float* b, int64_t n, cpu::Isa isa) {
#if defined(__x86_64__) || defined(_M_X64)
    switch (level_of(isa)) {
        case Level::Avx512: return dot_gemm_avx512(a, b, n);
        case Level::Avx2: return dot_gemm_avx2(a, b, n);
        case Level::Scalar: break;
    }
#else
    (void)isa;
#endif
    double sum = 0.0;
    for (int64_t i = 0; i < n; ++i) sum += static_cast<double>(a[i] * b[i]);
    return static_cast<float>(sum);
}

void dot_gemm_4x4(const float* const a[4], const float* const b[4], int64_t n, float out[16], cpu::Isa isa) {
#if defined(__x86_64__) || defined(_M_X64)
    switch (level_of(isa)) {
        case Level::Avx512: return dot_gemm_4x4_avx512(a, b, n, out);
        case Level::Avx2: return dot_gemm_4x4_avx2(a, b, n, out);
        case Level::Scalar: break;
    }
#endif
    for (int r = 0; r < 4; ++r) {
        for (int c = 0; c < 4; ++c) out[4 * r + c] = dot_gemm(a[r], b[c], n, isa);
    }
}

float dot_gemv(const float* a, const float* b, int64_t n, int64_t n_vec, bool double_tail, cpu::Isa isa) {
#if defined(__x86_64__) || defined(_M_X64)
    switch (level_of(isa)) {
        case Level::Avx512: return dot_gemv_avx512(a, b, n, n_vec, double_tail);
        case Level::Avx2: return dot_gemv_avx2(a, b, n, n_vec, double_tail);
        case Level::Scalar: break;
    }
#else
    (void)isa;
#endif
    (void)n_vec;
    (void)double_tail;
    double sum = 0.0;
    for (int64_t i = 0; i < n; ++i) sum += static_cast<double>(a[i] * b[i]);
    return static_cast<float>(sum);
}

namespace {

// One VDPBF16PS step on 16 lanes over the 32 elements at a, b.
void dpbf16_step(float lane[16], const float* a, const float* b) {
    const auto daz = [](float x) { return std::fabs(x) < std::numeric_limits<float>::min() ? 0.0f * x : x; };
    for (int l = 0; l < 16; ++l) {
        for (int k : {1, 0}) {
            const float r = std::fma(daz(a[2 * l + k]), daz(b[2 * l + k]), lane[l]);
            lane[l] = std::fabs(r) < std::numeric_limits<float>::min() ? std::copysign(0.0f, r) : r;
        }
    }
}

// _mm512_reduce_add_ps as GCC expands it: halves, then quarters, then pairs.
float reduce16_scalar(const float lane[16]) {
    float t8[8], t4[4];
    for (int i = 0; i < 8; ++i) t8[i] = lane[8 + i] + lane[i];
    for (int i = 0; i < 4; ++i) t4[i] = t8[4 + i] + t8[i];
    const float t0 = t4[0] + t4[2], t1 = t4[1] + t4[3];
    return t0 + t1;
}

}  // namespace

float dot_gemm_bf16dp(const float* a, const float* b, int64_t n) {
    float lane[16] = {};
    for (int64_t c = 0; c < n; c += 32) dpbf16_step(lane, a + c, b + c);
    return reduce16_scalar(lane);
}

float dot_vec_bf16(const float* a, const float* b, int64_t n, bool dpbf16) {
    float c1[16] = {}, c2[16] = {};
    int64_t i = 0;
    if (dpbf16) {
        for (; i + 64 <= n; i += 64) {
            dpbf16_step(c1, a + i, b + i);
            dpbf16_step(c2, a + i + 32, b + i + 32);
        }
    } else {
        for (; i + 32 <= n; i += 32) {
            for (int l = 0; l < 16; ++l) {
                c1[l] = std::fma(a[i + l], b[i + l], c1[l]);
                c2[l] = std::fma(a[i + 16 + l], b[i + 16 + l], c2[l]);
            }
        }
    }
    double sum = static_cast<double>(reduce16_scalar(c1));
    sum += static_cast<double>(reduce16_scalar(c2));
    for (; i < n; ++i) sum += static_cast<double>(a[i] * b[i]);
    return static_cast<float>(sum);
}

void axpy_f32(float a, const float* x, float* y, int64_t n) {
    for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

void f16_to_f32_row(const uint16_t* src, float* dst, int64_t n, cpu::Isa isa) {
#if defined(__x86_64__) || defined(_M_X64)
    if (level_of(isa) != Level::Scalar) return f16_to_f32_row_avx2(src, dst, n);
#else
    (void)isa;
#endif
    const float* t = f16_table();
    for (int64_t i = 0; i < n; ++i) dst[i] = t[src[i]];
}

void round_f16_row(float* x, int64_t n, cpu::Isa isa) {
#if defined(__x86_64__) || defined(_M_X64)
    if (level_of(isa) != Level::Scalar) return round_f16_row_avx2(x, n);
#else
    (void)isa;
#endif
    const float* t = f16_table();
    for (int64_t i = 0; i < n; ++i) x[i] = t[quant::fp32_to_fp16(x[i])];
}

// ------------------------------------------------------------------------------------------------
// Attention
// ------------------------------------------------------------------------------------------------

namespace {

// ggml_vec_dot_q8_0_q8_0 (generic): per block an integer dot, scaled by d_k * d_q in fp32.
float dot_q8_0(const uint8_t* k, const uint8_t* q, int64_t n) {
    const float* t = f16_table();
    float sum = 0.0f;
    for (int64_t b = 0; b < n / kQ8Block; ++b) {
        const uint8_t* kb = k + b * kQ8BlockBytes;
        const uint8_t* qb = q + b * kQ8BlockBytes;
        uint16_t dk, dq;
        std::memcpy(&dk, kb, 2);
        std::memcpy(&dq, qb, 2);
        const int8_t* kq = reinterpret_cast<const int8_t*>(kb + 2);
        const int8_t* qq = reinterpret_cast<const int8_t*>(qb + 2);
        int32_t sumi = 0;
        for (int j = 0; j < kQ8Block; ++j) sumi += static_cast<int32_t>(kq[j]) * static_cast<int32_t>(qq[j]);
        sum += static_cast<float>(sumi) * (t[dk] * t[dq]);
    }
    return sum;
}

void check_kv_type(const KvRows& rows, int head_dim, const char* which) {
    const uint32_t type = rows.type;
    if (type != kF16 && type != kF32 && type != kQ8_0) {
        throw Error(ErrorCode::UnsupportedType,
                    std::string("attention: ") + which + " cache type " + quant::type_name(type) + " is not supported");
    }
    if (type == kQ8_0 && (head_dim % kQ8Block != 0 || rows.transposed)) {
        throw Error(ErrorCode::InvalidArgument, std::string("attention: a Q8_0 ") + which +
                                                    " cache must be row-major with a head size that is a multiple of "
                                                    "32, got " + std::to_string(head_dim));
    }
}

size_t elem_offset_bytes(uint32_t type, int64_t elements) {
    if (type == kF16) return static_cast<size_t>(elements) * 2;
    if (type == kF32) return static_cast<size_t>(elements) * 4;
    return static_cast<size_t>(elements / kQ8Block) * kQ8BlockBytes;  // Q8_0, block aligned
}

}  // namespace

void attention(const AttentionShape& shape, const KvRows& k, const KvRows& v, const float* q, int64_t q_stride,
               int64_t n_tokens, int64_t first_pos, float* out, int64_t out_stride, runtime::ThreadPool& pool,
               cpu::Isa isa) {
    const int hd = shape.head_dim;
    const int hdv = shape.head_dim_v > 0 ? shape.head_dim_v : hd;
    if (shape.n_head <= 0 || shape.n_head_kv <= 0 || hd <= 0 || shape.n_head % shape.n_head_kv != 0) {
        throw Error(ErrorCode::InvalidArgument, "attention: bad head counts");
    }
    check_kv_type(k, hd, "K");
    check_kv_type(v, hdv, "V");
    if (k.transposed) throw Error(ErrorCode::InvalidArgument, "attention: the K cache must be row-major");
    if (v.transposed && v.ring) throw Error(ErrorCode::InvalidArgument, "attention: a ring V cache must be row-major");
    if (n_tokens <= 0) return;
    const int group = shape.n_head / shape.n_head_kv;
    const int64_t max_kv = first_pos + n_tokens;  // keys the last query sees

    // The first key a query at position p sees (sliding window). Work on a window starts at that
    // key rounded down to kAttentionWindowAlign: the skipped cells are masked (p = 0) in llama.cpp's
    // row too, and starting on the lane grid keeps its vector chunks, so the sums are unchanged.
    const int64_t window = shape.window;
    const auto first_key = [window](int64_t p) { return window > 0 ? std::max<int64_t>(0, p - window + 1) : 0; };
    const auto first_read = [&](int64_t p) { return first_key(p) / kAttentionWindowAlign * kAttentionWindowAlign; };
    const int64_t lo_all = first_read(first_pos);
    for (const KvRows* r : {&k, &v}) {
        if (r->ring && max_kv - lo_all > r->ring) {
            throw Error(ErrorCode::InvalidArgument, "attention: the chunk's keys (" + std::to_string(max_kv - lo_all) +
                                                        ") do not fit a ring cache of " + std::to_string(r->ring));
        }
    }
    const auto row_of = [](const KvRows& r, int64_t pos) { return static_cast<size_t>(r.ring ? pos % r.ring : pos); };

    // llama.cpp's view of the chunk, which fixes its summation orders (see ops.h).
    const int64_t n_kv = std::max(shape.n_kv, max_kv);
    const int64_t w = simd_width(isa);
    const bool kq_gemm = shape.batch >= 2 && n_kv % 4 == 0 && hd % w == 0;
    const bool pv_gemm = shape.batch >= 2 && hdv % 4 == 0 && n_kv % w == 0;
    const int64_t kq_vec = hd / (4 * w) * (4 * w);     // ggml_vec_dot's vector part over head_dim
    const int64_t pv_vec = n_kv / (4 * w) * (4 * w);   // ... and over the KV cells
    const int64_t sm_simd = n_kv / w * w;              // softmax's vector part of the padded row
    const float* t16 = f16_table();

    // Decode (one query token) over F16 caches at the Avx512 level: the same dots in the same orders
    // as below, computed by register-tiled kernels in three phases split over the pool (scores with
    // the keys divided between threads, softmax per head, p·V with the outputs divided), so each
    // K and V byte is read once per step however many query heads share it, and a row-major V
    // (MLA's latent rows, ring caches) is read in place instead of being transposed every step.
#if defined(__x86_64__) || defined(_M_X64)
    const bool v_rows_fit = v.transposed || hdv % 64 == 0;
    if (n_tokens == 1 && level_of(isa) == Level::Avx512 && k.type == kF16 && v.type == kF16 && !kq_gemm && !pv_gemm &&
        kq_vec == hd && pv_vec >= max_kv && v_rows_fit) {
        const int64_t lo = lo_all;
        const int64_t n = max_kv - lo;  // keys read, from the first (lane-aligned) one
        const int64_t stride = (std::max(n_kv, max_kv) - lo + 64 + 63) / 64 * 64;  // softmax's padded lanes fit
        const int H = shape.n_head;
        static thread_local std::vector<float> decode_scratch;
        decode_scratch.resize(static_cast<size_t>(H) * (stride + hd));
        float* sc = decode_scratch.data();                              // sc: [H, stride], key j at j - lo
        float* qf = sc + static_cast<size_t>(H) * stride;               // qf: [H, hd] in F16 values
        for (int64_t e = 0; e < static_cast<int64_t>(H) * hd; ++e) qf[e] = t16[quant::fp32_to_fp16(q[e])];

        // The dots of every query head of KV head kvh (rows `len` long, `head_stride` floats apart from
        // `heads`) with four F16 rows, in 4 x 4 tiles; put(head, c, value) for each real head.
        const auto group_dots = [&](int kvh, const float* heads, int64_t head_stride, const uint16_t* const b[4],
                                    int64_t len, auto&& put) {
            for (int hq = 0; hq < group; hq += 4) {
                const int h0 = kvh * group + hq, nh4 = std::min(4, group - hq);
                const float* a[4];
                for (int r = 0; r < 4; ++r) a[r] = heads + static_cast<int64_t>(h0 + std::min(r, nh4 - 1)) * head_stride;
                float tile[16];
                dot_gemv_f16_4x4_avx512(a, b, len, tile);
                for (int r = 0; r < nh4; ++r) {
                    for (int c = 0; c < 4; ++c) put(h0 + r, c, tile[4 * r + c]);
                }
            }
        };

        const int64_t n_kblocks = (n + 63) / 64;
        pool.parallel_for(n_kblocks, 1, [&](int64_t b0, int64_t b1, int) {
            for (int64_t kb = b0; kb < b1; ++kb) {
                const int64_t j0 = lo + kb * 64, j1 = std::min<int64_t>(j0 + 64, max_kv);
                // Four keys at a time through every KV head, so the cache rows are read front to back.
                for (int64_t j = j0; j < j1; j += 4) {
                    const int64_t nj = std::min<int64_t>(4, j1 - j);
                    for (int kvh = 0; kvh < shape.n_head_kv; ++kvh) {
                        const size_t k_off = static_cast<size_t>(kvh) * hd * 2;
                        const uint16_t* b[4];
                        for (int64_t c = 0; c < 4; ++c) {
                            b[c] = reinterpret_cast<const uint16_t*>(k.data + row_of(k, j + std::min(c, nj - 1)) * k.row_bytes + k_off);
                        }
                        group_dots(kvh, qf, hd, b, hd, [&](int h, int c, float x) {
                            if (c < nj) sc[h * stride + (j + c - lo)] = x;
                        });
                    }
                }
            }
        });
        pool.parallel_for(H, 1, [&](int64_t h_begin, int64_t h_end, int) {
            for (int64_t h = h_begin; h < h_end; ++h) {
                float* sq = sc + h * stride;
                const int64_t lo_q = first_key(max_kv - 1);
                for (int64_t j = lo; j < lo_q; ++j) sq[j - lo] = -std::numeric_limits<float>::infinity();
                for (int64_t j = lo_q; j < max_kv; ++j) sq[j - lo] *= shape.kq_scale;
                const float sink = shape.sinks ? shape.sinks[h] : -std::numeric_limits<float>::infinity();
                softmax(sq, n, sm_simd - lo, isa, sink);
                round_f16_row(sq, n, isa);
            }
        });
        if (v.transposed) {
            // Items: (KV head, 4 output elements); each reads 4 Vᵀ rows once for all its heads.
            const int64_t quads = (hdv + 3) / 4;
            pool.parallel_for(static_cast<int64_t>(shape.n_head_kv) * quads, 1, [&](int64_t i0, int64_t i1, int) {
                for (int64_t item = i0; item < i1; ++item) {
                    const int kvh = static_cast<int>(item / quads);
                    const int d0 = static_cast<int>(item % quads) * 4, nd = std::min(4, hdv - d0);
                    const uint16_t* b[4];
                    for (int c = 0; c < 4; ++c) {
                        const size_t vrow = static_cast<size_t>(kvh) * hdv + d0 + std::min(c, nd - 1);
                        b[c] = reinterpret_cast<const uint16_t*>(v.data + vrow * v.row_bytes) + lo;
                    }
                    group_dots(kvh, sc, stride, b, n, [&](int h, int c, float x) {
                        if (c < nd) out[static_cast<int64_t>(h) * hdv + d0 + c] = x;
                    });
                }
            });
        } else {
            // Row-major V read in place: items (KV head, 64 output elements).
            static thread_local std::vector<const uint16_t*> row_ptrs;
            row_ptrs.resize(static_cast<size_t>(n));
            for (int64_t kk = 0; kk < n; ++kk) row_ptrs[kk] = reinterpret_cast<const uint16_t*>(v.data + row_of(v, lo + kk) * v.row_bytes);
            const uint16_t* const* rows_v = row_ptrs.data();
            const int64_t chunks = hdv / 64;
            pool.parallel_for(static_cast<int64_t>(shape.n_head_kv) * chunks, 1, [&](int64_t i0, int64_t i1, int) {
                const int n_heads = (group + 3) / 4 * 4;
                static thread_local std::vector<float> spill;
                static thread_local std::vector<const float*> p;
                static thread_local std::vector<float*> o;
                spill.resize(static_cast<size_t>(64) * n_heads);
                p.resize(n_heads);
                o.resize(n_heads);
                for (int64_t item = i0; item < i1; ++item) {
                    const int kvh = static_cast<int>(item / chunks);
                    const int64_t d0 = (item % chunks) * 64;
                    for (int r = 0; r < n_heads; ++r) {  // heads past the group: duplicates written to spill
                        const int h = kvh * group + std::min(r, group - 1);
                        p[r] = sc + static_cast<int64_t>(h) * stride;
                        o[r] = r < group ? out + static_cast<int64_t>(h) * hdv + d0 : spill.data() + 64 * r;
                    }
                    dot_gemv_rows_f16_x64_avx512(p.data(), o.data(), n_heads, rows_v, static_cast<int64_t>(kvh) * hdv + d0, n);
                }
            });
        }
        return;
    }
#endif

    // A row-major F16/F32 V is transposed once for all items: vt[(kvh hdv + d) span + (j - lo_all)].
    const bool v_gather = !v.transposed && v.type != kQ8_0;
    const int64_t span = max_kv - lo_all;
    // Scratch of the calling thread; the workers read it through `vt` (their own thread_local
    // instances are other vectors).
    static thread_local std::vector<float> vt_scratch;
    float* vt = nullptr;
    if (v_gather) {
        vt_scratch.resize(static_cast<size_t>(shape.n_head_kv) * hdv * span);
        vt = vt_scratch.data();
        const int64_t width_v = static_cast<int64_t>(shape.n_head_kv) * hdv;
        pool.parallel_for(span, std::max<int64_t>(1, 4096 / width_v), [&](int64_t begin, int64_t end, int) {
            for (int64_t j = begin; j < end; ++j) {
                const uint8_t* row = v.data + row_of(v, lo_all + j) * v.row_bytes;
                for (int64_t e = 0; e < width_v; ++e) {
                    float x;
                    if (v.type == kF16) {
                        uint16_t h;
                        std::memcpy(&h, row + 2 * e, 2);
                        x = t16[h];
                    } else {
                        std::memcpy(&x, row + 4 * e, 4);
                    }
                    vt[e * span + j] = x;
                }
            }
        });
    }

    // A work item is (KV head, block of tokens, sub-group of that KV head's query heads): it
    // streams the K and V rows once for all its queries instead of once per query head. Up to 64
    // queries per item keep the converted queries in L1; blocks and sub-groups shrink until there
    // are enough items for the pool, which matters for decode.
    int nh = group;
    int64_t nt = std::max<int64_t>(1, std::min<int64_t>(n_tokens, 64 / group));
    const auto n_items_for = [&](int sub, int64_t tb) {
        return static_cast<int64_t>(shape.n_head_kv) * ((n_tokens + tb - 1) / tb) * (group / sub);
    };
    while (n_items_for(nh, nt) < 2 * pool.size() && (nh > 1 || nt > 1)) {
        if (nt > 1) {
            nt = (nt + 1) / 2;
            continue;
        }
        int next = nh - 1;
        while (group % next != 0) --next;
        nh = next;
    }
    const int64_t n_tblocks = (n_tokens + nt - 1) / nt;
    const int n_sub = group / nh;
    const int64_t n_items = static_cast<int64_t>(shape.n_head_kv) * n_tblocks * n_sub;
    const int64_t max_q = nt * nh;
    const int64_t row_len = std::max<int64_t>(std::max(hd, hdv), max_kv);

    std::atomic<int64_t> next{0};
    pool.run([&](int, int) {
        // Per-thread scratch: the item's queries in dot format, their scores over the longest key
        // range, one K / V row converted to fp32, and row-major V accumulators.
        std::vector<float> qf(static_cast<size_t>(max_q * hd));
        std::vector<uint8_t> q8(static_cast<size_t>(max_q * (hd / kQ8Block + 1)) * kQ8BlockBytes);
        std::vector<float> scores(static_cast<size_t>(max_q * max_kv));
        std::vector<float> row(static_cast<size_t>(row_len));
        std::vector<float> rows(static_cast<size_t>(4 * row_len));
        std::vector<float> acc;
        for (;;) {
            const int64_t item = next.fetch_add(1, std::memory_order_relaxed);
            if (item >= n_items) break;
            const int kvh = static_cast<int>(item / (n_tblocks * n_sub));
            const int64_t tb = (item / n_sub) % n_tblocks;
            const int sub = static_cast<int>(item % n_sub);
            const int64_t t0 = tb * nt, tn = std::min(nt, n_tokens - t0);
            const int h0 = kvh * group + sub * nh;
            const int64_t nq = tn * nh;  // query qi = ti * nh + hi: token t0 + ti, head h0 + hi
            const int64_t n_kv_end = first_pos + t0 + tn;  // keys the item's last token sees
            const int64_t lo = first_read(first_pos + t0);  // first key the item reads (lane aligned)
            const size_t k_off = elem_offset_bytes(k.type, static_cast<int64_t>(kvh) * hd);
            const auto q_of = [&](int64_t qi) { return q + (t0 + qi / nh) * q_stride + static_cast<int64_t>(h0 + qi % nh) * hd; };
            const auto out_of = [&](int64_t qi) {
                return out + (t0 + qi / nh) * out_stride + static_cast<int64_t>(h0 + qi % nh) * hdv;
            };
            const auto n_kv_of = [&](int64_t qi) { return first_pos + t0 + qi / nh + 1; };
            // Queries of token t0 + ti see key j once ti >= j - first_pos - t0.
            const auto first_q_seeing = [&](int64_t j) { return std::max<int64_t>(0, j - first_pos - t0) * nh; };

            // Queries in the K cache's dot format (mul_mat converts src1 to the vec_dot type): F16
            // values held exactly as fp32, Q8_0 blocks, or fp32 as they are.
            for (int64_t qi = 0; qi < nq; ++qi) {
                const float* src = q_of(qi);
                float* dst = qf.data() + qi * hd;
                if (k.type == kF16) {
                    for (int d = 0; d < hd; ++d) dst[d] = t16[quant::fp32_to_fp16(src[d])];
                } else if (k.type == kQ8_0) {
                    quant::quantize(kQ8_0, src, q8.data() + qi * (hd / kQ8Block) * kQ8BlockBytes, hd, isa,
                                    "attention query");
                } else {
                    std::memcpy(dst, src, sizeof(float) * hd);
                }
            }

            // scores[qi][j] = q · k_j for the keys each query sees (a few extra dots of keys a query
            // does not see are harmless: the softmax never reads them).
            for (int64_t j0 = lo; j0 < n_kv_end; j0 += 4) {
                const int64_t nj = std::min<int64_t>(4, n_kv_end - j0);
                const int64_t first_q = first_q_seeing(j0);
                if (k.type == kQ8_0) {
                    for (int64_t j = j0; j < j0 + nj; ++j) {
                        const uint8_t* kr = k.data + row_of(k, j) * k.row_bytes + k_off;
                        for (int64_t qi = first_q; qi < nq; ++qi) {
                            scores[qi * max_kv + j] = dot_q8_0(kr, q8.data() + qi * (hd / kQ8Block) * kQ8BlockBytes, hd);
                        }
                    }
                    continue;
                }
                const float* kf[4];
                for (int64_t c = 0; c < 4; ++c) {
                    const uint8_t* kr = k.data + row_of(k, j0 + std::min(c, nj - 1)) * k.row_bytes + k_off;
                    if (k.type == kF16) {
                        float* dst = rows.data() + c * hd;
                        f16_to_f32_row(reinterpret_cast<const uint16_t*>(kr), dst, hd, isa);  // exact
                        kf[c] = dst;
                    } else {
                        kf[c] = reinterpret_cast<const float*>(kr);
                    }
                }
                int64_t qi = first_q;
                if (kq_gemm) {
                    for (; qi + 4 <= nq; qi += 4) {
                        const float* qs[4] = {qf.data() + qi * hd, qf.data() + (qi + 1) * hd, qf.data() + (qi + 2) * hd,
                                              qf.data() + (qi + 3) * hd};
                        float tile[16];
                        dot_gemm_4x4(qs, kf, hd, tile, isa);
                        for (int r = 0; r < 4; ++r) {
                            for (int64_t c = 0; c < nj; ++c) scores[(qi + r) * max_kv + j0 + c] = tile[4 * r + c];
                        }
                    }
                }
                for (; qi < nq; ++qi) {
                    const float* qv = qf.data() + qi * hd;
                    for (int64_t c = 0; c < nj; ++c) {
                        scores[qi * max_kv + j0 + c] = kq_gemm ? dot_gemm(qv, kf[c], hd, isa)
                                                               : dot_gemv(qv, kf[c], hd, kq_vec, k.type == kF16, isa);
                    }
                }
            }
            // soft_max_ext: scale, causal (and window) mask, optional sink, softmax; then the
            // probabilities in the V format. Rows start at the item's first key `lo` (0 without a
            // window, where this is exactly llama.cpp's padded row).
            for (int64_t qi = 0; qi < nq; ++qi) {
                float* sq = scores.data() + qi * max_kv;
                const int64_t n = n_kv_of(qi);
                const int64_t lo_q = first_key(n - 1);
                for (int64_t j = lo; j < lo_q; ++j) sq[j] = -std::numeric_limits<float>::infinity();
                for (int64_t j = lo_q; j < n; ++j) sq[j] *= shape.kq_scale;
                const float sink = shape.sinks ? shape.sinks[h0 + qi % nh] : -std::numeric_limits<float>::infinity();
                softmax(sq + lo, n - lo, sm_simd - lo, isa, sink);
                if (v.type == kF16) round_f16_row(sq + lo, n - lo, isa);
                // Cells the query does not see weigh exactly 0, so queries of different tokens
                // can share one pass over the item's cells below.
                std::fill(sq + n, sq + n_kv_end, 0.0f);
            }

            if (v.transposed || v_gather) {
                // out[qi][d] = p[qi] · vᵀ[d]: one dot per output element, as mul_mat(Vᵀ, KQ), in
                // tiles of 4 queries x 4 elements. Past a query's last cell its probabilities are
                // 0, and fma(0, v, acc) = acc, so queries of different tokens share a tile.
                for (int d0 = 0; d0 < hdv; d0 += 4) {
                    const int nd = std::min(4, hdv - d0);
                    const float* vf[4];
                    for (int c = 0; c < 4; ++c) {
                        const size_t vrow = static_cast<size_t>(kvh) * hdv + d0 + std::min(c, nd - 1);
                        if (v_gather) {
                            vf[c] = vt + vrow * span + (lo - lo_all);
                            continue;
                        }
                        const uint8_t* vr = v.data + vrow * v.row_bytes;
                        if (v.type == kF16) {
                            float* dst = rows.data() + static_cast<size_t>(c) * row_len;
                            f16_to_f32_row(reinterpret_cast<const uint16_t*>(vr) + lo, dst, n_kv_end - lo, isa);
                            vf[c] = dst;
                        } else {
                            vf[c] = reinterpret_cast<const float*>(vr) + lo;
                        }
                    }
                    int64_t qi = 0;
                    if (pv_gemm) {
                        for (; qi + 4 <= nq; qi += 4) {
                            const float* ps[4] = {scores.data() + qi * max_kv + lo, scores.data() + (qi + 1) * max_kv + lo,
                                                  scores.data() + (qi + 2) * max_kv + lo,
                                                  scores.data() + (qi + 3) * max_kv + lo};
                            float tile[16];
                            dot_gemm_4x4(ps, vf, n_kv_of(qi + 3) - lo, tile, isa);
                            for (int r = 0; r < 4; ++r) {
                                for (int c = 0; c < nd; ++c) out_of(qi + r)[d0 + c] = tile[4 * r + c];
                            }
                        }
                    }
                    for (; qi < nq; ++qi) {
                        const float* p = scores.data() + qi * max_kv + lo;
                        const int64_t n = n_kv_of(qi) - lo;
                        for (int c = 0; c < nd; ++c) {
                            out_of(qi)[d0 + c] = pv_gemm ? dot_gemm(p, vf[c], n, isa)
                                                         : dot_gemv(p, vf[c], n, pv_vec - lo, v.type == kF16, isa);
                        }
                    }
                }
                continue;
            }
            // Row-major Q8_0 V: Σ_j p_j · dequant(v_j), fp32, in key order (flash attention's way).
            const size_t v_off = elem_offset_bytes(v.type, static_cast<int64_t>(kvh) * hdv);
            acc.assign(static_cast<size_t>(nq * hdv), 0.0f);
            for (int64_t j = lo; j < n_kv_end; ++j) {
                quant::dequantize(v.type, v.data + row_of(v, j) * v.row_bytes + v_off, row.data(), hdv, isa, "V cache");
                for (int64_t qi = first_q_seeing(j); qi < nq; ++qi) {
                    axpy_f32(scores[qi * max_kv + j], row.data(), acc.data() + qi * hdv, hdv);
                }
            }
            for (int64_t qi = 0; qi < nq; ++qi) std::memcpy(out_of(qi), acc.data() + qi * hdv, sizeof(float) * hdv);
        }
    });
}

}  // namespace moe::kernels
