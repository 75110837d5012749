// Native tests for cpp/sampling (the per-request token sampler):
//   1. greedy = arg-max (ties to the lowest id), masks, bans, errors that leave the state untouched;
//   2. determinism: same seed -> same tokens, reset() replays, different seeds diverge, a pinned
//      sequence (mt19937_64 is specified bit for bit by the C++ standard);
//   3. the distribution: empirical frequencies against a double-precision reference of the whole
//      pipeline (chi-square at the 99.9% quantile), and last_probability() against the reference
//      probability of every token drawn;
//   4. each stage on constructed rows: temperature, top-k, top-p (exact boundaries), min-p, the
//      top-p -> min-p order, repeat / frequency / presence penalties and their window, logit bias;
//   5. parameter validation (InvalidArgument naming the field).
// `test_sampling --bench` times sample() on a 151,936-token vocabulary instead (not part of the suite).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <map>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "check.h"
#include "rng.h"
#include "common/error.h"
#include "error_check.h"
#include "sampling/sampler.h"

using moe::ErrorCode;
using moe::sampling::Sampler;
using moe::sampling::SamplerParams;
using moe_test::throws_error;

namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

// splitmix64: deterministic test data on every platform.
using moe_test::Rng;

// Sampling off except temperature: the plain softmax.
SamplerParams plain(float temperature, uint64_t seed = 1) {
    SamplerParams p;
    p.temperature = temperature;
    p.top_k = 0;
    p.top_p = 1.0f;
    p.min_p = 0.0f;
    p.seed = seed;
    return p;
}

// The whole pipeline, straightforwardly, in double (penalties in float, as specified). Returns the
// final probability of every token.
std::vector<double> reference(const std::vector<float>& logits, const SamplerParams& p,
                              const std::vector<int32_t>& history = {}, const uint8_t* allowed = nullptr) {
    const size_t n = logits.size();
    std::vector<float> l(logits);
    for (size_t i = 0; i < n; ++i)
        if ((allowed && !allowed[i]) || std::isnan(l[i])) l[i] = -kInf;
    std::map<int32_t, double> bias;
    for (auto [id, b] : p.logit_bias) bias[id] += b;
    for (auto [id, b] : bias)
        if (l[id] != -kInf) l[id] = static_cast<float>(l[id] + b);
    const bool pen = p.penalty_last_n != 0;
    if (pen) {
        const size_t from = p.penalty_last_n < 0 || history.size() < static_cast<size_t>(p.penalty_last_n)
                                ? 0
                                : history.size() - static_cast<size_t>(p.penalty_last_n);
        std::map<int32_t, int> count;
        for (size_t i = from; i < history.size(); ++i) ++count[history[i]];
        for (auto [id, c] : count) {
            float v = l[id];
            if (!std::isfinite(v)) continue;
            v = v <= 0 ? v * p.repeat_penalty : v / p.repeat_penalty;
            v -= static_cast<float>(c) * p.frequency_penalty + static_cast<float>(c > 0) * p.presence_penalty;
            l[id] = v;
        }
    }
    std::vector<int32_t> order(n);
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return l[a] > l[b] || (l[a] == l[b] && a < b); });
    std::vector<double> out(n, 0.0);
    if (p.temperature <= 0) {
        out[order[0]] = 1.0;
        return out;
    }
    size_t m = 0;
    while (m < n && l[order[m]] != -kInf) ++m;
    if (p.top_k > 0) m = std::min(m, static_cast<size_t>(p.top_k));
    const double mx = l[order[0]];
    std::vector<double> w(m);
    for (size_t i = 0; i < m; ++i)
        w[i] = mx == kInf ? (l[order[i]] == kInf ? 1.0 : 0.0) : std::exp((l[order[i]] - mx) / p.temperature);
    double total = std::accumulate(w.begin(), w.end(), 0.0);
    if (p.top_p < 1.0f) {
        double cum = 0;
        size_t keep = m;
        for (size_t i = 0; i < m; ++i) {
            cum += w[i] / total;
            if (cum >= p.top_p) {
                keep = i + 1;
                break;
            }
        }
        m = std::max<size_t>(keep, 1);
    }
    if (p.min_p > 0.0f) {
        size_t keep = 1;
        while (keep < m && w[keep] / w[0] >= p.min_p) ++keep;
        m = keep;
    }
    total = 0;
    for (size_t i = 0; i < m; ++i) total += w[i];
    for (size_t i = 0; i < m; ++i) out[order[i]] = w[i] / total;
    return out;
}

// Wilson-Hilferty approximation of the chi-square quantile for `df` degrees of freedom at the
// standard-normal quantile z (3.09 -> 99.9%).
double chi2_quantile(int df, double z = 3.0902) {
    const double a = 2.0 / (9.0 * df);
    return df * std::pow(1.0 - a + z * std::sqrt(a), 3.0);
}

struct Chi2 {
    double stat;
    int df;
    double bound;
};

// Draws `draws` tokens (no accept) and compares the counts with `expected` probabilities; bins with
// an expected count below 5 are pooled.
Chi2 chi_square(Sampler& s, const std::vector<float>& logits, const std::vector<double>& expected, int draws,
                bool* outside_support = nullptr) {
    std::vector<int> counts(logits.size(), 0);
    for (int i = 0; i < draws; ++i) {
        const int32_t t = s.sample(logits.data());
        ++counts[t];
        if (expected[t] == 0.0 && outside_support) *outside_support = true;
    }
    double stat = 0, pooled_e = 0, pooled_o = 0;
    int bins = 0;
    for (size_t i = 0; i < logits.size(); ++i) {
        const double e = expected[i] * draws;
        if (e >= 5) {
            stat += (counts[i] - e) * (counts[i] - e) / e;
            ++bins;
        } else {
            pooled_e += e;
            pooled_o += counts[i];
        }
    }
    if (pooled_e >= 5) {
        stat += (pooled_o - pooled_e) * (pooled_o - pooled_e) / pooled_e;
        ++bins;
    } else {
        stat += pooled_o > pooled_e + 5 ? 1e9 : 0;  // mass where the reference puts (almost) none
    }
    const int df = std::max(bins - 1, 1);
    return {stat, df, chi2_quantile(df)};
}

// Draws `draws` tokens and checks each against the reference: inside its support, and with
// last_probability() equal to the reference probability (relative tolerance `tol`). Returns the
// number of distinct tokens drawn.
size_t check_against_reference(Sampler& s, const std::vector<float>& logits, const std::vector<double>& ref, int draws,
                               double tol = 1e-5, const uint8_t* allowed = nullptr) {
    std::set<int32_t> seen;
    int bad = 0;
    for (int i = 0; i < draws; ++i) {
        const int32_t t = s.sample(logits.data(), allowed);
        seen.insert(t);
        const double got = s.last_probability();
        if (!(ref[t] > 0 && std::fabs(got - ref[t]) <= tol * ref[t] + 1e-7)) {
            if (bad++ < 5) std::fprintf(stderr, "  token %d: last_probability %.9g, reference %.9g\n", t, got, ref[t]);
        }
    }
    CHECK_MSG(bad == 0, "%d of %d draws disagree with the reference", bad, draws);
    return seen.size();
}

int32_t argmax(const std::vector<float>& v) {
    return static_cast<int32_t>(std::max_element(v.begin(), v.end()) - v.begin());  // first maximum
}

std::vector<int32_t> draw_sequence(Sampler& s, const std::vector<float>& logits, int n, bool accept) {
    std::vector<int32_t> out;
    for (int i = 0; i < n; ++i) {
        out.push_back(s.sample(logits.data()));
        if (accept) s.accept(out.back());
    }
    return out;
}

// ------------------------------------------------------------------------------------------------
// Greedy, masks, errors
// ------------------------------------------------------------------------------------------------

TEST_CASE("greedy is the arg-max, ties to the lowest id") {
    Rng rng(1);
    for (float t : {0.0f, -1.0f}) {
        SamplerParams p;
        p.temperature = t;
        Sampler s(p, 1000);
        for (int r = 0; r < 20; ++r) {
            const auto logits = rng.gauss_vec(1000, 3.0);
            CHECK(s.sample(logits.data()) == argmax(logits));
            CHECK(s.last_probability() == 1.0f);
        }
    }
    std::vector<float> tie = {0.f, 1.f, 3.f, 2.f, 3.f, 3.f, -kInf};
    SamplerParams p;
    p.temperature = 0;
    Sampler s(p, 7);
    CHECK(s.sample(tie.data()) == 2);
    tie[2] = std::nanf("");  // a NaN logit is banned, never the maximum
    CHECK(s.sample(tie.data()) == 4);
}

TEST_CASE("masked tokens are never picked; an empty mask throws") {
    Rng rng(2);
    const int n = 1000;
    const auto logits = rng.gauss_vec(n, 2.0);
    std::vector<uint8_t> allowed(n);
    for (auto& a : allowed) a = (rng.next() & 1) ? 7 : 0;  // any nonzero byte allows
    allowed[argmax(logits)] = 0;

    SamplerParams p = plain(1.5f, 3);
    Sampler s(p, n);
    CHECK(check_against_reference(s, logits, reference(logits, p, {}, allowed.data()), 3000, 1e-5,
                                  allowed.data()) > 50);
    SamplerParams defaults;  // top-k 40, top-p, min-p
    Sampler d(defaults, n);
    check_against_reference(d, logits, reference(logits, defaults, {}, allowed.data()), 3000, 1e-5, allowed.data());

    SamplerParams g;
    g.temperature = 0;
    Sampler gs(g, n);
    std::vector<float> masked = logits;
    for (int i = 0; i < n; ++i)
        if (!allowed[i]) masked[i] = -kInf;
    CHECK(gs.sample(logits.data(), allowed.data()) == argmax(masked));

    // Only one token allowed: it is picked with probability 1, whatever its logit.
    std::vector<uint8_t> one(n, 0);
    one[17] = 1;
    for (Sampler* x : {&s, &d, &gs}) {
        CHECK(x->sample(logits.data(), one.data()) == 17);
        CHECK(x->last_probability() == 1.0f);
    }

    std::vector<uint8_t> none(n, 0);
    for (Sampler* x : {&s, &d, &gs})
        CHECK(throws_error([&] { x->sample(logits.data(), none.data()); }, ErrorCode::InvalidArgument,
                           {"no token is allowed"}));
}

TEST_CASE("everything banned (mask + bias, -inf, NaN) throws and leaves the random state untouched") {
    const int n = 50;
    Rng rng(3);
    const auto logits = rng.gauss_vec(n, 1.0);
    SamplerParams p = plain(1.0f, 9);
    p.logit_bias = {{4, -kInf}};
    std::vector<uint8_t> only4(n, 0);
    only4[4] = 1;
    Sampler a(p, n), b(p, n);
    CHECK(throws_error([&] { a.sample(logits.data(), only4.data()); }, ErrorCode::InvalidArgument, {"no token"}));
    std::vector<float> all_ninf(n, -kInf), all_nan(n, std::nanf(""));
    CHECK(throws_error([&] { a.sample(all_ninf.data()); }, ErrorCode::InvalidArgument, {"no token"}));
    CHECK(throws_error([&] { a.sample(all_nan.data()); }, ErrorCode::InvalidArgument, {"no token"}));
    CHECK(throws_error([&] { a.sample(nullptr); }, ErrorCode::InvalidArgument, {"logits"}));
    for (int32_t k : {0, 5}) {
        SamplerParams q = p;
        q.top_k = k;
        q.temperature = 0.7f;
        Sampler c(q, n);
        CHECK(throws_error([&] { c.sample(all_ninf.data()); }, ErrorCode::InvalidArgument, {"no token"}));
        q.temperature = 0;
        Sampler g(q, n);
        CHECK(throws_error([&] { g.sample(all_nan.data()); }, ErrorCode::InvalidArgument, {"no token"}));
    }
    // a drew nothing: it continues exactly as b.
    CHECK(draw_sequence(a, logits, 50, false) == draw_sequence(b, logits, 50, false));
    // NaN logits are never picked.
    std::vector<float> some_nan = logits;
    for (int i = 0; i < n; i += 2) some_nan[i] = std::nanf("");
    for (int i = 0; i < 500; ++i) CHECK(a.sample(some_nan.data()) % 2 == 1);
}

// ------------------------------------------------------------------------------------------------
// Determinism
// ------------------------------------------------------------------------------------------------

TEST_CASE("same seed, params and logits give the same tokens; reset() replays; seeds differ") {
    Rng rng(4);
    const int n = 3000;
    const auto logits = rng.gauss_vec(n, 1.0);
    SamplerParams p;  // defaults plus penalties, so the history matters too
    p.temperature = 1.2f;
    p.top_k = 0;
    p.top_p = 0.98f;
    p.min_p = 0.01f;
    p.repeat_penalty = 1.3f;
    p.frequency_penalty = 0.2f;
    p.presence_penalty = 0.1f;
    p.seed = 12345;
    Sampler a(p, n), b(p, n);
    const auto sa = draw_sequence(a, logits, 300, true);
    CHECK(sa == draw_sequence(b, logits, 300, true));
    a.reset();
    CHECK(sa == draw_sequence(a, logits, 300, true));

    std::set<std::vector<int32_t>> sequences;
    for (uint64_t seed = 0; seed < 30; ++seed) {
        SamplerParams q = p;
        q.seed = seed;
        Sampler s(q, n);
        sequences.insert(draw_sequence(s, logits, 40, true));
    }
    CHECK(sequences.size() == 30);
}

TEST_CASE("the random stream is portable: mt19937_64 and a pinned token sequence") {
    // The C++ standard fixes the 10000th output of a default-constructed mt19937_64.
    std::mt19937_64 e;
    e.discard(9999);
    CHECK(e() == 9981545732273789042ull);

    // The mapping from the random stream to tokens, derived independently: u = (x >> 11) * 2^-53
    // from mt19937_64(seed), then the first token, in ascending id (no top-k / top-p ran), whose
    // cumulative probability exceeds u.
    const std::vector<float> logits = {1.0f, 0.5f, 0.25f, 0.0f, -0.5f, -1.0f, 2.0f, 0.75f};
    SamplerParams p = plain(1.0f, 42);
    const auto ref = reference(logits, p);
    std::mt19937_64 engine(42);
    std::vector<int32_t> derived;
    double margin = 1.0;
    for (int i = 0; i < 24; ++i) {
        const double u = static_cast<double>(engine() >> 11) * 0x1.0p-53;
        double cum = 0;
        int32_t pick = -1;
        for (int32_t t = 0; t < 8; ++t) {
            cum += ref[t];
            margin = std::min(margin, std::fabs(cum - u));
            if (pick < 0 && cum > u) pick = t;
        }
        derived.push_back(pick);
    }
    CHECK_MSG(margin > 1e-6, "a draw lands %g from a boundary: the pinned sequence would be fragile", margin);

    // Pinned as well (only the last-ulp accuracy of expf between C libraries could move a draw, and
    // none lands within 1e-6 of a boundary, as checked above).
    const std::vector<int32_t> pinned = {6, 6, 6, 0, 7, 0, 6, 3, 2, 4, 0, 6, 6, 6, 6, 7, 6, 6, 0, 0, 6, 0, 5, 0};
    Sampler s(p, 8);
    const auto got = draw_sequence(s, logits, 24, false);
    CHECK(got == derived);
    CHECK(got == pinned);
    if (got != pinned) {
        std::fprintf(stderr, "  got:");
        for (int32_t t : got) std::fprintf(stderr, " %d,", t);
        std::fprintf(stderr, "\n");
    }
}

// ------------------------------------------------------------------------------------------------
// The distribution
// ------------------------------------------------------------------------------------------------

TEST_CASE("temperature: 20,000 draws follow softmax(logits / T) (chi-square, 99.9%)") {
    const std::vector<float> logits = {2.0f, 1.5f, 1.0f, 0.5f, 0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f};
    for (float t : {0.5f, 1.0f, 1.7f}) {
        SamplerParams p = plain(t, 77);
        Sampler s(p, 10);
        std::vector<double> expected(10);
        double z = 0;
        for (int i = 0; i < 10; ++i) z += expected[i] = std::exp(logits[i] / static_cast<double>(t));
        for (auto& e : expected) e /= z;
        const Chi2 c = chi_square(s, logits, expected, 20000);
        CHECK_MSG(c.stat < c.bound, "T=%g: chi2 %.2f with %d df, bound %.2f", t, c.stat, c.df, c.bound);
        check_against_reference(s, logits, expected, 2000, 1e-5);
    }
}

TEST_CASE("temperature -> 0 concentrates on the arg-max") {
    Rng rng(5);
    auto logits = rng.gauss_vec(500, 1.0);
    const int32_t best = argmax(logits);
    std::vector<float> sorted = logits;
    std::sort(sorted.rbegin(), sorted.rend());
    const double gap = sorted[0] - sorted[1];
    for (float t : {static_cast<float>(gap / 60.0), 1e-30f, 1e-45f}) {
        for (int32_t k : {0, 40}) {
            SamplerParams p = plain(t, 5);
            p.top_k = k;
            Sampler s(p, 500);
            int hits = 0;
            for (int i = 0; i < 1000; ++i) hits += s.sample(logits.data()) == best;
            CHECK_MSG(hits == 1000, "T=%g k=%d: %d of 1000", t, k, hits);
            CHECK(std::fabs(s.last_probability() - 1.0f) < 1e-6f);
        }
    }
}

TEST_CASE("top-k: k=1 is greedy, k=5 stays in the top 5 with the renormalized softmax") {
    Rng rng(6);
    for (int r = 0; r < 10; ++r) {
        const auto logits = rng.gauss_vec(2000, 2.0);
        SamplerParams p = plain(1.0f, r);
        p.top_k = 1;
        p.repeat_penalty = 1.5f;
        Sampler s(p, 2000);
        SamplerParams g = p;
        g.temperature = 0;
        Sampler gs(g, 2000);
        for (int i = 0; i < 20; ++i) {
            const int32_t t = s.sample(logits.data());
            CHECK(t == gs.sample(logits.data()));
            CHECK(s.last_probability() == 1.0f);
            s.accept(t);
            gs.accept(t);
        }
    }
    const auto logits = rng.gauss_vec(1000, 1.0);
    std::vector<int32_t> order(1000);
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
    const std::set<int32_t> top5(order.begin(), order.begin() + 5);
    for (int32_t k : {5, 2000 /* >= n_vocab: off */}) {
        SamplerParams p = plain(2.0f, 8);
        p.top_k = k;
        Sampler s(p, 1000);
        const auto ref = reference(logits, p);
        bool outside = false;
        const Chi2 c = chi_square(s, logits, ref, 20000, &outside);
        CHECK_MSG(c.stat < c.bound, "k=%d: chi2 %.2f with %d df, bound %.2f", k, c.stat, c.df, c.bound);
        CHECK(!outside);
        if (k == 5) {
            std::set<int32_t> seen;
            for (int i = 0; i < 5000; ++i) seen.insert(s.sample(logits.data()));
            CHECK(seen == top5);
        }
    }
    // Ties at the k-th place go to the lower ids (both the heap path and the nth_element path).
    for (int32_t k : {2, 1100}) {
        std::vector<float> flat(3000, -5.0f);
        const std::vector<int32_t> top_ids = {2990, 40, 1500, 7};  // tied logits, not in id order
        for (int32_t id : top_ids) flat[id] = 1.0f;
        SamplerParams p = plain(1.0f, 24);
        p.top_k = k;
        Sampler s(p, 3000);
        std::set<int32_t> seen;
        for (int i = 0; i < 300; ++i) seen.insert(s.sample(flat.data()));
        if (k == 2) CHECK((seen == std::set<int32_t>{7, 40}));
        if (k == 1100) CHECK(seen.count(2990) == 1);
        const auto ref = reference(flat, p);
        s.reset();
        check_against_reference(s, flat, ref, 300, 1e-6);
    }
    // Large k (the nth_element path) agrees with the reference too.
    SamplerParams p = plain(1.0f, 9);
    p.top_k = 1500;
    const auto big = rng.gauss_vec(4000, 1.0);
    Sampler s(p, 4000);
    check_against_reference(s, big, reference(big, p), 2000);
}

TEST_CASE("top-p keeps the smallest prefix with cumulative >= p (exact boundaries)") {
    // Four equal logits (weights exactly 1, probabilities exactly 1/4); the rest have weight 0.
    std::vector<float> logits(20, -1000.0f);
    const int32_t ids[4] = {3, 7, 9, 12};
    for (int32_t id : ids) logits[id] = 2.0f;
    struct Case {
        float top_p;
        std::set<int32_t> kept;
    };
    const Case cases[] = {
        {0.25f, {3}},
        {0.5f, {3, 7}},                           // cumulative exactly 0.5 >= 0.5: two tokens
        {std::nextafter(0.5f, 1.0f), {3, 7, 9}},  // just above: three
        {0.75f, {3, 7, 9}},
        {0.76f, {3, 7, 9, 12}},
        {0.0f, {3}},  // top_p 0: the single most probable token (ties to the lowest id)
    };
    for (const Case& c : cases) {
        for (int32_t k : {0, 10}) {  // the unsorted path and the top-k (sorted) path
            SamplerParams p = plain(1.0f, 10);
            p.top_p = c.top_p;
            p.top_k = k;
            Sampler s(p, 20);
            std::set<int32_t> seen;
            for (int i = 0; i < 400; ++i) {
                seen.insert(s.sample(logits.data()));
                CHECK(s.last_probability() == 1.0f / static_cast<float>(c.kept.size()));
            }
            CHECK_MSG(seen == c.kept, "top_p %.9g k=%d: drew %zu distinct tokens, expected %zu", c.top_p, k,
                      seen.size(), c.kept.size());
        }
    }
    // Non-uniform: p = 0.6, 0.3, 0.1 (logits ln p).
    const std::vector<float> l3 = {std::log(0.3f), std::log(0.6f), std::log(0.1f)};
    for (auto [top_p, expect] : std::vector<std::pair<float, size_t>>{{0.55f, 1}, {0.85f, 2}, {0.95f, 3}}) {
        SamplerParams p = plain(1.0f, 11);
        p.top_p = top_p;
        Sampler s(p, 3);
        std::set<int32_t> seen;
        for (int i = 0; i < 500; ++i) seen.insert(s.sample(l3.data()));
        CHECK(seen.size() == expect);
        CHECK(seen.count(1) == 1);
        if (expect == 2) CHECK(seen.count(0) == 1);
    }
}

TEST_CASE("top-p over a large flat vocabulary (the quickselect) matches the reference") {
    Rng rng(12);
    const int n = 5000;
    const auto logits = rng.gauss_vec(n, 0.3);
    for (int32_t k : {0, 4000}) {
        SamplerParams p = plain(1.0f, 13);
        p.top_p = 0.9f;
        p.top_k = k;
        const auto ref = reference(logits, p);
        const size_t support = static_cast<size_t>(std::count_if(ref.begin(), ref.end(), [](double x) { return x > 0; }));
        CHECK(support > 2048);  // far beyond the best 256: the quickselect decides
        Sampler s(p, n);
        check_against_reference(s, logits, ref, 3000, 1e-4);
    }
}

TEST_CASE("top-p selection over random rows: the kept mass matches the reference") {
    // last_probability() = w / (kept weight), so one token too many or too few in the kept set
    // moves it by about 1 / (kept count): far above the tolerance.
    Rng rng(23);
    int checked = 0;
    for (int r = 0; r < 150; ++r) {
        const int n = 500 + static_cast<int>(rng.next() % 4000);
        const auto logits = rng.gauss_vec(static_cast<size_t>(n), 0.05 + rng.uniform() * 1.5);
        SamplerParams p = plain(0.5f + static_cast<float>(rng.uniform()), r);
        p.top_p = static_cast<float>(0.05 + 0.94 * rng.uniform());
        p.top_k = (r % 3 == 0) ? 2000 : 0;
        const auto ref = reference(logits, p);
        Sampler s(p, n);
        check_against_reference(s, logits, ref, 5, 1e-6);
        ++checked;
    }
    CHECK(checked == 150);
}

TEST_CASE("min-p drops tokens below min_p * p_max; top-p runs before min-p") {
    const std::vector<float> logits = {-2.0f, 0.0f, -1.0f, -3.0f, -4.0f};  // max at id 1
    struct Case {
        float t, min_p;
        std::set<int32_t> kept;
    };
    // T=1: w = 1, e^-1 = .37, e^-2 = .135, ...; T=2: w = 1, .61, .37, .22, .135.
    const Case cases[] = {{1.0f, 0.2f, {1, 2}}, {1.0f, 0.1f, {0, 1, 2}}, {1.0f, 1.0f, {1}}, {2.0f, 0.2f, {0, 1, 2, 3}}};
    for (const Case& c : cases) {
        for (int32_t k : {0, 4}) {
            SamplerParams p = plain(c.t, 14);
            p.min_p = c.min_p;
            p.top_k = k;
            Sampler s(p, 5);
            const auto ref = reference(logits, p);
            std::set<int32_t> ref_kept;
            for (int i = 0; i < 5; ++i)
                if (ref[i] > 0) ref_kept.insert(i);
            CHECK(ref_kept == c.kept);
            std::set<int32_t> seen;
            for (int i = 0; i < 2000; ++i) seen.insert(s.sample(logits.data()));
            CHECK(seen == c.kept);
            s.reset();
            check_against_reference(s, logits, ref, 500);
        }
    }
    // p = .4 .3 .2 .1, top_p .75, min_p .4: top-p first keeps {0,1,2} (.4 + .3 < .75), min-p then keeps
    // all three (.2 >= .4 * .4). min-p first would renormalize {0,1,2} to .44 .33 .22 and top-p would
    // then stop at two.
    const std::vector<float> l4 = {std::log(0.4f), std::log(0.3f), std::log(0.2f), std::log(0.1f)};
    SamplerParams p = plain(1.0f, 15);
    p.top_p = 0.75f;
    p.min_p = 0.4f;
    Sampler s(p, 4);
    std::set<int32_t> seen;
    for (int i = 0; i < 2000; ++i) {
        const int32_t t = s.sample(l4.data());
        seen.insert(t);
        if (t == 0) CHECK(std::fabs(s.last_probability() - 0.4f / 0.9f) < 1e-6f);
    }
    CHECK((seen == std::set<int32_t>{0, 1, 2}));
}

TEST_CASE("default parameters on a 151,936-token vocabulary match the reference") {
    Rng rng(16);
    const int n = 151936;
    auto logits = rng.gauss_vec(n, 2.0);
    for (int i = 0; i < 30; ++i) logits[rng.next() % n] += 8.0f;  // a few plausible continuations
    std::vector<int32_t> history;
    for (int i = 0; i < 100; ++i) history.push_back(static_cast<int32_t>(rng.next() % n));
    for (int i = 0; i < 10; ++i) history.push_back(argmax(logits));
    for (int32_t k : {40, 0}) {
        SamplerParams p;  // defaults: T .8, top-k 40, top-p .95, min-p .05
        p.top_k = k;
        p.repeat_penalty = 1.1f;
        p.frequency_penalty = 0.1f;
        p.seed = 17;
        Sampler s(p, n);
        s.accept(history.data(), history.size());
        const auto ref = reference(logits, p, history);
        // (top-k off costs about 1.5 ms a draw here: fewer draws)
        CHECK(check_against_reference(s, logits, ref, k > 0 ? 1000 : 300, 1e-5) > 1);
        const Chi2 c = chi_square(s, logits, ref, k > 0 ? 10000 : 3000);
        CHECK_MSG(c.stat < c.bound, "k=%d: chi2 %.2f with %d df, bound %.2f", k, c.stat, c.df, c.bound);
    }
}

// ------------------------------------------------------------------------------------------------
// Penalties and bias
// ------------------------------------------------------------------------------------------------

TEST_CASE("repeat / frequency / presence penalties change the logits exactly as specified, within the window") {
    const std::vector<float> logits = {1.5f, -0.5f, 0.8f, 0.0f, 2.0f, -1.2f, 0.3f, 1.1f};
    const std::vector<int32_t> history = {4, 4, 1, 0, 4, 5, 2, 2, 4, 7, 7, 1};
    struct Case {
        float rp, fp, pp;
        int32_t last_n;
    };
    const Case cases[] = {
        {1.5f, 0, 0, -1}, {0.7f, 0, 0, -1}, {1, 0.4f, 0, -1}, {1, 0, 0.9f, -1}, {1.3f, 0.25f, 0.5f, -1},
        {1.3f, 0.25f, 0.5f, 5}, {1.3f, 0.25f, 0.5f, 1}, {1.3f, 0.25f, 0.5f, 0}, {1.0f, -0.3f, -0.2f, 4},
        {2.0f, 1.0f, 1.0f, 100},
    };
    for (const Case& c : cases) {
        SamplerParams p = plain(1.0f, 18);
        p.repeat_penalty = c.rp;
        p.frequency_penalty = c.fp;
        p.presence_penalty = c.pp;
        p.penalty_last_n = c.last_n;
        // The direct computation, independent of reference(): count over the window, then
        // logit <= 0 ? logit * rp : logit / rp, then -= count * fp + (count > 0) * pp.
        std::vector<float> expect_logits = logits;
        if (c.last_n != 0) {
            const size_t from = c.last_n < 0 ? 0 : history.size() - std::min<size_t>(history.size(), c.last_n);
            std::vector<int> count(8, 0);
            for (size_t i = from; i < history.size(); ++i) ++count[history[i]];
            for (int t = 0; t < 8; ++t) {
                if (count[t] == 0) continue;
                float v = expect_logits[t];
                v = v <= 0 ? v * c.rp : v / c.rp;
                v -= static_cast<float>(count[t]) * c.fp + 1.0f * c.pp;
                expect_logits[t] = v;
            }
        }
        std::vector<double> expected(8);
        double z = 0;
        for (int t = 0; t < 8; ++t) z += expected[t] = std::exp(static_cast<double>(expect_logits[t]));
        for (auto& e : expected) e /= z;

        Sampler s(p, 8);
        s.accept(history.data(), history.size());
        CHECK_MSG(check_against_reference(s, logits, expected, 3000, 1e-5) == 8, "rp %g fp %g pp %g last_n %d", c.rp,
                  c.fp, c.pp, c.last_n);
        // The same history accepted one token at a time, and greedy on the penalized logits.
        Sampler one(p, 8);
        for (int32_t t : history) one.accept(t);
        check_against_reference(one, logits, expected, 500, 1e-5);
        SamplerParams g = p;
        g.temperature = 0;
        Sampler gs(g, 8);
        gs.accept(history.data(), history.size());
        CHECK(gs.sample(logits.data()) == argmax(expect_logits));
    }
}

TEST_CASE("the penalty window slides: random histories against the reference") {
    Rng rng(19);
    const int n = 64;
    for (int r = 0; r < 40; ++r) {
        const auto logits = rng.gauss_vec(n, 1.5);
        SamplerParams p = plain(1.0f, r);
        p.repeat_penalty = 1.0f + static_cast<float>(rng.uniform());
        p.frequency_penalty = static_cast<float>(rng.uniform() * 0.5);
        p.presence_penalty = static_cast<float>(rng.uniform() * 0.5);
        p.penalty_last_n = static_cast<int32_t>(rng.next() % 40) - 1;  // -1 .. 38
        Sampler s(p, n);
        std::vector<int32_t> history;
        const int len = static_cast<int>(rng.next() % 200);
        for (int i = 0; i < len; ++i) {
            history.push_back(static_cast<int32_t>(rng.next() % 12));  // many repeats
            s.accept(history.back());
        }
        check_against_reference(s, logits, reference(logits, p, history), 200, 1e-5);
        // reset() forgets the history.
        s.reset();
        check_against_reference(s, logits, reference(logits, p, {}), 100, 1e-5);
    }
}

TEST_CASE("logit bias: +inf forces, -inf bans, finite biases add (duplicates sum)") {
    Rng rng(20);
    const int n = 300;
    const auto logits = rng.gauss_vec(n, 2.0);
    const int32_t best = argmax(logits);
    for (float t : {0.0f, 0.8f}) {
        for (int32_t k : {0, 40}) {
            SamplerParams p;
            p.temperature = t;
            p.top_k = k;
            p.logit_bias = {{123, kInf}};
            Sampler force(p, n);
            for (int i = 0; i < 100; ++i) CHECK(force.sample(logits.data()) == 123);
            CHECK(force.last_probability() == 1.0f);
            p.logit_bias = {{123, 1e4f}};  // "+inf-like"
            Sampler big(p, n);
            for (int i = 0; i < 100; ++i) CHECK(big.sample(logits.data()) == 123);
            p.logit_bias = {{123, kInf}, {45, kInf}};  // two forced tokens share the mass
            p.repeat_penalty = 2.0f;                   // penalties leave forced tokens forced
            Sampler two(p, n);
            two.accept(45);
            std::set<int32_t> seen;
            for (int i = 0; i < 200; ++i) {
                seen.insert(two.sample(logits.data()));
                if (t > 0) CHECK(two.last_probability() == 0.5f);
            }
            CHECK((seen == (t > 0 ? std::set<int32_t>{45, 123} : std::set<int32_t>{45})));
            p.repeat_penalty = 1.0f;
            p.logit_bias = {{best, -kInf}};
            Sampler ban(p, n);
            for (int i = 0; i < 300; ++i) CHECK(ban.sample(logits.data()) != best);
            // A masked token stays masked whatever its bias.
            p.logit_bias = {{best, kInf}};
            Sampler masked(p, n);
            std::vector<uint8_t> allowed(n, 1);
            allowed[best] = 0;
            for (int i = 0; i < 100; ++i) CHECK(masked.sample(logits.data(), allowed.data()) != best);
        }
    }
    SamplerParams g;
    g.temperature = 0;
    g.logit_bias = {{best, -kInf}};
    Sampler gs(g, n);
    std::vector<float> rest = logits;
    rest[best] = -kInf;
    CHECK(gs.sample(logits.data()) == argmax(rest));

    // Finite biases add, duplicates sum: against the reference.
    SamplerParams p = plain(1.0f, 21);
    p.logit_bias = {{5, 1.0f}, {9, -2.5f}, {5, 2.0f}, {200, 4.0f}};
    Sampler s(p, n);
    const auto ref = reference(logits, p);
    check_against_reference(s, logits, ref, 2000);
    std::vector<float> biased = logits;
    biased[5] += 3.0f;
    biased[9] -= 2.5f;
    biased[200] += 4.0f;
    const auto direct = reference(biased, plain(1.0f));
    for (int i = 0; i < n; ++i) CHECK(std::fabs(ref[i] - direct[i]) < 1e-12);
}

// ------------------------------------------------------------------------------------------------
// Validation
// ------------------------------------------------------------------------------------------------

TEST_CASE("invalid parameters throw InvalidArgument naming the field") {
    struct Bad {
        const char* field;
        void (*edit)(SamplerParams&);
    };
    const Bad bad[] = {
        {"temperature", [](SamplerParams& p) { p.temperature = std::nanf(""); }},
        {"temperature", [](SamplerParams& p) { p.temperature = kInf; }},
        {"top_p", [](SamplerParams& p) { p.top_p = std::nanf(""); }},
        {"top_p", [](SamplerParams& p) { p.top_p = -0.1f; }},
        {"top_p", [](SamplerParams& p) { p.top_p = 1.5f; }},
        {"min_p", [](SamplerParams& p) { p.min_p = std::nanf(""); }},
        {"min_p", [](SamplerParams& p) { p.min_p = -0.01f; }},
        {"min_p", [](SamplerParams& p) { p.min_p = 1.01f; }},
        {"repeat_penalty", [](SamplerParams& p) { p.repeat_penalty = 0.0f; }},
        {"repeat_penalty", [](SamplerParams& p) { p.repeat_penalty = -1.0f; }},
        {"repeat_penalty", [](SamplerParams& p) { p.repeat_penalty = kInf; }},
        {"repeat_penalty", [](SamplerParams& p) { p.repeat_penalty = std::nanf(""); }},
        {"frequency_penalty", [](SamplerParams& p) { p.frequency_penalty = std::nanf(""); }},
        {"frequency_penalty", [](SamplerParams& p) { p.frequency_penalty = -kInf; }},
        {"presence_penalty", [](SamplerParams& p) { p.presence_penalty = std::nanf(""); }},
        {"presence_penalty", [](SamplerParams& p) { p.presence_penalty = kInf; }},
        {"penalty_last_n", [](SamplerParams& p) { p.penalty_last_n = -2; }},
        {"logit_bias", [](SamplerParams& p) { p.logit_bias = {{-1, 1.0f}}; }},
        {"logit_bias", [](SamplerParams& p) { p.logit_bias = {{100, 1.0f}}; }},
        {"logit_bias", [](SamplerParams& p) { p.logit_bias = {{3, std::nanf("")}}; }},
        {"logit_bias", [](SamplerParams& p) { p.logit_bias = {{3, kInf}, {3, -kInf}}; }},
    };
    for (const Bad& b : bad) {
        SamplerParams p;
        b.edit(p);
        CHECK_MSG(throws_error([&] { Sampler s(p, 100); }, ErrorCode::InvalidArgument, {b.field}), "%s", b.field);
        CHECK(throws_error([&] { Sampler::validate(p, 100); }, ErrorCode::InvalidArgument, {b.field}));
    }
    CHECK(throws_error([] { Sampler s(SamplerParams{}, 0); }, ErrorCode::InvalidArgument, {"n_vocab"}));

    // Accepted edge values.
    SamplerParams ok;
    ok.temperature = -3.0f;  // greedy
    ok.top_k = -5;           // off
    ok.top_p = 0.0f;
    ok.min_p = 1.0f;
    ok.frequency_penalty = -2.0f;
    ok.presence_penalty = -2.0f;
    ok.penalty_last_n = -1;
    ok.seed = UINT64_MAX;
    ok.logit_bias = {{0, -kInf}, {99, kInf}, {99, 5.0f}};
    try {
        Sampler s(ok, 100);
    } catch (const std::exception& e) {
        CHECK_MSG(false, "edge values rejected: %s", e.what());
    }

    // accept() rejects ids outside the vocabulary, and records nothing of a rejected batch.
    SamplerParams p = plain(1.0f, 22);
    p.repeat_penalty = 3.0f;
    Sampler s(p, 10), fresh(p, 10);
    CHECK(throws_error([&] { s.accept(10); }, ErrorCode::InvalidArgument, {"token id 10"}));
    CHECK(throws_error([&] { s.accept(-1); }, ErrorCode::InvalidArgument, {"token id -1"}));
    const int32_t batch[3] = {1, 2, 99};
    CHECK(throws_error([&] { s.accept(batch, 3); }, ErrorCode::InvalidArgument, {"token id 99"}));
    const std::vector<float> logits = {0.f, 3.f, 3.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    CHECK(draw_sequence(s, logits, 50, false) == draw_sequence(fresh, logits, 50, false));
}

// ------------------------------------------------------------------------------------------------
// --bench (not part of the suite)
// ------------------------------------------------------------------------------------------------

int bench() {
    Rng rng(99);
    const int n = 151936;
    auto logits = rng.gauss_vec(n, 2.5);
    for (int i = 0; i < 50; ++i) logits[rng.next() % n] += 10.0f;
    std::vector<int32_t> history;
    for (int i = 0; i < 64; ++i) history.push_back(static_cast<int32_t>(rng.next() % n));
    std::vector<uint8_t> allowed(n, 1);
    for (int i = 0; i < n; i += 3) allowed[i] = 0;

    struct Config {
        const char* name;
        SamplerParams p;
        bool mask;
    };
    std::vector<Config> configs;
    configs.push_back({"defaults (T .8, top-k 40, top-p .95, min-p .05)", SamplerParams{}, false});
    SamplerParams pen;
    pen.repeat_penalty = 1.1f;
    pen.frequency_penalty = 0.2f;
    pen.presence_penalty = 0.2f;
    configs.push_back({"defaults + penalties over 64 tokens", pen, false});
    configs.push_back({"defaults + penalties + mask", pen, true});
    SamplerParams greedy;
    greedy.temperature = 0;
    configs.push_back({"greedy", greedy, false});
    SamplerParams nok;
    nok.top_k = 0;
    configs.push_back({"top-k off (top-p .95, min-p .05)", nok, false});
    SamplerParams nokp = nok;
    nokp.top_p = 1.0f;
    configs.push_back({"top-k off, top-p off (min-p .05)", nokp, false});
    SamplerParams full = nokp;
    full.min_p = 0;
    configs.push_back({"full softmax (all filters off)", full, false});

    for (auto& c : configs) {
        Sampler s(c.p, n);
        s.accept(history.data(), history.size());
        const uint8_t* mask = c.mask ? allowed.data() : nullptr;
        for (int i = 0; i < 20; ++i) s.sample(logits.data(), mask);  // warm-up
        const int iters = 1000;
        std::vector<double> us(iters);
        int32_t sink = 0;
        for (int i = 0; i < iters; ++i) {
            const auto t0 = std::chrono::steady_clock::now();
            sink += s.sample(logits.data(), mask);
            us[i] = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
        }
        std::sort(us.begin(), us.end());
        std::printf("%-50s median %7.1f us   p10 %7.1f us   p90 %7.1f us  (%d)\n", c.name, us[iters / 2],
                    us[iters / 10], us[iters * 9 / 10], sink & 1);
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc > 1 && std::strcmp(argv[1], "--bench") == 0) return bench();
    return moe_test::run_all(argc, argv);
}
