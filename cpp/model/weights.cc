#include "weights.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <string>

#include "../common/error.h"
#include "../quant/ggml_types.h"
#include "../quant/quant.h"

namespace moe::model {

namespace {

using gguf::TensorInfo;
using kernels::ExpertMatrix;
using kernels::WeightMatrix;

constexpr uint32_t kF32 = static_cast<uint32_t>(quant::GgmlType::F32);

std::string shape_str(const int64_t* ne, size_t n) {
    std::string s = "[";
    for (size_t i = 0; i < n; ++i) {
        if (i) s += ", ";
        s += std::to_string(ne[i]);
    }
    return s + "]";
}

std::string blk(uint32_t il, const char* suffix) { return "blk." + std::to_string(il) + "." + suffix; }

class Binder {
public:
    Binder(const gguf::GgufFile& f, const std::function<bool(double)>& progress)
        : f_(f), progress_(progress), total_(f.tensors().size()) {}

    // The tensor, or nullptr when it is absent and optional.
    const TensorInfo* find(const std::string& name, bool required) {
        const TensorInfo* t = f_.find_tensor(name);
        if (!t && required) throw Error(ErrorCode::ModelFormat, "missing tensor " + name);
        return t;
    }

    // Shapes compare like llama.cpp's loader: every dimension, missing ones counting as 1.
    void check_shape(const TensorInfo& t, std::initializer_list<int64_t> expected) {
        int64_t want[gguf::kMaxDims] = {1, 1, 1, 1};
        size_t i = 0;
        for (int64_t e : expected) want[i++] = e;
        bool ok = true;
        for (size_t d = 0; d < gguf::kMaxDims; ++d) ok = ok && t.ne[d] == want[d];
        if (!ok) {
            const size_t shown = std::max<size_t>(t.n_dims, 1);
            throw Error(ErrorCode::ModelFormat, "tensor " + t.name + " has shape " + shape_str(t.ne, shown) +
                                                    ", expected " + shape_str(want, expected.size()) +
                                                    " (ggml order, ne0 first)");
        }
    }

    // Per-tensor .scale companions only come with NVFP4 weights, which this build cannot run.
    void reject_scale(const std::string& name) {
        const std::string base = name.substr(0, name.size() - std::strlen(".weight"));
        if (f_.find_tensor(base + ".scale")) {
            throw Error(ErrorCode::ModelFormat, "tensor " + base + ".scale: per-tensor weight scales are not supported");
        }
    }

    void check_matmul_type(const TensorInfo& t) {
        try {
            (void)kernels::dot_type_of(t.type);
        } catch (const Error& e) {
            throw Error(e.code(), "tensor " + t.name + ": " + e.what());
        }
    }

    WeightMatrix matrix(const std::string& name, int64_t n_in, int64_t n_out, bool required) {
        const TensorInfo* t = find(name, required);
        if (!t) return {};
        check_shape(*t, {n_in, n_out});
        check_matmul_type(*t);
        reject_scale(name);
        tick();
        return make_matrix(*t);
    }

    // A 1-D weight used as a one-row matrix (qwen2moe's shared-expert gate).
    WeightMatrix row_matrix(const std::string& name, int64_t n_in, bool required) {
        const TensorInfo* t = find(name, required);
        if (!t) return {};
        check_shape(*t, {n_in});
        check_matmul_type(*t);
        tick();
        return make_matrix(*t);
    }

    ExpertMatrix experts(const std::string& name, int64_t n_in, int64_t n_out, int64_t n_expert, bool required) {
        const TensorInfo* t = find(name, required);
        if (!t) return {};
        check_shape(*t, {n_in, n_out, n_expert});
        check_matmul_type(*t);
        reject_scale(name);
        tick();
        const quant::TypeTraits* tr = quant::type_traits(t->type);
        ExpertMatrix m;
        m.data = t->data;
        m.type = t->type;
        m.n_in = n_in;
        m.n_out = n_out;
        m.n_expert = n_expert;
        m.row_bytes = quant::row_size(*tr, n_in);
        m.expert_bytes = m.row_bytes * static_cast<size_t>(n_out);
        return m;
    }

    Vector vec(const std::string& name, int64_t n, bool required) {
        const TensorInfo* t = find(name, required);
        Vector v;
        if (!t) return v;
        check_shape(*t, {n});
        tick();
        v.n = n;
        if (t->type == kF32 && reinterpret_cast<uintptr_t>(t->data) % alignof(float) == 0) {
            v.data = reinterpret_cast<const float*>(t->data);
            return v;
        }
        v.owned.resize(static_cast<size_t>(n));
        quant::dequantize(t->type, t->data, v.owned.data(), n, cpu::Isa::Scalar, t->name.c_str());
        v.data = v.owned.data();
        return v;
    }

    // A 2-D parameter held flat as fp32 (gpt-oss expert biases {n0, n1}).
    Vector vec2(const std::string& name, int64_t n0, int64_t n1, bool required) {
        const TensorInfo* t = find(name, required);
        Vector v;
        if (!t) return v;
        check_shape(*t, {n0, n1});
        tick();
        v.n = n0 * n1;
        v.owned.resize(static_cast<size_t>(v.n));
        quant::dequantize(t->type, t->data, v.owned.data(), v.n, cpu::Isa::Scalar, t->name.c_str());
        v.data = v.owned.data();
        return v;
    }

    const TensorInfo* token_embd(uint32_t& n_vocab, int64_t n_embd) {
        const TensorInfo* t = find("token_embd.weight", true);
        if (n_vocab == 0) n_vocab = t->ne[1] > 0 && t->ne[1] <= INT32_MAX ? static_cast<uint32_t>(t->ne[1]) : 0;
        if (n_vocab == 0) throw Error(ErrorCode::ModelFormat, "tensor token_embd.weight has no rows");
        check_shape(*t, {n_embd, static_cast<int64_t>(n_vocab)});
        const quant::TypeTraits* tr = quant::type_traits(t->type);
        if (!tr || !tr->can_dequantize) {
            throw Error(ErrorCode::UnsupportedType, std::string("tensor token_embd.weight: cannot read rows of type ") +
                                                        quant::type_name(t->type));
        }
        tick();
        return t;
    }

    static WeightMatrix make_matrix(const TensorInfo& t) {
        const quant::TypeTraits* tr = quant::type_traits(t.type);
        WeightMatrix m;
        m.data = t.data;
        m.type = t.type;
        m.n_in = t.ne[0];
        m.n_out = t.ne[1];
        m.row_bytes = quant::row_size(*tr, t.ne[0]);
        return m;
    }

    void tick() {
        ++done_;
        if (progress_) {
            const double p = total_ ? static_cast<double>(done_) / static_cast<double>(std::max(total_, done_)) : 1.0;
            if (!progress_(p)) throw Error(ErrorCode::Aborted, "model load aborted");
        }
    }

private:
    const gguf::GgufFile& f_;
    const std::function<bool(double)>& progress_;
    size_t total_;
    size_t done_ = 0;
};

void bind_gqa(Binder& b, const HParams& hp, const ArchSpec& spec, uint32_t il, LayerWeights& L) {
    const int64_t E = hp.n_embd;
    const int64_t QW = hp.q_width(), KVW = hp.kv_width();
    // Attention projections: fused attn_qkv when present (newer conversions), else q/k/v.
    L.wqkv = b.matrix(blk(il, "attn_qkv.weight"), E, QW + 2 * KVW, false);
    if (L.wqkv.data) {
        L.fused_qkv = true;
        L.bqkv = b.vec(blk(il, "attn_qkv.bias"), QW + 2 * KVW, false);
    } else {
        L.wq = b.matrix(blk(il, "attn_q.weight"), E, QW, true);
        L.wk = b.matrix(blk(il, "attn_k.weight"), E, KVW, true);
        L.wv = b.matrix(blk(il, "attn_v.weight"), E, KVW, true);
    }
    if (!L.bqkv) {  // separate q/k/v biases, also allowed beside a fused weight (legacy files)
        L.bq = b.vec(blk(il, "attn_q.bias"), QW, spec.biases_everywhere && !L.fused_qkv);
        L.bk = b.vec(blk(il, "attn_k.bias"), KVW, spec.biases_everywhere && !L.fused_qkv);
        L.bv = b.vec(blk(il, "attn_v.bias"), KVW, spec.biases_everywhere && !L.fused_qkv);
    }
    if (spec.qk_norm == QkNorm::PerHead) {
        L.q_norm = b.vec(blk(il, "attn_q_norm.weight"), hp.head_dim, true);
        L.k_norm = b.vec(blk(il, "attn_k_norm.weight"), hp.head_dim, true);
    } else if (spec.qk_norm == QkNorm::Full) {
        L.q_norm = b.vec(blk(il, "attn_q_norm.weight"), QW, true);
        L.k_norm = b.vec(blk(il, "attn_k_norm.weight"), KVW, true);
    }
    L.wo = b.matrix(blk(il, "attn_output.weight"), QW, E, true);
    L.bo = b.vec(blk(il, "attn_output.bias"), E, spec.biases_everywhere);
    if (spec.sinks_and_swa) L.sinks = b.vec(blk(il, "attn_sinks.weight"), hp.n_head, true);
}

// deepseek2 attention (llama_model_deepseek2::load_arch_tensors). Older files carry attn_kv_b
// {kv_lora, n_head (nope + v)}: per head, nope rows of k_nope then v rows; they are split into
// k_b (the transpose of the k_nope rows) and v_b, kept as fp32 (a few MiB per layer).
void bind_mla(Binder& b, const HParams& hp, uint32_t il, LayerWeights& L) {
    const HParams::Mla& m = hp.mla;
    const int64_t E = hp.n_embd, H = hp.n_head, R = m.kv_lora_rank, NOPE = m.qk_nope, DV = m.v_head_dim;
    if (m.q_lora_rank > 0) {
        L.wq_a = b.matrix(blk(il, "attn_q_a.weight"), E, m.q_lora_rank, true);
        L.q_a_norm = b.vec(blk(il, "attn_q_a_norm.weight"), m.q_lora_rank, true);
        L.wq_b = b.matrix(blk(il, "attn_q_b.weight"), m.q_lora_rank, H * m.qk_head_dim, true);
    } else {
        L.wq = b.matrix(blk(il, "attn_q.weight"), E, H * m.qk_head_dim, true);
    }
    L.wkv_a_mqa = b.matrix(blk(il, "attn_kv_a_mqa.weight"), E, R + hp.n_rot, true);
    L.kv_a_norm = b.vec(blk(il, "attn_kv_a_norm.weight"), R, true);
    L.k_b.resize(static_cast<size_t>(H));
    L.v_b.resize(static_cast<size_t>(H));
    if (!m.file_has_kv_b) {
        const ExpertMatrix kb = b.experts(blk(il, "attn_k_b.weight"), NOPE, R, H, true);
        const ExpertMatrix vb = b.experts(blk(il, "attn_v_b.weight"), R, DV, H, true);
        for (int64_t h = 0; h < H; ++h) {
            L.k_b[h] = kb.expert(h);
            L.v_b[h] = vb.expert(h);
        }
    } else {
        // Both halves become fp32 copies, so the layer computes exactly what the MLA form of these
        // weights (the converter's split, stored as F32) computes.
        const WeightMatrix kvb = b.matrix(blk(il, "attn_kv_b.weight"), R, H * (NOPE + DV), true);
        L.kv_b_split.resize(static_cast<size_t>(H * R * (NOPE + DV)));
        std::vector<float> rows(static_cast<size_t>(NOPE * R));
        for (int64_t h = 0; h < H; ++h) {
            const uint8_t* head = kvb.data + static_cast<size_t>(h * (NOPE + DV)) * kvb.row_bytes;
            for (int64_t r = 0; r < NOPE; ++r) {
                quant::dequantize(kvb.type, head + static_cast<size_t>(r) * kvb.row_bytes, rows.data() + r * R, R,
                                  cpu::Isa::Scalar, "attn_kv_b.weight");
            }
            float* kb = L.kv_b_split.data() + h * R * (NOPE + DV);  // kb: [R, NOPE], then vb: [DV, R]
            for (int64_t j = 0; j < R; ++j) {
                for (int64_t d = 0; d < NOPE; ++d) kb[j * NOPE + d] = rows[d * R + j];
            }
            float* vb = kb + R * NOPE;
            for (int64_t v = 0; v < DV; ++v) {
                quant::dequantize(kvb.type, head + static_cast<size_t>(NOPE + v) * kvb.row_bytes, vb + v * R, R,
                                  cpu::Isa::Scalar, "attn_kv_b.weight");
            }
            L.k_b[h] = WeightMatrix{reinterpret_cast<const uint8_t*>(kb), kF32, NOPE, R, static_cast<size_t>(NOPE) * 4};
            L.v_b[h] = WeightMatrix{reinterpret_cast<const uint8_t*>(vb), kF32, R, DV, static_cast<size_t>(R) * 4};
        }
    }
    for (int64_t h = 0; h < H; ++h) {
        L.k_b[h].slice_of_3d = L.v_b[h].slice_of_3d = true;
        L.k_b[h].strided_input = true;  // q_nope is a permuted view in llama.cpp's graph
    }
    L.wo = b.matrix(blk(il, "attn_output.weight"), H * DV, E, true);
}

}  // namespace

ModelWeights bind_weights(const gguf::GgufFile& file, HParams& hp, const ArchSpec& spec,
                          const std::function<bool(double)>& on_progress) {
    Binder b(file, on_progress);
    ModelWeights w;
    const int64_t E = hp.n_embd;

    const TensorInfo* embd = b.token_embd(hp.n_vocab, E);
    w.token_embd = Binder::make_matrix(*embd);
    const int64_t V = hp.n_vocab;
    w.output_norm = b.vec("output_norm.weight", E, true);
    w.output = b.matrix("output.weight", E, V, !spec.output_may_be_tied);
    if (!w.output.data) {
        // Tied: the embedding doubles as the LM head, so it must also be a matmul type.
        b.check_matmul_type(*embd);
        w.output = w.token_embd;
        w.tied_output = true;
    }
    if (spec.rope_freqs_allowed) w.rope_freqs = b.vec("rope_freqs.weight", hp.n_rot / 2, false);

    w.layers.resize(hp.n_layer);
    for (uint32_t il = 0; il < hp.n_layer; ++il) {
        LayerWeights& L = w.layers[il];
        L.attn_norm = b.vec(blk(il, "attn_norm.weight"), E, true);
        if (spec.attention == Attention::Mla) {
            bind_mla(b, hp, il, L);
        } else {
            bind_gqa(b, hp, spec, il, L);
        }
        L.ffn_norm = b.vec(blk(il, spec.ffn_norm) + std::string(".weight"), E, true);

        if (!hp.layer_is_moe(il)) {
            const int64_t F = hp.n_ff[il];
            if (F == 0) throw Error(ErrorCode::ModelFormat, "missing key " + hp.arch + ".feed_forward_length");
            L.ffn_gate = b.matrix(blk(il, "ffn_gate.weight"), E, F, true);
            L.ffn_up = b.matrix(blk(il, "ffn_up.weight"), E, F, true);
            L.ffn_down = b.matrix(blk(il, "ffn_down.weight"), F, E, true);
            L.ffn_gate_b = b.vec(blk(il, "ffn_gate.bias"), F, false);
            L.ffn_up_b = b.vec(blk(il, "ffn_up.bias"), F, false);
            L.ffn_down_b = b.vec(blk(il, "ffn_down.bias"), E, false);
            continue;
        }

        L.moe = true;
        const int64_t X = hp.n_expert, F = hp.n_ff_exp;
        L.gate_inp = b.matrix(blk(il, "ffn_gate_inp.weight"), E, X, true);
        L.gate_up_exps = b.experts(blk(il, "ffn_gate_up_exps.weight"), E, 2 * F, X, false);
        if (L.gate_up_exps.data) {
            L.fused_gate_up = true;
        } else {
            L.gate_exps = b.experts(blk(il, "ffn_gate_exps.weight"), E, F, X, true);
            L.up_exps = b.experts(blk(il, "ffn_up_exps.weight"), E, F, X, true);
        }
        L.down_exps = b.experts(blk(il, "ffn_down_exps.weight"), F, E, X, true);
        L.exp_probs_b = b.vec(blk(il, "exp_probs_b.bias"), X, false);
        uint64_t per_expert = static_cast<uint64_t>(3 * F * E);
        if (spec.biases_everywhere) {
            if (L.fused_gate_up) {
                throw Error(ErrorCode::ModelFormat, "tensor " + blk(il, "ffn_gate_up_exps.weight") +
                                                        ": a fused expert gate/up is not supported with expert biases");
            }
            L.gate_inp_b = b.vec(blk(il, "ffn_gate_inp.bias"), X, true);
            L.gate_exps_b = b.vec2(blk(il, "ffn_gate_exps.bias"), F, X, true);
            L.up_exps_b = b.vec2(blk(il, "ffn_up_exps.bias"), F, X, true);
            L.down_exps_b = b.vec2(blk(il, "ffn_down_exps.bias"), E, X, true);
            per_expert += static_cast<uint64_t>(2 * F + E);
        }
        // Per token only expert_used_count of the n_expert routed experts run.
        w.inactive_expert_params += per_expert * (hp.n_expert - hp.n_expert_used);

        if (spec.shared_expert != SharedExpert::None) {
            const int64_t S = hp.n_ff_shexp;
            L.shared = true;
            if (spec.shared_expert == SharedExpert::SigmoidGated) {
                L.shexp_gate_inp = b.row_matrix(blk(il, "ffn_gate_inp_shexp.weight"), E, true);
            }
            L.shexp_gate = b.matrix(blk(il, "ffn_gate_shexp.weight"), E, S, true);
            L.shexp_up = b.matrix(blk(il, "ffn_up_shexp.weight"), E, S, true);
            L.shexp_down = b.matrix(blk(il, "ffn_down_shexp.weight"), S, E, true);
        }
    }
    hp.rope.freq_factors = w.rope_freqs ? w.rope_freqs.data : nullptr;
    hp.rope_swa.freq_factors = hp.rope.freq_factors;
    return w;
}

}  // namespace moe::model
