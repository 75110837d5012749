#include "arch.h"

namespace moe::model {

namespace {

using kernels::RopeType;

// clang-format off
constexpr ArchSpec kArchs[] = {
    // llama (dense Llama and Mixtral-style experts): NORM RoPE (the converter permutes q/k rows so
    // adjacent pairs reproduce HF's rotate_half); build_moe_ffn(..., norm_w = true, ...).
    {"llama",    RopeType::Norm, /*moe_required*/ false, /*norm_topk*/ true,  /*scale key*/ false,
     Gating::Softmax, QkNorm::None,    SharedExpert::None,         ExpertWidth::FeedForwardLength,
     /*tied*/ true,  /*rope_freqs*/ true,  /*rope_covers_head*/ true,
     Attention::Gqa, ExpertAct::Silu, "ffn_norm", /*sinks_swa*/ false, /*biases*/ false},
    // qwen2moe: NEOX, q/k/v biases (optional tensors, present in practice), no renormalisation,
    // sigmoid-gated shared expert.
    {"qwen2moe", RopeType::Neox, true,  false, false,
     Gating::Softmax, QkNorm::None,    SharedExpert::SigmoidGated, ExpertWidth::ExpertKeyOrFfnDivUsed,
     false, false, true, Attention::Gqa, ExpertAct::Silu, "ffn_norm", false, false},
    // qwen3moe: NEOX, per-head q/k RMSNorm before RoPE, renormalised top-k, tied output allowed.
    {"qwen3moe", RopeType::Neox, true,  true,  false,
     Gating::Softmax, QkNorm::PerHead, SharedExpert::None,         ExpertWidth::ExpertKeyOrFfnDivUsed,
     true,  false, true, Attention::Gqa, ExpertAct::Silu, "ffn_norm", false, false},
    // olmoe: NEOX, full-width q/k RMSNorm before the head reshape, no renormalisation.
    {"olmoe",    RopeType::Neox, true,  false, false,
     Gating::Softmax, QkNorm::Full,    SharedExpert::None,         ExpertWidth::FeedForwardLength,
     false, false, true, Attention::Gqa, ExpertAct::Silu, "ffn_norm", false, false},
    // deepseek2 (DeepSeek-V2/V3/R1, Kimi K2): NORM RoPE on the 64-dim key part only, MLA, leading
    // dense blocks, gating / renormalisation / scale from the file, selection bias, group-limited
    // routing, an ungated shared expert.
    {"deepseek2", RopeType::Norm, true, /*norm_topk: from key*/ false, true,
     Gating::FromKey, QkNorm::None,    SharedExpert::Ungated,      ExpertWidth::ExpertKey,
     true,  false, false, Attention::Mla, ExpertAct::Silu, "ffn_norm", false, false},
    // gpt-oss: NEOX RoPE with YaRN, sinks, sliding window on even layers, biases everywhere, top-k
    // on raw router logits with a softmax over the selected ones, clamped SwiGLU.
    {"gpt-oss",  RopeType::Neox, true,  false, false,
     Gating::SoftmaxWeight, QkNorm::None, SharedExpert::None,      ExpertWidth::ExpertKey,
     false, false, true, Attention::Gqa, ExpertAct::SwigluOai, "post_attention_norm", true, true},
};
// clang-format on

}  // namespace

const ArchSpec* find_arch(const std::string& name) noexcept {
    for (const ArchSpec& a : kArchs) {
        if (name == a.name) return &a;
    }
    return nullptr;
}

std::string supported_arch_names() {
    std::string s;
    for (const ArchSpec& a : kArchs) {
        if (!s.empty()) s += ", ";
        s += a.name;
    }
    return s;
}

}  // namespace moe::model
