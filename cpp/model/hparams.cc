#include "hparams.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <utility>

#include "../common/error.h"

namespace moe::model {

namespace {

using gguf::MetadataEntry;
using gguf::ValueType;

constexpr uint32_t kMaxExperts = 512;  // LLAMA_MAX_EXPERTS

[[noreturn]] void fail(const std::string& msg) { throw Error(ErrorCode::ModelFormat, msg); }

bool is_integer(ValueType t) {
    switch (t) {
        case ValueType::U8: case ValueType::I8: case ValueType::U16: case ValueType::I16:
        case ValueType::U32: case ValueType::I32: case ValueType::U64: case ValueType::I64:
            return true;
        default:
            return false;
    }
}

bool is_signed(ValueType t) {
    return t == ValueType::I8 || t == ValueType::I16 || t == ValueType::I32 || t == ValueType::I64;
}

// One packed array element of an integer type, as int64 (the array bytes may be unaligned).
int64_t array_int(const MetadataEntry& e, uint64_t i) {
    const uint8_t* p = e.array_data + i * gguf::value_type_size(e.elem_type);
    switch (e.elem_type) {
        case ValueType::U8: return p[0];
        case ValueType::I8: return static_cast<int8_t>(p[0]);
        case ValueType::U16: { uint16_t v; std::memcpy(&v, p, 2); return v; }
        case ValueType::I16: { int16_t v; std::memcpy(&v, p, 2); return v; }
        case ValueType::U32: { uint32_t v; std::memcpy(&v, p, 4); return v; }
        case ValueType::I32: { int32_t v; std::memcpy(&v, p, 4); return v; }
        case ValueType::U64: {
            uint64_t v;
            std::memcpy(&v, p, 8);
            return v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ? -1 : static_cast<int64_t>(v);
        }
        case ValueType::I64: { int64_t v; std::memcpy(&v, p, 8); return v; }
        default: return -1;
    }
}

// Typed access to `{arch}.<suffix>` keys (and absolute keys), with messages naming the key.
class Keys {
public:
    Keys(const gguf::GgufFile& f, std::string arch) : f_(f), prefix_(std::move(arch) + ".") {}

    std::string key(const std::string& suffix) const { return prefix_ + suffix; }

    const MetadataEntry* find(const std::string& full_key) const { return f_.find(full_key); }

    // Integer scalar that fits in uint32. Returns false when absent (and not required).
    bool u32(const std::string& full_key, uint32_t& out, bool required) const {
        const MetadataEntry* e = find(full_key);
        if (!e) {
            if (required) fail("missing key " + full_key);
            return false;
        }
        if (!is_integer(e->type)) {
            fail("key " + full_key + " has type " + gguf::value_type_name(e->type) + ", expected an integer");
        }
        const bool negative = is_signed(e->type) && e->i64 < 0;
        const uint64_t v = is_signed(e->type) ? static_cast<uint64_t>(e->i64) : e->u64;
        if (negative || v > std::numeric_limits<uint32_t>::max()) {
            fail("key " + full_key + " is out of range");
        }
        out = static_cast<uint32_t>(v);
        return true;
    }

    bool f32(const std::string& full_key, float& out, bool required) const {
        const MetadataEntry* e = find(full_key);
        if (!e) {
            if (required) fail("missing key " + full_key);
            return false;
        }
        if (e->type != ValueType::F32 && e->type != ValueType::F64) {
            fail("key " + full_key + " has type " + gguf::value_type_name(e->type) + ", expected a float");
        }
        out = static_cast<float>(e->f64);
        return true;
    }

    bool boolean(const std::string& full_key, bool& out) const {
        const MetadataEntry* e = find(full_key);
        if (!e) return false;
        if (e->type != ValueType::Bool) {
            fail("key " + full_key + " has type " + gguf::value_type_name(e->type) + ", expected a bool");
        }
        out = e->u64 != 0;
        return true;
    }

    bool str(const std::string& full_key, std::string& out) const {
        const MetadataEntry* e = find(full_key);
        if (!e) return false;
        if (e->type != ValueType::String) {
            fail("key " + full_key + " has type " + gguf::value_type_name(e->type) + ", expected a string");
        }
        out = std::string(e->str);
        return true;
    }

    // llama.cpp's get_key_or_arr: a scalar applies to every layer; an array gives one value per layer.
    bool u32_per_layer(const std::string& full_key, std::vector<uint32_t>& out, uint32_t n_layer, bool required) const {
        const MetadataEntry* e = find(full_key);
        if (!e) {
            if (required) fail("missing key " + full_key);
            return false;
        }
        if (e->type == ValueType::Array) {
            if (!is_integer(e->elem_type)) {
                fail("key " + full_key + " is an array of " + gguf::value_type_name(e->elem_type) +
                     ", expected integers");
            }
            if (e->count != n_layer) {
                fail("key " + full_key + " has " + std::to_string(e->count) + " entries, expected one per layer (" +
                     std::to_string(n_layer) + ")");
            }
            out.assign(n_layer, 0);
            for (uint32_t i = 0; i < n_layer; ++i) {
                const int64_t v = array_int(*e, i);
                if (v < 0 || v > std::numeric_limits<uint32_t>::max()) fail("key " + full_key + " is out of range");
                out[i] = static_cast<uint32_t>(v);
            }
            return true;
        }
        uint32_t v = 0;
        u32(full_key, v, true);
        out.assign(n_layer, v);
        return true;
    }

private:
    const gguf::GgufFile& f_;
    std::string prefix_;
};

// The one value of a per-layer array that this engine requires to be uniform.
uint32_t uniform(const std::vector<uint32_t>& v, const std::string& key) {
    for (uint32_t x : v) {
        if (x != v[0]) fail("key " + key + " varies across layers, which is not supported");
    }
    return v.empty() ? 0 : v[0];
}

// deepseek2's attention keys (llama_model_deepseek2::load_arch_hparams), checked for consistency.
void read_mla(const Keys& k, const ArchSpec& spec, HParams& hp) {
    HParams::Mla& m = hp.mla;
    // llama.cpp's "lite" variants (DeepSeek-V2-Lite and kin) project q directly and never read
    // q_lora_rank; other files must give it, but a file without it still runs with attn_q.
    const bool lite = hp.n_layer == 27 || hp.n_layer == 26 || (hp.n_layer == 48 && hp.n_vocab == 128256);
    if (!lite) k.u32(k.key("attention.q_lora_rank"), m.q_lora_rank, false);
    k.u32(k.key("attention.kv_lora_rank"), m.kv_lora_rank, true);
    if (m.kv_lora_rank == 0) fail("key " + k.key("attention.kv_lora_rank") + " is 0");
    uint32_t k_mla = 0, v_mla = 0;
    const bool has_k = k.u32(k.key("attention.key_length_mla"), k_mla, false);
    const bool has_v = k.u32(k.key("attention.value_length_mla"), v_mla, false);
    m.file_has_kv_b = !(has_k && has_v);
    if (m.file_has_kv_b) {
        // Older files: the head sizes are key_length / value_length, attn_kv_b holds k_nope and v.
        m.qk_head_dim = hp.head_dim;
        m.v_head_dim = hp.head_dim_v;
    } else {
        m.qk_head_dim = k_mla;
        m.v_head_dim = v_mla;
        const uint32_t row = m.kv_lora_rank + hp.n_rot;
        if (hp.head_dim != row) {
            fail("key " + k.key("attention.key_length") + " = " + std::to_string(hp.head_dim) +
                 " must be kv_lora_rank + rope.dimension_count = " + std::to_string(row) + " in an MLA file");
        }
        if (hp.head_dim_v != m.kv_lora_rank) {
            fail("key " + k.key("attention.value_length") + " = " + std::to_string(hp.head_dim_v) +
                 " must equal " + k.key("attention.kv_lora_rank") + " = " + std::to_string(m.kv_lora_rank) +
                 " in an MLA file");
        }
        if (hp.n_head_kv != 1) {
            fail("key " + k.key("attention.head_count_kv") + " = " + std::to_string(hp.n_head_kv) +
                 " must be 1 in an MLA file (one latent row per token)");
        }
    }
    if (m.v_head_dim == 0) fail("key " + k.key("attention.value_length_mla") + " is 0");
    if (m.qk_head_dim <= hp.n_rot) {
        fail("key " + k.key(m.file_has_kv_b ? "attention.key_length" : "attention.key_length_mla") + " = " +
             std::to_string(m.qk_head_dim) + " must exceed rope.dimension_count = " + std::to_string(hp.n_rot));
    }
    m.qk_nope = m.qk_head_dim - hp.n_rot;
    float temp_scale = 0.0f;
    if (k.f32(k.key("attention.temperature_scale"), temp_scale, false) && temp_scale != 0.0f) {
        fail("key " + k.key("attention.temperature_scale") + ": attention temperature tuning is not supported");
    }
    (void)spec;
    // The absorbed form caches one row of [latent | roped key] per token, read by every head.
    hp.head_dim = m.kv_lora_rank + hp.n_rot;
    hp.head_dim_v = m.kv_lora_rank;
    hp.n_head_kv = 1;
}

}  // namespace

HParams read_hparams(const gguf::GgufFile& file, const ArchSpec& spec) {
    HParams hp;
    hp.arch = spec.name;
    const Keys k(file, hp.arch);

    k.u32(k.key("context_length"), hp.n_ctx_train, true);
    k.u32(k.key("embedding_length"), hp.n_embd, true);
    k.u32(k.key("block_count"), hp.n_layer, true);
    if (hp.n_embd == 0) fail("key " + k.key("embedding_length") + " is 0");
    if (hp.n_layer == 0) fail("key " + k.key("block_count") + " is 0");
    if (hp.n_ctx_train == 0) fail("key " + k.key("context_length") + " is 0");

    // Vocabulary size: the tokenizer's token list (what llama.cpp checks token_embd against), else
    // the arch key, else token_embd decides.
    if (const MetadataEntry* tokens = k.find("tokenizer.ggml.tokens");
        tokens && tokens->type == ValueType::Array && tokens->count <= std::numeric_limits<uint32_t>::max()) {
        hp.n_vocab = static_cast<uint32_t>(tokens->count);
    } else {
        k.u32(k.key("vocab_size"), hp.n_vocab, false);
    }

    // Experts (generic keys, read for every arch as llama.cpp does).
    k.u32(k.key("expert_count"), hp.n_expert, false);
    k.u32(k.key("expert_used_count"), hp.n_expert_used, false);
    k.u32(k.key("expert_group_count"), hp.n_expert_groups, false);
    k.u32(k.key("expert_group_used_count"), hp.n_group_used, false);
    if (hp.n_expert > kMaxExperts) {
        fail("key " + k.key("expert_count") + " = " + std::to_string(hp.n_expert) + " exceeds " +
             std::to_string(kMaxExperts));
    }
    if (hp.n_expert_used > hp.n_expert) {
        fail("key " + k.key("expert_used_count") + " = " + std::to_string(hp.n_expert_used) + " exceeds " +
             k.key("expert_count") + " = " + std::to_string(hp.n_expert));
    }
    if (hp.n_expert > 0) {
        if (hp.n_expert_used == 0) fail("key " + k.key("expert_used_count") + " must be > 0 for a MoE model");
        if (hp.n_expert_groups >= hp.n_expert) fail("key " + k.key("expert_group_count") + " must be < expert_count");
        if (hp.n_expert_groups > 1) {
            if (hp.n_expert % hp.n_expert_groups != 0) {
                fail("key " + k.key("expert_count") + " is not a multiple of " + k.key("expert_group_count"));
            }
            if (hp.n_group_used == 0 || hp.n_group_used > hp.n_expert_groups) {
                fail("key " + k.key("expert_group_used_count") + " = " + std::to_string(hp.n_group_used) +
                     " must be in [1, expert_group_count = " + std::to_string(hp.n_expert_groups) + "]");
            }
            if (static_cast<uint64_t>(hp.n_group_used) * (hp.n_expert / hp.n_expert_groups) < hp.n_expert_used) {
                fail("key " + k.key("expert_group_used_count") + " = " + std::to_string(hp.n_group_used) +
                     " leaves fewer experts than " + k.key("expert_used_count") + " = " +
                     std::to_string(hp.n_expert_used) + " to choose from");
            }
        }
    } else {
        if (spec.moe_required) {
            fail(std::string(spec.name) + " needs " + k.key("expert_count") + " > 0 (and expert_used_count > 0)");
        }
        if (hp.n_expert_used != 0) fail("key " + k.key("expert_used_count") + " is set but expert_count is 0");
        hp.n_expert_groups = hp.n_group_used = 0;
    }

    // Per-layer widths and head counts.
    hp.n_ff.assign(hp.n_layer, 0);
    k.u32_per_layer(k.key("feed_forward_length"), hp.n_ff, hp.n_layer, false);
    std::vector<uint32_t> heads, heads_kv;
    k.u32_per_layer(k.key("attention.head_count"), heads, hp.n_layer, true);
    hp.n_head = uniform(heads, k.key("attention.head_count"));
    heads_kv = heads;
    k.u32_per_layer(k.key("attention.head_count_kv"), heads_kv, hp.n_layer, false);
    hp.n_head_kv = uniform(heads_kv, k.key("attention.head_count_kv"));
    if (hp.n_head == 0) fail("key " + k.key("attention.head_count") + " is 0");
    if (hp.n_head_kv == 0 || hp.n_head % hp.n_head_kv != 0) {
        fail("key " + k.key("attention.head_count_kv") + " = " + std::to_string(hp.n_head_kv) +
             " does not divide attention.head_count = " + std::to_string(hp.n_head));
    }

    hp.head_dim = hp.n_embd / hp.n_head;
    k.u32(k.key("attention.key_length"), hp.head_dim, false);
    uint32_t head_dim_v = hp.n_embd / hp.n_head;
    k.u32(k.key("attention.value_length"), head_dim_v, false);
    if (hp.head_dim == 0) fail("attention head size is 0 (" + k.key("attention.key_length") + ")");
    if (head_dim_v == 0) fail("attention value head size is 0 (" + k.key("attention.value_length") + ")");
    hp.head_dim_v = head_dim_v;
    if (head_dim_v != hp.head_dim && spec.attention != Attention::Mla) {
        fail("key " + k.key("attention.value_length") + " = " + std::to_string(head_dim_v) + " differs from key_length " +
             std::to_string(hp.head_dim) + ", which " + spec.name + " does not support");
    }
    hp.n_rot = hp.head_dim;
    k.u32(k.key("rope.dimension_count"), hp.n_rot, false);
    if (hp.n_rot == 0 || hp.n_rot % 2 != 0 || hp.n_rot > hp.head_dim || hp.n_rot > 1024) {
        fail("key " + k.key("rope.dimension_count") + " = " + std::to_string(hp.n_rot) +
             " must be even and at most the head size " + std::to_string(hp.head_dim) + " (and 1024)");
    }
    if (spec.rope_covers_head && hp.n_rot != hp.head_dim) {
        fail("key " + k.key("rope.dimension_count") + " = " + std::to_string(hp.n_rot) + " must equal the head size " +
             std::to_string(hp.head_dim) + " for " + spec.name);
    }

    k.f32(k.key("attention.layer_norm_rms_epsilon"), hp.rms_eps, true);

    if (spec.attention == Attention::Mla) read_mla(k, spec, hp);

    // Routing as the architecture fixes it; deepseek2 reads it from the file.
    hp.gating = spec.gating;
    hp.norm_topk = spec.norm_topk_weights;
    if (spec.gating == Gating::FromKey && hp.is_moe()) {
        k.boolean(k.key("expert_weights_norm"), hp.norm_topk);
        uint32_t func = 0;
        k.u32(k.key("expert_gating_func"), func, false);
        switch (func) {
            case 0:
                // Absent: softmax (DeepSeek-V2 files predate the key), except llama.cpp's GLM-4.7-Flash
                // heuristic (47/48 layers, vocabulary 154880), which gets sigmoid.
                hp.gating = (hp.n_layer == 47 || hp.n_layer == 48) && hp.n_vocab == 154880 ? Gating::Sigmoid : Gating::Softmax;
                break;
            case 1: hp.gating = Gating::Softmax; break;
            case 2: hp.gating = Gating::Sigmoid; break;
            case 3: hp.gating = Gating::SoftmaxWeight; break;
            default:
                fail("key " + k.key("expert_gating_func") + " = " + std::to_string(func) +
                     " is not supported (1 softmax, 2 sigmoid, 3 softmax over the selected)");
        }
    }
    if (spec.gating == Gating::FromKey && !hp.is_moe()) hp.gating = Gating::Softmax;

    // Expert widths.
    if (hp.is_moe()) {
        if (spec.expert_width == ExpertWidth::ExpertKey) {
            std::vector<uint32_t> widths;
            k.u32_per_layer(k.key("expert_feed_forward_length"), widths, hp.n_layer, true);
            hp.n_ff_exp = uniform(widths, k.key("expert_feed_forward_length"));
        } else if (spec.expert_width == ExpertWidth::ExpertKeyOrFfnDivUsed) {
            if (!k.u32(k.key("expert_feed_forward_length"), hp.n_ff_exp, false) || hp.n_ff_exp == 0) {
                hp.n_ff_exp = hp.n_ff[0] / hp.n_expert_used;
            }
        } else {
            hp.n_ff_exp = hp.n_ff[0];
        }
        if (hp.n_ff_exp == 0) fail("routed expert width is 0 (" + k.key("feed_forward_length") + ")");
        if (spec.shared_expert == SharedExpert::SigmoidGated) {
            if (!k.u32(k.key("expert_shared_feed_forward_length"), hp.n_ff_shexp, false) || hp.n_ff_shexp == 0) {
                hp.n_ff_shexp = hp.n_ff[0];
            }
            if (hp.n_ff_shexp == 0) fail("shared expert width is 0 (" + k.key("expert_shared_feed_forward_length") + ")");
        }
        if (spec.shared_expert == SharedExpert::Ungated) {
            k.u32(k.key("expert_shared_count"), hp.n_expert_shared, true);
            hp.n_ff_shexp = hp.n_ff_exp * hp.n_expert_shared;
        }
        if (spec.reads_expert_weights_scale) k.f32(k.key("expert_weights_scale"), hp.expert_weights_scale, false);
    }
    if (spec.attention == Attention::Mla) {
        k.u32(k.key("leading_dense_block_count"), hp.n_layer_dense_lead, false);
        if (hp.n_layer_dense_lead > hp.n_layer) {
            fail("key " + k.key("leading_dense_block_count") + " = " + std::to_string(hp.n_layer_dense_lead) +
                 " exceeds " + k.key("block_count") + " = " + std::to_string(hp.n_layer));
        }
    }

    hp.kq_scale = 1.0f / std::sqrt(static_cast<float>(hp.head_dim));

    // RoPE, as llama_model::load_hparams and the llama_context constructor set it up.
    kernels::RopeConfig& r = hp.rope;
    r.type = spec.rope;
    r.n_rot = static_cast<int>(hp.n_rot);
    r.freq_base = 10000.0f;
    k.f32(k.key("rope.freq_base"), r.freq_base, false);
    hp.rope_scaling = "linear";
    k.str(k.key("rope.scaling.type"), hp.rope_scaling);
    if (hp.rope_scaling != "none" && hp.rope_scaling != "linear" && hp.rope_scaling != "yarn") {
        fail("key " + k.key("rope.scaling.type") + " = '" + hp.rope_scaling +
             "' is not supported (none, linear, yarn)");
    }
    float factor = 0.0f;
    if (!k.f32(k.key("rope.scaling.factor"), factor, false)) k.f32(k.key("rope.scale_linear"), factor, false);
    r.freq_scale = factor == 0.0f ? 1.0f : 1.0f / factor;
    if (hp.rope_scaling == "none") r.freq_scale = 1.0f;  // never scale when the type says none
    uint32_t n_ctx_orig = hp.n_ctx_train;
    k.u32(k.key("rope.scaling.original_context_length"), n_ctx_orig, false);
    r.n_ctx_orig = static_cast<int>(n_ctx_orig);
    r.ext_factor = hp.rope_scaling == "yarn" ? 1.0f : 0.0f;
    r.beta_fast = 32.0f;  // llama.cpp ignores the converter's yarn_beta_* keys for these archs
    r.beta_slow = 1.0f;
    r.attn_factor = 1.0f;
    if (spec.attention == Attention::Mla && k.f32(k.key("rope.scaling.yarn_log_multiplier"), hp.yarn_log_mul, false)) {
        hp.yarn_log_mul /= 0.1f;  // the converter stores 0.1 x mscale_all_dim
    }
    if (r.ext_factor != 0.0f) {
        // ggml multiplies cos/sin by (1 + 0.1 ln(1/freq_scale)) when the YaRN blend is on; llama.cpp
        // divides attn_factor by that around get_mscale(factor, m) = 1 + 0.1 m ln factor, which is
        // get_mscale(f, mscale) / get_mscale(f, yarn_log_mul) when the file gives the multiplier
        // (mscale = 1, or the multiplier itself for deepseek2 when it is not 1: DeepSeek-V2).
        const float f = 1.0f / r.freq_scale;
        const auto get_mscale = [](float scale, float m) { return scale <= 1.0f ? 1.0f : 0.1f * m * std::log(scale) + 1.0f; };
        if (hp.yarn_log_mul != 0.0f) {
            const float mscale = spec.attention == Attention::Mla && hp.yarn_log_mul != 1.0f ? hp.yarn_log_mul : 1.0f;
            r.attn_factor = get_mscale(f, mscale) / get_mscale(f, hp.yarn_log_mul);
        } else {
            r.attn_factor = get_mscale(f, 1.0f);
        }
        r.attn_factor *= 1.0f / (1.0f + 0.1f * std::log(f));
    }
    float rope_attn_factor = 1.0f;
    k.f32(k.key("rope.scaling.attn_factor"), rope_attn_factor, false);
    r.attn_factor *= rope_attn_factor;
    r.freq_factors = nullptr;
    if (!(r.freq_base > 0.0f) || !(r.freq_scale > 0.0f) || !std::isfinite(r.freq_scale)) {
        fail("RoPE frequency base / scale must be positive (" + k.key("rope.freq_base") + ", " +
             k.key("rope.scaling.factor") + ")");
    }

    if (spec.attention == Attention::Mla) {
        // deepseek2's graph: attn_factor_org = attn_factor (1 + 0.1 ln(1/freq_scale)),
        // mscale = attn_factor_org (1 + 0.1 yarn_log_mul ln(1/freq_scale)), kq_scale = mscale^2 / sqrt(qk).
        const float attn_factor_org = r.attn_factor * (1.0f + 0.1f * std::log(1.0f / r.freq_scale));
        const float mscale = attn_factor_org * (1.0f + 0.1f * hp.yarn_log_mul * std::log(1.0f / r.freq_scale));
        hp.kq_scale = 1.0f * mscale * mscale / std::sqrt(static_cast<float>(hp.mla.qk_head_dim));
    }

    if (spec.sinks_and_swa) {
        k.u32(k.key("attention.sliding_window"), hp.n_swa, true);
        if (hp.n_swa == 0) fail("key " + k.key("attention.sliding_window") + " is 0");
        std::vector<uint32_t> pattern;
        uint32_t period = 2;
        if (k.u32_per_layer(k.key("attention.sliding_window_pattern"), pattern, hp.n_layer, false)) {
            const MetadataEntry* e = k.find(k.key("attention.sliding_window_pattern"));
            if (e->type != ValueType::Array) period = pattern[0];
        }
        hp.swa_layer.assign(hp.n_layer, false);
        const MetadataEntry* pe = k.find(k.key("attention.sliding_window_pattern"));
        for (uint32_t il = 0; il < hp.n_layer; ++il) {
            // A per-layer array marks the sliding-window layers directly; a period p makes every
            // layer but the last of each p a sliding-window one (llama_hparams::set_swa_pattern).
            hp.swa_layer[il] = pe && pe->type == ValueType::Array ? pattern[il] != 0
                                                                  : period == 0 || il % period < period - 1;
        }
        // The sliding-window layers take llama.cpp's training values (rope_freq_*_train_swa), which
        // keep the file's scaling factor even when rope.scaling.type is "none".
        hp.rope_swa = r;
        hp.rope_swa.freq_scale = factor == 0.0f ? 1.0f : 1.0f / factor;
        k.f32(k.key("rope.freq_base_swa"), hp.rope_swa.freq_base, false);
        if (!(hp.rope_swa.freq_base > 0.0f)) fail("key " + k.key("rope.freq_base_swa") + " must be positive");
    }
    return hp;
}

}  // namespace moe::model
