// Backend consistency of cuda/attention.cuh: the KV store against the CPU's F16 conversion, and
// attention against two references on the same F16 cache contents:
//   1. exact math in double on the stored K / V with the fp32 queries: the GPU keeps q and the
//      probabilities in fp32, so only fp32 rounding separates them. Budget |Δ| <= 5e-5 · max|v|:
//      a score's fp32 dot over <= 576 products errs ~1e-6 after kq_scale, the probabilities as
//      much, and the online rescaling over <= 170 tiles adds ~1e-6 relative: about 40x headroom,
//      while any indexing, masking or merging mistake costs 1e-2 or more;
//   2. kernels::attention, llama.cpp's numerics: it rounds q to F16 (2^-11 relative per element:
//      the scores move by ~3e-4 rms, ~1.5e-3 at worst, as kq_scale = 1/sqrt(head_dim) keeps them
//      O(1)) and the probabilities to F16 (2^-11 relative) before the V product. Budget
//      |Δ| <= 2e-3 · max|v| + 1e-4, the sum of those two effects on a weighted mean of V rows.
// Shapes: GQA decode and prefill (1, 5, 64, 300 tokens over contexts 0, 31, 1000, 5000), MLA
// absorbed (16 and 24 heads, head_dim 576, head_dim_v 512, V read from the K rows), gpt-oss's
// sliding window over a ring with sinks, sinks alone, odd head sizes; with and without the
// flash-decoding scratch. Without a CUDA device it says so and passes nothing.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <vector>

#include "../native/check.h"
#include "cuda_check.cuh"
#include "../native/rng.h"
#include "attention.cuh"
#include "cpu/cpu_features.h"
#include "kernels/ops.h"
#include "quant/fp16.h"
#include "quant/ggml_types.h"
#include "runtime/thread_pool.h"

namespace {

using moe_test::Rng;
namespace k = moe::kernels;
namespace mc = moe::cuda;
namespace q16 = moe::quant;


using moe_test::Dev;

moe::runtime::ThreadPool& pool() {
    static moe::runtime::ThreadPool p(std::max(1, moe::runtime::ThreadPool::physical_cores()));
    return p;
}

constexpr uint32_t kF16 = static_cast<uint32_t>(moe::quant::GgmlType::F16);

// One attention case: the layer's shape, the chunk, and the cache's form.
struct Case {
    const char* name;
    int n_head, n_head_kv, head_dim, head_dim_v;  // head_dim_v 0: head_dim
    bool mla;                                     // V = the first head_dim_v elements of the K rows
    int64_t n_tokens, first_pos;
    int64_t window = 0;
    int64_t ring = 0;  // rows of a ring cache (0: a plain cache)
    bool sinks = false;
    int row_pad = 0;   // extra elements per cache row (a stride wider than the heads)
};

// The cache contents of positions [0, n_ctx) as a layer would hold them after storing them in
// order: F16 rows, row p (or p % ring) for position p.
struct HostCache {
    int64_t k_stride, v_stride, n_rows;
    std::vector<uint16_t> k, v;   // F16 bits: [n_rows, stride]
    std::vector<float> kf, vf;    // the same values as fp32
};

HostCache make_cache(const Case& c, int64_t n_ctx, Rng& rng) {
    const int hdv = c.head_dim_v ? c.head_dim_v : c.head_dim;
    HostCache h;
    h.k_stride = static_cast<int64_t>(c.n_head_kv) * c.head_dim + c.row_pad;
    h.v_stride = c.mla ? h.k_stride : static_cast<int64_t>(c.n_head_kv) * hdv + c.row_pad;
    h.n_rows = c.ring ? c.ring : n_ctx + 3;
    h.k.assign(h.n_rows * h.k_stride, 0x7e00);  // unwritten rows hold NaN: reading one would show
    h.v.assign(c.mla ? 0 : h.n_rows * h.v_stride, 0x7e00);
    for (int64_t p = 0; p < n_ctx; ++p) {
        const int64_t row = c.ring ? p % c.ring : p;
        for (int64_t e = 0; e < h.k_stride; ++e) h.k[row * h.k_stride + e] = q16::fp32_to_fp16(static_cast<float>(rng.gauss()));
        if (!c.mla) {
            for (int64_t e = 0; e < h.v_stride; ++e) h.v[row * h.v_stride + e] = q16::fp32_to_fp16(static_cast<float>(rng.gauss()));
        }
    }
    h.kf.resize(h.k.size());
    for (size_t i = 0; i < h.k.size(); ++i) h.kf[i] = q16::fp16_to_fp32(h.k[i]);
    h.vf.resize(h.v.size());
    for (size_t i = 0; i < h.v.size(); ++i) h.vf[i] = q16::fp16_to_fp32(h.v[i]);
    return h;
}

// Exact attention in double over the stored values, fp32 queries as given.
std::vector<double> attention_exact(const Case& c, const HostCache& h, const std::vector<float>& q, float kq_scale,
                                    const std::vector<float>& sinks) {
    const int hd = c.head_dim, hdv = c.head_dim_v ? c.head_dim_v : c.head_dim;
    const int group = c.n_head / c.n_head_kv;
    const int64_t q_stride = static_cast<int64_t>(c.n_head) * hd, out_stride = static_cast<int64_t>(c.n_head) * hdv;
    std::vector<double> out(c.n_tokens * out_stride);
    pool().parallel_for(c.n_tokens * c.n_head, 1, [&](int64_t begin, int64_t end, int) {
        std::vector<double> s;
        for (int64_t item = begin; item < end; ++item) {
            const int64_t t = item / c.n_head;
            const int hh = static_cast<int>(item % c.n_head), g = hh / group;
            const int64_t p = c.first_pos + t;
            const int64_t lo = c.window > 0 ? std::max<int64_t>(0, p - c.window + 1) : 0;
            s.assign(p + 1 - lo, 0.0);
            double mx = c.sinks ? sinks[hh] : -std::numeric_limits<double>::infinity();
            for (int64_t j = lo; j <= p; ++j) {
                const int64_t row = c.ring ? j % c.ring : j;
                const float* kr = h.kf.data() + row * h.k_stride + static_cast<int64_t>(g) * hd;
                const float* qr = q.data() + t * q_stride + static_cast<int64_t>(hh) * hd;
                double d = 0.0;
                for (int i = 0; i < hd; ++i) d += static_cast<double>(qr[i]) * kr[i];
                s[j - lo] = d * kq_scale;
                mx = std::max(mx, s[j - lo]);
            }
            double sum = c.sinks ? std::exp(sinks[hh] - mx) : 0.0;
            for (double& v : s) sum += (v = std::exp(v - mx));
            double* o = out.data() + t * out_stride + static_cast<int64_t>(hh) * hdv;
            for (int64_t j = lo; j <= p; ++j) {
                const int64_t row = c.ring ? j % c.ring : j;
                const float* vr = c.mla ? h.kf.data() + row * h.k_stride
                                        : h.vf.data() + row * h.v_stride + static_cast<int64_t>(g) * hdv;
                const double pj = s[j - lo] / sum;
                for (int i = 0; i < hdv; ++i) o[i] += pj * vr[i];
            }
        }
    });
    return out;
}

struct Errors {
    double vs_exact_no_split = 0, vs_exact_split = 0, vs_cpu = 0, max_v = 0;
};

Errors run_case(const Case& c, uint64_t seed) {
    Rng rng(seed);
    const int hd = c.head_dim, hdv = c.head_dim_v ? c.head_dim_v : c.head_dim;
    // 1/sqrt(head_dim) keeps every score O(1) (the tolerance reasoning above assumes it).
    const float kq_scale = 1.0f / std::sqrt(static_cast<float>(hd));
    const int64_t n_ctx = c.first_pos + c.n_tokens;
    const HostCache h = make_cache(c, n_ctx, rng);
    const int64_t q_stride = static_cast<int64_t>(c.n_head) * hd + 3, out_stride = static_cast<int64_t>(c.n_head) * hdv + 1;
    const std::vector<float> q = rng.gauss_vec(c.n_tokens * q_stride, 1.0);
    std::vector<float> sinks = rng.gauss_vec(c.n_head, 1.5);
    if (c.sinks) sinks[0] = 6.0f;  // a sink that dominates its head

    // The exact reference takes q without the row padding.
    std::vector<float> q_dense(c.n_tokens * c.n_head * hd);
    for (int64_t t = 0; t < c.n_tokens; ++t) {
        std::memcpy(q_dense.data() + t * c.n_head * hd, q.data() + t * q_stride, sizeof(float) * c.n_head * hd);
    }
    const std::vector<double> exact = attention_exact(c, h, q_dense, kq_scale, sinks);

    // CPU kernel (llama.cpp's numerics) over the same rows.
    k::AttentionShape shape;
    shape.n_head = c.n_head;
    shape.n_head_kv = c.n_head_kv;
    shape.head_dim = hd;
    shape.head_dim_v = hdv;
    shape.kq_scale = kq_scale;
    shape.batch = c.n_tokens;
    shape.window = c.window;
    shape.sinks = c.sinks ? sinks.data() : nullptr;
    k::KvRows k_rows{reinterpret_cast<const uint8_t*>(h.k.data()), static_cast<size_t>(h.k_stride) * 2, kF16, false,
                     static_cast<uint32_t>(c.ring)};
    k::KvRows v_rows = c.mla ? k_rows
                             : k::KvRows{reinterpret_cast<const uint8_t*>(h.v.data()), static_cast<size_t>(h.v_stride) * 2,
                                         kF16, false, static_cast<uint32_t>(c.ring)};
    std::vector<float> cpu(c.n_tokens * out_stride, 0.0f);
    k::attention(shape, k_rows, v_rows, q.data(), q_stride, c.n_tokens, c.first_pos, cpu.data(), out_stride, pool(),
                 moe::cpu::best_isa());

    // GPU.
    Dev<uint16_t> dk(h.k), dv(c.mla ? std::vector<uint16_t>{0} : h.v);
    Dev<float> dq(q), dsinks(sinks), dout(std::vector<float>(c.n_tokens * out_stride, -9.0f));
    mc::KvRowsDevice kd{dk.p, h.k_stride, h.n_rows, c.ring > 0};
    mc::KvRowsDevice vd = c.mla ? kd : mc::KvRowsDevice{dv.p, h.v_stride, h.n_rows, c.ring > 0};
    mc::AttentionParams params;
    params.n_head = c.n_head;
    params.n_head_kv = c.n_head_kv;
    params.head_dim = hd;
    params.head_dim_v = hdv;
    params.kq_scale = kq_scale;
    params.window = c.window;
    params.d_sinks = c.sinks ? dsinks.p : nullptr;
    const size_t scratch_bytes = mc::attention_scratch_bytes(params, c.n_tokens, n_ctx);
    Dev<uint8_t> scratch(std::max<size_t>(scratch_bytes, 1));

    Errors err;
    for (float v : c.mla ? h.kf : h.vf) err.max_v = std::max(err.max_v, static_cast<double>(std::fabs(v)));
    for (int pass = 0; pass < 2; ++pass) {  // 0: no scratch (one block per query tile), 1: split keys
        CHECK(mc::attention(params, kd, vd, dq.p, q_stride, c.n_tokens, c.first_pos, dout.p, out_stride,
                            pass ? scratch.p : nullptr, pass ? scratch_bytes : 0, nullptr) == cudaSuccess);
        const std::vector<float> got = dout.get();
        double worst = 0, worst_cpu = 0;
        bool pads_ok = true;
        for (int64_t t = 0; t < c.n_tokens; ++t) {
            for (int64_t e = 0; e < out_stride; ++e) {
                const float g = got[t * out_stride + e];
                if (e >= static_cast<int64_t>(c.n_head) * hdv) {
                    pads_ok = pads_ok && g == -9.0f;  // nothing written between rows
                    continue;
                }
                const double x = exact[t * c.n_head * hdv + e];
                worst = std::max(worst, std::isfinite(g) ? std::fabs(g - x) : 1e30);
                worst_cpu = std::max(worst_cpu, std::isfinite(g) ? std::fabs(g - cpu[t * out_stride + e]) : 1e30);
            }
        }
        CHECK_MSG(pads_ok, "%s: wrote past a row", c.name);
        (pass ? err.vs_exact_split : err.vs_exact_no_split) = worst;
        err.vs_cpu = std::max(err.vs_cpu, worst_cpu);
    }
    CHECK_MSG(err.vs_exact_no_split <= 5e-5 * err.max_v, "%s (tokens %lld at %lld): %.3g from exact math without splits",
              c.name, static_cast<long long>(c.n_tokens), static_cast<long long>(c.first_pos), err.vs_exact_no_split);
    CHECK_MSG(err.vs_exact_split <= 5e-5 * err.max_v, "%s (tokens %lld at %lld): %.3g from exact math with splits", c.name,
              static_cast<long long>(c.n_tokens), static_cast<long long>(c.first_pos), err.vs_exact_split);
    CHECK_MSG(err.vs_cpu <= 2e-3 * err.max_v + 1e-4, "%s (tokens %lld at %lld): %.3g from kernels::attention", c.name,
              static_cast<long long>(c.n_tokens), static_cast<long long>(c.first_pos), err.vs_cpu);
    std::printf("  %-28s tokens %4lld at %5lld: exact %.2e / %.2e (split), cpu %.2e, max|v| %.2f, scratch %zu\n", c.name,
                static_cast<long long>(c.n_tokens), static_cast<long long>(c.first_pos), err.vs_exact_no_split,
                err.vs_exact_split, err.vs_cpu, err.max_v, scratch_bytes);
    return err;
}

// ------------------------------------------------------------------------------------------------

TEST_CASE("cuda store_kv converts to F16 like the CPU cache, plain and ring") {
    Rng rng(20);
    const int64_t width = 96, stride = 100, n = 40, src_stride = 130;
    const std::vector<float> src = rng.gauss_vec(n * src_stride, 3.0);
    for (int64_t ring : {0, 16}) {
        const int64_t n_rows = ring ? ring : 64, pos0 = 5;
        std::vector<uint16_t> want(n_rows * stride, 0xabcd);
        for (int64_t i = 0; i < n; ++i) {  // in order: a ring keeps the last positions
            const int64_t row = ring ? (pos0 + i) % ring : pos0 + i;
            for (int64_t e = 0; e < width; ++e) want[row * stride + e] = q16::fp32_to_fp16(src[i * src_stride + e]);
        }
        Dev<uint16_t> dk(std::vector<uint16_t>(n_rows * stride, 0xabcd)), dv(std::vector<uint16_t>(n_rows * stride, 0xabcd));
        Dev<float> dsrc(src);
        const mc::KvRowsDevice kd{dk.p, stride, n_rows, ring > 0}, vd{dv.p, stride, n_rows, ring > 0};
        CHECK(mc::store_kv(kd, dsrc.p, src_stride, width, vd, dsrc.p, src_stride, width, pos0, n, nullptr) == cudaSuccess);
        CHECK_MSG(dk.get() == want, "K, ring %lld", static_cast<long long>(ring));
        CHECK_MSG(dv.get() == want, "V, ring %lld", static_cast<long long>(ring));
        // MLA: no V plane.
        const mc::KvRowsDevice none{};
        CHECK(mc::store_kv(kd, dsrc.p, src_stride, width, none, nullptr, 0, 0, pos0, n, nullptr) == cudaSuccess);
        CHECK(dk.get() == want);
    }
    // A plain plane refuses positions past its rows; nothing is written.
    Dev<uint16_t> dk(std::vector<uint16_t>(8 * 4, 0));
    Dev<float> dsrc(src);
    const mc::KvRowsDevice kd{dk.p, 4, 8, false};
    CHECK(mc::store_kv(kd, dsrc.p, 4, 4, mc::KvRowsDevice{}, nullptr, 0, 0, 6, 3, nullptr) == cudaErrorInvalidValue);
    CHECK(dk.get() == std::vector<uint16_t>(8 * 4, 0));
}

TEST_CASE("cuda attention, GQA decode and prefill over short and long contexts") {
    uint64_t seed = 100;
    for (int64_t n_tokens : {1, 5, 64, 300}) {
        for (int64_t first_pos : {0, 31, 1000, 5000}) {
            Case c{"gqa 8/2 x 128", 8, 2, 128, 0, false, n_tokens, first_pos};
            run_case(c, seed++);
        }
    }
}

TEST_CASE("cuda attention, MLA absorbed (head_dim 576, V from the K rows)") {
    uint64_t seed = 200;
    for (int64_t n_tokens : {1, 5, 64}) {
        for (int64_t first_pos : {0, 1000, 5000}) {
            Case c{"mla 16 x 576/512", 16, 1, 576, 512, true, n_tokens, first_pos};
            run_case(c, seed++);
        }
    }
    Case prefill{"mla 16 x 576/512", 16, 1, 576, 512, true, 300, 31};
    run_case(prefill, seed++);
    // 24 heads: two sub-groups of 12 per block (the query tile holds 16 rows).
    for (int64_t n_tokens : {1, 7}) {
        Case c{"mla 24 x 576/512", 24, 1, 576, 512, true, n_tokens, 900};
        run_case(c, seed++);
    }
}

TEST_CASE("cuda attention, sliding window over a ring cache with sinks (gpt-oss)") {
    uint64_t seed = 300;
    const int64_t window = 128, ring = window + k::kAttentionWindowAlign + 512;  // what the CPU cache keeps
    const int64_t chunks[][2] = {{1, 0}, {5, 100}, {64, 1000}, {300, 2000}, {1, 5000}, {512, 3000}};
    for (const auto& ch : chunks) {
        Case c{"swa 16/2 x 64 ring sinks", 16, 2, 64, 0, false, ch[0], ch[1], window, ring, true};
        run_case(c, seed++);
    }
    // Window on a plain cache, and a full-attention layer with sinks.
    for (const auto& ch : chunks) {
        Case w{"swa 16/2 x 64 plain", 16, 2, 64, 0, false, ch[0], ch[1], window, 0, false};
        run_case(w, seed++);
        Case s{"full 16/2 x 64 sinks", 16, 2, 64, 0, false, ch[0], ch[1], 0, 0, true};
        run_case(s, seed++);
    }
}

TEST_CASE("cuda attention, odd shapes: head sizes 80 and 256, MHA, padded rows, one head") {
    uint64_t seed = 400;
    const Case cases[] = {
        {"mha 5/5 x 80 padded", 5, 5, 80, 0, false, 37, 50, 0, 0, false, 6},
        {"gqa 4/2 x 256", 4, 2, 256, 0, false, 1, 2000},
        {"gqa 4/2 x 256", 4, 2, 256, 0, false, 70, 300},
        {"one head x 32", 1, 1, 32, 0, false, 129, 7},
        {"gqa 40/8 x 128", 40, 8, 128, 0, false, 3, 777},
        {"mla 8 x 576/512 padded", 8, 1, 576, 512, true, 2, 100, 0, 0, false, 4},
    };
    for (const Case& c : cases) run_case(c, seed++);
}

TEST_CASE("cuda attention refuses bad shapes and keys the cache does not hold") {
    Dev<uint16_t> dk(64 * 64);
    Dev<float> dq(64), dout(64);
    const mc::KvRowsDevice kd{dk.p, 64, 64, false};
    mc::AttentionParams p;
    p.n_head = 3;
    p.n_head_kv = 2;  // 3 % 2 != 0
    p.head_dim = 32;
    CHECK(mc::attention(p, kd, kd, dq.p, 96, 1, 0, dout.p, 96, nullptr, 0, nullptr) == cudaErrorInvalidValue);
    p.n_head = 2;
    p.head_dim = 578;  // > 576
    CHECK(mc::attention(p, kd, kd, dq.p, 64, 1, 0, dout.p, 64, nullptr, 0, nullptr) == cudaErrorInvalidValue);
    p.head_dim = 32;
    CHECK(mc::attention(p, kd, kd, dq.p, 64, 1, 64, dout.p, 64, nullptr, 0, nullptr) == cudaErrorInvalidValue);  // past the rows
    CHECK(mc::attention(p, kd, kd, dq.p, 64, 1, 63, dout.p, 64, nullptr, 0, nullptr) == cudaSuccess);
    const mc::KvRowsDevice ring{dk.p, 64, 16, true};
    p.window = 10;
    CHECK(mc::attention(p, ring, ring, dq.p, 64, 1, 500, dout.p, 64, nullptr, 0, nullptr) == cudaSuccess);
    p.window = 0;  // all 501 keys: a ring of 16 does not hold them
    CHECK(mc::attention(p, ring, ring, dq.p, 64, 1, 500, dout.p, 64, nullptr, 0, nullptr) == cudaErrorInvalidValue);
    CHECK(cudaDeviceSynchronize() == cudaSuccess);
}

}  // namespace

int main(int argc, char** argv) { return moe_test::run_cuda_tests(argc, argv); }
