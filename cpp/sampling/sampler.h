// Per-request token sampler: picks the next token from one row of logits, natively.
//
// Pipeline of Sampler::sample (each stage sees the output of the one before):
//   1. mask         `allowed[i] == 0` bans token i (the hook for grammar-constrained decoding).
//                   A NaN logit also bans its token.
//   2. logit bias   logit += bias; a -inf bias bans the token, a +inf bias forces it (when several
//                   tokens are forced, they share the probability equally). Biases on the same id add up.
//   3. penalties    over the last `penalty_last_n` accepted tokens (-1: all since construction or
//                   reset()), for each distinct token t seen `count` times in that window:
//                     repeat:    logit = logit <= 0 ? logit * repeat_penalty : logit / repeat_penalty
//                     then:      logit -= count * frequency_penalty + (count > 0) * presence_penalty
//                   (the arithmetic of llama.cpp's "penalties" sampler, in that order).
//                   A finite logit that a finite bias or a penalty pushes past the float range is
//                   clamped to +-FLT_MAX: only an explicit infinity forces or bans.
//   4. greedy       temperature <= 0: the arg-max (ties to the lowest id); no random number is used
//                   and last_probability() is 1.
//   5. top-k        keep the top_k highest logits (ties to the lowest id); top_k <= 0: off.
//   6. temperature  weights w = exp((logit - max) / temperature), over the top-k survivors.
//   7. top-p        with p = w / sum(w), keep the smallest prefix of the tokens in descending order
//                   whose cumulative p is >= top_p (always at least one token); top_p == 1: off.
//   8. min-p        keep tokens with p >= min_p * p_max (computed on the distribution of stage 6,
//                   which gives the same set as the renormalized top-p survivors); min_p == 0: off.
//   9. draw         renormalize the survivors and draw one with u = (next_u64() >> 11) * 2^-53 from
//                   std::mt19937_64 seeded with `seed` (exactly one 64-bit output per draw): the
//                   first survivor whose running weight sum exceeds u * sum, walking the survivors
//                   in descending logit order (ties to the lower id) when top-k is on, in ascending
//                   id order when it is off. Both the engine (mt19937_64 is fully specified by the
//                   C++ standard) and the mapping from u to a token are portable, so the same seed,
//                   parameters, history and logits give the same tokens on every platform (up to
//                   the last-ulp differences of expf between C libraries).
//
// With top-k off, "descending order" for top-p means descending weight, ties to the lower id (two
// different logits can round to the same weight; with top-k on it is the logit order).
//
// Differences from llama.cpp's default chain (logit_bias -> penalties -> dry -> top_n_sigma -> top_k
// -> typ_p -> top_p -> min_p -> xtc -> temperature -> dist) are listed in sampler.cc.
//
// Not thread-safe: one Sampler per request, used from one thread at a time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <random>
#include <utility>
#include <vector>

namespace moe::sampling {

struct SamplerParams {
    float temperature = 0.8f;        // finite; <= 0: greedy (arg-max, ties to the lowest id)
    int32_t top_k = 40;              // <= 0 (or >= n_vocab): off
    float top_p = 0.95f;             // in [0, 1]; 1: off; 0 keeps only the most probable token
    float min_p = 0.05f;             // in [0, 1]; 0: off
    float repeat_penalty = 1.0f;     // finite, > 0; 1: off (logit > 0 ? logit / p : logit * p)
    float frequency_penalty = 0.0f;  // finite (may be negative); OpenAI semantics: logit -= count * f
    float presence_penalty = 0.0f;   // finite (may be negative); logit -= (count > 0) * p
    int32_t penalty_last_n = 64;     // window of recent accepted tokens the penalties see; 0: off;
                                     // -1: the whole history since construction / reset()
    uint64_t seed = 0;               // used as given (0 is an ordinary seed)
    std::vector<std::pair<int32_t, float>> logit_bias;  // (token id, bias), added to the logit;
                                                        // -inf bans the token, +inf forces it
};

class Sampler {
public:
    // Validates params (moe::Error InvalidArgument naming the offending field) and allocates the
    // per-vocabulary buffers.
    Sampler(const SamplerParams& params, int32_t n_vocab);

    // Throws what the constructor would throw for these params, without building a sampler.
    static void validate(const SamplerParams& params, int32_t n_vocab);

    // Picks a token from `logits` (n_vocab floats; not modified). `allowed`, when given, is an
    // n_vocab-byte mask (nonzero = allowed) applied before everything else. Throws InvalidArgument
    // when logits is null or when no token is left (all masked, banned by a -inf bias, or -inf/NaN);
    // a throw leaves the random state untouched. Does not accept() the token: the caller does that
    // once the token is committed. Scratch buffers grow on first use and are reused afterwards.
    int32_t sample(const float* logits, const uint8_t* allowed = nullptr);

    // Records tokens (prompt or generated) for the penalties. Ids outside [0, n_vocab) throw
    // InvalidArgument (nothing of the batch is recorded then).
    void accept(int32_t token);
    void accept(const int32_t* tokens, size_t n);

    // Forgets the history and reseeds the random engine with params.seed: the sampler then behaves
    // exactly as a freshly constructed one.
    void reset();

    // Probability the final (renormalized) distribution gave the token last returned by sample():
    // 1 for greedy; 0 before the first sample().
    float last_probability() const { return last_probability_; }

    const SamplerParams& params() const { return params_; }
    int32_t n_vocab() const { return n_vocab_; }

private:
    struct Candidate {
        float logit;  // after mask, bias and penalties
        int32_t id;
        float w;      // exp((logit - max) / temperature)
    };
    struct Weighted {
        float w;
        int32_t id;
    };

    void prepare(const float* logits, const uint8_t* allowed);
    int32_t pick_greedy() const;
    int32_t pick_top_k(int32_t k);
    int32_t pick_all(float max_logit);
    double weigh_all(float max_logit);
    Weighted top_p_bound(double target);
    double draw_u();
    void record(int32_t token);

    SamplerParams params_;
    int32_t n_vocab_;
    bool greedy_;
    bool penalties_on_;
    std::vector<std::pair<int32_t, float>> bias_;  // merged: one entry per id, ascending id

    // Penalty window: counts_ over the last penalty_last_n accepted tokens, distinct_ the ids with a
    // nonzero count (slot_[id] = index in distinct_, or -1), ring_ the window itself (unused for -1).
    std::vector<int32_t> counts_;
    std::vector<int32_t> slot_;
    std::vector<int32_t> distinct_;
    std::vector<int32_t> ring_;
    size_t ring_head_ = 0;

    std::vector<float> work_;           // n_vocab logits after mask, bias and penalties; then, with
                                        // top-k off, the weights (0 = out)
    std::vector<Candidate> cand_;       // top-k: the candidates, best first
    std::vector<Weighted> top_;         // top-p with top-k off: the best 256 weights
    std::vector<Weighted> sel_;         // top-p with top-k off: the rest, when 256 are not enough

    std::mt19937_64 rng_;
    float last_probability_ = 0.0f;
};

}  // namespace moe::sampling
