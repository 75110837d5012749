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
    float rms_eps = 0.0f;          // attention.layer_norm_rms_epsilon (required)
    float kq_scale = 0.0f;         // 1 / sqrt(head_dim)
    kernels::RopeConfig rope;      // type, n_rot, base, freq_scale, YaRN (freq_factors bound with the weights)
    std::string rope_scaling;      // "none", "linear" or "yarn"

    bool is_moe() const noexcept { return n_expert > 0; }
    uint32_t q_width() const noexcept { return n_head * head_dim; }
    uint32_t kv_width() const noexcept { return n_head_kv * head_dim; }
};

// Reads and checks the hyper-parameters. Throws moe::Error(ModelFormat) naming the key for a
// missing required key, a value of the wrong type or an inconsistent value.
HParams read_hparams(const gguf::GgufFile& file, const ArchSpec& spec);

}  // namespace moe::model
