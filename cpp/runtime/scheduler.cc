// Continuous batching on the engine thread (see scheduler.h).
#include "scheduler.h"

#include <algorithm>
#include <new>
#include <string>

#include "../common/error.h"

namespace moe::runtime {

namespace {

// After a pass, the requests it completed usually come straight back with their next token (JS
// samples nothing: it only streams the text and asks for the next step). The next pass waits for
// them so that concurrent generations keep sharing passes, up to a quarter of the last pass's
// duration within these bounds: with many streams the JS round trips of all of them take several
// milliseconds, and a pass that leaves some behind costs another full read of the active experts'
// weights for the stragglers. A request that does not come back (its generation ended, its
// consumer is slow) costs the window once.
constexpr auto kMinGatherWindow = std::chrono::microseconds(2000);
constexpr auto kMaxGatherWindow = std::chrono::microseconds(20000);

std::exception_ptr aborted() {
    return std::make_exception_ptr(Error(ErrorCode::Aborted, "evaluation aborted"));
}

}  // namespace

struct Scheduler::Core {
    struct Active {
        Request request;
        size_t offset = 0;  // tokens of the request already evaluated
        Outcome outcome;
    };
    using ActivePtr = std::unique_ptr<Active>;

    Core(model::Model& m, uint32_t budget) : model(m), max_batch_tokens(budget) {}

    model::Model& model;
    const uint32_t max_batch_tokens;

    std::mutex mutex;
    std::condition_variable wake;
    std::deque<std::function<void()>> jobs;
    std::deque<ActivePtr> incoming;
    bool stopping = false;
    Stats stats;

    // Engine-thread state.
    std::vector<ActivePtr> active;  // in arrival order
    size_t expected = 0;            // requests the last pass completed (likely to come back)
    std::chrono::steady_clock::duration last_pass_duration{};

    void loop();
    void admit(std::deque<ActivePtr>& arrived);
    void run_pass();
    void sample(Active& a);
    void finish(ActivePtr a);

    std::vector<uint8_t> mask;  // the grammar mask of the request being sampled
};

Scheduler::Scheduler(model::Model& model, uint32_t max_batch_tokens)
    : core_(std::make_shared<Core>(model, max_batch_tokens)) {
    thread_ = std::thread([core = core_] { core->loop(); });
}

Scheduler::~Scheduler() {
    {
        std::lock_guard<std::mutex> lock(core_->mutex);
        core_->stopping = true;
    }
    core_->wake.notify_one();
    if (thread_.get_id() == std::this_thread::get_id()) {
        // The last owner let go from a callback on the engine thread: the loop holds its own
        // reference to the core and ends by itself (nothing can be queued any more).
        thread_.detach();
    } else {
        thread_.join();
    }
}

void Scheduler::submit(Request request) {
    auto a = std::make_unique<Core::Active>();
    a->request = std::move(request);
    {
        std::lock_guard<std::mutex> lock(core_->mutex);
        core_->incoming.push_back(std::move(a));
    }
    core_->wake.notify_one();
}

void Scheduler::post(std::function<void()> job) {
    {
        std::lock_guard<std::mutex> lock(core_->mutex);
        core_->jobs.push_back(std::move(job));
    }
    core_->wake.notify_one();
}

Scheduler::Stats Scheduler::stats() const {
    std::lock_guard<std::mutex> lock(core_->mutex);
    return core_->stats;
}

void Scheduler::Core::loop() {
    for (;;) {
        std::deque<std::function<void()>> ready_jobs;
        std::deque<ActivePtr> arrived;
        {
            std::unique_lock<std::mutex> lock(mutex);
            wake.wait(lock, [&] { return stopping || !jobs.empty() || !incoming.empty() || !active.empty(); });
            if (jobs.empty() && incoming.empty() && active.empty()) return;  // stopping and drained
            if (jobs.empty() && incoming.size() < expected) {
                const auto window = std::clamp<std::chrono::steady_clock::duration>(last_pass_duration / 4, kMinGatherWindow,
                                                                                   kMaxGatherWindow);
                wake.wait_for(lock, window, [&] { return stopping || !jobs.empty() || incoming.size() >= expected; });
            }
            expected = 0;
            ready_jobs.swap(jobs);
            arrived.swap(incoming);
        }
        for (auto& job : ready_jobs) {
            try {
                job();
            } catch (...) {
                // Jobs report their own errors (BackgroundTask does); nothing may escape the loop.
            }
        }
        ready_jobs.clear();
        admit(arrived);
        if (!arrived.empty()) {
            // Requests for sequences that already have one wait for it.
            std::lock_guard<std::mutex> lock(mutex);
            for (auto it = arrived.rbegin(); it != arrived.rend(); ++it) incoming.push_front(std::move(*it));
        }
        if (!active.empty()) {
            const auto started = std::chrono::steady_clock::now();
            run_pass();
            last_pass_duration = std::chrono::steady_clock::now() - started;
        }
    }
}

// Moves arrived requests into `active` after checking them; what cannot start yet stays in arrived.
void Scheduler::Core::admit(std::deque<ActivePtr>& arrived) {
    std::deque<ActivePtr> waiting;
    for (ActivePtr& a : arrived) {
        Request& r = a->request;
        const bool busy = std::any_of(active.begin(), active.end(),
                                      [&](const ActivePtr& b) { return b->request.sequence == r.sequence; });
        if (busy) {
            waiting.push_back(std::move(a));
            continue;
        }
        try {
            if (!r.sequence) throw Error(ErrorCode::InvalidArgument, "a request needs a sequence");
            r.sequence->check_append(r.tokens.data(), r.tokens.size());
            if (!r.sampler) {
                const size_t vocab = model.info().vocab_size;
                a->outcome.logits.resize(r.all_logits ? r.tokens.size() * vocab : vocab);
            }
        } catch (const std::bad_alloc&) {
            a->outcome.error = std::make_exception_ptr(
                Error(ErrorCode::OutOfMemory, "cannot allocate the logits of " + std::to_string(r.tokens.size()) + " tokens"));
        } catch (...) {
            a->outcome.error = std::current_exception();
        }
        if (a->outcome.error) {
            finish(std::move(a));
        } else {
            active.push_back(std::move(a));
        }
    }
    arrived.swap(waiting);
}

void Scheduler::Core::run_pass() {
    constexpr uint32_t kChunk = model::Model::kMaxChunk;
    const size_t vocab = model.info().vocab_size;
    std::vector<Active*> batch;
    std::vector<model::BatchEntry> entries;
    uint32_t prompt_rows = 0;
    for (size_t i = 0; i < active.size();) {
        Active& a = *active[i];
        if (a.request.cancel && a.request.cancel->load(std::memory_order_relaxed)) {
            a.outcome.error = aborted();
            ActivePtr done = std::move(active[i]);
            active.erase(active.begin() + static_cast<std::ptrdiff_t>(i));
            finish(std::move(done));
            continue;
        }
        ++i;
        const std::vector<int32_t>& tokens = a.request.tokens;
        // Chunks are cut from the request's start, as Sequence::evaluate cuts them.
        const uint32_t n = static_cast<uint32_t>(std::min<size_t>(kChunk, tokens.size() - a.offset));
        if (n > 1) {
            // Prompt chunks share a pass up to the budget; the first one always gets in.
            if (prompt_rows > 0 && prompt_rows + n > max_batch_tokens) continue;
            prompt_rows += n;
        }
        const bool last_chunk = a.offset + n == tokens.size();
        model::BatchEntry e;
        e.sequence = a.request.sequence.get();
        e.tokens = tokens.data() + a.offset;
        e.n = n;
        if (a.request.sampler) {
            if (a.outcome.logits.size() < vocab) a.outcome.logits.resize(vocab);
            e.logits_from = last_chunk ? n - 1 : n;
            e.logits = a.outcome.logits.data();
        } else if (a.request.all_logits) {
            e.logits_from = 0;
            e.logits = a.outcome.logits.data() + a.offset * vocab;
        } else {
            e.logits_from = last_chunk ? n - 1 : n;
            e.logits = a.outcome.logits.data();
        }
        entries.push_back(e);
        batch.push_back(&a);
    }
    if (batch.empty()) return;

    // A pass stops early only when every request in it was cancelled; otherwise a cancelled one
    // leaves at the next pass, the others unaffected.
    const auto should_abort = [&batch] {
        for (const Active* a : batch) {
            if (!a->request.cancel || !a->request.cancel->load(std::memory_order_relaxed)) return false;
        }
        return true;
    };
    std::exception_ptr error;
    try {
        model.evaluate_batch(entries.data(), entries.size(), should_abort);
    } catch (...) {
        error = std::current_exception();
    }
    {
        std::lock_guard<std::mutex> lock(mutex);
        ++stats.passes;
        for (const auto& e : entries) stats.rows += e.n;
        if (batch.size() > 1) ++stats.merged_passes;
        stats.max_requests = std::max<uint32_t>(stats.max_requests, static_cast<uint32_t>(batch.size()));
    }

    // Requests that are done leave `active` (keeping the order of the rest).
    std::vector<ActivePtr> still;
    still.reserve(active.size());
    size_t k = 0;  // index into batch (same order as active)
    for (ActivePtr& p : active) {
        const bool in_batch = k < batch.size() && batch[k] == p.get();
        if (!in_batch) {
            still.push_back(std::move(p));
            continue;
        }
        const model::BatchEntry& e = entries[k++];
        Active& a = *p;
        if (error) {
            a.outcome.error = error;
        } else {
            a.offset += e.n;
            if (a.offset < a.request.tokens.size()) {
                still.push_back(std::move(p));
                continue;
            }
            if (a.request.sampler) {
                try {
                    sample(a);
                } catch (...) {
                    a.outcome.error = std::current_exception();
                }
                a.outcome.logits = {};
            }
        }
        ++expected;
        finish(std::move(p));
    }
    active.swap(still);
}

// Picks the request's next token from its logits, through its grammar's mask when it has one.
void Scheduler::Core::sample(Active& a) {
    Request& r = a.request;
    const uint8_t* allowed = nullptr;
    if (r.grammar) {
        mask.resize(model.info().vocab_size);
        r.grammar->fill_mask(mask.data());
        allowed = mask.data();
    }
    a.outcome.token = r.sampler->sample(a.outcome.logits.data(), allowed);
    a.outcome.probability = r.sampler->last_probability();
    r.sampler->accept(a.outcome.token);
    if (r.grammar) {
        if (!r.grammar->accept_token(a.outcome.token)) {
            throw Error(ErrorCode::InvalidArgument, "the grammar refused the token its own mask allowed");
        }
        a.outcome.grammar_complete = r.grammar->is_complete();
        a.outcome.grammar_can_continue = r.grammar->can_continue();
    }
}

void Scheduler::Core::finish(ActivePtr a) {
    a->outcome.length = a->request.sequence ? a->request.sequence->length() : 0;
    try {
        if (a->request.done) a->request.done(a->outcome);
    } catch (...) {
        // A callback's failure must not take the engine thread down.
    }
    // `a` (its sequence, sampler and callback) is released here, on the engine thread.
}

}  // namespace moe::runtime
