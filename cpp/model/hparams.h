// Hyper-parameters read from a GGUF's `{arch}.*` keys with llama.cpp's defaults (llama_model::
// load_hparams, the per-arch load_arch_hparams and llama_context's RoPE / YaRN setup).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "../gguf/gguf_file.h"
#include "../kernels/ops.h"
#include "arch.h"

namespace moe::model {

struct HParams {
    std::string arch;
    uint32_t n_ctx_train = 0;      // {arch}.context_length
    uint32_t n_embd = 0;           // {arch}.embedding_length
    uint32_t n_layer = 0;          // {arch}.block_count
    uint32_t n_vocab = 0;          // tokenizer.ggml.tokens count, else {arch}.vocab_size, else 0 (token_embd rows)
    uint32_t n_head = 0;           // attention.head_count (per-layer arrays must be uniform)
    uint32_t n_head_kv = 0;        // attention.head_count_kv, default n_head
    uint32_t head_dim = 0;         // attention.key_length, default n_embd / n_head (value_length must agree)
    uint32_t n_rot = 0;            // rope.dimension_count, default head_dim
    std::vector<uint32_t> n_ff;    // feed_forward_length per layer (scalar or array; 0 when absent)
    uint32_t n_expert = 0;         // expert_count
    uint32_t n_expert_used = 0;    // expert_used_count
    uint32_t n_expert_groups = 0;  // expert_group_count (group-limited routing when > 1)
    uint32_t n_group_used = 0;     // expert_group_used_count
    uint32_t n_ff_exp = 0;         // routed expert width (per ArchSpec::expert_width)
    uint32_t n_ff_shexp = 0;       // shared expert width (qwen2moe: expert_shared_feed_forward_length, else n_ff)
    float expert_weights_scale = 0.0f;  // 0 or 1: no scaling
    Gating gating = Gating::Softmax;    // resolved (deepseek2: expert_gating_func)
    bool norm_topk = false;             // renormalise the selected weights (deepseek2: expert_weights_norm)
    uint32_t n_layer_dense_lead = 0;    // deepseek2 leading_dense_block_count: dense FFN layers first
    uint32_t n_expert_shared = 0;       // deepseek2 expert_shared_count (shared FFN width n_ff_exp x count)
    float rms_eps = 0.0f;          // attention.layer_norm_rms_epsilon (required)
    float kq_scale = 0.0f;         // 1 / sqrt(head_dim) (deepseek2: mscale^2 / sqrt(qk head size))
    kernels::RopeConfig rope;      // type, n_rot, base, freq_scale, YaRN (freq_factors bound with the weights)
    std::string rope_scaling;      // "none", "linear" or "yarn"
    float yarn_log_mul = 0.0f;     // deepseek2 rope.scaling.yarn_log_multiplier / 0.1 (mscale_all_dim)

    // Value head size; differs from head_dim only with MLA (the latent width).
    uint32_t head_dim_v = 0;

    // Multi-head latent attention (deepseek2). The cache row of a token is [latent | roped key]
    // (head_dim = kv_lora_rank + n_rot values, n_head_kv = 1); queries are absorbed through k_b.
    struct Mla {
        bool file_has_kv_b = false;  // older files: attn_kv_b, split into k_b / v_b at load
        uint32_t q_lora_rank = 0;    // 0: direct attn_q (V2-Lite)
        uint32_t kv_lora_rank = 0;
        uint32_t qk_head_dim = 0;    // key_length_mla (legacy: key_length): nope + rope
        uint32_t qk_nope = 0;        // qk_head_dim - n_rot
        uint32_t v_head_dim = 0;     // value_length_mla (legacy: value_length)
    } mla;

    // Sliding-window attention (gpt-oss): layers where swa_layer[il] attend to the last n_swa keys.
    uint32_t n_swa = 0;
    std::vector<bool> swa_layer;
    kernels::RopeConfig rope_swa;  // RoPE of the sliding-window layers (rope.freq_base_swa)

    bool is_moe() const noexcept { return n_expert > 0; }
    bool is_swa(uint32_t il) const noexcept { return il < swa_layer.size() && swa_layer[il]; }
    // Whether layer il runs the routed experts (deepseek2's leading blocks are dense).
    bool layer_is_moe(uint32_t il) const noexcept { return is_moe() && il >= n_layer_dense_lead; }
    uint32_t q_width() const noexcept { return n_head * head_dim; }
    uint32_t kv_width() const noexcept { return n_head_kv * head_dim; }
};

// Reads and checks the hyper-parameters. Throws moe::Error(ModelFormat) naming the key for a
// missing required key, a value of the wrong type or an inconsistent value.
HParams read_hparams(const gguf::GgufFile& file, const ArchSpec& spec);

}  // namespace moe::model
