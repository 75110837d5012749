// The engine's public face: load a model from GGUF and evaluate token sequences against it. The
// N-API layer (cpp/napi/model_binding.cc) is the only caller; nothing here knows about JS.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "../cpu/cpu_features.h"

namespace moe::model {

enum class KvCacheType { F16, F32, Q8_0 };

struct LoadOptions {
    int n_threads = 0;               // 0: physical cores
    uint32_t context_size = 0;       // default context for new sequences; 0: min(4096, training context)
    KvCacheType kv_type = KvCacheType::F16;
    cpu::Isa isa = cpu::Isa::Scalar; // kernel level (the caller passes cpu::active_isa())
    size_t prefix_cache_bytes = 512u << 20;  // KV rows the model's prefix cache keeps (0: off)
    // Called now and then with progress in [0, 1]; returning false aborts the load, which then
    // throws moe::Error(Aborted) after releasing everything it mapped or allocated.
    std::function<bool(double progress)> on_progress;
};

// What model.info shows in JS.
struct ModelInfo {
    std::string architecture;        // general.architecture
    std::string name;                // general.name or ""
    uint32_t vocab_size = 0;
    uint32_t context_length = 0;     // training context ({arch}.context_length)
    uint32_t block_count = 0;
    uint32_t embedding_length = 0;
    uint32_t expert_count = 0;       // 0 for dense models
    uint32_t expert_used_count = 0;
    uint32_t shared_expert_count = 0;
    uint64_t parameter_count = 0;    // all weights
    uint64_t active_parameter_count = 0;  // weights used per token (dense + router + shared + k routed experts)
    uint64_t kv_bytes_per_token = 0; // KV-cache bytes one more token adds (sliding-window layers excluded)
    uint32_t file_type = 0;          // general.file_type or 0
    uint64_t size_bytes = 0;         // bytes of tensor data
    uint32_t default_context_size = 0;
    int n_threads = 0;
};

class Sequence;

// One sequence's chunk in a merged forward pass (Model::evaluate_batch).
struct BatchEntry {
    Sequence* sequence = nullptr;  // a sequence of this model, at most once per batch
    const int32_t* tokens = nullptr;
    uint32_t n = 0;                // 1 ..= Model::kMaxChunk tokens, checked with Sequence::check_append
    uint32_t logits_from = 0;      // rows [logits_from, n) produce logits (n: none)
    float* logits = nullptr;       // [n - logits_from, vocab_size]
};

class Model {
public:
    // Maps, validates and prepares the model. Throws moe::Error: GgufFormat (bad file),
    // ModelFormat (unsupported architecture naming the supported ones, missing tensor naming it,
    // mis-shaped tensor naming expected and actual shape), UnsupportedType, Aborted, Io.
    static std::unique_ptr<Model> load(const std::string& path, const LoadOptions& options);
    virtual ~Model() = default;

    virtual const ModelInfo& info() const noexcept = 0;

    // Tokens per forward pass of one sequence (llama.cpp's default ubatch): longer inputs are
    // evaluated in chunks of this size from their start.
    static constexpr uint32_t kMaxChunk = 512;

    // A new, empty sequence with its own KV cache of `context_size` tokens (0: the default).
    virtual std::unique_ptr<Sequence> create_sequence(uint32_t context_size) = 0;

    // One forward pass over chunks of several sequences (continuous batching): each weight is read
    // once for all of them, and each chunk's results (logits, cache rows) equal those of
    // evaluating it alone. Commits every chunk when the pass completes; on an error (Aborted when
    // should_abort() returned true at a layer boundary, OutOfMemory) nothing is committed.
    virtual void evaluate_batch(const BatchEntry* entries, size_t n, const std::function<bool()>& should_abort) = 0;

    struct PrefixCacheStats {
        uint64_t lookups = 0, hits = 0, restored_tokens = 0, blocks = 0, bytes = 0, evicted_blocks = 0;
        uint32_t block_tokens = 0;
    };
    virtual PrefixCacheStats prefix_cache_stats() const = 0;
};

// What Sequence::load_state read.
struct SavedState {
    std::vector<int32_t> tokens;
    std::string metadata;  // the caller's, as saved
};

class Sequence {
public:
    virtual ~Sequence() = default;

    virtual uint32_t length() const noexcept = 0;        // tokens in the cache
    virtual uint32_t context_size() const noexcept = 0;
    virtual uint64_t cache_bytes() const noexcept = 0;   // bytes the KV cache allocated

    // Throws what evaluate would for appending these tokens (InvalidArgument for an id outside the
    // vocabulary, ContextOverflow past context_size()), without evaluating anything.
    virtual void check_append(const int32_t* tokens, size_t n) const = 0;

    // Tokens routed to each expert by this sequence's evaluations since the last call, per MoE
    // layer: [n_layer, n_expert] (dense layers' rows stay 0); empty for a dense model.
    virtual std::vector<uint32_t> take_expert_usage() = 0;

    // The model's prefix cache (see kv/prefix_cache.h). The sequence's committed rows must be those
    // of tokens[0, length()). restore_prefix extends the sequence with stored rows matching
    // tokens[0, n - 1) (one token is always left to evaluate) and returns the new length;
    // store_prefix adds the full blocks of tokens[0, n) the sequence holds and returns how many.
    virtual uint32_t restore_prefix(const int32_t* tokens, size_t n) = 0;
    virtual size_t store_prefix(const int32_t* tokens, size_t n) = 0;

    // Writes the sequence's state to a file: its tokens (which must be the committed ones), the
    // caller's metadata and every cached row; load_state replaces the sequence's contents with a
    // file's (same model and KV type; it must fit the context). Throws Io for file errors and
    // InvalidArgument for a file that is not a state file, was saved from another model or cache
    // layout, is truncated or does not fit.
    virtual void save_state(const std::string& path, const int32_t* tokens, size_t n, const std::string& metadata) = 0;
    virtual SavedState load_state(const std::string& path) = 0;

    // Drops cached tokens from position n on (n <= length()).
    virtual void truncate(uint32_t n) = 0;
    void clear() { truncate(0); }

    // Appends `tokens` to the sequence and runs the forward pass over them (in chunks if needed).
    // logits: resized to vocab_size (last token's logits) or n * vocab_size (all_logits).
    // Throws: InvalidArgument for a token id outside the vocabulary (nothing is evaluated),
    // ContextOverflow when length() + n > context_size() (nothing is evaluated, the sequence stays
    // usable), Aborted when *cancel became true between chunks/layers (the sequence keeps the
    // tokens that completed; length() says how many).
    virtual void evaluate(const int32_t* tokens, size_t n, bool all_logits, std::vector<float>& logits,
                          const std::atomic<bool>* cancel = nullptr) = 0;
};

}  // namespace moe::model
