// Model::load and the Sequence implementation over the forward pass in forward.cc.
#include "model.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <new>
#include <string>

#include "../common/error.h"
#include "../quant/ggml_types.h"
#include "../kernels/ops.h"
#include "forward.h"

namespace moe::model {

namespace {

constexpr uint32_t kChunk = Model::kMaxChunk;

uint32_t ggml_type_of(KvCacheType t) {
    switch (t) {
        case KvCacheType::F32: return static_cast<uint32_t>(quant::GgmlType::F32);
        case KvCacheType::Q8_0: return static_cast<uint32_t>(quant::GgmlType::Q8_0);
        case KvCacheType::F16: break;
    }
    return static_cast<uint32_t>(quant::GgmlType::F16);
}

std::string string_key(const gguf::GgufFile& f, const char* key) {
    const gguf::MetadataEntry* e = f.find(key);
    return e && e->type == gguf::ValueType::String ? std::string(e->str) : std::string();
}

uint32_t u32_key(const gguf::GgufFile& f, const char* key) {
    const gguf::MetadataEntry* e = f.find(key);
    if (!e) return 0;
    switch (e->type) {
        case gguf::ValueType::U8: case gguf::ValueType::U16: case gguf::ValueType::U32: case gguf::ValueType::U64:
            return e->u64 <= UINT32_MAX ? static_cast<uint32_t>(e->u64) : 0;
        case gguf::ValueType::I8: case gguf::ValueType::I16: case gguf::ValueType::I32: case gguf::ValueType::I64:
            return e->i64 >= 0 && e->i64 <= static_cast<int64_t>(UINT32_MAX) ? static_cast<uint32_t>(e->i64) : 0;
        default:
            return 0;
    }
}

// The cache geometry of every layer: K/V rows of n_head_kv heads; MLA rows of [latent | rope] with
// no V plane; sliding-window layers a ring of window + one chunk rows.
std::vector<kv::LayerShape> cache_shapes(const HParams& hp, bool mla) {
    std::vector<kv::LayerShape> shapes(hp.n_layer);
    for (uint32_t il = 0; il < hp.n_layer; ++il) {
        kv::LayerShape& l = shapes[il];
        l.k_width = hp.kv_width();
        l.k_head_dim = hp.head_dim;
        l.v_width = mla ? 0 : hp.n_head_kv * hp.head_dim_v;
        l.v_head_dim = hp.head_dim_v;
        if (hp.is_swa(il)) {
            // The attention reads up to kAttentionWindowAlign - 1 keys before the window.
            l.window = hp.n_swa + static_cast<uint32_t>(kernels::kAttentionWindowAlign);
            l.ring = l.window + kChunk;
        }
    }
    return shapes;
}

class SequenceImpl final : public Sequence {
public:
    SequenceImpl(std::shared_ptr<ModelState> m, uint32_t context_size)
        : m_(std::move(m)),
          cache_(context_size, cache_shapes(m_->hp, m_->spec->attention == Attention::Mla), m_->kv_type) {}

    uint64_t cache_bytes() const noexcept override { return cache_.bytes(); }
    const ModelState* state() const noexcept { return m_.get(); }

    uint32_t length() const noexcept override { return cache_.length(); }
    uint32_t context_size() const noexcept override { return cache_.capacity(); }

    void truncate(uint32_t n) override { cache_.truncate(n); }

    void check_append(const int32_t* tokens, size_t n) const override {
        const uint32_t n_vocab = m_->hp.n_vocab;
        if (n == 0) throw Error(ErrorCode::InvalidArgument, "evaluate needs at least one token");
        if (!tokens) throw Error(ErrorCode::InvalidArgument, "evaluate: null token array");
        for (size_t i = 0; i < n; ++i) {
            if (tokens[i] < 0 || static_cast<uint32_t>(tokens[i]) >= n_vocab) {
                throw Error(ErrorCode::InvalidArgument, "token id " + std::to_string(tokens[i]) + " at index " +
                                                            std::to_string(i) + " is outside the vocabulary [0, " +
                                                            std::to_string(n_vocab) + ")");
            }
        }
        const uint64_t length = cache_.length();
        if (length + n > cache_.capacity()) {
            throw Error(ErrorCode::ContextOverflow, "sequence of " + std::to_string(length) + " tokens cannot take " +
                                                        std::to_string(n) + " more: the context holds " +
                                                        std::to_string(cache_.capacity()));
        }
    }

    std::vector<uint32_t> take_expert_usage() override {
        std::vector<uint32_t> out;
        out.swap(expert_usage_);
        if (m_->hp.is_moe() && out.empty()) out.assign(static_cast<size_t>(m_->hp.n_layer) * m_->hp.n_expert, 0);
        return out;
    }

    uint32_t restore_prefix(const int32_t* tokens, size_t n) override {
        if (n < 2 || !m_->prefix) return cache_.length();
        return m_->prefix->restore(tokens, static_cast<uint32_t>(std::min<size_t>(n - 1, UINT32_MAX)), cache_);
    }

    size_t store_prefix(const int32_t* tokens, size_t n) override {
        if (!m_->prefix) return 0;
        return m_->prefix->insert(tokens, static_cast<uint32_t>(std::min<size_t>(n, cache_.length())), cache_);
    }

    void save_state(const std::string& path, const int32_t* tokens, size_t n, const std::string& metadata) override;
    SavedState load_state(const std::string& path) override;

    void evaluate(const int32_t* tokens, size_t n, bool all_logits, std::vector<float>& logits,
                  const std::atomic<bool>* cancel) override {
        const uint32_t n_vocab = m_->hp.n_vocab;
        check_append(tokens, n);
        try {
            logits.resize(all_logits ? n * static_cast<size_t>(n_vocab) : n_vocab);
        } catch (const std::bad_alloc&) {
            throw Error(ErrorCode::OutOfMemory, "cannot allocate the logits of " + std::to_string(n) + " tokens");
        }
        std::function<bool()> abort;
        if (cancel) abort = [cancel] { return cancel->load(std::memory_order_relaxed); };
        for (size_t start = 0; start < n; start += kChunk) {
            if (abort && abort()) throw Error(ErrorCode::Aborted, "evaluation aborted");
            const uint32_t cn = static_cast<uint32_t>(std::min<size_t>(kChunk, n - start));
            const bool final_chunk = start + cn == n;
            // Rows of this chunk whose logits are wanted: all, the very last token, or none.
            BatchEntry e{this, tokens + start, cn, all_logits ? 0 : (final_chunk ? cn - 1 : cn),
                         all_logits ? logits.data() + start * n_vocab : logits.data()};
            run_batch(*m_, &e, 1, abort);
        }
    }

    // The forward pass of entries over their sequences' caches, committing each chunk when it
    // completed (under the model's compute lock: one pass at a time uses its pool and workspace).
    static void run_batch(ModelState& m, const BatchEntry* entries, size_t n, const std::function<bool()>& should_abort) {
        std::vector<BatchSegment> segs(n);
        for (size_t i = 0; i < n; ++i) {
            auto* seq = static_cast<SequenceImpl*>(entries[i].sequence);
            if (entries[i].n == 0 || entries[i].n > kChunk || entries[i].logits_from > entries[i].n) {
                throw Error(ErrorCode::InvalidArgument, "evaluate_batch: a chunk needs 1 to 512 tokens");
            }
            for (size_t j = 0; j < i; ++j) {
                if (entries[j].sequence == entries[i].sequence) {
                    throw Error(ErrorCode::InvalidArgument, "evaluate_batch: a sequence appears twice in one batch");
                }
            }
            seq->check_append(entries[i].tokens, entries[i].n);
            if (m.hp.is_moe() && seq->expert_usage_.empty()) {
                seq->expert_usage_.assign(static_cast<size_t>(m.hp.n_layer) * m.hp.n_expert, 0);
            }
            segs[i] = BatchSegment{&seq->cache_, entries[i].tokens, entries[i].n, seq->cache_.length(),
                                   entries[i].logits_from, entries[i].logits,
                                   m.hp.is_moe() ? seq->expert_usage_.data() : nullptr};
        }
        std::lock_guard<std::mutex> lock(m.compute);
        try {
            forward_batch(m, segs.data(), n, should_abort);
        } catch (const std::bad_alloc&) {
            throw Error(ErrorCode::OutOfMemory, "out of memory during evaluation");
        }
        // Only completed chunks become part of their sequences.
        for (size_t i = 0; i < n; ++i) segs[i].cache->commit(segs[i].pos0 + segs[i].n);
    }

private:
    std::shared_ptr<ModelState> m_;
    kv::KvCache cache_;
    std::vector<uint32_t> expert_usage_;  // [n_layer, n_expert] since the last take (MoE models)
};


// A sequence state file:
//   "NMOESEQ\0" | u32 version | u32 model fingerprint low, high | u64 KvCache::layout_fingerprint |
//   u32 n_tokens | u32 metadata bytes | i32 tokens[n_tokens] | metadata | KvCache::export_rows(0, n_tokens)
// little-endian, as the engine only runs on little-endian machines.
constexpr char kStateMagic[8] = {'N', 'M', 'O', 'E', 'S', 'E', 'Q', '\0'};
constexpr uint32_t kStateVersion = 1;

struct File {
    std::FILE* f = nullptr;
    ~File() {
        if (f) std::fclose(f);
    }
};

[[noreturn]] void state_io_error(const std::string& what, const std::string& path) {
    throw Error(ErrorCode::Io, what + " '" + path + "': " + std::strerror(errno));
}

void SequenceImpl::save_state(const std::string& path, const int32_t* tokens, size_t n, const std::string& metadata) {
    if (n != cache_.length()) {
        throw Error(ErrorCode::InvalidArgument, "save_state: " + std::to_string(n) + " tokens given for a sequence of " +
                                                    std::to_string(cache_.length()));
    }
    std::vector<uint8_t> rows(cache_.row_bytes(static_cast<uint32_t>(n)));
    cache_.export_rows(0, static_cast<uint32_t>(n), rows.data(), /*unheld_as_zero=*/true);
    const std::string tmp = path + ".partial";
    {
        File out;
        out.f = std::fopen(tmp.c_str(), "wb");
        if (!out.f) state_io_error("cannot create", tmp);
        const uint64_t layout = cache_.layout_fingerprint();
        const uint32_t header[3] = {kStateVersion, static_cast<uint32_t>(m_->fingerprint),
                                    static_cast<uint32_t>(m_->fingerprint >> 32)};
        const uint32_t counts[2] = {static_cast<uint32_t>(n), static_cast<uint32_t>(metadata.size())};
        bool ok = std::fwrite(kStateMagic, 1, 8, out.f) == 8 && std::fwrite(header, 4, 3, out.f) == 3 &&
                  std::fwrite(&layout, 8, 1, out.f) == 1 && std::fwrite(counts, 4, 2, out.f) == 2 &&
                  std::fwrite(tokens, 4, n, out.f) == n &&
                  std::fwrite(metadata.data(), 1, metadata.size(), out.f) == metadata.size() &&
                  std::fwrite(rows.data(), 1, rows.size(), out.f) == rows.size();
        ok = std::fflush(out.f) == 0 && ok;
        const int close = std::fclose(out.f);
        out.f = nullptr;
        if (!ok || close != 0) {
            std::remove(tmp.c_str());
            state_io_error("cannot write", tmp);
        }
    }
    // The file appears complete or not at all.
    if (std::rename(tmp.c_str(), path.c_str()) != 0) {
        std::remove(tmp.c_str());
        state_io_error("cannot rename the state file to", path);
    }
}

SavedState SequenceImpl::load_state(const std::string& path) {
    File in;
    in.f = std::fopen(path.c_str(), "rb");
    if (!in.f) state_io_error("cannot open", path);
    const auto bad = [&](const std::string& why) {
        return Error(ErrorCode::StateFormat, "'" + path + "' is not a usable sequence state: " + why);
    };
    char magic[8];
    uint32_t header[3];
    uint64_t layout = 0;
    uint32_t counts[2];
    if (std::fread(magic, 1, 8, in.f) != 8 || std::memcmp(magic, kStateMagic, 8) != 0) throw bad("not a node-moe state file");
    if (std::fread(header, 4, 3, in.f) != 3 || std::fread(&layout, 8, 1, in.f) != 1 ||
        std::fread(counts, 4, 2, in.f) != 2) {
        throw bad("the header is truncated");
    }
    if (header[0] != kStateVersion) throw bad("format version " + std::to_string(header[0]) + " is not supported");
    const uint64_t weights = static_cast<uint64_t>(header[1]) | static_cast<uint64_t>(header[2]) << 32;
    if (layout != cache_.layout_fingerprint() || weights != m_->fingerprint) {
        throw bad(std::string("it was saved from another model or KV cache type (its ") +
                  (weights != m_->fingerprint ? "weights" : "cache layout") + " differ)");
    }
    const uint32_t n = counts[0];
    if (n > cache_.capacity()) {
        throw bad("its " + std::to_string(n) + " tokens do not fit the context of " + std::to_string(cache_.capacity()));
    }
    SavedState state;
    state.tokens.resize(n);
    state.metadata.resize(counts[1]);
    std::vector<uint8_t> rows(cache_.row_bytes(n));
    if (std::fread(state.tokens.data(), 4, n, in.f) != n ||
        std::fread(state.metadata.data(), 1, state.metadata.size(), in.f) != state.metadata.size() ||
        std::fread(rows.data(), 1, rows.size(), in.f) != rows.size()) {
        throw bad("it is truncated");
    }
    if (std::fgetc(in.f) != EOF) throw bad("it has trailing bytes");
    for (uint32_t i = 0; i < n; ++i) {
        if (state.tokens[i] < 0 || static_cast<uint32_t>(state.tokens[i]) >= m_->hp.n_vocab) {
            throw bad("token " + std::to_string(state.tokens[i]) + " is outside the vocabulary");
        }
    }
    // Nothing changes until the whole file was read and checked.
    cache_.truncate(0);
    cache_.import_rows(0, n, rows.data());
    cache_.commit(n);
    return state;
}

class ModelImpl final : public Model {
public:
    explicit ModelImpl(std::shared_ptr<ModelState> m) : m_(std::move(m)) {}

    ModelState& state() noexcept { return *m_; }

    const ModelInfo& info() const noexcept override { return m_->info; }

    std::unique_ptr<Sequence> create_sequence(uint32_t context_size) override {
        const uint32_t ctx = context_size ? context_size : m_->info.default_context_size;
        return std::make_unique<SequenceImpl>(m_, ctx);
    }

    void evaluate_batch(const BatchEntry* entries, size_t n, const std::function<bool()>& should_abort) override {
        for (size_t i = 0; i < n; ++i) {
            if (!entries[i].sequence || static_cast<SequenceImpl*>(entries[i].sequence)->state() != m_.get()) {
                throw Error(ErrorCode::InvalidArgument, "evaluate_batch: a sequence of another model");
            }
        }
        SequenceImpl::run_batch(*m_, entries, n, should_abort);
    }

    PrefixCacheStats prefix_cache_stats() const override {
        PrefixCacheStats out;
        if (!m_->prefix) return out;
        const kv::PrefixCache::Stats s = m_->prefix->stats();
        out = {s.lookups, s.hits, s.restored_tokens, s.blocks, s.bytes, s.evicted_blocks, m_->prefix->block_tokens()};
        return out;
    }

private:
    std::shared_ptr<ModelState> m_;  // shared with the sequences, which may outlive this object
};

}  // namespace

std::unique_ptr<Model> Model::load(const std::string& path, const LoadOptions& options) {
    cpu::require_isa(options.isa);
    auto state = std::make_shared<ModelState>();
    state->file = gguf::GgufFile::open(path);
    const gguf::GgufFile& f = *state->file;

    const gguf::MetadataEntry* arch = f.find("general.architecture");
    if (!arch) throw Error(ErrorCode::ModelFormat, "missing key general.architecture");
    if (arch->type != gguf::ValueType::String) {
        throw Error(ErrorCode::ModelFormat, "key general.architecture is not a string");
    }
    const std::string arch_name(arch->str);
    state->spec = find_arch(arch_name);
    if (!state->spec) {
        throw Error(ErrorCode::ModelFormat,
                    "unsupported architecture '" + arch_name + "' (supported: " + supported_arch_names() + ")");
    }
    state->hp = read_hparams(f, *state->spec);
    state->w = bind_weights(f, state->hp, *state->spec, options.on_progress);
    const HParams& hp = state->hp;

    state->isa = options.isa;
    state->kv_type = ggml_type_of(options.kv_type);
    if (options.kv_type == KvCacheType::Q8_0 && (hp.head_dim % 32 != 0 || hp.head_dim_v % 32 != 0)) {
        throw Error(ErrorCode::InvalidArgument, "a Q8_0 KV cache needs a head size that is a multiple of 32 (this model: " +
                                                    std::to_string(hp.head_dim % 32 != 0 ? hp.head_dim : hp.head_dim_v) + ")");
    }

    ModelInfo& info = state->info;
    info.architecture = arch_name;
    info.name = string_key(f, "general.name");
    info.vocab_size = hp.n_vocab;
    info.context_length = hp.n_ctx_train;
    info.block_count = hp.n_layer;
    info.embedding_length = hp.n_embd;
    info.expert_count = hp.n_expert;
    info.expert_used_count = hp.n_expert_used;
    info.shared_expert_count = state->spec->shared_expert == SharedExpert::None || !hp.is_moe() ? 0
                               : hp.n_expert_shared > 0                                    ? hp.n_expert_shared
                                                                                           : 1;
    // What one more token adds to a sequence's cache: every layer without a sliding window (those
    // hold a fixed ring) stores its K row and V row (MLA: the one latent row).
    {
        const uint32_t elem = options.kv_type == KvCacheType::F32 ? 4 : 2;
        for (const kv::LayerShape& l : cache_shapes(hp, state->spec->attention == Attention::Mla)) {
            if (l.window) continue;
            info.kv_bytes_per_token += options.kv_type == KvCacheType::Q8_0
                                           ? (l.k_width + l.v_width) / 32 * 34
                                           : static_cast<uint64_t>(l.k_width + l.v_width) * elem;
        }
    }
    // parameter_count: the elements of every tensor in the file (as llama.cpp's n_elements), so a
    // tied embedding counts once. active_parameter_count: the same minus the routed experts a
    // token does not use, i.e. embeddings + attention + norms + routers + shared experts + output
    // head + expert_used_count routed experts per MoE layer.
    for (const gguf::TensorInfo& t : f.tensors()) {
        info.parameter_count += static_cast<uint64_t>(t.element_count());
        info.size_bytes += t.nbytes;
    }
    info.active_parameter_count = info.parameter_count - std::min(info.parameter_count, state->w.inactive_expert_params);
    {
        uint64_t h = 0xcbf29ce484222325ULL;  // FNV-1a
        const auto mix = [&](const void* p, size_t n) {
            for (size_t i = 0; i < n; ++i) h = (h ^ static_cast<const uint8_t*>(p)[i]) * 0x100000001b3ULL;
        };
        mix(arch_name.data(), arch_name.size());
        for (const gguf::TensorInfo& t : f.tensors()) {
            mix(t.name.data(), t.name.size());
            mix(&t.type, sizeof t.type);
            mix(t.ne, sizeof t.ne);
            const size_t sample = static_cast<size_t>(std::min<uint64_t>(32, t.nbytes));
            mix(t.data, sample);
            mix(t.data + t.nbytes - sample, sample);
        }
        state->fingerprint = h;
    }
    info.file_type = u32_key(f, "general.file_type");
    info.default_context_size = options.context_size ? options.context_size : std::min<uint32_t>(4096, hp.n_ctx_train);
    info.n_threads = options.n_threads > 0 ? options.n_threads : runtime::ThreadPool::physical_cores();

    if (options.on_progress && !options.on_progress(1.0)) throw Error(ErrorCode::Aborted, "model load aborted");
    state->pool = std::make_unique<runtime::ThreadPool>(info.n_threads);
    if (options.prefix_cache_bytes > 0) state->prefix = std::make_unique<kv::PrefixCache>(options.prefix_cache_bytes);
    return std::make_unique<ModelImpl>(std::move(state));
}

ModelState& state_of(Model& model) { return static_cast<ModelImpl&>(model).state(); }

}  // namespace moe::model
