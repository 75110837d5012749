// Backend consistency of cuda/ops.cuh and cuda/routing.cuh: every kernel against its CPU reference
// (cpp/kernels/ops.h, model::route_token, forward.cc's loops) on random data and edge shapes.
// Where the kernels do the CPU's fp32 operations in its order the test demands equal bits; where a
// transcendental differs (CUDA's expf against libm's) it states the ulp budget and why. The CPU
// side runs at the Scalar level (libm exp, double sums), which the CUDA kernels mirror; RoPE is
// also checked against the FMA (Avx2) level when this CPU has it.
// Without a CUDA device it says so and passes nothing.
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
#include "cpu/cpu_features.h"
#include "kernels/ops.h"
#include "model/hparams.h"
#include "model/routing.h"
#include "ops.cuh"
#include "quant/ggml_types.h"
#include "quant/quant.h"
#include "routing.cuh"

namespace {

using moe::cpu::Isa;
using moe_test::Rng;
namespace k = moe::kernels;
namespace mc = moe::cuda;


using moe_test::Dev;

// Distance in ulps between two floats of the same sign class (0 when bit-identical, including
// equal NaN bit patterns; a huge value across signs).
int64_t ulp_distance(float a, float b) {
    if (std::memcmp(&a, &b, sizeof a) == 0) return 0;
    if (std::isnan(a) || std::isnan(b)) return std::numeric_limits<int64_t>::max();
    int32_t ia, ib;
    std::memcpy(&ia, &a, 4);
    std::memcpy(&ib, &b, 4);
    // Map the sign-magnitude encoding to a monotone integer line.
    const int64_t la = ia < 0 ? -static_cast<int64_t>(ia & 0x7fffffff) : ia;
    const int64_t lb = ib < 0 ? -static_cast<int64_t>(ib & 0x7fffffff) : ib;
    return la > lb ? la - lb : lb - la;
}

// The largest ulp distance over two equally long vectors.
int64_t max_ulps(const std::vector<float>& a, const std::vector<float>& b) {
    int64_t worst = 0;
    for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, ulp_distance(a[i], b[i]));
    return worst;
}

bool bits_equal(const std::vector<float>& a, const std::vector<float>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// ------------------------------------------------------------------------------------------------
// RMSNorm
// ------------------------------------------------------------------------------------------------

TEST_CASE("cuda rms_norm_rows equals kernels::rms_norm (<= 1 ulp: the double sum's order)") {
    // The only freedom is the order of the double sum of squares; rounding it to fp32 hides the
    // difference unless the sum lies within ~2^-29 relative of an fp32 rounding boundary, so
    // nearly every row is bit-identical and none may be more than 1 ulp off.
    Rng rng(1);
    for (int64_t n : {1, 7, 64, 512, 513, 2048, 7168}) {
        for (bool with_weight : {false, true}) {
            const int64_t n_rows = 5, x_stride = n + 3, y_stride = n + 1;
            std::vector<float> x = rng.gauss_vec(n_rows * x_stride, 2.0);
            const std::vector<float> w = rng.gauss_vec(n, 1.0);
            x[0] = 300.0f;  // an outlier
            std::vector<float> want(n_rows * y_stride, -7.0f);
            for (int64_t r = 0; r < n_rows; ++r) {
                k::rms_norm(x.data() + r * x_stride, with_weight ? w.data() : nullptr, want.data() + r * y_stride, n, 1e-6f);
            }
            Dev<float> dx(x), dw(w), dy(std::vector<float>(n_rows * y_stride, -7.0f));
            CHECK(mc::rms_norm_rows(dx.p, x_stride, with_weight ? dw.p : nullptr, dy.p, y_stride, n_rows, n, 1e-6f,
                                    nullptr) == cudaSuccess);
            const std::vector<float> got = dy.get();
            CHECK_MSG(max_ulps(got, want) <= 1, "n %lld weight %d: %lld ulps", static_cast<long long>(n), with_weight,
                      static_cast<long long>(max_ulps(got, want)));

            // In place (y = x, same stride).
            std::vector<float> want_in = x;
            for (int64_t r = 0; r < n_rows; ++r) {
                float* row = want_in.data() + r * x_stride;
                k::rms_norm(row, with_weight ? w.data() : nullptr, row, n, 1e-6f);
            }
            CHECK(mc::rms_norm_rows(dx.p, x_stride, with_weight ? dw.p : nullptr, dx.p, x_stride, n_rows, n, 1e-6f,
                                    nullptr) == cudaSuccess);
            CHECK_MSG(max_ulps(dx.get(), want_in) <= 1, "in place, n %lld", static_cast<long long>(n));
        }
    }
}

TEST_CASE("cuda rms_norm_heads normalises every head with one weight (qwen3moe QK norm)") {
    Rng rng(2);
    const int n_heads = 6, head_dim = 128;
    const int64_t n_tokens = 9, stride = n_heads * head_dim + 2 * head_dim;  // a q | k | v row, say
    std::vector<float> x = rng.gauss_vec(n_tokens * stride, 1.5);
    const std::vector<float> w = rng.gauss_vec(head_dim, 1.0);
    std::vector<float> want = x;
    for (int64_t t = 0; t < n_tokens; ++t) {
        for (int h = 0; h < n_heads; ++h) {
            float* head = want.data() + t * stride + h * head_dim;
            k::rms_norm(head, w.data(), head, head_dim, 1e-6f);
        }
    }
    Dev<float> dx(x), dw(w);
    CHECK(mc::rms_norm_heads(dx.p, stride, dw.p, dx.p, stride, n_tokens, n_heads, head_dim, 1e-6f, nullptr) ==
          cudaSuccess);
    const std::vector<float> got = dx.get();
    CHECK_MSG(max_ulps(got, want) <= 1, "%lld ulps", static_cast<long long>(max_ulps(got, want)));
}

// ------------------------------------------------------------------------------------------------
// RoPE
// ------------------------------------------------------------------------------------------------

struct RopeCase {
    const char* name;
    k::RopeType type;
    int n_rot, head_dim, n_heads;
    float freq_base, freq_scale, ext_factor, attn_factor;
    int n_ctx_orig;
    bool freq_factors;
};

TEST_CASE("cuda rope_rows equals kernels::rope_cache + rope_apply (NORM, NEOX, YaRN, freq factors)") {
    // θ_i, the YaRN blend and the rotation are the CPU's fp32 operations in its order, so a table
    // entry can differ only by the rounding of cos / sin (GPU: correctly rounded through double;
    // glibc: correctly rounded but in rare cases, then 1 ulp off). One ulp of an entry moves an
    // output by at most 2^-24 · m · (|x0| + |x1|) plus a rounding: the budget is 4 · 2^-24 · m ·
    // (|x0| + |x1|) per value, m the magnitude (attn_factor · YaRN's).
    const RopeCase cases[] = {
        {"llama NORM", k::RopeType::Norm, 128, 128, 4, 10000.0f, 1.0f, 0.0f, 1.0f, 0, false},
        {"qwen NEOX", k::RopeType::Neox, 128, 128, 4, 1000000.0f, 1.0f, 0.0f, 1.0f, 0, false},
        {"partial NEOX", k::RopeType::Neox, 32, 80, 3, 10000.0f, 0.25f, 0.0f, 1.0f, 0, false},
        {"deepseek YaRN NORM", k::RopeType::Norm, 64, 64, 2, 10000.0f, 1.0f / 40.0f, 1.0f, 1.0f, 4096, false},
        {"gpt-oss YaRN NEOX", k::RopeType::Neox, 64, 64, 8, 150000.0f, 1.0f / 32.0f, 1.0f, 0.7f, 4096, false},
        {"llama3 freq factors", k::RopeType::Norm, 128, 128, 2, 500000.0f, 1.0f, 0.0f, 1.0f, 0, true},
    };
    std::vector<Isa> levels{Isa::Scalar};
    if (moe::cpu::isa_supported(Isa::Avx2)) levels.push_back(Isa::Avx2);  // the fused (FMA) build
    Rng rng(3);
    for (const RopeCase& c : cases) {
        for (Isa isa : levels) {
            const bool fused = isa != Isa::Scalar;
            const int64_t n_tokens = 7, stride = static_cast<int64_t>(c.n_heads) * c.head_dim + 5;
            std::vector<int32_t> positions{0, 1, 2, 17, 4095, 32768, 100000};
            std::vector<float> x = rng.gauss_vec(n_tokens * stride, 1.0);
            std::vector<float> ff(c.n_rot / 2);
            for (float& f : ff) f = static_cast<float>(1.0 + 7.0 * rng.uniform());
            k::RopeConfig cfg;
            cfg.type = c.type;
            cfg.n_rot = c.n_rot;
            cfg.freq_base = c.freq_base;
            cfg.freq_scale = c.freq_scale;
            cfg.ext_factor = c.ext_factor;
            cfg.attn_factor = c.attn_factor;
            cfg.n_ctx_orig = c.n_ctx_orig;
            cfg.freq_factors = c.freq_factors ? ff.data() : nullptr;

            std::vector<float> want = x;
            std::vector<float> cache(c.n_rot);
            for (int64_t t = 0; t < n_tokens; ++t) {
                k::rope_cache(cfg, positions[t], cache.data(), isa);
                for (int h = 0; h < c.n_heads; ++h) k::rope_apply(cfg, cache.data(), want.data() + t * stride + h * c.head_dim, isa);
            }
            float mscale = c.attn_factor;
            if (c.ext_factor != 0.0f) mscale *= 1.0f + 0.1f * std::log(1.0f / c.freq_scale);

            Dev<float> dx(x), dff(ff);
            Dev<int32_t> dpos(positions);
            const mc::RopeParams params = mc::rope_params(cfg, c.freq_factors ? dff.p : nullptr, fused);
            CHECK(mc::rope_rows(params, dx.p, stride, n_tokens, c.n_heads, c.head_dim, dpos.p, nullptr) == cudaSuccess);
            const std::vector<float> got = dx.get();
            double worst_ratio = 0.0;
            int64_t exact = 0;
            const int half = c.n_rot / 2, offset = c.type == k::RopeType::Norm ? 1 : half;
            for (int64_t t = 0; t < n_tokens; ++t) {
                for (int h = 0; h < c.n_heads; ++h) {
                    const int64_t base = t * stride + static_cast<int64_t>(h) * c.head_dim;
                    for (int i = 0; i < half; ++i) {
                        const int ic = offset == 1 ? 2 * i : i;
                        const double mag = std::fabs(x[base + ic]) + std::fabs(x[base + ic + offset]);
                        const double tol = 4.0 * std::ldexp(1.0, -24) * mscale * mag + 1e-30;
                        for (int64_t e : {base + ic, base + ic + offset}) {
                            const double d = std::fabs(static_cast<double>(got[e]) - want[e]);
                            worst_ratio = std::max(worst_ratio, d / tol);
                            exact += got[e] == want[e];
                        }
                    }
                    // Dims past n_rot are left alone.
                    for (int d = c.n_rot; d < c.head_dim; ++d) CHECK(got[base + d] == x[base + d]);
                }
            }
            CHECK_MSG(worst_ratio <= 1.0, "%s (%s): worst error %.3g of the budget", c.name, moe::cpu::isa_name(isa),
                      worst_ratio);
            // The stride gap between tokens is untouched.
            for (int64_t t = 0; t < n_tokens; ++t) {
                for (int64_t e = static_cast<int64_t>(c.n_heads) * c.head_dim; e < stride; ++e) {
                    CHECK(got[t * stride + e] == x[t * stride + e]);
                }
            }
            std::printf("  rope %-22s %-6s bit-identical %lld of %lld\n", c.name, moe::cpu::isa_name(isa),
                        static_cast<long long>(exact), static_cast<long long>(n_tokens * c.n_heads * c.n_rot));
        }
    }
}

TEST_CASE("cuda rope_rows with a head stride rotates MLA's q_pe parts only") {
    // q: [n_tokens, H, nope + rot]; rope over x + nope with head_stride nope + rot, as forward.cc's
    // attention_mla does per head.
    Rng rng(4);
    const int H = 3, nope = 128, rot = 64, qk = nope + rot;
    const int64_t n_tokens = 4, stride = H * qk;
    std::vector<float> x = rng.gauss_vec(n_tokens * stride, 1.0);
    std::vector<int32_t> positions{5, 6, 7, 99999};
    k::RopeConfig cfg;
    cfg.type = k::RopeType::Norm;
    cfg.n_rot = rot;
    cfg.freq_scale = 1.0f / 40.0f;
    cfg.ext_factor = 1.0f;
    cfg.n_ctx_orig = 4096;
    std::vector<float> want = x, cache(rot);
    for (int64_t t = 0; t < n_tokens; ++t) {
        k::rope_cache(cfg, positions[t], cache.data(), Isa::Scalar);
        for (int h = 0; h < H; ++h) k::rope_apply(cfg, cache.data(), want.data() + t * stride + h * qk + nope, Isa::Scalar);
    }
    Dev<float> dx(x);
    Dev<int32_t> dpos(positions);
    CHECK(mc::rope_rows(mc::rope_params(cfg, nullptr, false), dx.p + nope, stride, n_tokens, H, qk, dpos.p, nullptr) ==
          cudaSuccess);
    const std::vector<float> got = dx.get();
    // The budget of the test above with |x0| + |x1| <= 2 max|x|.
    const float mscale = 1.0f + 0.1f * std::log(40.0f);
    float max_abs = 0.0f;
    for (float v : x) max_abs = std::max(max_abs, std::fabs(v));
    const double tol = 4.0 * std::ldexp(1.0, -24) * mscale * 2.0 * max_abs;
    bool ok = true;
    for (int64_t i = 0; i < n_tokens * stride; ++i) {
        const int64_t in_head = (i % stride) % qk;
        if (in_head < nope) {
            ok = ok && got[i] == x[i];
        } else {
            ok = ok && std::fabs(static_cast<double>(got[i]) - want[i]) <= tol;
        }
    }
    CHECK(ok);
}

TEST_CASE("cuda rope_rows refuses bad arguments") {
    mc::RopeParams p;
    p.n_rot = 7;  // odd
    CHECK(mc::rope_rows(p, nullptr, 8, 1, 1, 8, nullptr, nullptr) == cudaErrorInvalidValue);
    p.n_rot = 16;
    CHECK(mc::rope_rows(p, nullptr, 16, 1, 1, 8, nullptr, nullptr) == cudaErrorInvalidValue);  // head_stride < n_rot
    CHECK(mc::rope_rows(p, nullptr, 16, 1, 1, 16, nullptr, nullptr) == cudaErrorInvalidValue);  // null pointers
    CHECK(mc::rope_rows(p, nullptr, 16, 0, 1, 16, nullptr, nullptr) == cudaSuccess);            // nothing to do
}

// ------------------------------------------------------------------------------------------------
// Softmax, SwiGLU
// ------------------------------------------------------------------------------------------------

// |got - want| <= ulps · 2^-24 · |want| (+ a denormal floor): relative ulps of the reference.
bool within_rel_ulps(const std::vector<float>& got, const std::vector<float>& want, double ulps, double* worst) {
    bool ok = true;
    *worst = 0.0;
    for (size_t i = 0; i < got.size(); ++i) {
        const double d = std::fabs(static_cast<double>(got[i]) - want[i]);
        const double scale = std::ldexp(std::fabs(static_cast<double>(want[i])), -24);
        const double r = d / std::max(scale, std::ldexp(1.0, -149));
        *worst = std::max(*worst, r);
        ok = ok && (d <= ulps * scale + std::ldexp(1.0, -140) || (std::isnan(got[i]) && std::isnan(want[i])));
    }
    return ok;
}

TEST_CASE("cuda softmax_rows matches the Scalar CPU softmax within 8 ulps") {
    // CUDA expf is within 2 ulps, glibc's within 1: each e within 3 ulps, their sum (and 1 / sum)
    // within 3 more, the final product 1 more: 8 ulps relative to each output.
    Rng rng(5);
    for (int64_t n : {1, 5, 32, 1000, 32000}) {
        const int64_t n_rows = 3, stride = n + 4;
        std::vector<float> x = rng.gauss_vec(n_rows * stride, 3.0);
        if (n > 3) {
            x[1] = -std::numeric_limits<float>::infinity();  // masked entries become 0
            x[stride + 2] = 40.0f;                           // a dominant logit
        }
        std::vector<float> want = x;
        for (int64_t r = 0; r < n_rows; ++r) k::softmax(want.data() + r * stride, n, Isa::Scalar);
        Dev<float> dx(x);
        CHECK(mc::softmax_rows(dx.p, stride, dx.p, stride, n_rows, n, nullptr) == cudaSuccess);
        std::vector<float> got = dx.get(), got_rows, want_rows;
        for (int64_t r = 0; r < n_rows; ++r) {
            got_rows.insert(got_rows.end(), got.begin() + r * stride, got.begin() + r * stride + n);
            want_rows.insert(want_rows.end(), want.begin() + r * stride, want.begin() + r * stride + n);
        }
        double worst;
        CHECK_MSG(within_rel_ulps(got_rows, want_rows, 8.0, &worst), "n %lld: worst %.2f ulps", static_cast<long long>(n),
                  worst);
        if (n > 3) CHECK(got[1] == 0.0f);
    }
}

TEST_CASE("cuda swiglu_rows matches the Scalar CPU swiglu within 6 ulps") {
    // silu(g) = g / (1 + e^-g): e within 3 ulps (CUDA expf 2 + glibc 1), damped by e / (1 + e) < 1
    // in the sum, then the division and the product by u round once each: 6 ulps.
    Rng rng(6);
    const int64_t n_rows = 6, n = 1000, stride = 1024;
    std::vector<float> g = rng.gauss_vec(n_rows * stride, 4.0);
    const std::vector<float> u = rng.gauss_vec(n_rows * stride, 1.0);
    g[0] = 0.0f;
    g[1] = -100.0f;  // e^100 overflows: silu = -0
    g[2] = 100.0f;
    g[3] = 1e-30f;
    std::vector<float> want(n_rows * n);
    for (int64_t r = 0; r < n_rows; ++r) k::swiglu(g.data() + r * stride, u.data() + r * stride, want.data() + r * n, n, Isa::Scalar);
    Dev<float> dg(g), du(u), dy(n_rows * n);
    CHECK(mc::swiglu_rows(dg.p, stride, du.p, stride, dy.p, n, n_rows, n, nullptr) == cudaSuccess);
    double worst;
    CHECK_MSG(within_rel_ulps(dy.get(), want, 6.0, &worst), "worst %.2f ulps", worst);
    // In place into g.
    CHECK(mc::swiglu_rows(dg.p, stride, du.p, stride, dg.p, stride, n_rows, n, nullptr) == cudaSuccess);
    const std::vector<float> in_place = dg.get();
    std::vector<float> rows;
    for (int64_t r = 0; r < n_rows; ++r) rows.insert(rows.end(), in_place.begin() + r * stride, in_place.begin() + r * stride + n);
    CHECK_MSG(within_rel_ulps(rows, want, 6.0, &worst), "in place: worst %.2f ulps", worst);
}

// forward.cc's swiglu_oai_row (gpt-oss), the CPU reference of swiglu_oai_rows.
void swiglu_oai_ref(const float* g, const float* u, float* y, int64_t n) {
    constexpr float alpha = 1.702f, limit = 7.0f;
    for (int64_t i = 0; i < n; ++i) {
        const float x = std::min(g[i], limit);
        const float v = std::clamp(u[i], -limit, limit);
        const float glu = x / (1.0f + std::exp(alpha * (-x)));
        y[i] = glu * (v + 1.0f);
    }
}

TEST_CASE("cuda swiglu_oai_rows matches forward.cc's clamped SwiGLU within 6 ulps (+ cancellation at u = -1)") {
    // As swiglu_rows (same exp budget). u + 1 is exact-rounded on both sides, so the relative
    // budget holds even where u + 1 is small.
    Rng rng(7);
    const int64_t n_rows = 4, n = 2880;
    std::vector<float> g(n_rows * n), u(n_rows * n);
    for (auto& v : g) v = static_cast<float>(rng.uniform() * 24.0 - 12.0);  // across the clamps
    for (auto& v : u) v = static_cast<float>(rng.uniform() * 24.0 - 12.0);
    g[0] = 7.0f;
    u[0] = -7.0f;
    g[1] = 7.5f;
    u[1] = -1.0f;
    std::vector<float> want(n_rows * n);
    swiglu_oai_ref(g.data(), u.data(), want.data(), n_rows * n);
    Dev<float> dg(g), du(u), dy(n_rows * n);
    CHECK(mc::swiglu_oai_rows(dg.p, n, du.p, n, dy.p, n, n_rows, n, nullptr) == cudaSuccess);
    double worst;
    CHECK_MSG(within_rel_ulps(dy.get(), want, 6.0, &worst), "worst %.2f ulps", worst);
}

// ------------------------------------------------------------------------------------------------
// Adds, combine, embedding
// ------------------------------------------------------------------------------------------------

TEST_CASE("cuda add_rows, add_bias_rows and add_expert_bias_rows are bit-identical") {
    Rng rng(8);
    const int64_t n_rows = 70000, n = 3, stride = 5;  // more rows than one grid dimension holds
    const std::vector<float> x = rng.gauss_vec(n_rows * stride, 1.0);
    const std::vector<float> y = rng.gauss_vec(n_rows * stride, 1.0);
    const std::vector<float> b = rng.gauss_vec(n, 1.0);
    std::vector<float> want = y;
    for (int64_t r = 0; r < n_rows; ++r) {
        for (int64_t i = 0; i < n; ++i) want[r * stride + i] = x[r * stride + i] + want[r * stride + i];
    }
    Dev<float> dx(x), dy(y), db(b);
    CHECK(mc::add_rows(dx.p, stride, dy.p, stride, n_rows, n, nullptr) == cudaSuccess);
    CHECK(bits_equal(dy.get(), want));
    for (int64_t r = 0; r < n_rows; ++r) {
        for (int64_t i = 0; i < n; ++i) want[r * stride + i] = want[r * stride + i] + b[i];
    }
    CHECK(mc::add_bias_rows(dy.p, stride, db.p, n_rows, n, nullptr) == cudaSuccess);
    CHECK(bits_equal(dy.get(), want));

    // Expert biases over rows grouped by expert: offsets with empty experts in between.
    const int n_expert = 6;
    const int64_t width = 37;
    const std::vector<int32_t> offsets{0, 3, 3, 10, 11, 11, 20};
    const std::vector<float> bias = rng.gauss_vec(n_expert * width, 1.0);
    const int64_t rows = 24;  // launch size past offsets[n_expert]: rows 20.. stay as they are
    const std::vector<float> z = rng.gauss_vec(rows * width, 1.0);
    std::vector<float> want_z = z;
    for (int e = 0; e < n_expert; ++e) {
        for (int64_t r = offsets[e]; r < offsets[e + 1]; ++r) {
            for (int64_t i = 0; i < width; ++i) want_z[r * width + i] = want_z[r * width + i] + bias[e * width + i];
        }
    }
    Dev<float> dz(z), dbias(bias);
    Dev<int32_t> doff(offsets);
    CHECK(mc::add_expert_bias_rows(dz.p, width, doff.p, n_expert, dbias.p, width, rows, width, nullptr) == cudaSuccess);
    CHECK(bits_equal(dz.get(), want_z));
}

TEST_CASE("cuda moe_combine sums the weighted expert rows in slot order, bit-identical (gated shared: 4 ulps)") {
    Rng rng(9);
    const int64_t n_tokens = 33, n_embd = 300;
    const int k = 6;
    const int64_t R = n_tokens * k, down_stride = n_embd + 2;
    const std::vector<float> down = rng.gauss_vec(R * down_stride, 1.0);
    std::vector<int32_t> row_of(R);
    for (int64_t r = 0; r < R; ++r) row_of[r] = static_cast<int32_t>((r * 37) % R);  // a permutation (gcd(37, R) = 1)
    const std::vector<float> w = rng.gauss_vec(R, 0.5);
    const std::vector<float> shared = rng.gauss_vec(n_tokens * n_embd, 1.0);
    std::vector<float> gate = rng.gauss_vec(n_tokens, 2.0);
    Dev<float> ddown(down), dw(w), dshared(shared), dgate(gate), dout(n_tokens * n_embd);
    Dev<int32_t> drow(row_of);
    for (int mode = 0; mode < 3; ++mode) {  // routed only, + shared, + sigmoid-gated shared
        std::vector<float> want(n_tokens * n_embd);
        for (int64_t t = 0; t < n_tokens; ++t) {
            for (int64_t i = 0; i < n_embd; ++i) {
                float o = down[row_of[t * k] * down_stride + i] * w[t * k];
                for (int s = 1; s < k; ++s) {
                    const float p = down[row_of[t * k + s] * down_stride + i] * w[t * k + s];
                    o = o + p;
                }
                if (mode == 1) o = o + shared[t * n_embd + i];
                if (mode == 2) {
                    const float g = gate[t];
                    const float gv = k::silu(g) / g;
                    const float p = shared[t * n_embd + i] * gv;
                    o = o + p;
                }
                want[t * n_embd + i] = o;
            }
        }
        CHECK(mc::moe_combine(ddown.p, down_stride, drow.p, dw.p, n_tokens, k, n_embd, mode ? dshared.p : nullptr, n_embd,
                              mode == 2 ? dgate.p : nullptr, dout.p, n_embd, nullptr) == cudaSuccess);
        const std::vector<float> got = dout.get();
        if (mode < 2) {
            CHECK_MSG(bits_equal(got, want), "mode %d", mode);
        } else {
            // The gate's exp differs by <= 3 ulps: it moves the last add by <= 4 ulps of y·gate.
            bool ok = true;
            for (int64_t t = 0; t < n_tokens; ++t) {
                const double gv = std::fabs(k::silu(gate[t]) / gate[t]);
                for (int64_t i = 0; i < n_embd; ++i) {
                    const double tol = 4.0 * std::ldexp(std::fabs(shared[t * n_embd + i]) * gv, -24) +
                                       std::ldexp(std::fabs(want[t * n_embd + i]), -23);
                    ok = ok && std::fabs(static_cast<double>(got[t * n_embd + i]) - want[t * n_embd + i]) <= tol;
                }
            }
            CHECK(ok);
        }
    }
}

TEST_CASE("cuda get_rows_f32 dequantizes the embedding rows of host token ids bit for bit") {
    using moe::quant::GgmlType;
    Rng rng(10);
    for (GgmlType type : {GgmlType::F32, GgmlType::F16, GgmlType::Q8_0, GgmlType::Q4_K, GgmlType::Q6_K}) {
        const uint32_t id = static_cast<uint32_t>(type);
        const moe::quant::TypeTraits& traits = *moe::quant::type_traits(id);
        const int64_t n_vocab = 50, n_cols = 512;
        const size_t row_bytes = moe::quant::row_size(traits, n_cols);
        const std::vector<float> table_f = rng.gauss_vec(n_vocab * n_cols, 1.0);
        std::vector<uint8_t> table(n_vocab * row_bytes);
        for (int64_t r = 0; r < n_vocab; ++r) {
            moe::quant::quantize(id, table_f.data() + r * n_cols, table.data() + r * row_bytes, n_cols, Isa::Scalar);
        }
        const std::vector<int32_t> tokens{3, 0, 49, 3, 17};
        const int64_t out_stride = n_cols + 8;
        std::vector<float> want(tokens.size() * out_stride, 0.5f);
        for (size_t t = 0; t < tokens.size(); ++t) {
            moe::quant::dequantize(id, table.data() + tokens[t] * row_bytes, want.data() + t * out_stride, n_cols, Isa::Scalar);
        }
        Dev<uint8_t> dtable(table);
        Dev<float> dout(std::vector<float>(tokens.size() * out_stride, 0.5f));
        CHECK(mc::get_rows_f32(id, dtable.p, row_bytes, n_vocab, tokens.data(), static_cast<int64_t>(tokens.size()), n_cols,
                               dout.p, out_stride, nullptr) == cudaSuccess);
        CHECK_MSG(bits_equal(dout.get(), want), "%s", traits.name);
        const int32_t bad[2] = {1, 50};
        CHECK(mc::get_rows_f32(id, dtable.p, row_bytes, n_vocab, bad, 2, n_cols, dout.p, out_stride, nullptr) ==
              cudaErrorInvalidValue);
    }
}

// ------------------------------------------------------------------------------------------------
// Routing
// ------------------------------------------------------------------------------------------------

struct RouteCase {
    const char* name;
    int n_expert, k;
    moe::model::Gating gating;
    int n_group, n_group_used;
    bool norm;
    float scale;
    bool bias;
};

// Runs route_token (Scalar) and cuda::route on the same logits; selections must be equal and the
// weights within 2 ulps.
void check_route(const RouteCase& c, const std::vector<float>& logits, const std::vector<float>& sel_bias,
                 int64_t n_tokens) {
    moe::model::HParams hp;
    hp.n_expert = static_cast<uint32_t>(c.n_expert);
    hp.n_expert_used = static_cast<uint32_t>(c.k);
    hp.gating = c.gating;
    hp.n_expert_groups = static_cast<uint32_t>(c.n_group);
    hp.n_group_used = static_cast<uint32_t>(c.n_group_used);
    hp.norm_topk = c.norm;
    hp.expert_weights_scale = c.scale;
    std::vector<int32_t> want_sel(n_tokens * c.k);
    std::vector<float> want_w(n_tokens * c.k), probs(c.n_expert), scores(c.n_expert);
    for (int64_t t = 0; t < n_tokens; ++t) {
        std::memcpy(probs.data(), logits.data() + t * c.n_expert, sizeof(float) * c.n_expert);
        moe::model::route_token(hp, c.bias ? sel_bias.data() : nullptr, probs.data(), scores.data(),
                                want_sel.data() + t * c.k, want_w.data() + t * c.k, Isa::Scalar);
    }
    Dev<float> dlogits(logits), dbias(sel_bias), dw(n_tokens * c.k);
    Dev<int32_t> dsel(n_tokens * c.k);
    CHECK(mc::route(mc::routing_params(hp), dlogits.p, c.bias ? dbias.p : nullptr, n_tokens, dsel.p, dw.p, nullptr) ==
          cudaSuccess);
    const std::vector<int32_t> got_sel = dsel.get();
    const std::vector<float> got_w = dw.get();
    int64_t first_bad = -1;
    for (int64_t i = 0; i < n_tokens * c.k && first_bad < 0; ++i) {
        if (got_sel[i] != want_sel[i]) first_bad = i;
    }
    CHECK_MSG(first_bad < 0, "%s: token %lld slot %lld selects %d, route_token %d", c.name,
              static_cast<long long>(first_bad < 0 ? 0 : first_bad / c.k), static_cast<long long>(first_bad < 0 ? 0 : first_bad % c.k),
              first_bad < 0 ? 0 : got_sel[first_bad], first_bad < 0 ? 0 : want_sel[first_bad]);
    // Probabilities are the correctly rounded exp on the GPU and glibc's (nearly always the same)
    // on the CPU; the softmax's double sum runs in another order, which can move 1 / sum by an ulp
    // in rare rows; the weights then take one or two more roundings: 2 ulps.
    CHECK_MSG(max_ulps(got_w, want_w) <= 2, "%s: weights %lld ulps apart", c.name,
              static_cast<long long>(max_ulps(got_w, want_w)));
}

TEST_CASE("cuda route equals route_token for every gating variant, bias, groups and scale") {
    using moe::model::Gating;
    const RouteCase cases[] = {
        {"mixtral softmax k2 norm", 8, 2, Gating::Softmax, 0, 0, true, 0.0f, false},
        {"qwen2moe softmax k4", 60, 4, Gating::Softmax, 0, 0, false, 0.0f, false},
        {"qwen3moe softmax k8 norm", 128, 8, Gating::Softmax, 0, 0, true, 0.0f, false},
        {"deepseek-v3 sigmoid bias groups 8/4", 256, 8, Gating::Sigmoid, 8, 4, true, 2.5f, true},
        {"kimi-k2 sigmoid bias", 384, 8, Gating::Sigmoid, 1, 1, true, 2.827f, true},
        {"deepseek-v2 softmax groups 8/3", 160, 6, Gating::Softmax, 8, 3, false, 16.0f, false},
        {"gpt-oss softmax weights", 32, 4, Gating::SoftmaxWeight, 0, 0, false, 0.0f, false},
        {"512 experts k1", 512, 1, Gating::Softmax, 0, 0, true, 0.0f, false},
        {"512 experts 64 groups of 8, 2 used, k 16", 512, 16, Gating::Sigmoid, 64, 2, true, 1.0f, true},
        {"one expert per group", 16, 3, Gating::Sigmoid, 16, 5, false, 0.0f, true},
        {"k = n_expert", 8, 8, Gating::Softmax, 0, 0, true, 0.0f, false},
    };
    Rng rng(11);
    for (const RouteCase& c : cases) {
        const int64_t n_tokens = 37;
        const std::vector<float> logits = rng.gauss_vec(n_tokens * c.n_expert, 2.0);
        const std::vector<float> bias = rng.gauss_vec(c.n_expert, 0.05);
        check_route(c, logits, bias, n_tokens);
    }
}

TEST_CASE("cuda route breaks exact ties to the lower expert (and group) index, as route_token") {
    using moe::model::Gating;
    const RouteCase cases[] = {
        {"softmax ties", 64, 8, Gating::Softmax, 0, 0, true, 0.0f, false},
        {"sigmoid group ties", 256, 8, Gating::Sigmoid, 8, 4, true, 2.5f, true},
        {"softmax-weight ties", 32, 4, Gating::SoftmaxWeight, 0, 0, false, 0.0f, false},
        {"all equal", 128, 8, Gating::Softmax, 0, 0, true, 0.0f, false},
        {"all equal groups", 64, 4, Gating::Sigmoid, 8, 2, false, 0.0f, true},
    };
    Rng rng(12);
    for (const RouteCase& c : cases) {
        const int64_t n_tokens = 20;
        std::vector<float> logits(n_tokens * c.n_expert);
        const bool all_equal = std::strncmp(c.name, "all equal", 9) == 0;
        // Few distinct values: identical logits give identical probabilities on both sides, so
        // every tie is exact and only the tie-break decides.
        for (float& v : logits) v = all_equal ? 0.5f : static_cast<float>(rng.below(5)) * 0.5f - 1.0f;
        std::vector<float> bias(c.n_expert, 0.0f);
        if (!all_equal) {
            for (float& v : bias) v = static_cast<float>(rng.below(3)) * 0.125f;
        }
        check_route(c, logits, bias, n_tokens);
    }
}

TEST_CASE("cuda route refuses bad parameters") {
    mc::RoutingParams p;
    p.n_expert = 513;
    p.k = 1;
    CHECK(mc::route(p, nullptr, nullptr, 1, nullptr, nullptr, nullptr) == cudaErrorInvalidValue);
    p.n_expert = 8;
    p.k = 9;
    CHECK(mc::route(p, nullptr, nullptr, 1, nullptr, nullptr, nullptr) == cudaErrorInvalidValue);
    p.k = 2;
    p.n_group = 3;  // 8 % 3 != 0
    p.n_group_used = 1;
    CHECK(mc::route(p, nullptr, nullptr, 1, nullptr, nullptr, nullptr) == cudaErrorInvalidValue);
    p.n_group = 0;
    CHECK(mc::route(p, nullptr, nullptr, 0, nullptr, nullptr, nullptr) == cudaSuccess);
    CHECK(mc::route(p, nullptr, nullptr, 1, nullptr, nullptr, nullptr) == cudaErrorInvalidValue);
}

TEST_CASE("cuda group_by_expert equals forward.cc's stable counting sort") {
    Rng rng(13);
    struct Shape {
        int64_t n_tokens;
        int k, n_expert;
        bool distinct;  // experts of a token distinct (as routing makes them) or arbitrary
    };
    for (const Shape& s : {Shape{1, 1, 8, true}, Shape{1, 8, 256, true}, Shape{7, 2, 8, true}, Shape{512, 8, 128, true},
                           Shape{3000, 8, 512, true}, Shape{100, 4, 3, false}, Shape{33, 3, 1, false},
                           Shape{2048, 6, 60, false}}) {
        const int64_t R = s.n_tokens * s.k;
        std::vector<int32_t> sel(R);
        for (int64_t t = 0; t < s.n_tokens; ++t) {
            for (int j = 0; j < s.k; ++j) {
                int32_t e;
                bool again;
                do {
                    // Skewed: low experts far more popular, so some experts get many rows.
                    const double u = rng.uniform();
                    e = static_cast<int32_t>(u * u * s.n_expert);
                    again = false;
                    for (int i = 0; s.distinct && i < j; ++i) again = again || sel[t * s.k + i] == e;
                } while (again);
                sel[t * s.k + j] = e;
            }
        }
        // forward.cc's loop.
        std::vector<int32_t> fill(s.n_expert + 1, 0), want_src(R), want_of(R);
        for (int64_t r = 0; r < R; ++r) ++fill[sel[r] + 1];
        for (int e = 0; e < s.n_expert; ++e) fill[e + 1] += fill[e];
        const std::vector<int32_t> want_offsets = fill;
        for (int64_t t = 0; t < s.n_tokens; ++t) {
            for (int j = 0; j < s.k; ++j) {
                const int32_t r = fill[sel[t * s.k + j]]++;
                want_src[r] = static_cast<int32_t>(t);
                want_of[t * s.k + j] = r;
            }
        }
        Dev<int32_t> dsel(sel), doff(s.n_expert + 1), dsrc(R), dof(R);
        Dev<uint8_t> scratch(std::max<size_t>(1, mc::group_by_expert_scratch_bytes(s.n_tokens, s.k, s.n_expert)));
        CHECK(mc::group_by_expert(dsel.p, s.n_tokens, s.k, s.n_expert, doff.p, dsrc.p, dof.p, scratch.p, nullptr) ==
              cudaSuccess);
        CHECK_MSG(doff.get() == want_offsets, "offsets, %lld tokens k %d experts %d", static_cast<long long>(s.n_tokens),
                  s.k, s.n_expert);
        CHECK_MSG(dsrc.get() == want_src, "row_src, %lld tokens k %d", static_cast<long long>(s.n_tokens), s.k);
        CHECK_MSG(dof.get() == want_of, "row_of, %lld tokens k %d", static_cast<long long>(s.n_tokens), s.k);
    }
}

}  // namespace

int main(int argc, char** argv) { return moe_test::run_cuda_tests(argc, argv); }
