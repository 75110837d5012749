// The weights of a model as views into the GGUF mapping (never copied), bound by name and checked
// against the shapes the hyper-parameters imply, following llama.cpp's per-arch tensor lists.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "../gguf/gguf_file.h"
#include "../kernels/matmul.h"
#include "arch.h"
#include "hparams.h"

namespace moe::model {

// A 1-D parameter (norm weight, bias) as fp32: a view into the mapping when the file stores it as
// aligned F32 (the converters always do), else an owned fp32 copy (F16/BF16 or unaligned data: a
// few KiB at most). Move-only, so `data` never points into another object's copy.
struct Vector {
    const float* data = nullptr;
    int64_t n = 0;
    std::vector<float> owned;

    Vector() = default;
    Vector(Vector&&) = default;
    Vector& operator=(Vector&&) = default;
    Vector(const Vector&) = delete;
    Vector& operator=(const Vector&) = delete;
    explicit operator bool() const noexcept { return data != nullptr; }
};

struct LayerWeights {
    Vector attn_norm;                    // [n_embd]
    bool fused_qkv = false;
    kernels::WeightMatrix wq, wk, wv;    // n_embd -> q_width / kv_width / kv_width
    kernels::WeightMatrix wqkv;          // n_embd -> q_width + 2 kv_width (fused form)
    Vector bq, bk, bv, bqkv;             // optional biases
    Vector q_norm, k_norm;               // [head_dim] (per head) or [q_width] / [kv_width] (full)
    kernels::WeightMatrix wo;            // q_width -> n_embd (MLA: n_head * v_head_dim -> n_embd)
    Vector bo;                           // optional [n_embd]
    Vector ffn_norm;                     // [n_embd] (gpt-oss: post_attention_norm)
    Vector sinks;                        // gpt-oss attn_sinks: [n_head]

    // Multi-head latent attention (deepseek2), absorbed form.
    kernels::WeightMatrix wq_a;          // n_embd -> q_lora_rank (absent: wq projects directly)
    Vector q_a_norm;                     // [q_lora_rank]
    kernels::WeightMatrix wq_b;          // q_lora_rank -> n_head * qk_head_dim
    kernels::WeightMatrix wkv_a_mqa;     // n_embd -> kv_lora_rank + n_rot: [latent | key rope part]
    Vector kv_a_norm;                    // [kv_lora_rank]
    std::vector<kernels::WeightMatrix> k_b;  // per head: qk_nope -> kv_lora_rank (absorbs q_nope)
    std::vector<kernels::WeightMatrix> v_b;  // per head: kv_lora_rank -> v_head_dim
    std::vector<float> kv_b_split;       // per head k_b then v_b as fp32, split from an older file's attn_kv_b

    // Dense SwiGLU FFN (layers of a model without experts).
    kernels::WeightMatrix ffn_gate, ffn_up, ffn_down;
    Vector ffn_gate_b, ffn_up_b, ffn_down_b;

    // MoE FFN.
    bool moe = false;
    kernels::WeightMatrix gate_inp;      // router: n_embd -> n_expert
    bool fused_gate_up = false;
    kernels::ExpertMatrix gate_exps, up_exps;  // n_embd -> n_ff_exp per expert
    kernels::ExpertMatrix gate_up_exps;        // n_embd -> 2 n_ff_exp (gate rows, then up rows)
    kernels::ExpertMatrix down_exps;           // n_ff_exp -> n_embd
    // gpt-oss biases: router [n_expert], experts [n_expert, n_ff_exp] / [n_expert, n_embd].
    Vector gate_inp_b, gate_exps_b, up_exps_b, down_exps_b;
    Vector exp_probs_b;                        // deepseek V3 selection bias [n_expert] (selection only)

    // Shared expert (qwen2moe: sigmoid-gated by shexp_gate_inp · x).
    bool shared = false;
    kernels::WeightMatrix shexp_gate_inp;      // n_embd -> 1
    kernels::WeightMatrix shexp_gate, shexp_up, shexp_down;
};

struct ModelWeights {
    kernels::WeightMatrix token_embd;    // n_vocab rows of n_embd
    Vector output_norm;                  // [n_embd]
    kernels::WeightMatrix output;        // n_embd -> n_vocab (token_embd when tied)
    bool tied_output = false;
    Vector rope_freqs;                   // optional [n_rot / 2]
    std::vector<LayerWeights> layers;
    uint64_t inactive_expert_params = 0; // per token unused routed-expert weights (all layers)
};

// Binds every tensor the architecture needs. Sets hp.n_vocab from token_embd when no key gave it.
// Calls on_progress(fraction) after each tensor; a false return throws Error(Aborted).
// Throws Error(ModelFormat) naming a missing tensor, or a mis-shaped one with the expected and
// actual shapes; Error(UnsupportedType) naming a tensor whose type cannot be computed with.
ModelWeights bind_weights(const gguf::GgufFile& file, HParams& hp, const ArchSpec& spec,
                          const std::function<bool(double)>& on_progress);

}  // namespace moe::model
