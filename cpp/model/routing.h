// Top-k expert selection of one token (the routing half of llama.cpp's build_moe_ffn), shared by the
// CPU forward pass and, as their reference, the CUDA routing kernels.
#pragma once

#include <cstdint>

#include "../cpu/cpu_features.h"
#include "hparams.h"

namespace moe::model {

// Expert selection of one token (build_moe_ffn up to the weights):
//   probs = softmax(logits), sigmoid(logits) or (SoftmaxWeight) the logits themselves;
//   selection scores = probs (+ the selection bias exp_probs_b), with optional group-limited masking;
//   top-k by score, descending, ties to the lower expert index; weights = probs[selected]
//   (SoftmaxWeight: a softmax over them); optional renormalisation w / max(Σw, 2^-14) and scaling.
// probs: [n_expert] in: logits (router bias already added), out: probabilities. scores: scratch.
void route_token(const HParams& hp, const float* sel_bias, float* probs, float* scores, int32_t* sel, float* w,
                 cpu::Isa isa);

}  // namespace moe::model
