// The loaded model's state shared by the Model object and its sequences, and the forward pass of
// one chunk of tokens of one sequence. Internal to cpp/model.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "../cpu/cpu_features.h"
#include "../gguf/gguf_file.h"
#include "../kv/kv_cache.h"
#include "../kv/prefix_cache.h"
#include "../runtime/thread_pool.h"
#include "arch.h"
#include "hparams.h"
#include "model.h"
#include "weights.h"

namespace moe::model {

// Scratch activations of one chunk, grown on demand and reused across chunks and sequences.
struct Workspace {
    std::vector<float> x;        // [n, n_embd] residual stream
    std::vector<float> xn;       // [n, n_embd] normed input of a block
    std::vector<float> qkv;      // [n, q_width + 2 kv_width] q | k | v per row
    std::vector<float> attn;     // [n, q_width] attention output before attn_output
    std::vector<float> proj;     // [n, n_embd] block output before the residual add
    std::vector<float> ff_a;     // dense / shared expert gate (then activation): [n, n_ff]
    std::vector<float> ff_b;     // dense / shared expert up: [n, n_ff]
    std::vector<float> router;   // [n, n_expert] logits, then probabilities
    std::vector<float> sel_score;   // [n, n_expert] selection scores (group masking works on a copy)
    std::vector<int32_t> sel;    // [n, k] selected experts, descending score
    std::vector<float> sel_w;    // [n, k] their weights
    std::vector<int32_t> row_src;     // [n k] token of each expert row (rows grouped by expert)
    std::vector<int32_t> row_expert;  // [n k] expert of each row
    std::vector<int32_t> row_self;    // [n k] identity: down projection reads row r of the activations
    std::vector<int32_t> row_of;      // [n, k] row index of (token, slot)
    std::vector<int32_t> expert_fill; // [n_expert + 1] counting-sort offsets
    std::vector<float> exp_a;    // [n k, n_ff_exp] (or 2 n_ff_exp fused) gate -> activation
    std::vector<float> exp_b;    // [n k, n_ff_exp] up
    std::vector<float> exp_out;  // [n k, n_embd] down projections
    std::vector<float> shexp_s;  // [n] shared-expert gate logit
    std::vector<float> mla_qa;   // [n, q_lora_rank]
    std::vector<float> mla_q;    // [n, n_head, qk_head_dim]
    std::vector<float> mla_kv;   // [n, kv_lora_rank + n_rot]
    std::vector<float> mla_qabs; // [n, n_head, kv_lora_rank + n_rot] absorbed queries
    std::vector<float> mla_olat; // [n, n_head, kv_lora_rank] latent attention output
    std::vector<float> mla_qsel; // [n_out, n_head, qk_head_dim] queries of the output rows
    std::vector<uint32_t> pos_of_row;  // [n] position of each row in its sequence
    std::vector<float> logits;   // [n_out, n_vocab] when several segments want logits
};

// A device that runs whole forward passes in place of the CPU code (the CUDA backend,
// cuda/backend.cu, installs one): same contract as forward_batch below. It keeps each sequence's
// K/V rows in its own memory, reached through the segment's KvCache::device_state(), and writes
// them back to the CPU cache rows too, so saved states and the prefix cache keep working.
class ForwardDevice {
public:
    virtual ~ForwardDevice() = default;
    virtual void forward_batch(const struct BatchSegment* segs, size_t n_segs, const std::function<bool()>& should_abort) = 0;
};

struct ModelState {
    std::unique_ptr<gguf::GgufFile> file;  // owns the mapping every weight view points into
    const ArchSpec* spec = nullptr;
    HParams hp;
    ModelWeights w;
    ModelInfo info;
    cpu::Isa isa = cpu::Isa::Scalar;
    uint32_t kv_type = 1;  // ggml type of the KV cache rows
    std::unique_ptr<runtime::ThreadPool> pool;
    std::unique_ptr<kv::PrefixCache> prefix;  // shared by the model's sequences
    // Identifies the weights in saved states: architecture, every tensor's name, type and shape,
    // and a sample of each tensor's bytes (its first and last 32), hashed.
    uint64_t fingerprint = 0;
    // Set by a GPU backend for the model's lifetime (not owned): forward passes run there.
    ForwardDevice* device = nullptr;
    // The pool and the workspace serve one forward pass at a time, whichever sequence runs it.
    std::mutex compute;
    Workspace ws;
};

// The state behind a model from Model::load (for backends that attach to it, such as the CUDA one).
ModelState& state_of(Model& model);

// One sequence's part of a merged forward pass.
struct BatchSegment {
    kv::KvCache* cache = nullptr;
    const int32_t* tokens = nullptr;
    uint32_t n = 0;              // tokens of this segment
    uint32_t pos0 = 0;           // the cache's committed length: the segment's first position
    uint32_t out_begin = 0;      // rows [out_begin, n) produce logits
    float* logits = nullptr;     // [n - out_begin, n_vocab]
    uint32_t* expert_counts = nullptr;  // optional [n_layer, n_expert]: += tokens routed to each expert
};

// The forward pass of several sequences' chunks in one batch (continuous batching): every weight is
// read once for all rows, while each segment's rows get exactly the results forward_chunk would give
// them alone (per-segment float orders in the dense products, per-segment attention and cache).
// Stores each segment's K/V rows without committing them. should_abort is polled at layer
// boundaries; when it returns true, Error(Aborted) is thrown and nothing is committed.
void forward_batch(ModelState& m, const BatchSegment* segs, size_t n_segs, const std::function<bool()>& should_abort);

// Runs the forward pass over tokens[0..n) at positions pos0.. of a sequence whose cache holds
// pos0 committed rows: stores the chunk's K/V rows (without committing them), and writes the
// logits of rows [out_begin, n) to logits ([n - out_begin, n_vocab]). Rows before out_begin skip
// the last layer's FFN and the output head, whose results nothing reads.
// Throws Error(Aborted) when *cancel is set at a layer boundary.
void forward_chunk(ModelState& m, kv::KvCache& cache, const int32_t* tokens, uint32_t n, uint32_t pos0,
                   uint32_t out_begin, float* logits, const std::atomic<bool>* cancel);

}  // namespace moe::model
