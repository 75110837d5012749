// The engine thread of a model and its continuous-batching scheduler. Every forward pass of a
// model runs here, one at a time (the model's thread pool and workspace serve one pass). Requests
// of many sequences are merged into each pass: every active request contributes its next chunk
// (a decoding request its one token, a prompt up to Model::kMaxChunk tokens, cut exactly where an
// evaluation of its own would cut it, so batching changes no result), requests join and leave
// between passes, and a long prompt shares each pass with the running generations instead of
// stalling them. Knows models and samplers, not JS.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "../grammar/grammar.h"
#include "../model/model.h"
#include "../sampling/sampler.h"

namespace moe::runtime {

class Scheduler {
public:
    // What a request produced; `error` set means it failed (moe::Error: Aborted, ContextOverflow,
    // InvalidArgument, OutOfMemory...). After an abort the sequence keeps the chunks that completed.
    struct Outcome {
        std::exception_ptr error;
        int32_t token = -1;          // with a sampler: the sampled token (also accepted by the sampler)
        float probability = 0.0f;    // its probability in the sampler's final distribution
        uint32_t length = 0;         // the sequence's length afterwards
        std::vector<float> logits;   // without a sampler: the last token's logits, or every token's
        // With a grammar: after accepting the token, whether the grammar could end here and whether
        // it could go on (both false: the token was an end-of-generation token that finished it).
        bool grammar_complete = false;
        bool grammar_can_continue = false;
    };

    struct Request {
        std::shared_ptr<model::Sequence> sequence;
        std::vector<int32_t> tokens;                 // appended to the sequence (at least one)
        std::shared_ptr<sampling::Sampler> sampler;  // null: return logits instead of sampling
        // Optional, with a sampler: only tokens the grammar allows are sampled (the mask is applied
        // to the logits before every other sampling step), and the token advances the grammar.
        std::shared_ptr<grammar::Matcher> grammar;
        bool all_logits = false;                     // without a sampler: logits of every token
        std::shared_ptr<const std::atomic<bool>> cancel;  // optional; checked before each pass
        // Called once on the engine thread, after the request left the scheduler.
        std::function<void(Outcome&)> done;
    };

    // `max_batch_tokens`: prompt tokens merged into one pass beyond the first prompt chunk (decoding
    // tokens are always all taken).
    explicit Scheduler(model::Model& model, uint32_t max_batch_tokens = model::Model::kMaxChunk);
    // Finishes the queued work, then stops. If the last owner lets go on the engine thread itself
    // (from a `done` callback), the thread is detached instead of joined.
    ~Scheduler();
    Scheduler(const Scheduler&) = delete;
    Scheduler& operator=(const Scheduler&) = delete;

    // Queues a request. A request for a sequence that already has one waits for it to finish.
    void submit(Request request);
    // Runs a job on the engine thread between two passes (work that must not overlap a pass).
    void post(std::function<void()> job);

    // Counters for tests and benchmarks.
    struct Stats {
        uint64_t passes = 0;          // forward passes run
        uint64_t rows = 0;            // tokens evaluated in them
        uint64_t merged_passes = 0;   // passes that served more than one request
        uint32_t max_requests = 0;    // most requests one pass served
    };
    Stats stats() const;

private:
    struct Core;
    std::shared_ptr<Core> core_;  // shared with the thread, which may outlive this object
    std::thread thread_;
};

}  // namespace moe::runtime
