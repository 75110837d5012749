// Token sampler; the pipeline is documented in sampler.h.
//
// Compared with llama.cpp (src/llama-sampler.cpp and common/sampling.cpp; default chain
// logit_bias -> penalties -> dry -> top_n_sigma -> top_k -> typ_p -> top_p -> min_p -> xtc ->
// temperature -> dist, with the grammar checked on the picked token and, if it rejects it, applied
// to the logits before a second pass):
//   - Same: logit bias before the penalties; the penalty arithmetic (repeat by the sign of the logit,
//     then count * freq + (count > 0) * present subtracted), over a window of the last
//     penalty_last_n accepted tokens; top-k keeps k tokens; top-p keeps the smallest prefix with
//     cumulative probability >= p (at least one token); min-p keeps p >= min_p * p_max; then a
//     draw from the renormalized survivors.
//   - Temperature: llama.cpp applies it last, so its top-p and min-p see the temperature-1
//     probabilities; here temperature comes right after top-k, so top-p and min-p see the tempered
//     distribution (the Hugging Face transformers / vLLM order, and what an OpenAI-style API user
//     expects). With temperature 1 the two agree.
//   - Greedy (temperature <= 0): llama.cpp still runs top-k/top-p/min-p and keeps the maximum; the
//     result is the same token (those stages always keep the maximum), but here it short-circuits
//     right after the penalties and uses no random number.
//   - Mask: applied first (llama.cpp's "grammar first" mode; its default resample-on-reject mode
//     gives the same distribution). NaN logits are banned here; llama.cpp does not check.
//   - RNG: llama.cpp draws with std::mt19937 (32-bit) through std::uniform_real_distribution<double>
//     (whose algorithm differs between standard libraries) and treats seed 0xFFFFFFFF as "random";
//     here std::mt19937_64 (bit-exact by the standard) and u = (x >> 11) * 2^-53 by hand, and every
//     seed is used as given.
//   - Draw: llama.cpp takes the first token whose running sum is >= u * sum; here > u * sum over
//     positive weights only, so a zero-probability token can never be picked.
//   - top-p/min-p have no min_keep (always 1 here); penalty_last_n = -1 means the whole history
//     since construction / reset() (llama.cpp's common layer maps -1 to the context size).
//   - Not implemented: dry, top_n_sigma, typical-p, xtc, mirostat, dynamic temperature.
#include "sampler.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdio>
#include <string>

#include "../common/error.h"

namespace moe::sampling {

namespace {

constexpr float kInf = INFINITY;

[[noreturn]] void invalid(const std::string& message) {
    throw Error(ErrorCode::InvalidArgument, message);
}

std::string fmt(double v) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%g", v);
    return buf;
}

// Clamps a finite computation that overflowed back to the finite range, so that only an explicit
// +inf bias (or a +inf logit) forces a token and only -inf bans one.
inline float keep_finite(float was, float now) {
    if (std::isfinite(was) && !std::isfinite(now)) return now > 0 ? FLT_MAX : -FLT_MAX;
    return now;
}

// Total order of the candidates: higher logit first, ties to the lower id.
struct Better {
    template <class C>
    bool operator()(const C& a, const C& b) const {
        return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
    }
};

// exp(x) underflows to exactly 0 in float below about -103.97.
constexpr float kWeightCutoff = -104.0f;

// One entry per id, ascending id; biases on the same id add up (+inf and -inf together throw).
std::vector<std::pair<int32_t, float>> merged_bias(const std::vector<std::pair<int32_t, float>>& in) {
    std::vector<std::pair<int32_t, float>> b = in;
    std::stable_sort(b.begin(), b.end(), [](const auto& x, const auto& y) { return x.first < y.first; });
    size_t out = 0;
    for (size_t i = 0; i < b.size(); ++i) {
        if (out > 0 && b[out - 1].first == b[i].first) {
            const float was = b[out - 1].second;
            const float sum = was + b[i].second;
            if (std::isnan(sum))
                invalid("logit_bias for token " + std::to_string(b[i].first) + " combines +inf and -inf");
            b[out - 1].second = std::isfinite(b[i].second) ? keep_finite(was, sum) : sum;
        } else {
            b[out++] = b[i];
        }
    }
    b.resize(out);
    return b;
}

}  // namespace

void Sampler::validate(const SamplerParams& p, int32_t n_vocab) {
    if (n_vocab <= 0) invalid("n_vocab must be positive (got " + std::to_string(n_vocab) + ")");
    if (!std::isfinite(p.temperature))
        invalid("temperature must be a finite number (got " + fmt(p.temperature) + ")");
    if (!(p.top_p >= 0.0f && p.top_p <= 1.0f))
        invalid("top_p must be in [0, 1] (got " + fmt(p.top_p) + ")");
    if (!(p.min_p >= 0.0f && p.min_p <= 1.0f))
        invalid("min_p must be in [0, 1] (got " + fmt(p.min_p) + ")");
    if (!(std::isfinite(p.repeat_penalty) && p.repeat_penalty > 0.0f))
        invalid("repeat_penalty must be a finite number > 0 (got " + fmt(p.repeat_penalty) + ")");
    if (!std::isfinite(p.frequency_penalty))
        invalid("frequency_penalty must be a finite number (got " + fmt(p.frequency_penalty) + ")");
    if (!std::isfinite(p.presence_penalty))
        invalid("presence_penalty must be a finite number (got " + fmt(p.presence_penalty) + ")");
    if (p.penalty_last_n < -1)
        invalid("penalty_last_n must be >= -1 (got " + std::to_string(p.penalty_last_n) + ")");
    for (const auto& [id, bias] : p.logit_bias) {
        if (id < 0 || id >= n_vocab)
            invalid("logit_bias token id " + std::to_string(id) + " is outside the vocabulary [0, " +
                    std::to_string(n_vocab) + ")");
        if (std::isnan(bias)) invalid("logit_bias for token " + std::to_string(id) + " is NaN");
    }
    (void)merged_bias(p.logit_bias);
}

Sampler::Sampler(const SamplerParams& params, int32_t n_vocab) : params_(params), n_vocab_(n_vocab) {
    validate(params, n_vocab);
    greedy_ = params.temperature <= 0.0f;
    penalties_on_ = params.penalty_last_n != 0 &&
                    (params.repeat_penalty != 1.0f || params.frequency_penalty != 0.0f ||
                     params.presence_penalty != 0.0f);

    bias_ = merged_bias(params.logit_bias);

    if (penalties_on_) {
        counts_.assign(static_cast<size_t>(n_vocab), 0);
        slot_.assign(static_cast<size_t>(n_vocab), -1);
    }
    work_.resize(static_cast<size_t>(n_vocab));
    rng_.seed(params.seed);
}

// ------------------------------------------------------------------------------------------------
// History
// ------------------------------------------------------------------------------------------------

void Sampler::record(int32_t t) {
    auto inc = [this](int32_t id) {
        if (counts_[id]++ == 0) {
            slot_[id] = static_cast<int32_t>(distinct_.size());
            distinct_.push_back(id);
        }
    };
    auto dec = [this](int32_t id) {
        if (--counts_[id] == 0) {
            const int32_t s = slot_[id];
            const int32_t last = distinct_.back();
            distinct_[static_cast<size_t>(s)] = last;
            slot_[last] = s;
            distinct_.pop_back();
            slot_[id] = -1;
        }
    };
    if (params_.penalty_last_n > 0) {
        const size_t cap = static_cast<size_t>(params_.penalty_last_n);
        if (ring_.size() < cap) {
            ring_.push_back(t);
        } else {
            const int32_t old = ring_[ring_head_];
            ring_[ring_head_] = t;
            ring_head_ = (ring_head_ + 1) % cap;
            dec(old);
        }
    }
    inc(t);
}

void Sampler::accept(int32_t token) { accept(&token, 1); }

void Sampler::accept(const int32_t* tokens, size_t n) {
    if (n == 0) return;
    if (tokens == nullptr) invalid("accept: tokens is null");
    for (size_t i = 0; i < n; ++i)
        if (tokens[i] < 0 || tokens[i] >= n_vocab_)
            invalid("accept: token id " + std::to_string(tokens[i]) + " is outside the vocabulary [0, " +
                    std::to_string(n_vocab_) + ")");
    if (!penalties_on_) return;
    for (size_t i = 0; i < n; ++i) record(tokens[i]);
}

void Sampler::reset() {
    for (const int32_t id : distinct_) {
        counts_[id] = 0;
        slot_[id] = -1;
    }
    distinct_.clear();
    ring_.clear();
    ring_head_ = 0;
    rng_.seed(params_.seed);
    last_probability_ = 0.0f;
}

// ------------------------------------------------------------------------------------------------
// Sampling
// ------------------------------------------------------------------------------------------------

void Sampler::prepare(const float* logits, const uint8_t* allowed) {
    float* w = work_.data();
    const size_t n = static_cast<size_t>(n_vocab_);
    if (allowed != nullptr) {
        for (size_t i = 0; i < n; ++i) {
            const float v = logits[i];
            w[i] = (allowed[i] != 0 && v == v) ? v : -kInf;
        }
    } else {
        for (size_t i = 0; i < n; ++i) {
            const float v = logits[i];
            w[i] = v == v ? v : -kInf;
        }
    }
    for (const auto& [id, bias] : bias_) {
        float& v = w[id];
        if (v == -kInf) continue;  // masked stays masked
        if (bias == -kInf) {
            v = -kInf;
        } else {
            const float was = v;
            v += bias;
            if (std::isfinite(bias)) v = keep_finite(was, v);
        }
    }
    if (penalties_on_) {
        const float rp = params_.repeat_penalty;
        const float fp = params_.frequency_penalty;
        const float pp = params_.presence_penalty;
        for (const int32_t id : distinct_) {
            const float was = w[id];
            if (!std::isfinite(was)) continue;  // banned stays banned, forced stays forced
            const int32_t count = counts_[id];
            float v = was <= 0.0f ? was * rp : was / rp;
            v -= static_cast<float>(count) * fp + static_cast<float>(count > 0) * pp;
            w[id] = keep_finite(was, v);
        }
    }
}

int32_t Sampler::pick_greedy() const {
    const float* w = work_.data();
    float best = -kInf;
    int32_t best_id = -1;
    for (int32_t i = 0; i < n_vocab_; ++i) {
        if (w[i] > best) {
            best = w[i];
            best_id = i;
        }
    }
    return best_id;
}

double Sampler::draw_u() {
    return static_cast<double>(rng_() >> 11) * 0x1.0p-53;
}

// ---- top-k on: a small sorted candidate set -----------------------------------------------------

int32_t Sampler::pick_top_k(int32_t k) {
    const float* w = work_.data();
    const size_t kk = static_cast<size_t>(k);
    Candidate* c;
    size_t n = 0;
    if (kk <= 1024) {
        // One pass keeping a heap of the best k (its top is the worst of them): most tokens are
        // rejected by a single compare. Scanning in id order, a tie with the worst never enters.
        if (cand_.size() < kk) cand_.resize(kk);
        c = cand_.data();
        for (int32_t i = 0; i < n_vocab_; ++i) {
            const float v = w[i];
            if (v == -kInf) continue;
            if (n < kk) {
                c[n++] = {v, i, 0.0f};
                std::push_heap(c, c + n, Better());
            } else if (v > c[0].logit) {
                std::pop_heap(c, c + n, Better());
                c[n - 1] = {v, i, 0.0f};
                std::push_heap(c, c + n, Better());
            }
        }
        std::sort_heap(c, c + n, Better());
    } else {
        if (cand_.size() < static_cast<size_t>(n_vocab_)) cand_.resize(static_cast<size_t>(n_vocab_));
        c = cand_.data();
        for (int32_t i = 0; i < n_vocab_; ++i)
            if (w[i] != -kInf) c[n++] = {w[i], i, 0.0f};
        if (n > kk) {
            std::nth_element(c, c + kk, c + n, Better());
            n = kk;
        }
        std::sort(c, c + n, Better());  // a strict total order: the same result everywhere
    }
    if (n == 0) invalid("sample: no token is allowed (all masked, banned by logit_bias, -inf or NaN)");

    // Temperature weights. The first candidate is the maximum, so its weight is exactly 1.
    const float max_logit = c[0].logit;
    const float t = params_.temperature;
    if (max_logit == kInf) {
        for (size_t i = 0; i < n; ++i) c[i].w = c[i].logit == kInf ? 1.0f : 0.0f;
    } else {
        for (size_t i = 0; i < n; ++i) c[i].w = std::exp((c[i].logit - max_logit) / t);
    }
    size_t m = n;  // survivors: c[0, m); weights are non-increasing

    // top-p: the smallest prefix whose cumulative probability reaches top_p.
    if (params_.top_p < 1.0f) {
        double total = 0.0;
        for (size_t i = 0; i < n; ++i) total += c[i].w;
        const double target = static_cast<double>(params_.top_p) * total;
        double cum = 0.0;
        size_t i = 0;
        while (i < n) {
            cum += c[i++].w;
            if (cum >= target) break;
        }
        m = std::max<size_t>(i, 1);
    }
    // min-p: p >= min_p * p_max  <=>  w >= min_p (the maximum's weight is exactly 1).
    if (params_.min_p > 0.0f) {
        size_t j = 1;
        while (j < m && c[j].w >= params_.min_p) ++j;
        m = j;
    }
    while (m > 1 && c[m - 1].w == 0.0f) --m;

    double total = 0.0;
    for (size_t j = 0; j < m; ++j) total += c[j].w;
    const double target = draw_u() * total;
    double cum = 0.0;
    size_t pick = m - 1;
    for (size_t j = 0; j < m; ++j) {
        cum += c[j].w;
        if (cum > target) {
            pick = j;
            break;
        }
    }
    last_probability_ = static_cast<float>(static_cast<double>(c[pick].w) / total);
    return c[pick].id;
}

// ---- top-k off: weights in place over the whole vocabulary, in id order --------------------------

namespace {

// Higher weight first, ties to the lower id.
inline bool wbetter(float aw, int32_t aid, float bw, int32_t bid) {
    return aw > bw || (aw == bw && aid < bid);
}

struct WBetter {
    template <class W>
    bool operator()(const W& a, const W& b) const {
        return wbetter(a.w, a.id, b.w, b.id);
    }
};

}  // namespace

// Replaces work_ by the temperature weights (0 for tokens out: masked, banned, underflowing or, when
// only min-p filters, clearly below min_p) and returns their sum (in id order).
double Sampler::weigh_all(float max_logit) {
    float* w = work_.data();
    const size_t n = static_cast<size_t>(n_vocab_);
    double total = 0.0;
    if (max_logit == kInf) {
        for (size_t i = 0; i < n; ++i) {
            w[i] = w[i] == kInf ? 1.0f : 0.0f;
            total += w[i];
        }
        return total;
    }
    const float t = params_.temperature;
    float cutoff = kWeightCutoff;
    // Without top-p nothing needs the weights min-p will drop: skip the tokens whose exponent is
    // clearly below log(min_p) (the margin covers the rounding of exp and log; the exact w >= min_p
    // test follows).
    if (params_.top_p >= 1.0f && params_.min_p > 0.0f)
        cutoff = std::max(cutoff, static_cast<float>(std::log(static_cast<double>(params_.min_p)) - 1e-3));
    for (size_t i = 0; i < n; ++i) {
        const float x = (w[i] - max_logit) / t;  // -inf for -inf
        const float e = x >= cutoff ? std::exp(x) : 0.0f;
        w[i] = e;
        total += e;
    }
    return total;
}

// The last token (in the weight order) of the smallest prefix whose weight sum reaches target.
// First the best 256 (one pass with a heap, usually enough); otherwise a quickselect on the weight
// mass over the rest. All in this file's code, so the result (including the rounding of the sums)
// is the same everywhere.
Sampler::Weighted Sampler::top_p_bound(double target) {
    const float* w = work_.data();
    const size_t kk = 256;
    if (top_.size() < kk) top_.resize(kk);
    Weighted* h = top_.data();
    size_t n = 0;
    for (int32_t i = 0; i < n_vocab_; ++i) {
        const float v = w[i];
        if (v == 0.0f) continue;
        if (n < kk) {
            h[n++] = {v, i};
            std::push_heap(h, h + n, WBetter());
        } else if (v > h[0].w) {
            std::pop_heap(h, h + n, WBetter());
            h[n - 1] = {v, i};
            std::push_heap(h, h + n, WBetter());
        }
    }
    std::sort_heap(h, h + n, WBetter());
    double acc = 0.0;
    for (size_t i = 0; i < n; ++i) {
        acc += h[i].w;
        if (acc >= target) return h[i];
    }
    const Weighted last = h[n - 1];
    if (n < kk) return last;  // that was everything

    // The rest: everything ranked after `last`.
    if (sel_.size() < static_cast<size_t>(n_vocab_)) sel_.resize(static_cast<size_t>(n_vocab_));
    Weighted* a = sel_.data();
    size_t len = 0;
    for (int32_t i = 0; i < n_vocab_; ++i) {
        const float v = w[i];
        if (v != 0.0f && wbetter(last.w, last.id, v, i)) a[len++] = {v, i};
    }
    if (len == 0) return last;

    size_t lo = 0, hi = len;
    int rounds = 0;
    while (hi - lo > 32 && rounds < 64) {
        ++rounds;
        // Median of three (by rank) as the pivot, moved to hi - 1.
        const size_t mid = lo + (hi - lo) / 2;
        size_t p0 = lo, p1 = mid, p2 = hi - 1;
        if (WBetter()(a[p1], a[p0])) std::swap(p0, p1);
        if (WBetter()(a[p2], a[p1])) std::swap(p1, p2);
        if (WBetter()(a[p1], a[p0])) std::swap(p0, p1);
        std::swap(a[p1], a[hi - 1]);
        const Weighted pivot = a[hi - 1];
        // Lomuto: [lo, store) ranks before the pivot; their mass is summed on the way.
        size_t store = lo;
        double mass = 0.0;
        for (size_t i = lo; i + 1 < hi; ++i) {
            if (wbetter(a[i].w, a[i].id, pivot.w, pivot.id)) {
                std::swap(a[i], a[store]);
                mass += a[store].w;
                ++store;
            }
        }
        std::swap(a[store], a[hi - 1]);
        if (acc + mass >= target) {
            hi = store;  // the bound lies strictly before the pivot
        } else if (acc + mass + pivot.w >= target) {
            return pivot;
        } else {
            acc += mass + pivot.w;
            lo = store + 1;
        }
        if (lo >= hi) return a[lo < len ? lo : len - 1];  // rounding: the sums never quite reached it
    }
    std::sort(a + lo, a + hi, WBetter());
    for (size_t i = lo; i < hi; ++i) {
        acc += a[i].w;
        if (acc >= target) return a[i];
    }
    return hi < len ? a[hi] : a[hi - 1];  // rounding: the next in rank, or the very last
}

int32_t Sampler::pick_all(float max_logit) {
    const double total = weigh_all(max_logit);
    const float* w = work_.data();

    bool bounded = false;
    Weighted bound{0.0f, 0};
    if (params_.top_p < 1.0f) {
        bound = top_p_bound(static_cast<double>(params_.top_p) * total);
        bounded = true;
    }
    const float min_p = params_.min_p;  // p >= min_p * p_max  <=>  w >= min_p (p_max has w == 1)
    auto kept = [&](size_t i) {
        const float v = w[i];
        if (v == 0.0f || v < min_p) return false;
        return !bounded || !wbetter(bound.w, bound.id, v, static_cast<int32_t>(i));
    };

    const size_t n = static_cast<size_t>(n_vocab_);
    double kept_total = 0.0;
    size_t last = 0;
    for (size_t i = 0; i < n; ++i) {
        if (kept(i)) {
            kept_total += w[i];
            last = i;
        }
    }
    const double target = draw_u() * kept_total;
    double cum = 0.0;
    size_t pick = last;
    for (size_t i = 0; i < n; ++i) {
        if (!kept(i)) continue;
        cum += w[i];
        if (cum > target) {
            pick = i;
            break;
        }
    }
    last_probability_ = static_cast<float>(static_cast<double>(w[pick]) / kept_total);
    return static_cast<int32_t>(pick);
}

int32_t Sampler::sample(const float* logits, const uint8_t* allowed) {
    if (logits == nullptr) invalid("sample: logits is null");
    prepare(logits, allowed);
    if (greedy_) {
        const int32_t id = pick_greedy();
        if (id < 0) invalid("sample: no token is allowed (all masked, banned by logit_bias, -inf or NaN)");
        last_probability_ = 1.0f;
        return id;
    }
    if (params_.top_k > 0 && params_.top_k < n_vocab_) return pick_top_k(params_.top_k);
    float max_logit = -kInf;
    const float* w = work_.data();
    for (int32_t i = 0; i < n_vocab_; ++i) max_logit = std::max(max_logit, w[i]);
    if (max_logit == -kInf) invalid("sample: no token is allowed (all masked, banned by logit_bias, -inf or NaN)");
    return pick_all(max_logit);
}

}  // namespace moe::sampling
