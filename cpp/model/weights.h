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
    kernels::WeightMatrix wo;            // q_width -> n_embd
    Vector bo;                           // optional [n_embd]
    Vector ffn_norm;                     // [n_embd]

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
