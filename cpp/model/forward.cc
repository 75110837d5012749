// The forward pass of one chunk, in llama.cpp's order of operations (src/models/{llama,qwen2moe,
// qwen3moe,olmoe}.cpp and llm_graph_context::build_attn / build_ffn / build_moe_ffn):
//
//   x = token_embd[tokens]
//   per layer:  h = x + attn_output(attention(rope(qk_norm(q, k)), v))   (q,k,v from rms_norm(x))
//               x = h + ffn(rms_norm(h))                                 (dense SwiGLU or MoE)
//   logits = output(rms_norm(x))
//
// Every element-wise step is one fp32 operation per element in ggml's operand order, and the
// kernels reproduce the arithmetic of the ggml build matching the kernel level (vector exp/SiLU,
// softmax sums, tinyBLAS / vec_dot summation orders in attention, contracted RoPE): with the
// matmuls reproducing llama.cpp's too, logits agree bit for bit (see kernels/ops.h).
#include "forward.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <string>

#include "../common/error.h"
#include "../kernels/matmul.h"
#include "../kernels/ops.h"
#include "../quant/quant.h"
#include "routing.h"

namespace moe::model {

namespace {

using kernels::WeightMatrix;

constexpr int kMaxRot = 1024;          // largest rotated width the stack cos/sin table holds
// llama.cpp pads the KV cells an ubatch attends over (n_kv) to a multiple of this without flash
// attention. Measured against the conformance oracle (node-llama-cpp 3.21.1): token-by-token decode
// matches it bit for bit with 256 and not with 32 or 1 (the pad decides which cells ggml_vec_dot
// sums in its vector part and which in its double tail).
constexpr int64_t kLlamaKvPad = 256;

template <class T>
T* grow(std::vector<T>& v, size_t n) {
    if (v.size() < n) v.resize(n);
    return v.data();
}

// Runs fn(row) for rows [0, n_rows) of `width` values each, spread over the pool when large.
template <class Fn>
void for_rows(runtime::ThreadPool& pool, int64_t n_rows, int64_t width, Fn&& fn) {
    const int64_t min_rows = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, width));
    pool.parallel_for(n_rows, min_rows, [&](int64_t begin, int64_t end, int) {
        for (int64_t r = begin; r < end; ++r) fn(r);
    });
}

// y[r, :] += b for n_rows rows (ggml_add with a broadcast bias row).
void add_bias(runtime::ThreadPool& pool, float* y, int64_t stride, int64_t n_rows, const Vector& b) {
    if (!b) return;
    for_rows(pool, n_rows, b.n, [&](int64_t r) {
        float* row = y + r * stride;
        for (int64_t i = 0; i < b.n; ++i) row[i] = row[i] + b.data[i];
    });
}

// x[r, :] = y[r, :] + x[r, :] (the residual adds: ggml_add(cur, residual)).
void add_residual(runtime::ThreadPool& pool, float* x, const float* y, int64_t n_rows, int64_t width) {
    for_rows(pool, n_rows, width, [&](int64_t r) {
        float* xr = x + r * width;
        const float* yr = y + r * width;
        for (int64_t i = 0; i < width; ++i) xr[i] = yr[i] + xr[i];
    });
}

// a[r, 0:n] = silu(a[r, 0:n]) * b[r, 0:n] with row strides.
void swiglu_rows(runtime::ThreadPool& pool, float* a, int64_t a_stride, const float* b, int64_t b_stride,
                 int64_t n_rows, int64_t n, cpu::Isa isa) {
    for_rows(pool, n_rows, n,
             [&](int64_t r) { kernels::swiglu(a + r * a_stride, b + r * b_stride, a + r * a_stride, n, isa); });
}

// The rows of a merged batch: one group per segment (possibly empty), together covering [0, n).
struct RowSet {
    std::vector<kernels::RowGroup> groups;
    int64_t n = 0;
};

// Every dense product of the forward pass goes through here: each segment's rows keep the float
// order of a product of their own (kernels::matmul_groups), so batching changes no result.
void matmul(ModelState& m, const WeightMatrix& w, const float* x, int64_t x_stride, const RowSet& rows, float* y,
            int64_t y_stride) {
    kernels::matmul_groups(w, x, x_stride, rows.groups.data(), rows.groups.size(), y, y_stride, *m.pool, m.isa);
}

// y[r, :] += b[expert_of[r], :] for R rows (ggml_add_id: a per-expert bias row).
void add_expert_bias(runtime::ThreadPool& pool, float* y, int64_t stride, int64_t R, const int32_t* expert_of,
                     const Vector& b, int64_t width) {
    if (!b) return;
    for_rows(pool, R, width, [&](int64_t r) {
        float* row = y + r * stride;
        const float* bias = b.data + static_cast<int64_t>(expert_of[r]) * width;
        for (int64_t i = 0; i < width; ++i) row[i] = row[i] + bias[i];
    });
}

// gpt-oss's clamped SwiGLU (ggml_swiglu_oai with alpha 1.702, limit 7): g = min(g, 7),
// u = clamp(u, -7, 7), out = g / (1 + e^(1.702 (-g))) * (u + 1). out may alias g.
void swiglu_oai_row(float* g, const float* u, int64_t n) {
    constexpr float alpha = 1.702f, limit = 7.0f;
    for (int64_t i = 0; i < n; ++i) {
        const float x = std::min(g[i], limit);
        const float y = std::clamp(u[i], -limit, limit);
        const float out_glu = x / (1.0f + std::exp(alpha * (-x)));
        g[i] = out_glu * (y + 1.0f);
    }
}

// The MoE FFN of the rows: out[nr, n_embd] from xn[nr, n_embd]. routed (optional): [nr, k]
// receives each row's selected experts.
void moe_ffn(ModelState& m, const LayerWeights& L, const float* xn, const RowSet& rows, float* out,
             const int32_t** routed) {
    const int64_t nr = rows.n;
    const HParams& hp = m.hp;
    Workspace& ws = m.ws;
    runtime::ThreadPool& pool = *m.pool;
    const int64_t E = hp.n_embd, X = hp.n_expert, K = hp.n_expert_used, F = hp.n_ff_exp;
    const int64_t R = nr * K;  // one expert row per (token, slot)

    // Router logits in the router's own type (F32 in every converted model: exact selection).
    float* probs = grow(ws.router, static_cast<size_t>(nr * X));
    matmul(m, L.gate_inp, xn, E, rows, probs, X);
    add_bias(pool, probs, X, nr, L.gate_inp_b);
    float* scores = grow(ws.sel_score, static_cast<size_t>(nr * X));
    int32_t* sel = grow(ws.sel, static_cast<size_t>(R));
    float* sw = grow(ws.sel_w, static_cast<size_t>(R));
    const float* sel_bias = L.exp_probs_b ? L.exp_probs_b.data : nullptr;
    pool.parallel_for(nr, 16, [&](int64_t begin, int64_t end, int) {
        for (int64_t t = begin; t < end; ++t) route_token(hp, sel_bias, probs + t * X, scores + t * X, sel + t * K, sw + t * K, m.isa);
    });
    if (routed) *routed = sel;

    // Group the (token, slot) rows by expert (counting sort, stable in token then slot order), so
    // every selected expert's weights are streamed once for all its rows.
    int32_t* fill = grow(ws.expert_fill, static_cast<size_t>(X + 1));
    std::fill(fill, fill + X + 1, 0);
    for (int64_t r = 0; r < R; ++r) ++fill[sel[r] + 1];
    for (int64_t e = 0; e < X; ++e) fill[e + 1] += fill[e];
    int32_t* row_src = grow(ws.row_src, static_cast<size_t>(R));
    int32_t* row_expert = grow(ws.row_expert, static_cast<size_t>(R));
    int32_t* row_of = grow(ws.row_of, static_cast<size_t>(R));
    int32_t* row_self = grow(ws.row_self, static_cast<size_t>(R));
    for (int64_t t = 0; t < nr; ++t) {
        for (int64_t s = 0; s < K; ++s) {
            const int32_t e = sel[t * K + s];
            const int32_t r = fill[e]++;
            row_src[r] = static_cast<int32_t>(t);
            row_expert[r] = e;
            row_of[t * K + s] = r;
        }
    }
    std::iota(row_self, row_self + R, 0);

    // gate, up -> silu(gate) * up: act [R, F] (row stride act_stride).
    float* act;
    int64_t act_stride;
    if (m.spec->expert_act == ExpertAct::SwigluOai) {
        // gpt-oss: up and gate with their per-expert biases, then the clamped SwiGLU.
        float* g = grow(ws.exp_a, static_cast<size_t>(R * F));
        float* u = grow(ws.exp_b, static_cast<size_t>(R * F));
        kernels::matmul_experts(L.up_exps, xn, E, row_src, row_expert, R, u, F, pool, m.isa);
        add_expert_bias(pool, u, F, R, row_expert, L.up_exps_b, F);
        kernels::matmul_experts(L.gate_exps, xn, E, row_src, row_expert, R, g, F, pool, m.isa);
        add_expert_bias(pool, g, F, R, row_expert, L.gate_exps_b, F);
        for_rows(pool, R, F, [&](int64_t r) { swiglu_oai_row(g + r * F, u + r * F, F); });
        act = g;
        act_stride = F;
    } else if (L.fused_gate_up) {
        float* gu = grow(ws.exp_a, static_cast<size_t>(R * 2 * F));
        kernels::matmul_experts(L.gate_up_exps, xn, E, row_src, row_expert, R, gu, 2 * F, pool, m.isa);
        swiglu_rows(pool, gu, 2 * F, gu + F, 2 * F, R, F, m.isa);
        act = gu;
        act_stride = 2 * F;
    } else {
        float* g = grow(ws.exp_a, static_cast<size_t>(R * F));
        float* u = grow(ws.exp_b, static_cast<size_t>(R * F));
        const kernels::ExpertMatrix& G = L.gate_exps;
        const kernels::ExpertMatrix& U = L.up_exps;
        if (G.type == U.type && G.row_bytes == U.row_bytes && G.expert_bytes == U.expert_bytes) {
            // One pass: activations converted once, each chunk's SwiGLU while it is in cache.
            kernels::matmul_experts_swiglu(G, U, xn, E, row_src, row_expert, R, g, u, F, pool, m.isa);
        } else {
            kernels::matmul_experts(U, xn, E, row_src, row_expert, R, u, F, pool, m.isa);
            kernels::matmul_experts(G, xn, E, row_src, row_expert, R, g, F, pool, m.isa);
            swiglu_rows(pool, g, F, u, F, R, F, m.isa);
        }
        act = g;
        act_stride = F;
    }
    float* down = grow(ws.exp_out, static_cast<size_t>(R * E));
    kernels::matmul_experts(L.down_exps, act, act_stride, row_self, row_expert, R, down, E, pool, m.isa);
    add_expert_bias(pool, down, E, R, row_expert, L.down_exps_b, E);

    // out = y_0 w_0 + y_1 w_1 + ...: each product rounded, summed in slot (descending score) order.
    for_rows(pool, nr, E * K, [&](int64_t t) {
        float* o = out + t * E;
        const float* y0 = down + static_cast<int64_t>(row_of[t * K]) * E;
        const float w0 = sw[t * K];
        for (int64_t i = 0; i < E; ++i) o[i] = y0[i] * w0;
        for (int64_t s = 1; s < K; ++s) {
            const float* ys = down + static_cast<int64_t>(row_of[t * K + s]) * E;
            const float wsv = sw[t * K + s];
            for (int64_t i = 0; i < E; ++i) {
                const float p = ys[i] * wsv;
                o[i] = o[i] + p;
            }
        }
    });

    if (!L.shared) return;
    // Shared expert: out += shexp(x) (· sigmoid gate for qwen2moe).
    const int64_t S = L.shexp_gate.n_out;
    float* a = grow(ws.ff_a, static_cast<size_t>(nr * S));
    float* b = grow(ws.ff_b, static_cast<size_t>(nr * S));
    matmul(m, L.shexp_up, xn, E, rows, b, S);
    matmul(m, L.shexp_gate, xn, E, rows, a, S);
    swiglu_rows(pool, a, S, b, S, nr, S, m.isa);
    float* sh = grow(ws.exp_out, static_cast<size_t>(R * E));  // the routed rows are consumed by now
    matmul(m, L.shexp_down, a, S, rows, sh, E);
    const bool gated = m.spec->shared_expert == SharedExpert::SigmoidGated;
    float* sg = grow(ws.shexp_s, static_cast<size_t>(nr));
    if (gated) matmul(m, L.shexp_gate_inp, xn, E, rows, sg, 1);
    for_rows(pool, nr, E, [&](int64_t t) {
        float* o = out + t * E;
        const float* y = sh + t * E;
        if (gated) {
            // llama.cpp writes sigmoid(s) as silu(s) / s (NaN for s == 0, as there).
            const float s = sg[t];
            const float gate = kernels::silu(s) / s;
            for (int64_t i = 0; i < E; ++i) {
                const float p = y[i] * gate;
                o[i] = o[i] + p;
            }
        } else {
            for (int64_t i = 0; i < E; ++i) o[i] = o[i] + y[i];
        }
    });
}

// The dense SwiGLU FFN of nr rows (build_ffn with LLM_FFN_SILU, LLM_FFN_PAR).
void dense_ffn(ModelState& m, const LayerWeights& L, const float* xn, const RowSet& rows, float* out) {
    Workspace& ws = m.ws;
    const int64_t nr = rows.n;
    const int64_t E = m.hp.n_embd, F = L.ffn_up.n_out;
    float* a = grow(ws.ff_a, static_cast<size_t>(nr * F));
    float* b = grow(ws.ff_b, static_cast<size_t>(nr * F));
    matmul(m, L.ffn_up, xn, E, rows, b, F);
    add_bias(*m.pool, b, F, nr, L.ffn_up_b);
    matmul(m, L.ffn_gate, xn, E, rows, a, F);
    add_bias(*m.pool, a, F, nr, L.ffn_gate_b);
    swiglu_rows(*m.pool, a, F, b, F, nr, F, m.isa);
    matmul(m, L.ffn_down, a, F, rows, out, E);
    add_bias(*m.pool, out, E, nr, L.ffn_down_b);
}

// What the attention of one layer needs to know about the batch: its segments, the rows of each
// (`in`: every token; `out`: the rows whose attention output is needed, compacted in the last
// layer) and every row's position.
struct BatchRows {
    const BatchSegment* segs;
    size_t n_segs;
    const RowSet& in;
    const RowSet& out;
    const uint32_t* pos_of_row;  // [in.n]
};

// llama.cpp runs each segment as one ubatch of n tokens over a KV range padded to kLlamaKvPad
// cells; both decide its attention summation orders, which the kernel reproduces.
kernels::AttentionShape segment_shape(kernels::AttentionShape shape, const BatchSegment& seg) {
    shape.batch = seg.n;
    shape.n_kv = (static_cast<int64_t>(seg.pos0) + seg.n + kLlamaKvPad - 1) / kLlamaKvPad * kLlamaKvPad;
    return shape;
}

// Grouped-query attention of one layer (llama, qwen*, olmoe, gpt-oss): projects q/k/v of every row
// from xn, normalises and ropes them, stores each segment's K/V in its cache at its positions, and
// writes the attention output of the `out` rows to attn ([out.n, q_width]).
void attention_gqa(ModelState& m, const BatchRows& b, const LayerWeights& L, uint32_t il, const float* xn,
                   const kernels::AttentionShape& base, float* attn) {
    const HParams& hp = m.hp;
    Workspace& ws = m.ws;
    runtime::ThreadPool& pool = *m.pool;
    const int64_t n = b.in.n;
    const int64_t E = hp.n_embd, QW = hp.q_width(), KVW = hp.kv_width(), QKVW = QW + 2 * KVW;
    const int hd = static_cast<int>(hp.head_dim);
    const float eps = hp.rms_eps;
    float* qkv = grow(ws.qkv, static_cast<size_t>(n * QKVW));  // qkv: [n, q | k | v]
    float* q = qkv;
    float* k = qkv + QW;
    float* v = qkv + QW + KVW;
    if (L.fused_qkv) {
        matmul(m, L.wqkv, xn, E, b.in, qkv, QKVW);
        add_bias(pool, qkv, QKVW, n, L.bqkv);
    } else {
        matmul(m, L.wq, xn, E, b.in, q, QKVW);
        matmul(m, L.wk, xn, E, b.in, k, QKVW);
        matmul(m, L.wv, xn, E, b.in, v, QKVW);
    }
    add_bias(pool, q, QKVW, n, L.bq);
    add_bias(pool, k, QKVW, n, L.bk);
    add_bias(pool, v, QKVW, n, L.bv);
    const QkNorm qk_norm = m.spec->qk_norm;
    const kernels::RopeConfig& rope = hp.is_swa(il) ? hp.rope_swa : hp.rope;
    for_rows(pool, n, QKVW, [&](int64_t t) {
        float* qt = q + t * QKVW;
        float* kt = k + t * QKVW;
        if (qk_norm == QkNorm::PerHead) {
            for (uint32_t h = 0; h < hp.n_head; ++h) kernels::rms_norm(qt + h * hd, L.q_norm.data, qt + h * hd, hd, eps);
            for (uint32_t h = 0; h < hp.n_head_kv; ++h) kernels::rms_norm(kt + h * hd, L.k_norm.data, kt + h * hd, hd, eps);
        } else if (qk_norm == QkNorm::Full) {
            kernels::rms_norm(qt, L.q_norm.data, qt, QW, eps);
            kernels::rms_norm(kt, L.k_norm.data, kt, KVW, eps);
        }
        float cs[kMaxRot];  // n_rot <= head_dim <= kMaxRot (checked at load)
        kernels::rope_cache(rope, b.pos_of_row[t], cs, m.isa);
        for (uint32_t h = 0; h < hp.n_head; ++h) kernels::rope_apply(rope, cs, qt + h * hd, m.isa);
        for (uint32_t h = 0; h < hp.n_head_kv; ++h) kernels::rope_apply(rope, cs, kt + h * hd, m.isa);
    });
    kernels::AttentionShape shape = base;
    shape.window = hp.is_swa(il) ? hp.n_swa : 0;
    shape.sinks = L.sinks ? L.sinks.data : nullptr;
    for (size_t si = 0; si < b.n_segs; ++si) {
        const BatchSegment& seg = b.segs[si];
        kv::KvCache& cache = *seg.cache;
        const int64_t first = b.in.groups[si].begin;
        cache.store_k(il, seg.pos0, k + first * QKVW, QKVW, seg.n, m.isa);
        cache.store_v(il, seg.pos0, v + first * QKVW, QKVW, seg.n, m.isa);
        const int64_t nr = b.out.groups[si].count;  // the segment's last nr rows
        if (nr == 0) continue;
        const int64_t r0 = seg.n - nr;
        kernels::attention(segment_shape(shape, seg), cache.k_rows(il), cache.v_rows(il), q + (first + r0) * QKVW, QKVW,
                           nr, seg.pos0 + static_cast<uint32_t>(r0), attn + b.out.groups[si].begin * QW, QW, pool, m.isa);
    }
}

// Multi-head latent attention of one deepseek2 layer in the absorbed form (the same graph llama.cpp
// runs for prefill and decode):
//   q        = wq_b · rms_norm(wq_a · x) (or wq · x)        per head [q_nope | q_pe]
//   [c | kr] = wkv_a_mqa · x;  c = rms_norm(c);  kr, q_pe roped (NORM, YaRN)
//   cache row [c | kr] per token (one "KV head" shared by every query head)
//   Q[h] = [k_b[h] · q_nope[h] | q_pe[h]],  o_lat[h] = softmax(kq_scale Q[h]·K) · c,  o[h] = v_b[h] · o_lat[h]
// Writes o of the `out` rows to attn ([out.n, n_head * v_head_dim]).
void attention_mla(ModelState& m, const BatchRows& b, const LayerWeights& L, uint32_t il, const float* xn,
                   const kernels::AttentionShape& base, float* attn) {
    const HParams& hp = m.hp;
    const HParams::Mla& M = hp.mla;
    Workspace& ws = m.ws;
    runtime::ThreadPool& pool = *m.pool;
    const int64_t n = b.in.n;
    const int64_t E = hp.n_embd, H = hp.n_head, QK = M.qk_head_dim, NOPE = M.qk_nope, ROT = hp.n_rot;
    const int64_t R = M.kv_lora_rank, DV = M.v_head_dim, KR = R + ROT, QL = M.q_lora_rank;
    const float eps = hp.rms_eps;

    float* q = grow(ws.mla_q, static_cast<size_t>(n * H * QK));  // q: [n, H, qk_nope + rot]
    if (L.wq_a.data) {
        float* qa = grow(ws.mla_qa, static_cast<size_t>(n * QL));  // qa: [n, q_lora_rank]
        matmul(m, L.wq_a, xn, E, b.in, qa, QL);
        kernels::rms_norm_rows(qa, QL, L.q_a_norm.data, qa, QL, n, QL, eps, pool);
        matmul(m, L.wq_b, qa, QL, b.in, q, H * QK);
    } else {
        matmul(m, L.wq, xn, E, b.in, q, H * QK);
    }
    float* kv = grow(ws.mla_kv, static_cast<size_t>(n * KR));  // kv: [n, kv_lora_rank | rot]
    matmul(m, L.wkv_a_mqa, xn, E, b.in, kv, KR);
    const kernels::RopeConfig& rope = hp.rope;
    for_rows(pool, n, H * QK, [&](int64_t t) {
        float cs[kMaxRot];
        kernels::rope_cache(rope, b.pos_of_row[t], cs, m.isa);
        for (int64_t h = 0; h < H; ++h) kernels::rope_apply(rope, cs, q + (t * H + h) * QK + NOPE, m.isa);
        float* row = kv + t * KR;
        kernels::rope_apply(rope, cs, row + R, m.isa);
        kernels::rms_norm(row, L.kv_a_norm.data, row, R, eps);
    });
    for (size_t si = 0; si < b.n_segs; ++si) {
        const int64_t first = b.in.groups[si].begin;
        b.segs[si].cache->store_k(il, b.segs[si].pos0, kv + first * KR, KR, b.segs[si].n, m.isa);
    }
    const int64_t nr = b.out.n;
    if (nr == 0) return;

    // The query rows of the output rows, compacted like them: qo: [nr, H, qk_nope + rot].
    const float* qo = q;
    if (nr != n) {
        float* packed = grow(ws.mla_qsel, static_cast<size_t>(nr * H * QK));
        for (size_t si = 0; si < b.n_segs; ++si) {
            const int64_t cnt = b.out.groups[si].count;
            const int64_t src = b.in.groups[si].begin + b.segs[si].n - cnt;
            std::memcpy(packed + b.out.groups[si].begin * H * QK, q + src * H * QK, sizeof(float) * cnt * H * QK);
        }
        qo = packed;
    }
    // Absorbed queries of the output rows: qa[t, h] = [k_b[h] · q_nope[t, h] | q_pe[t, h]].
    float* qabs = grow(ws.mla_qabs, static_cast<size_t>(nr * H * KR));  // qabs: [nr, H, kv_lora_rank + rot]
    for (int64_t h = 0; h < H; ++h) matmul(m, L.k_b[h], qo + h * QK, H * QK, b.out, qabs + h * KR, H * KR);
    for_rows(pool, nr, H * ROT, [&](int64_t t) {
        for (int64_t h = 0; h < H; ++h) {
            std::memcpy(qabs + (t * H + h) * KR + R, qo + (t * H + h) * QK + NOPE, sizeof(float) * ROT);
        }
    });
    float* olat = grow(ws.mla_olat, static_cast<size_t>(nr * H * R));  // olat: [nr, H, kv_lora_rank]
    kernels::AttentionShape shape = base;
    shape.n_head = static_cast<int>(H);
    shape.n_head_kv = 1;
    shape.head_dim = static_cast<int>(KR);
    shape.head_dim_v = static_cast<int>(R);
    for (size_t si = 0; si < b.n_segs; ++si) {
        const BatchSegment& seg = b.segs[si];
        const int64_t cnt = b.out.groups[si].count, at = b.out.groups[si].begin;
        if (cnt == 0) continue;
        kernels::attention(segment_shape(shape, seg), seg.cache->k_rows(il), seg.cache->v_rows(il), qabs + at * H * KR,
                           H * KR, cnt, seg.pos0 + seg.n - static_cast<uint32_t>(cnt), olat + at * H * R, H * R, pool,
                           m.isa);
    }
    for (int64_t h = 0; h < H; ++h) matmul(m, L.v_b[h], olat + h * R, H * R, b.out, attn + h * DV, H * DV);
}

}  // namespace

void forward_batch(ModelState& m, const BatchSegment* segs, size_t n_segs, const std::function<bool()>& should_abort) {
    if (m.device) return m.device->forward_batch(segs, n_segs, should_abort);
    const HParams& hp = m.hp;
    const ModelWeights& W = m.w;
    Workspace& ws = m.ws;
    runtime::ThreadPool& pool = *m.pool;
    const bool mla = m.spec->attention == Attention::Mla;
    const int64_t E = hp.n_embd;
    const int64_t AW = mla ? static_cast<int64_t>(hp.n_head) * hp.mla.v_head_dim : hp.q_width();  // attention out width
    const float eps = hp.rms_eps;

    // The batch's rows: segment after segment. `in` holds every row; from the last layer on, `rows`
    // holds only the rows that produce logits (each segment's last n - out_begin), compacted.
    RowSet in, rows, out_rows;
    for (size_t si = 0; si < n_segs; ++si) {
        if (segs[si].out_begin > segs[si].n) throw Error(ErrorCode::InvalidArgument, "forward: out_begin past the segment");
        in.groups.push_back({in.n, segs[si].n});
        out_rows.groups.push_back({out_rows.n, segs[si].n - segs[si].out_begin});
        in.n += segs[si].n;
        out_rows.n += segs[si].n - segs[si].out_begin;
    }
    const int64_t n = in.n;
    if (n == 0) return;
    rows = in;

    float* x = grow(ws.x, static_cast<size_t>(n) * E);    // x: [n, n_embd]
    float* xn = grow(ws.xn, static_cast<size_t>(n) * E);  // xn: [n, n_embd]
    float* attn = grow(ws.attn, static_cast<size_t>(n) * AW);  // attn: [n, AW]
    float* proj = grow(ws.proj, static_cast<size_t>(n) * E);   // proj: [n, n_embd]
    uint32_t* pos_of_row = grow(ws.pos_of_row, static_cast<size_t>(n));  // pos_of_row: [n]

    // Token embeddings: the rows of token_embd, dequantized (ggml_get_rows).
    for (size_t si = 0; si < n_segs; ++si) {
        const WeightMatrix& te = W.token_embd;
        const BatchSegment& seg = segs[si];
        float* xs = x + in.groups[si].begin * E;
        for (uint32_t t = 0; t < seg.n; ++t) pos_of_row[in.groups[si].begin + t] = seg.pos0 + t;
        for_rows(pool, seg.n, E, [&](int64_t t) {
            quant::dequantize(te.type, te.data + static_cast<size_t>(seg.tokens[t]) * te.row_bytes, xs + t * E, E, m.isa,
                              "token_embd.weight");
        });
    }

    kernels::AttentionShape shape;
    shape.n_head = static_cast<int>(hp.n_head);
    shape.n_head_kv = static_cast<int>(hp.n_head_kv);
    shape.head_dim = static_cast<int>(hp.head_dim);
    shape.kq_scale = hp.kq_scale;

    for (uint32_t il = 0; il < hp.n_layer; ++il) {
        if (should_abort && should_abort()) throw Error(ErrorCode::Aborted, "evaluation aborted");
        const LayerWeights& L = W.layers[il];
        const bool last = il + 1 == hp.n_layer;

        // Attention: every row's K and V go into the cache; queries only where outputs are needed.
        kernels::rms_norm_rows(x, E, L.attn_norm.data, xn, E, n, E, eps, pool);
        const BatchRows b{segs, n_segs, in, last ? out_rows : in, pos_of_row};
        if (mla) {
            attention_mla(m, b, L, il, xn, shape, attn);
        } else {
            attention_gqa(m, b, L, il, xn, shape, attn);
        }
        if (last) {
            if (out_rows.n == 0) break;  // last layer of a batch whose logits nobody reads
            // Keep each segment's output rows, compacted in segment order (sources never lie
            // before their destinations, so moving front to back is safe).
            if (out_rows.n != n) {
                for (size_t si = 0; si < n_segs; ++si) {
                    const int64_t cnt = out_rows.groups[si].count;
                    const int64_t src = in.groups[si].begin + segs[si].n - cnt;
                    std::memmove(x + out_rows.groups[si].begin * E, x + src * E, sizeof(float) * static_cast<size_t>(cnt * E));
                }
            }
            rows = out_rows;
        }
        const int64_t nr = rows.n;
        matmul(m, L.wo, attn, AW, rows, proj, E);
        add_bias(pool, proj, E, nr, L.bo);
        add_residual(pool, x, proj, nr, E);  // x: [nr, n_embd] = attention out + residual

        // FFN.
        kernels::rms_norm_rows(x, E, L.ffn_norm.data, xn, E, nr, E, eps, pool);
        if (L.moe) {
            const int32_t* routed = nullptr;
            moe_ffn(m, L, xn, rows, proj, &routed);
            // Expert-usage statistics of the segments that asked for them: [n_layer, n_expert].
            const int64_t K = hp.n_expert_used;
            for (size_t si = 0; si < n_segs; ++si) {
                uint32_t* counts = segs[si].expert_counts;
                if (!counts) continue;
                counts += static_cast<size_t>(il) * hp.n_expert;
                const kernels::RowGroup& g = rows.groups[si];
                for (int64_t r = g.begin * K; r < (g.begin + g.count) * K; ++r) ++counts[routed[r]];
            }
        } else {
            dense_ffn(m, L, xn, rows, proj);
        }
        add_residual(pool, x, proj, nr, E);
    }

    if (out_rows.n == 0) return;
    // rows == out_rows here: the last layer compacted the output rows to the front of x.
    kernels::rms_norm_rows(x, E, W.output_norm.data, xn, E, out_rows.n, E, eps, pool);
    const int64_t V = hp.n_vocab;
    size_t with_logits = 0;
    for (size_t si = 0; si < n_segs; ++si) with_logits += out_rows.groups[si].count > 0;
    if (with_logits == 1) {
        for (size_t si = 0; si < n_segs; ++si) {
            if (out_rows.groups[si].count == 0) continue;
            RowSet one;
            one.groups.push_back({0, out_rows.groups[si].count});
            one.n = out_rows.groups[si].count;
            matmul(m, W.output, xn + out_rows.groups[si].begin * E, E, one, segs[si].logits, V);
        }
        return;
    }
    float* logits = grow(ws.logits, static_cast<size_t>(out_rows.n * V));  // logits: [out_rows.n, n_vocab]
    matmul(m, W.output, xn, E, out_rows, logits, V);
    for (size_t si = 0; si < n_segs; ++si) {
        const int64_t cnt = out_rows.groups[si].count;
        if (cnt > 0) std::memcpy(segs[si].logits, logits + out_rows.groups[si].begin * V, sizeof(float) * cnt * V);
    }
}

void forward_chunk(ModelState& m, kv::KvCache& cache, const int32_t* tokens, uint32_t n, uint32_t pos0,
                   uint32_t out_begin, float* logits, const std::atomic<bool>* cancel) {
    const BatchSegment seg{&cache, tokens, n, pos0, out_begin, logits, nullptr};
    std::function<bool()> abort;
    if (cancel) abort = [cancel] { return cancel->load(std::memory_order_relaxed); };
    forward_batch(m, &seg, 1, abort);
}

}  // namespace moe::model
