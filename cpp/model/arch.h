// The architecture table: what differs between the transformer families we run, as data. The
// forward pass is one wiring of shared blocks (RMSNorm, GQA or MLA attention, dense SwiGLU FFN, MoE
// FFN) and reads these flags; adding a family is mostly a new row here.
//
// Every flag restates what llama.cpp hard-codes for the family (src/models/<arch>.cpp and the
// per-arch tensor lists in src/llama-model.cpp), not something read from the GGUF.
#pragma once

#include <string>

#include "../kernels/ops.h"

namespace moe::model {

// Where q/k RMSNorm sits, if anywhere: qwen3moe normalises each head over head_dim with an
// [head_dim] weight; olmoe normalises the whole projected q (k) vector with a full-width weight.
enum class QkNorm { None, PerHead, Full };

// How the router's logits become probabilities (llama_expert_gating_func_type): softmax over all
// experts, a sigmoid each, or (gpt-oss) the raw logits, with the weights a softmax over the k
// selected logits. deepseek2 reads it from {arch}.expert_gating_func (FromKey).
enum class Gating { Softmax, Sigmoid, SoftmaxWeight, FromKey };

// The attention block: grouped-query attention over a K/V cache, or DeepSeek's multi-head latent
// attention in its absorbed form (one compressed K row per token, V read from it).
enum class Attention { Gqa, Mla };

// The routed experts' activation: silu(gate) * up, or gpt-oss's clamped SwiGLU
// (min(g, 7) * sigmoid(1.702 min(g, 7)) * (clamp(u, -7, 7) + 1)).
enum class ExpertAct { Silu, SwigluOai };

// The shared expert beside the routed ones: none; qwen2moe's, scaled by a sigmoid gate computed as
// silu(s)/s from a per-token scalar s = ffn_gate_inp_shexp · x; deepseek's, ungated.
enum class SharedExpert { None, SigmoidGated, Ungated };

// Where the routed experts' FFN width comes from.
enum class ExpertWidth {
    FeedForwardLength,       // {arch}.feed_forward_length (Mixtral, OLMoE)
    ExpertKeyOrFfnDivUsed,   // {arch}.expert_feed_forward_length, else feed_forward_length / expert_used_count
    ExpertKey,               // {arch}.expert_feed_forward_length, required (deepseek2, gpt-oss)
};

struct ArchSpec {
    const char* name;                 // general.architecture
    kernels::RopeType rope;
    bool moe_required;                // expert_count must be > 0 (else: dense layers when 0)
    bool norm_topk_weights;           // renormalise the k selected weights to sum 1
    bool reads_expert_weights_scale;  // {arch}.expert_weights_scale is honoured (deepseek2)
    Gating gating;
    QkNorm qk_norm;
    SharedExpert shared_expert;
    ExpertWidth expert_width;
    bool output_may_be_tied;          // output.weight optional: token_embd doubles as the LM head
    bool rope_freqs_allowed;          // optional rope_freqs.weight (llama3 frequency factors)
    bool rope_covers_head;            // llama.cpp requires n_rot == head size
    Attention attention;
    ExpertAct expert_act;
    const char* ffn_norm;             // tensor name of the FFN pre-norm (gpt-oss: post_attention_norm)
    bool sinks_and_swa;               // gpt-oss: attention sinks, sliding window on the pattern's layers
    bool biases_everywhere;           // gpt-oss: biases on the router and every expert matmul
};

// The spec of `name`, or nullptr when the architecture is not supported.
const ArchSpec* find_arch(const std::string& name) noexcept;

// "llama, qwen2moe, qwen3moe, olmoe": for messages.
std::string supported_arch_names();

}  // namespace moe::model
