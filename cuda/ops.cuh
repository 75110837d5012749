// CUDA element-wise operations of the forward pass: the device twins of cpp/kernels/ops.h (RMSNorm,
// RoPE, softmax, SwiGLU) and of the small row loops in cpp/model/forward.cc (residual and bias adds,
// gpt-oss's clamped SwiGLU, the MoE combine, the embedding lookup).
//
// Every function takes device pointers and a stream, launches asynchronously, allocates nothing and
// returns cudaErrorInvalidValue for bad arguments (checked before any launch), else the launch
// status. n_rows == 0 (or n == 0) launches nothing and returns cudaSuccess. Strides count floats.
//
// Numerics against the CPU reference (the moe_cuda library builds with --fmad=false, so a * b + c is
// two roundings unless a kernel asks for an fma explicitly):
//   rms_norm_*      bit-identical but for the double sum's order (a tree here, sequential on the
//                   CPU), which can move the fp32 mean by one ulp in rare rows: <= 1 ulp.
//   rope_rows       the CPU's step-by-step fp32 theta chain, bit for bit (theta_scale, the YaRN
//                   correction dims and the magnitude are computed on the host by the CPU code
//                   itself); cos / sin in double rounded to fp32, i.e. the correctly rounded value,
//                   which glibc's cosf / sinf also return but in rare cases: a few ulp at most.
//   softmax_rows, swiglu_rows, swiglu_oai_rows, moe_combine's sigmoid gate
//                   CUDA's expf (<= 2 ulp) where the Scalar CPU level uses libm's expf: a few ulp.
//                   (The AVX levels use ggml's vector exp, itself within ~2.5 ulp of exp.)
//   add_*, moe_combine (ungated) and get_rows_f32: bit-identical.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace moe::kernels {
struct RopeConfig;
}

namespace moe::cuda {

// ------------------------------------------------------------------------------------------------
// Normalisation
// ------------------------------------------------------------------------------------------------

// y[r, :] = x[r, :] / sqrt(mean(x[r, :]²) + eps) * weight, as kernels::rms_norm: fp32 squares
// summed in double, scale = 1 / sqrtf((float)(sum / n) + eps), y = (x * scale) * weight.
//   x: [n_rows, n] (row stride x_stride), y: [n_rows, n] (stride y_stride), weight: [n] or null.
// y may be x (same stride); other overlaps are undefined.
cudaError_t rms_norm_rows(const float* x, int64_t x_stride, const float* weight, float* y, int64_t y_stride,
                          int64_t n_rows, int64_t n, float eps, cudaStream_t stream);

// The same per head (qwen3moe's QK norm): head h of token t is the n = head_dim values at
// x + t * x_stride + h * head_dim, normalised with weight [head_dim] into the same place of y.
//   x: [n_tokens, >= n_heads * head_dim] (stride x_stride), y likewise (stride y_stride).
cudaError_t rms_norm_heads(const float* x, int64_t x_stride, const float* weight, float* y, int64_t y_stride,
                           int64_t n_tokens, int n_heads, int head_dim, float eps, cudaStream_t stream);

// ------------------------------------------------------------------------------------------------
// RoPE
// ------------------------------------------------------------------------------------------------

enum class RopeMode : int { Norm = 0, Neox = 1 };  // kernels::RopeType: adjacent pairs / halves

// kernels::RopeConfig in plain values, with the frequency factors on the device.
struct RopeParams {
    RopeMode mode = RopeMode::Norm;
    int n_rot = 0;                 // rotated dims at the start of every head (even, > 0)
    float freq_base = 10000.0f;
    float freq_scale = 1.0f;
    float ext_factor = 0.0f;       // YaRN mix (0: plain linear interpolation)
    float attn_factor = 1.0f;
    float beta_fast = 32.0f;
    float beta_slow = 1.0f;
    int n_ctx_orig = 0;
    const float* d_freq_factors = nullptr;  // device [n_rot / 2] theta divisors, or null
    // true: the contracted products of ggml's x86 FMA builds (kernels level Avx2 / Avx512):
    // fma(x0, cos, -(x1 sin)), fma(x0, sin, x1 cos) and the fused YaRN blend; false: separately
    // rounded products (level Scalar / Neon).
    bool fused = true;
};

// RopeParams of a CPU RopeConfig (its freq_factors pointer is host memory: pass the device copy).
RopeParams rope_params(const kernels::RopeConfig& config, const float* d_freq_factors, bool fused);

// Rotates, in place, the first n_rot values of every head of every token:
//   head h of token t starts at x + t * x_stride + h * head_stride; token t is at d_positions[t].
//   x: [n_tokens, ...] (stride x_stride), d_positions: device [n_tokens] int32.
// head_stride >= n_rot (GQA: head_dim; MLA's q_pe: pass x + qk_nope and head_stride qk_head_dim).
cudaError_t rope_rows(const RopeParams& params, float* x, int64_t x_stride, int64_t n_tokens, int n_heads,
                      int64_t head_stride, const int32_t* d_positions, cudaStream_t stream);

// ------------------------------------------------------------------------------------------------
// Softmax and activations
// ------------------------------------------------------------------------------------------------

// y[r, :] = softmax(x[r, :]) as the Scalar CPU level computes it: max, e = exp(x - max), the e
// summed in double, y = e * (float)(1 / sum). -inf entries give 0. y may be x (same stride).
//   x, y: [n_rows, n] (strides x_stride, y_stride).
cudaError_t softmax_rows(const float* x, int64_t x_stride, float* y, int64_t y_stride, int64_t n_rows, int64_t n,
                         cudaStream_t stream);

// y[r, i] = silu(g[r, i]) * u[r, i], silu(v) = v / (1 + e^-v). y may be g or u (same stride).
//   g, u, y: [n_rows, n] (strides g_stride, u_stride, y_stride).
cudaError_t swiglu_rows(const float* g, int64_t g_stride, const float* u, int64_t u_stride, float* y, int64_t y_stride,
                        int64_t n_rows, int64_t n, cudaStream_t stream);

// gpt-oss's clamped SwiGLU (ggml_swiglu_oai, alpha 1.702, limit 7) as forward.cc's swiglu_oai_row:
// a = min(g, 7), b = clamp(u, -7, 7), y = a / (1 + e^(1.702 (-a))) * (b + 1). y may be g or u.
cudaError_t swiglu_oai_rows(const float* g, int64_t g_stride, const float* u, int64_t u_stride, float* y,
                            int64_t y_stride, int64_t n_rows, int64_t n, cudaStream_t stream);

// ------------------------------------------------------------------------------------------------
// Adds
// ------------------------------------------------------------------------------------------------

// y[r, i] = x[r, i] + y[r, i] (the residual add).   x, y: [n_rows, n] (strides x_stride, y_stride).
cudaError_t add_rows(const float* x, int64_t x_stride, float* y, int64_t y_stride, int64_t n_rows, int64_t n,
                     cudaStream_t stream);

// y[r, i] = y[r, i] + bias[i] (ggml_add of a broadcast bias row).   y: [n_rows, n], bias: [n].
cudaError_t add_bias_rows(float* y, int64_t y_stride, const float* bias, int64_t n_rows, int64_t n,
                          cudaStream_t stream);

// y[r, i] = y[r, i] + bias[e, i] for rows grouped by expert (ggml_add_id, gpt-oss's expert biases):
// row r belongs to the expert e with d_offsets[e] <= r < d_offsets[e + 1] (group_by_expert's
// offsets, device [n_expert + 1]). Rows [0, d_offsets[n_expert]) are touched.
//   y: [rows, n] (stride y_stride), bias: [n_expert, n] (stride bias_stride); n_rows_max >= rows,
//   the launch size (the host does not read the offsets).
cudaError_t add_expert_bias_rows(float* y, int64_t y_stride, const int32_t* d_offsets, int n_expert, const float* bias,
                                 int64_t bias_stride, int64_t n_rows_max, int64_t n, cudaStream_t stream);

// ------------------------------------------------------------------------------------------------
// MoE combine
// ------------------------------------------------------------------------------------------------

// out[t, :] = Σ_s weights[t, s] · down[row_of[t, s], :], each product rounded and added in slot
// order (o = y_0 w_0; o = o + y_s w_s), then the shared expert: o = o + shared[t, :], or with
// shared_gate (qwen2moe) o = o + shared[t, :] · (silu(g) / g), g = shared_gate[t] (NaN for g == 0,
// as llama.cpp's sigmoid written as silu(g) / g).
//   down: [R, n_embd] (stride down_stride), d_row_of, d_weights: [n_tokens, k],
//   shared: [n_tokens, n_embd] (stride shared_stride) or null, shared_gate: [n_tokens] or null,
//   out: [n_tokens, n_embd] (stride out_stride); out must not overlap down or shared.
cudaError_t moe_combine(const float* down, int64_t down_stride, const int32_t* d_row_of, const float* d_weights,
                        int64_t n_tokens, int k, int64_t n_embd, const float* shared, int64_t shared_stride,
                        const float* shared_gate, float* out, int64_t out_stride, cudaStream_t stream);

// ------------------------------------------------------------------------------------------------
// Embedding lookup
// ------------------------------------------------------------------------------------------------

// out[t, :] = dequantize(table row tokens[t]) (ggml_get_rows on token_embd), through
// dequantize_row (every type can_dequantize accepts; bit-identical to quant::dequantize).
//   d_table: device rows of row_bytes bytes, each n_cols elements of type_id;
//   h_tokens: HOST [n_tokens] row indices (checked against n_table_rows); out: [n_tokens, n_cols]
//   (stride out_stride). One launch per token: the token ids come from the host's sampler anyway.
cudaError_t get_rows_f32(uint32_t type_id, const void* d_table, size_t row_bytes, int64_t n_table_rows,
                         const int32_t* h_tokens, int64_t n_tokens, int64_t n_cols, float* out, int64_t out_stride,
                         cudaStream_t stream);

}  // namespace moe::cuda
