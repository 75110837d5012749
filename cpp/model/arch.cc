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
     /*tied*/ true,  /*rope_freqs*/ true,  /*rope_covers_head*/ true},
    // qwen2moe: NEOX, q/k/v biases (optional tensors, present in practice), no renormalisation,
    // sigmoid-gated shared expert.
    {"qwen2moe", RopeType::Neox, true,  false, false,
     Gating::Softmax, QkNorm::None,    SharedExpert::SigmoidGated, ExpertWidth::ExpertKeyOrFfnDivUsed,
     false, false, true},
    // qwen3moe: NEOX, per-head q/k RMSNorm before RoPE, renormalised top-k, tied output allowed.
    {"qwen3moe", RopeType::Neox, true,  true,  false,
     Gating::Softmax, QkNorm::PerHead, SharedExpert::None,         ExpertWidth::ExpertKeyOrFfnDivUsed,
     true,  false, true},
    // olmoe: NEOX, full-width q/k RMSNorm before the head reshape, no renormalisation.
    {"olmoe",    RopeType::Neox, true,  false, false,
     Gating::Softmax, QkNorm::Full,    SharedExpert::None,         ExpertWidth::FeedForwardLength,
     false, false, true},
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
