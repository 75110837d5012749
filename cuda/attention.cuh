// CUDA attention over an F16 KV cache: the device twin of kernels::attention (cpp/kernels/ops.h)
// and of the KV cache's F16 planes (cpp/kv/kv_cache.h), with flash attention's numerics instead
// of llama.cpp's non-flash ones.
//
// Device cache layout, per layer, mirroring the CPU cache's row-major planes:
//   K: [rows, k.stride] F16, the row of position p holds the post-RoPE keys of every KV head
//      (head g at elements [g * head_dim, (g + 1) * head_dim));
//   V: [rows, v.stride] F16 likewise with head_dim_v (the CPU transposes V for speed; the GPU
//      does not need to);
//   MLA layers have no V plane: pass the K rows as V (same data, stride, rows and ring) with one
//      KV head; V is then the first head_dim_v elements of each K row ([latent | rope key]);
//   sliding-window layers keep a ring: position p lives in row p % rows.
//
// Numerics: q stays fp32, K and V are read from F16 exactly, the scores, online softmax (expf) and
// the probability-weighted sums of V are fp32 with fused multiply-adds. llama.cpp (and the CPU
// kernel) round q to F16 before the K product and the probabilities to F16 before the V product,
// so the two differ by up to ~2^-11 relative in the scores and probabilities: |Δout| stays within
// about 2e-3 · max|v|. Against exact math on the stored K / V the GPU is within ~1e-5 · max|v|.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace moe::cuda {

// One plane (K or V) of one layer in device memory.
struct KvRowsDevice {
    uint16_t* data = nullptr;  // F16 bits: [n_rows, stride]
    int64_t stride = 0;        // elements per row (even)
    int64_t n_rows = 0;        // rows allocated: the capacity, or the ring's size
    bool ring = false;         // position p lives in row p % n_rows (else row p, p < n_rows)
};

// Converts fp32 rows to F16 (round to nearest even, as quant::fp32_to_fp16 for every finite value)
// and stores them at positions pos0 .. pos0 + n - 1 of K and (unless v.data or v_src is null) V.
//   k_src: [n, k_width] (stride k_src_stride floats); v_src: [n, v_width] (stride v_src_stride).
// A ring given more than n_rows positions keeps the last n_rows of them (as storing them in order
// would); a plain plane needs pos0 + n <= n_rows.
cudaError_t store_kv(const KvRowsDevice& k, const float* k_src, int64_t k_src_stride, int64_t k_width,
                     const KvRowsDevice& v, const float* v_src, int64_t v_src_stride, int64_t v_width, int64_t pos0,
                     int64_t n, cudaStream_t stream);

// kernels::AttentionShape without the fields that only fix the CPU's summation orders.
struct AttentionParams {
    int n_head = 0;
    int n_head_kv = 0;       // query head h reads KV head h / (n_head / n_head_kv)
    int head_dim = 0;        // elements per head of Q and K: even, <= 576 (MLA absorbed: 512 + 64)
    int head_dim_v = 0;      // elements per head of V and the output (0: head_dim): even, <= 512
    float kq_scale = 1.0f;
    int64_t window = 0;      // sliding window: the query at p sees keys j with p - j < window (0: all)
    const float* d_sinks = nullptr;  // device [n_head] attention-sink logits (gpt-oss), or null
};

// Scratch bytes attention() can use on the current device for n_tokens queries over n_kv =
// first_pos + n_tokens cache positions: the flash-decoding partials (0 when it would not split).
// Passing less is allowed: attention then splits the keys over fewer blocks (slower, same math up
// to fp32 rounding).
size_t attention_scratch_bytes(const AttentionParams& params, int64_t n_tokens, int64_t n_kv);

// Causal attention of n_tokens queries at positions first_pos .. first_pos + n_tokens - 1 over the
// cache positions [0, first_pos + t] (the chunk's own rows must already be stored), as
// kernels::attention:
//   q:   [n_tokens, n_head * head_dim] (stride q_stride floats), post-RoPE
//   out: [n_tokens, n_head * head_dim_v] (stride out_stride floats)
// softmax(kq_scale · q·k + mask) with the window's mask and the head's sink (a logit that joins the
// max and the denominator, with no value). Blocks take (query tile, KV head, key split); with few
// query tiles (decode, short chunks over long contexts) the keys are split over blocks whose
// partial (max, sum, acc) are merged by a second kernel (flash-decoding).
// cudaErrorInvalidValue for bad shapes, or keys the cache no longer (or never) holds.
cudaError_t attention(const AttentionParams& params, const KvRowsDevice& k, const KvRowsDevice& v, const float* q,
                      int64_t q_stride, int64_t n_tokens, int64_t first_pos, float* out, int64_t out_stride,
                      void* d_scratch, size_t scratch_bytes, cudaStream_t stream);

}  // namespace moe::cuda
