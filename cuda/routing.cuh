// CUDA expert routing: the device twin of model::route_token (cpp/model/routing.cc) and of
// forward.cc's grouping of (token, slot) rows by expert.
//
// route() reproduces route_token at the Scalar CPU level: softmax (max, libm-style exp, double sum,
// scale by (float)(1 / sum)), sigmoid 1 / (1 + e^-x), the selection bias, group-limited masking
// (a group scores the sum of its two best biased scores; groups ranked descending, ties to the lower
// group), top-k descending with ties to the lower expert index, weights from the unbiased
// probabilities, SoftmaxWeight's softmax over the k selected logits, norm_topk's division by
// max(Σw in double -> fp32, 6.103515625e-5) and the scale. Its exp is exp() in double rounded to
// fp32 (the correctly rounded value, as glibc's expf returns but in rare cases), so probabilities
// agree with the CPU's to the last bit nearly always and selections only differ where two experts'
// scores are within an ulp (the AVX CPU levels use ggml's vector exp, a few ulp from either).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace moe::model {
struct HParams;
}

namespace moe::cuda {

// model::Gating without FromKey (a loaded model has it resolved).
enum class RouteGating : int { Softmax = 0, Sigmoid = 1, SoftmaxWeight = 2 };

// The routing hyper-parameters of route_token.
struct RoutingParams {
    int n_expert = 0;            // 1 .. 512 (LLAMA_MAX_EXPERTS)
    int k = 0;                   // experts per token, 1 .. n_expert
    RouteGating gating = RouteGating::Softmax;
    int n_group = 0;             // > 1: group-limited routing (n_expert % n_group == 0)
    int n_group_used = 0;        // groups kept (1 .. n_group) when n_group > 1
    bool norm_topk = false;      // renormalise the k weights
    float scale = 0.0f;          // 0 or 1: none
};

// RoutingParams of a model's hyper-parameters (hp.gating must be resolved: never FromKey).
RoutingParams routing_params(const model::HParams& hp);

// Top-k selection of every token.
//   d_logits:   [n_tokens, n_expert] router logits (router bias already added); not modified
//   d_sel_bias: [n_expert] selection bias (exp_probs_b) or null
//   d_sel:      [n_tokens, k] selected experts, best first
//   d_weights:  [n_tokens, k] their weights
// One warp per token. cudaErrorInvalidValue for bad params (checked on the host).
cudaError_t route(const RoutingParams& params, const float* d_logits, const float* d_sel_bias, int64_t n_tokens,
                  int32_t* d_sel, float* d_weights, cudaStream_t stream);

// Bytes of scratch group_by_expert needs (0 today: it works in shared memory; callers still pass
// what this says so a later version can use some).
size_t group_by_expert_scratch_bytes(int64_t n_tokens, int k, int n_expert);

// Stable counting sort of the (token, slot) rows by expert, in token-then-slot order: the same
// result as forward.cc's host loop.
//   d_sel:     [n_tokens, k] experts (each in [0, n_expert))
//   d_offsets: [n_expert + 1] expert e's rows are [d_offsets[e], d_offsets[e + 1])
//   d_row_src: [n_tokens * k] the token of grouped row r
//   d_row_of:  [n_tokens * k] the grouped row of (t, s) at t * k + s
// One block (n_expert <= 512); the offsets stay on the device.
cudaError_t group_by_expert(const int32_t* d_sel, int64_t n_tokens, int k, int n_expert, int32_t* d_offsets,
                            int32_t* d_row_src, int32_t* d_row_of, void* d_scratch, cudaStream_t stream);

}  // namespace moe::cuda
