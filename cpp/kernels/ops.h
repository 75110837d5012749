// Element-wise and attention operations of a transformer forward pass, computed the way ggml's CPU
// backend computes them (ggml/src/ggml-cpu/ops.cpp, vec.cpp, vec.h, llamafile/sgemm.cpp), so that
// results agree with llama.cpp bit for bit where the build is reproduced: RMSNorm with a double sum
// of squares, RoPE with the step-by-step fp32 theta and YaRN ramp, softmax and SwiGLU with ggml's
// vector exp, and attention over an F16 / F32 / Q8_0 KV cache with flash attention disabled.
// Knows tensors, not architectures.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>

#include "../cpu/cpu_features.h"
#include "../runtime/thread_pool.h"

namespace moe::kernels {

// ------------------------------------------------------------------------------------------------
// Which of ggml's CPU builds is reproduced
// ------------------------------------------------------------------------------------------------
//
// llama.cpp's CPU backend loads the build its CPU supports, and the builds differ in the last bits:
// its vector exp/SiLU (ggml_v_expf, an ARM optimized-routines polynomial) has one formula for
// AVX-512 and another for AVX2, its softmax sums chunks of 16 or 8 lanes, and its dot products
// (tinyBLAS for batches, ggml_vec_dot for single tokens) sum 16 or 8 lanes in fixed trees. Those
// bits matter: a quantized model rounds every activation to 8 bits before the next matmul, so a
// one-ulp difference upstream flips codes and grows into visible logit differences. The kernels
// below therefore take the kernel level and reproduce the matching build:
//   Avx512 -> ggml's AVX-512 (F + DQ) build, 16 lanes (llama.cpp's zen4, skylakex, icelake, ...)
//   Avx2   -> its AVX2 + FMA build (haswell), 8 lanes
//   Scalar, Neon -> plain code: libm expf, double sums (ggml's NEON build is not reproduced yet)

// Lanes of the level's vector registers as ggml uses them: 16, 8 or 1.
int simd_width(cpu::Isa isa) noexcept;

// One lane of the level's ggml_v_expf (Scalar/Neon: expf). Exposed for tests.
float ggml_expf(float x, cpu::Isa isa);

// ------------------------------------------------------------------------------------------------
// Normalisation, activations, softmax
// ------------------------------------------------------------------------------------------------

// y = x / sqrt(mean(x²) + eps) * w for one row of n values (w may be null: no weight). As ggml:
// each square is rounded to fp32 and summed in double, scale = 1/sqrtf((float)(sum/n) + eps), and
// the weight is applied as a second rounding step (y = (x * scale) * w). y may alias x.
void rms_norm(const float* x, const float* w, float* y, int64_t n, float eps);

// rms_norm over n_rows rows (row strides in floats); rows are spread over the pool when many.
void rms_norm_rows(const float* x, int64_t x_stride, const float* w, float* y, int64_t y_stride,
                   int64_t n_rows, int64_t n, float eps, runtime::ThreadPool& pool);

// In place: x = exp(x - max) / Σ exp(x - max), as ggml_compute_forward_soft_max computes a row
// (ggml_vec_soft_max_f32, then a scale by (float)(1/sum)): the first n_simd entries go through the
// level's vector exp in chunks of simd_width(isa), each chunk summed in fp32 by the register's
// reduction tree and added to a double; the rest use expf and are added to the double one by one.
// n_simd must be a multiple of the width and may exceed n: lanes past n count as exp(-inf) = 0
// (llama.cpp's attention rows carry masked cells). -inf entries become 0.
// `sink` (gpt-oss attention sinks) is a logit that joins the max and the denominator but has no
// output entry, as ggml_soft_max_add_sinks: max = MAX(max, sink), sum += expf(sink - max) after
// the row's sum. The default -inf adds exactly nothing.
void softmax(float* x, int64_t n, int64_t n_simd, cpu::Isa isa,
             float sink = -std::numeric_limits<float>::infinity());

// softmax of a whole row of n entries as ggml runs it (n_simd = n rounded down to the width).
void softmax(float* x, int64_t n, cpu::Isa isa);

// silu(x) = x / (1 + e^-x) with libm expf (ggml_silu_f32, ggml's scalar SiLU).
float silu(float x);

// y[i] = silu(g[i]) * u[i] as ggml_vec_swiglu_f32: the level's vector SiLU in chunks of the width,
// the tail with silu(). y may alias g or u.
void swiglu(const float* g, const float* u, float* y, int64_t n, cpu::Isa isa);

// ------------------------------------------------------------------------------------------------
// RoPE
// ------------------------------------------------------------------------------------------------

// NORM rotates adjacent pairs (x[2i], x[2i+1]); NEOX rotates halves (x[i], x[i + n_rot/2]).
enum class RopeType { Norm, Neox };

struct RopeConfig {
    RopeType type = RopeType::Norm;
    int n_rot = 0;                 // rotated dims at the start of every head (even)
    float freq_base = 10000.0f;
    float freq_scale = 1.0f;       // 1 / rope scaling factor (1: no scaling)
    float ext_factor = 0.0f;       // YaRN extrapolation mix (0: plain linear interpolation)
    float attn_factor = 1.0f;      // magnitude multiplier on cos/sin (ggml's mscale input)
    float beta_fast = 32.0f;       // YaRN correction range, as llama.cpp fixes them
    float beta_slow = 1.0f;
    int n_ctx_orig = 0;            // training context the YaRN correction dims refer to
    const float* freq_factors = nullptr;  // [n_rot/2] divisors of theta (llama3 rope_freqs), or null
};

// ggml_rope_yarn_corr_dims: [floor(c(beta_fast)), ceil(c(beta_slow))] clamped to [0, n_rot - 1]
// with c(b) = n_rot * ln(n_ctx_orig / (2π b)) / (2 ln base), all in fp32.
void rope_corr_dims(const RopeConfig& c, float dims[2]);

// ggml's RoPE is plain C that its x86 AVX builds compile with FMA available and GCC's default
// contraction: x0·cos - x1·sin becomes fma(x0, cos, -(x1·sin)), x0·sin + x1·cos becomes
// fma(x0, sin, x1·cos), and rope_yarn's blends likewise fuse their first product. At the Avx2 /
// Avx512 levels these functions compute exactly that; at the others, separately rounded products.

// The cos/sin table of one position: cache[2i] = cos θ_i · m, cache[2i+1] = sin θ_i · m for
// i < n_rot/2, with θ_0 = pos, θ_{i+1} = θ_i · base^(-2/n_rot) in fp32 (divided by freq_factors[i])
// and the YaRN blend / magnitude m of ggml's rope_yarn. cache: [n_rot].
void rope_cache(const RopeConfig& c, int64_t pos, float* cache, cpu::Isa isa);

// Rotates the first n_rot values of one head in place with a cache made by rope_cache.
void rope_apply(const RopeConfig& c, const float* cache, float* head, cpu::Isa isa);

// x: [n_tokens, n_heads * head_dim] (row stride x_stride floats); token t is at positions[t].
// Rotates every head of every token in place.
void rope_rows(const RopeConfig& c, float* x, int64_t x_stride, int64_t n_tokens, int n_heads, int head_dim,
               const int32_t* positions, runtime::ThreadPool& pool, cpu::Isa isa);

// ------------------------------------------------------------------------------------------------
// Attention (flash attention disabled, as the conformance oracle runs llama.cpp)
// ------------------------------------------------------------------------------------------------

// One layer's K or V cache as llama.cpp lays it out: row-major (row p holds the vectors of all KV
// heads of the token at position p: n_head_kv * head_dim elements of `type`), or transposed like
// llama.cpp's V cache without flash attention (row i holds element i of every position), so that
// the probability-weighted sum over positions is a contiguous dot product.
struct KvRows {
    const uint8_t* data = nullptr;
    size_t row_bytes = 0;     // bytes per row (per position, or per element when transposed)
    uint32_t type = 0;        // ggml F16, F32 or Q8_0 (Q8_0 only row-major)
    bool transposed = false;
    // 0: row p holds position p. Else a ring of `ring` rows (row-major only): position p lives in
    // row p % ring, so a sliding-window layer keeps only the window (plus one chunk) of tokens.
    uint32_t ring = 0;
};

struct AttentionShape {
    int n_head = 0;
    int n_head_kv = 0;     // query head h reads KV head h / (n_head / n_head_kv)
    int head_dim = 0;      // elements per head of Q and K
    float kq_scale = 1.0f;
    // What llama.cpp's graph sees for this chunk, which decides its summation orders:
    int64_t batch = 1;     // tokens of the ubatch (>= 2: its tinyBLAS GEMM path, 1: ggml_vec_dot)
    int64_t n_kv = 0;      // cache cells its KQ / softmax / KQV span (0: first_pos + n_tokens)
    int head_dim_v = 0;    // elements per head of V and of the output (0: head_dim). MLA: the latent
                           // width, V being the first head_dim_v elements of each K row
    int64_t window = 0;    // sliding window: the query at p sees keys j with p - j < window (0: all)
    const float* sinks = nullptr;  // [n_head] attention-sink logits (gpt-oss), or null
};

// Sliding-window attention reads keys from the window's first key rounded down to this many cells
// (the widest ggml_vec_dot step, 4 x 16 lanes), so a ring cache must hold window + this + a chunk.
constexpr int64_t kAttentionWindowAlign = 64;

// Causal attention of n_tokens queries at positions first_pos .. first_pos + n_tokens - 1 over the
// cache positions [0, first_pos + t] (the chunk's own rows must already be stored).
//   q:   [n_tokens, n_head * head_dim] (stride q_stride floats), post-RoPE
//   out: [n_tokens, n_head * head_dim] (stride out_stride floats)
// Numerics of llama.cpp without flash attention:
//   KQ  = mul_mat(K, Q): q converted to the K cache's dot format (F16: rounded to half, so every
//         product is exact; Q8_0: quantized, integer block dots), each score one dot product
//   p   = soft_max_ext(KQ · kq_scale + causal mask) over the row of n_kv cells
//   KQV = mul_mat(Vᵀ, p): p in the V cache's format (F16: rounded to half), one dot per element
// A dot product takes llama.cpp's order: with batch >= 2 and tinyBLAS's shape conditions (rows a
// multiple of 4, length a multiple of the width) its GEMM order, otherwise ggml_vec_dot's. A Q8_0
// V cache (which llama.cpp only supports with flash attention) is read row-major: fp32 p times
// dequantized V, accumulated in fp32. A row-major F16/F32 V (MLA's view of the K rows, ring
// caches) is first transposed into scratch, as ggml_cont(ggml_transpose(v)) does, and then read
// like a transposed cache. With a window, masked keys count as -inf (their probability is 0).
// Work is spread over (KV head, token block, query-head group) items.
void attention(const AttentionShape& shape, const KvRows& k, const KvRows& v, const float* q, int64_t q_stride,
               int64_t n_tokens, int64_t first_pos, float* out, int64_t out_stride, runtime::ThreadPool& pool,
               cpu::Isa isa);

// ------------------------------------------------------------------------------------------------
// Dot products in llama.cpp's orders (exposed for tests)
// ------------------------------------------------------------------------------------------------

// tinyBLAS order: lane l (of simd_width lanes) accumulates a[i]·b[i] for i ≡ l with fused
// multiply-adds in increasing i, then the lanes are reduced by the register's tree. Entries past n
// count as zero. Scalar/Neon: a double sum.
float dot_gemm(const float* a, const float* b, int64_t n, cpu::Isa isa);

// A 4 x 4 tile of tinyBLAS-order dots: out[4 r + c] = dot_gemm(a[r], b[c], n), computed as
// interleaved chains (each chain's order unchanged, so the results are the same) that reuse every
// loaded vector four times, as tinyBLAS's own register tiles do.
void dot_gemm_4x4(const float* const a[4], const float* const b[4], int64_t n, float out[16], cpu::Isa isa);

// ggml_vec_dot order: four accumulators of simd_width lanes over [0, n_vec) in steps of
// 4 x width (n_vec a multiple of that, may exceed n: entries past n count as zero), fused
// multiply-adds, reduced (x0 + x2, x1 + x3, then x0 + x1, then the lane tree); entries [n_vec, n)
// are then added one by one, in double (F16 dots: double_tail) or with fp32 fused multiply-adds
// (F32 dots). Scalar/Neon: a double sum.
float dot_gemv(const float* a, const float* b, int64_t n, int64_t n_vec, bool double_tail, cpu::Isa isa);

// tinyBLAS order of a BF16 product on a CPU with AVX512-BF16 (llama.cpp's tinyBLAS<32, __m512bh>):
// 16 fp32 lanes, lane l takes elements 32c + 2l + 1 then 32c + 2l of every 32-element chunk c with
// VDPBF16PS's arithmetic (a fused multiply-add each, denormal inputs as zero, denormal results
// flushed to zero), then the 16-lane reduction. a and b hold BF16 values as fp32; n % 32 == 0.
float dot_gemm_bf16dp(const float* a, const float* b, int64_t n);

// ggml_vec_dot_bf16's order on x86 AVX-512 (a, b: BF16 values as fp32): with AVX512-BF16 two
// VDPBF16PS accumulators over alternating 32-element chunks of each 64 (dpbf16 = true), else two
// 16-lane FMA chains over the two 16-element halves of each 32 (GCC contracts the mul + add); the
// accumulators are reduced separately and added in double, the tail one product at a time in double.
float dot_vec_bf16(const float* a, const float* b, int64_t n, bool dpbf16);

// y[i] += a · x[i] (one rounded multiply, one rounded add).
void axpy_f32(float a, const float* x, float* y, int64_t n);

// dst[i] = src[i] converted from F16 (exact).
void f16_to_f32_row(const uint16_t* src, float* dst, int64_t n, cpu::Isa isa);

// x[i] = x[i] rounded to F16 (nearest even) and back: what converting an fp32 row to ggml's F16
// dot format keeps.
void round_f16_row(float* x, int64_t n, cpu::Isa isa);

// F16 -> F32 through a 64K-entry table (exact, same values as F16C).
float f16_to_f32(uint16_t h);

// The level-specific implementations (ops_avx2.cc, ops_avx512.cc), entered only after cpuid said
// the CPU has the instructions. Same contracts as above.
float expf_avx2(float x);
void softmax_avx2(float* x, int64_t n, int64_t n_simd, float sink);
void swiglu_avx2(const float* g, const float* u, float* y, int64_t n);
float dot_gemm_avx2(const float* a, const float* b, int64_t n);
void dot_gemm_4x4_avx2(const float* const a[4], const float* const b[4], int64_t n, float out[16]);
void round_f16_row_avx2(float* x, int64_t n);
float dot_gemv_avx2(const float* a, const float* b, int64_t n, int64_t n_vec, bool double_tail);
void f16_to_f32_row_avx2(const uint16_t* src, float* dst, int64_t n);
// rope_apply's pair rotation with the contracted products (offset: 1 for NORM, n_rot/2 for NEOX).
void rope_rotate_fma(const float* cache, float* head, int n_rot, int offset);
float expf_avx512(float x);
void softmax_avx512(float* x, int64_t n, int64_t n_simd, float sink);
void swiglu_avx512(const float* g, const float* u, float* y, int64_t n);
float dot_gemm_avx512(const float* a, const float* b, int64_t n);
void dot_gemm_4x4_avx512(const float* const a[4], const float* const b[4], int64_t n, float out[16]);
float dot_gemv_avx512(const float* a, const float* b, int64_t n, int64_t n_vec, bool double_tail);
// Decode attention's dots at the Avx512 level, in dot_gemv's order with no tail (every entry in the
// vector part; entries past n count as zero):
//   dot_gemv_f16_4x4: out[4 r + c] = dot_gemv(a[r], F16 row b[c], n) (a: fp32 holding F16 values);
//   dot_gemv_rows_f16_x64: out[h][d] = dot_gemv(p[h], column d_off + d of the F16 rows, n) for
//   d < 64 and h < n_heads (a multiple of 4), reading row k at rows[k] (a row-major V, in place).
void dot_gemv_f16_4x4_avx512(const float* const a[4], const uint16_t* const b[4], int64_t n, float out[16]);
void dot_gemv_rows_f16_x64_avx512(const float* const* p, float* const* out, int n_heads, const uint16_t* const* rows,
                                  int64_t d_off, int64_t n);

}  // namespace moe::kernels
