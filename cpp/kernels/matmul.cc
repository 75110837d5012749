// Dense and sparse-expert matrix products on the CPU (interface and numerics in matmul.h).
//
// Both products run in two steps:
//   1. every activation row (every distinct source row for experts) is converted once to the
//      weight type's dot format (quant::vec_dot_type) into a scratch buffer (Q8_0 on x86 with
//      ggml's x86 quantize_row_q8_0 rule, see quant::quantize_row_q8_0_x86); F32 weights dot the
//      F32 rows directly;
//   2. the weight rows are cut into chunks handed out to the pool's threads through an atomic
//      counter; a chunk dots each of its weight rows with every activation row routed to it, so a
//      weight row is read from memory once per call (activations are walked in blocks that stay in
//      cache).
// Every output element is one dot of one weight row with one converted activation row, so the
// result does not depend on the thread count or on how rows are grouped: matmul_experts equals a
// loop of single-row matmuls bit for bit. The dot's float order is the one llama.cpp's x86 CPU
// backend uses for the same product (select_llama_order, f32_tile), which for Q8_0 / Q4_0 dense
// products depends on whether the call has one token or several.
#include "matmul.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "../common/error.h"
#include "ops.h"
#include "../quant/ggml_types.h"
#include "../quant/quant.h"
#include "../quant/vec_dot.h"

namespace moe::kernels {

namespace {

using quant::GgmlType;

constexpr uint32_t kF32 = static_cast<uint32_t>(GgmlType::F32);

// Activation rows of one tile are walked in blocks of about this many bytes, so a block stays in
// L2 while the tile's weight rows are dotted with it.
constexpr size_t kActBlockBytes = 192 * 1024;

// Chunks handed out per thread (more balances better; each costs one atomic increment).
constexpr int64_t kChunksPerThread = 8;

// Below this much work (weight bytes times activation rows, ~10 us on one core) a product runs on
// the calling thread: waking the pool would cost about as much as it saves.
constexpr uint64_t kMinParallelWork = 256 * 1024;

// Conversion of one activation row costs about as much as a few weight rows; below this many
// elements in all rows the conversion stays on the calling thread.
constexpr int64_t kParallelConvertElements = 64 * 1024;

// Batched F32 products in tinyBLAS order (what llama.cpp does for >= 2 tokens, rows % 4 == 0 and
// n_in % simd width == 0). A prompt's tokens and the same tokens one at a time then take different
// orders, as in llama.cpp; routers are F32, and matching its order keeps near-tie expert choices
// the same as llama.cpp's.
constexpr bool kF32TinyBlasOrder = true;

// Fused SwiGLU chunks start on multiples of this (the widest vector SiLU is 16 lanes).
constexpr int64_t kSwigluAlign = 64;

// What a product needs to know about its weight type on the chosen level.
struct DotPlan {
    uint32_t weight_type = 0;
    uint32_t act_type = 0;
    quant::VecDotFn dot = nullptr;
    quant::QuantizeRowFn convert = nullptr;  // nullptr for F32: rows are used as they are
    size_t act_row_bytes = 0;
    // F32 weights: llama.cpp's float summation order, not the vec_dot table's (see f32_tile).
    bool f32 = false;
    bool f32_gemm = false;   // tinyBLAS order (batched dense product of a suitable shape)
    // F16 / BF16 weights in llama.cpp's x86 orders, both operands widened to fp32 (exact):
    // batched dense products in tinyBLAS order (half_gemm: dot_gemm, or VDPBF16PS's order for BF16
    // on CPUs with AVX512-BF16), everything else in ggml_vec_dot_f16 / _bf16's (half_vec).
    bool half_gemm = false;
    bool half_vec = false;
    bool bf16dp = false;
    int64_t f32_vec = 0;     // ggml_vec_dot_f32's vector part of a row (gemv order)
    cpu::Isa isa = cpu::Isa::Scalar;
    // Activation rows t < n_head use dot_head instead of dot (ggml's repacked gemm, which takes
    // the rows of a batch four at a time and leaves the rest to its gemv).
    quant::VecDotFn dot_head = nullptr;
    int64_t n_head = 0;
    // Four-row twins of dot / dot_head with the same per-output order (nullptr: none), and their
    // two-weight-row forms.
    quant::VecDot4Fn dot4 = nullptr;
    quant::VecDot4Fn dot4_head = nullptr;
    quant::VecDot2x4Fn dot2x4 = nullptr;
    quant::VecDot2x4Fn dot2x4_head = nullptr;
};

std::string type_str(uint32_t type) { return quant::type_name(type); }

DotPlan plan_for(uint32_t type, int64_t n_in, int64_t n_out, size_t row_bytes, cpu::Isa isa, const char* op) {
    const uint32_t act = dot_type_of(type);  // throws UnsupportedType
    const quant::TypeTraits& wt = *quant::type_traits(type);
    const quant::TypeTraits& at = *quant::type_traits(act);
    if (n_in <= 0 || n_in % wt.block_size != 0 || n_in % at.block_size != 0) {
        throw Error(ErrorCode::InvalidArgument, std::string(op) + ": row length " + std::to_string(n_in) +
                                                    " is not a positive multiple of the " + type_str(type) +
                                                    " block size " + std::to_string(wt.block_size));
    }
    if (n_out < 0) {
        throw Error(ErrorCode::InvalidArgument, std::string(op) + ": negative row count " + std::to_string(n_out));
    }
    if (row_bytes < quant::row_size(wt, n_in)) {
        throw Error(ErrorCode::InvalidArgument, std::string(op) + ": row stride of " + std::to_string(row_bytes) +
                                                    " bytes is less than a " + type_str(type) + " row of " +
                                                    std::to_string(n_in) + " elements (" +
                                                    std::to_string(quant::row_size(wt, n_in)) + " bytes)");
    }
    DotPlan p;
    p.weight_type = type;
    p.act_type = act;
    p.dot = quant::vec_dot_kernels_for(isa).dot[type];
    if (act != kF32) p.convert = quant::kernels_for(isa).quantize[act];
    p.act_row_bytes = quant::row_size(at, n_in);
    p.isa = isa;
    const bool x86 = isa == cpu::Isa::Avx2 || isa == cpu::Isa::Avx512;
    if (x86 && act == static_cast<uint32_t>(GgmlType::Q8_0)) {
        // llama.cpp's x86 build converts activations with the AVX quantize_row_q8_0 (127 / amax,
        // round half to even), not the reference rule our weight quantizer follows.
        p.convert = quant::quantize_row_q8_0_x86;
    }
    if (x86 && act == static_cast<uint32_t>(GgmlType::Q8_1)) p.convert = quant::quantize_row_q8_1_x86;
    {
        const bool f16 = type == static_cast<uint32_t>(GgmlType::F16), bf16 = type == static_cast<uint32_t>(GgmlType::BF16);
        // ggml_vec_dot_f16's AVX-512 / AVX2 shape; BF16 only where its AVX-512 paths are reproduced.
        p.half_vec = (f16 && x86) || (bf16 && isa == cpu::Isa::Avx512);
        p.bf16dp = bf16 && isa == cpu::Isa::Avx512 && cpu::features().avx512_bf16;
    }
    if (type == kF32) {
        p.f32 = true;
        const int64_t w = simd_width(isa);
        p.f32_vec = n_in / (4 * w) * (4 * w);
    }
    if (!p.dot || (act != kF32 && !p.convert)) {
        throw Error(ErrorCode::UnsupportedType, std::string(op) + ": no " + cpu::isa_name(isa) + " kernel for " +
                                                    type_str(type));
    }
    return p;
}

// Picks the dot with llama.cpp's float order for this product (x86 CPU backend):
//  - Q4_0 / MXFP4 / Q4_K weights with a multiple of 8 rows are repacked by its CPU_REPACK buffer
//    type (block_q4_0x8 / block_mxfp4x8 / block_q4_Kx8) and every product with them, dense or
//    expert, single token or batch, runs the x8 kernels: mul_mat_id the gemv row by row, a dense
//    product the gemm on its first n_tokens - n_tokens % 4 rows and the gemv on the rest;
//  - other Q8_0 / Q4_0 dense products of two or more tokens go to llamafile's tinyBLAS;
//  - everything else is ggml_vec_dot (the `dot` table).
// Only x86 tables have these entries; other levels keep `dot`.
void select_llama_order(DotPlan& p, uint32_t type, int64_t n_out, int64_t n_tokens, bool dense, bool repackable = true) {
    const quant::VecDotKernels& k = quant::vec_dot_kernels_for(p.isa);
    if (repackable && n_out % 8 == 0 && k.repack[type]) {
        p.dot = k.repack[type];
        if (dense && k.repack_gemm[type]) {
            p.dot_head = k.repack_gemm[type];
            p.n_head = n_tokens / 4 * 4;
        }
    } else if (dense && n_tokens >= 2 && k.tinyblas[type]) {
        p.dot = k.tinyblas[type];
    }
}

// The four-row kernels whose one-row twins are exactly the plan's dot / dot_head.
void pair_four_row_kernels(DotPlan& p, uint32_t type) {
    const quant::VecDotKernels& k = quant::vec_dot_kernels_for(p.isa);
    for (const quant::Dot4& d : {k.dot4[type], k.repack4[type], k.repack_gemm4[type]}) {
        if (d.four && d.one == p.dot) p.dot4 = d.four, p.dot2x4 = d.two_by_four;
        if (d.four && p.dot_head && d.one == p.dot_head) p.dot4_head = d.four, p.dot2x4_head = d.two_by_four;
    }
}

// Per-calling-thread buffers, grown as needed and reused across calls (matmul is called many
// times per token). Workers only read or write through pointers into them while the caller waits
// in pool.run, so one set per calling thread suffices.
struct Scratch {
    std::vector<uint8_t> act;            // converted activation rows
    std::vector<const uint8_t*> rows;    // activation row of each output row, in work order
    std::vector<float*> outs;            // output row of each output row, in work order
    std::vector<float*> up_outs;         // fused SwiGLU: up-product row of each output row
    std::vector<int32_t> sources;        // distinct source rows (experts)
    std::vector<int64_t> counts;         // rows per expert, then offsets
    struct Item {
        int64_t expert, o0, o1, first, count;
    };
    std::vector<Item> items;
};

Scratch& scratch() {
    static thread_local Scratch s;
    return s;
}

// F32 weights in llama.cpp's orders. Its CPU backend hands a batched F32 mul_mat (two or more
// tokens) to llamafile's tinyBLAS when the weight has a multiple of 4 rows and the row length is a
// multiple of the vector width; tinyBLAS keeps one lane-strided FMA chain per output (dot_gemm,
// whatever its register tile). Anything else (single tokens, other shapes, mul_mat_id) goes through
// ggml_vec_dot_f32: four accumulators over the vector part, then an fp32 FMA tail (dot_gemv without
// the double tail, which only its F16 dot has). Matching these orders bit for bit keeps F32 routers
// choosing the same experts as llama.cpp.
void f32_tile(const DotPlan& plan, const uint8_t* w, size_t row_bytes, int64_t n_in, int64_t o0, int64_t o1,
              const uint8_t* const* act_rows, float* const* y_rows, int64_t t0, int64_t t1) {
    const auto wrow = [&](int64_t o) { return reinterpret_cast<const float*>(w + static_cast<size_t>(o) * row_bytes); };
    const auto arow = [&](int64_t t) { return reinterpret_cast<const float*>(act_rows[t]); };
    if (!plan.f32_gemm) {
        for (int64_t o = o0; o < o1; ++o) {
            for (int64_t t = t0; t < t1; ++t) y_rows[t][o] = dot_gemv(wrow(o), arow(t), n_in, plan.f32_vec, false, plan.isa);
        }
        return;
    }
    // 4 x 4 register tiles (same per-output chains as dot_gemm, each loaded vector used four times).
    int64_t o = o0;
    for (; o + 4 <= o1; o += 4) {
        const float* ws[4] = {wrow(o), wrow(o + 1), wrow(o + 2), wrow(o + 3)};
        int64_t t = t0;
        for (; t + 4 <= t1; t += 4) {
            const float* as[4] = {arow(t), arow(t + 1), arow(t + 2), arow(t + 3)};
            float tile[16];
            dot_gemm_4x4(as, ws, n_in, tile, plan.isa);
            for (int r = 0; r < 4; ++r) {
                for (int c = 0; c < 4; ++c) y_rows[t + r][o + c] = tile[4 * r + c];
            }
        }
        for (; t < t1; ++t) {
            for (int c = 0; c < 4; ++c) y_rows[t][o + c] = dot_gemm(ws[c], arow(t), n_in, plan.isa);
        }
    }
    for (; o < o1; ++o) {
        for (int64_t t = t0; t < t1; ++t) y_rows[t][o] = dot_gemm(wrow(o), arow(t), n_in, plan.isa);
    }
}

// F16 / BF16 weights, batched: tinyBLAS widens both operands to fp32 and runs the F32 kernel's
// lane chains (or VDPBF16PS pairs, bf16dp). Rows are widened into per-thread scratch.
void half_tile(const DotPlan& plan, uint32_t type, const uint8_t* w, size_t row_bytes, int64_t n_in, int64_t o0,
               int64_t o1, const uint8_t* const* act_rows, float* const* y_rows, int64_t t0, int64_t t1) {
    static thread_local std::vector<float> wf, af;
    wf.resize(static_cast<size_t>(n_in));
    af.resize(static_cast<size_t>(n_in * (t1 - t0)));
    for (int64_t t = t0; t < t1; ++t) {
        quant::dequantize(plan.act_type, act_rows[t], af.data() + (t - t0) * n_in, n_in, plan.isa, "activation");
    }
    for (int64_t o = o0; o < o1; ++o) {
        quant::dequantize(type, w + static_cast<size_t>(o) * row_bytes, wf.data(), n_in, plan.isa, "weight");
        for (int64_t t = t0; t < t1; ++t) {
            const float* a = af.data() + (t - t0) * n_in;
            const float* wr = wf.data();
            if (plan.half_gemm) {
                y_rows[t][o] = plan.bf16dp ? dot_gemm_bf16dp(wr, a, n_in) : dot_gemm(wr, a, n_in, plan.isa);
            } else if (type == static_cast<uint32_t>(GgmlType::BF16)) {
                y_rows[t][o] = dot_vec_bf16(wr, a, n_in, plan.bf16dp);
            } else {
                const int64_t step = 4 * simd_width(plan.isa);
                y_rows[t][o] = dot_gemv(wr, a, n_in, n_in / step * step, true, plan.isa);
            }
        }
    }
}

// y_rows[t][o] = dot(W row o, act_rows[t]) for o in [o0, o1) and t in [0, n_act).
void dot_tile(const DotPlan& plan, const uint8_t* w, size_t row_bytes, int64_t n_in, int64_t o0, int64_t o1,
              const uint8_t* const* act_rows, float* const* y_rows, int64_t n_act) {
    const int64_t block = std::max<int64_t>(1, static_cast<int64_t>(kActBlockBytes / plan.act_row_bytes));
    const quant::VecDotFn dot = plan.dot;
    for (int64_t t0 = 0; t0 < n_act; t0 += block) {
        const int64_t t1 = std::min(n_act, t0 + block);
        if (plan.f32) {
            f32_tile(plan, w, row_bytes, n_in, o0, o1, act_rows, y_rows, t0, t1);
            continue;
        }
        if (plan.half_gemm || plan.half_vec) {
            half_tile(plan, plan.weight_type, w, row_bytes, n_in, o0, o1, act_rows, y_rows, t0, t1);
            continue;
        }
        const int64_t th = std::min(t1, std::max(t0, plan.n_head));  // [t0, th): dot_head
        // Activation rows [t, end) of weight row o with the one- and four-row kernels.
        const auto rows_of = [&](int64_t o, int64_t t, int64_t end, quant::VecDot4Fn four_rows, quant::VecDotFn one_row) {
            const uint8_t* row = w + static_cast<size_t>(o) * row_bytes;
            float four[4];
            if (four_rows) {
                for (; t + 4 <= end; t += 4) {
                    four_rows(n_in, row, reinterpret_cast<const void* const*>(act_rows + t), four);
                    for (int r = 0; r < 4; ++r) y_rows[t + r][o] = four[r];
                }
            }
            for (; t < end; ++t) y_rows[t][o] = one_row(n_in, row, act_rows[t]);
        };
        // Weight rows o, o + 1 over activation rows [t, end): groups of four through the two-row
        // kernel, the rest row by row.
        const auto pair_of = [&](int64_t o, int64_t t, int64_t end, quant::VecDot2x4Fn two_rows, quant::VecDot4Fn four_rows,
                                 quant::VecDotFn one_row) {
            const uint8_t* row = w + static_cast<size_t>(o) * row_bytes;
            float eight[8];
            for (; t + 4 <= end; t += 4) {
                two_rows(n_in, row, row_bytes, reinterpret_cast<const void* const*>(act_rows + t), eight);
                for (int r = 0; r < 4; ++r) {
                    y_rows[t + r][o] = eight[r];
                    y_rows[t + r][o + 1] = eight[4 + r];
                }
            }
            rows_of(o, t, end, four_rows, one_row);
            rows_of(o + 1, t, end, four_rows, one_row);
        };
        int64_t o = o0;
        const bool pairs = (th == t0 || plan.dot2x4_head) && (th == t1 || plan.dot2x4);
        if (pairs) {
            for (; o + 2 <= o1; o += 2) {
                if (th > t0) pair_of(o, t0, th, plan.dot2x4_head, plan.dot4_head, plan.dot_head);
                if (t1 > th) pair_of(o, th, t1, plan.dot2x4, plan.dot4, dot);
            }
        }
        for (; o < o1; ++o) {
            if (th > t0) rows_of(o, t0, th, plan.dot4_head, plan.dot_head);
            rows_of(o, th, t1, plan.dot4, dot);
        }
    }
}

// Runs body(i) for i in [0, n_items) on the pool, items handed out in order through an atomic
// counter; on the calling thread alone when there is one item, one thread, or too little work
// (`work`: weight bytes times activation rows) to pay for waking the pool.
template <typename Body>
void run_items(runtime::ThreadPool& pool, int64_t n_items, const Body& body, uint64_t work = UINT64_MAX) {
    if (n_items <= 0) return;
    if (n_items == 1 || pool.size() == 1 || work < kMinParallelWork) {
        for (int64_t i = 0; i < n_items; ++i) body(i);
        return;
    }
    std::atomic<int64_t> next{0};
    pool.run([&](int, int) {
        for (int64_t i = next.fetch_add(1, std::memory_order_relaxed); i < n_items;
             i = next.fetch_add(1, std::memory_order_relaxed)) {
            body(i);
        }
    });
}

// Converts n_rows activation rows (row r at src_of(r)) into dst, row r at dst + r * act_row_bytes.
template <typename SrcOf>
void convert_rows(const DotPlan& plan, int64_t n_in, int64_t n_rows, const SrcOf& src_of, uint8_t* dst,
                  runtime::ThreadPool& pool) {
    const quant::QuantizeRowFn convert = plan.convert;
    const size_t bytes = plan.act_row_bytes;
    if (n_rows * n_in < kParallelConvertElements || pool.size() == 1) {
        for (int64_t r = 0; r < n_rows; ++r) convert(src_of(r), dst + static_cast<size_t>(r) * bytes, n_in);
        return;
    }
    const int64_t per_item = std::max<int64_t>(1, n_rows / (4 * pool.size()));
    run_items(pool, (n_rows + per_item - 1) / per_item, [&](int64_t i) {
        const int64_t r1 = std::min(n_rows, (i + 1) * per_item);
        for (int64_t r = i * per_item; r < r1; ++r) convert(src_of(r), dst + static_cast<size_t>(r) * bytes, n_in);
    });
}

// Rows per chunk so that about kChunksPerThread chunks exist per thread for `work_rows` weight rows
// in all, each chunk at least min_rows (less when the matrix has fewer rows).
int64_t chunk_rows(int64_t work_rows, int threads, int64_t min_rows) {
    const int64_t target = (work_rows + kChunksPerThread * threads - 1) / (kChunksPerThread * threads);
    return std::max<int64_t>(min_rows, target);
}

void check_buffer(bool ok, const char* op, const char* what) {
    if (!ok) throw Error(ErrorCode::InvalidArgument, std::string(op) + ": " + what);
}

}  // namespace

uint32_t dot_type_of(uint32_t weight_type) {
    const uint32_t act = quant::vec_dot_type(weight_type);
    if (act == quant::kNoDotType) {
        throw Error(ErrorCode::UnsupportedType,
                    std::string("no matrix product for weight type ") + quant::type_name(weight_type));
    }
    return act;
}

namespace {

// The plan of a dense product of n_tokens rows taken on its own: its kernel, and so its float
// order, depends on the row count as llama.cpp's does (one token: vec_dot / gemv; several:
// tinyBLAS or the repacked gemm).
DotPlan dense_plan(const WeightMatrix& w, int64_t n_tokens, cpu::Isa isa, const char* op) {
    DotPlan plan = plan_for(w.type, w.n_in, w.n_out, w.row_bytes, isa, op);
    plan.f32_gemm = kF32TinyBlasOrder && plan.f32 && n_tokens >= 2 && w.n_out % 4 == 0 &&
                    w.n_in % simd_width(isa) == 0 && !w.strided_input;
    // llamafile_sgemm takes batched F16 / BF16 products too (x86 builds; the same shape rules, with
    // 32-element steps for BF16 on AVX512-BF16).
    const bool x86 = isa == cpu::Isa::Avx2 || isa == cpu::Isa::Avx512;
    if (x86 && n_tokens >= 2 && w.n_out % 4 == 0 &&
        (w.type == static_cast<uint32_t>(GgmlType::F16) || w.type == static_cast<uint32_t>(GgmlType::BF16))) {
        plan.half_gemm = w.n_in % (plan.bf16dp ? 32 : simd_width(isa)) == 0;
    }
    select_llama_order(plan, w.type, w.n_out, n_tokens, true, !w.slice_of_3d);
    pair_four_row_kernels(plan, w.type);
    return plan;
}

}  // namespace

void matmul(const WeightMatrix& w, const float* x, int64_t x_stride, int64_t n_tokens, float* y, int64_t y_stride,
            runtime::ThreadPool& pool, cpu::Isa isa) {
    check_buffer(n_tokens >= 0, "matmul", "negative token count");
    const RowGroup all{0, n_tokens};
    matmul_groups(w, x, x_stride, &all, 1, y, y_stride, pool, isa);
}

void matmul_groups(const WeightMatrix& w, const float* x, int64_t x_stride, const RowGroup* groups, size_t n_groups,
                   float* y, int64_t y_stride, runtime::ThreadPool& pool, cpu::Isa isa) {
    static const char* const kOp = "matmul";
    // Single rows share one plan (and one pass over their activations per weight row); every
    // group of several rows keeps the plan it would have alone.
    const DotPlan single = dense_plan(w, 1, isa, kOp);
    int64_t n_tokens = 0, n_single = 0, prev_end = 0;
    for (size_t g = 0; g < n_groups; ++g) {
        check_buffer(groups[g].count >= 0 && groups[g].begin >= prev_end, kOp,
                     "row groups must be ordered, disjoint and non-negative");
        prev_end = groups[g].begin + groups[g].count;
        n_tokens += groups[g].count;
        if (groups[g].count == 1) ++n_single;
    }
    if (n_tokens == 0 || w.n_out == 0) return;
    check_buffer(w.data && x && y, kOp, "null buffer");
    check_buffer(prev_end == 1 || x_stride >= w.n_in, kOp, "activation row stride shorter than a row");
    check_buffer(prev_end == 1 || y_stride >= w.n_out, kOp, "output row stride shorter than a row");

    struct Batch {
        DotPlan plan;
        int64_t first = 0, count = 0;  // slots in the work-order row arrays
    };
    std::vector<Batch> batches;
    batches.reserve(n_groups + 1);
    if (n_single > 0) batches.push_back({single, 0, n_single});

    Scratch& s = scratch();
    s.rows.resize(static_cast<size_t>(n_tokens));
    s.outs.resize(static_cast<size_t>(n_tokens));
    s.sources.resize(static_cast<size_t>(n_tokens));  // activation row of each slot
    {
        int64_t next_single = 0, next_multi = n_single;
        for (size_t g = 0; g < n_groups; ++g) {
            const RowGroup& gr = groups[g];
            if (gr.count == 0) continue;
            int64_t& slot = gr.count == 1 ? next_single : next_multi;
            if (gr.count > 1) batches.push_back({dense_plan(w, gr.count, isa, kOp), slot, gr.count});
            for (int64_t t = gr.begin; t < gr.begin + gr.count; ++t, ++slot) {
                s.sources[slot] = static_cast<int32_t>(t);
                s.outs[slot] = y + t * y_stride;
            }
        }
    }
    if (single.convert) {  // every plan of a weight converts activations the same way
        s.act.resize(static_cast<size_t>(n_tokens) * single.act_row_bytes);
        const int32_t* src = s.sources.data();
        convert_rows(single, w.n_in, n_tokens, [&](int64_t i) { return x + static_cast<int64_t>(src[i]) * x_stride; },
                     s.act.data(), pool);
        for (int64_t i = 0; i < n_tokens; ++i) s.rows[i] = s.act.data() + static_cast<size_t>(i) * single.act_row_bytes;
    } else {
        for (int64_t i = 0; i < n_tokens; ++i) {
            s.rows[i] = reinterpret_cast<const uint8_t*>(x + static_cast<int64_t>(s.sources[i]) * x_stride);
        }
    }

    const int64_t chunk = chunk_rows(w.n_out, pool.size(), 4);
    const int64_t n_chunks = (w.n_out + chunk - 1) / chunk;
    const uint8_t* const* rows = s.rows.data();
    float* const* outs = s.outs.data();
    const uint64_t work = static_cast<uint64_t>(w.n_out) * w.row_bytes * static_cast<uint64_t>(n_tokens);
    run_items(
        pool, n_chunks,
        [&](int64_t i) {
            const int64_t o0 = i * chunk, o1 = std::min(w.n_out, (i + 1) * chunk);
            // The chunk's weight rows stay in cache across the batches.
            for (const Batch& b : batches) {
                dot_tile(b.plan, w.data, w.row_bytes, w.n_in, o0, o1, rows + b.first, outs + b.first, b.count);
            }
        },
        work);
}

namespace {

// matmul_experts, and with `up` the fused gate/up + SwiGLU of matmul_experts_swiglu (then y holds
// the gate products until each chunk's SwiGLU overwrites them, and u the up products).
void experts_impl(const char* kOp, const ExpertMatrix& w, const ExpertMatrix* up, const float* x, int64_t x_stride,
                  const int32_t* source_of_row, const int32_t* expert_of_row, int64_t n_rows, float* y, float* u,
                  int64_t y_stride, runtime::ThreadPool& pool, cpu::Isa isa) {
    DotPlan plan = plan_for(w.type, w.n_in, w.n_out, w.row_bytes, isa, kOp);
    select_llama_order(plan, w.type, w.n_out, n_rows, false);
    pair_four_row_kernels(plan, w.type);
    check_buffer(n_rows >= 0, kOp, "negative row count");
    check_buffer(w.n_expert > 0, kOp, "no experts");
    check_buffer(w.expert_bytes >= static_cast<size_t>(w.n_out) * w.row_bytes, kOp,
                 "expert stride shorter than an expert matrix");
    if (n_rows == 0 || w.n_out == 0) return;
    check_buffer(w.data && x && y && source_of_row && expert_of_row, kOp, "null buffer");
    check_buffer(n_rows == 1 || y_stride >= w.n_out, kOp, "output row stride shorter than a row");
    for (int64_t r = 0; r < n_rows; ++r) {
        if (expert_of_row[r] < 0 || expert_of_row[r] >= w.n_expert) {
            throw Error(ErrorCode::InvalidArgument, std::string(kOp) + ": row " + std::to_string(r) + " names expert " +
                                                        std::to_string(expert_of_row[r]) + " of " +
                                                        std::to_string(w.n_expert));
        }
        if (source_of_row[r] < 0) {
            throw Error(ErrorCode::InvalidArgument, std::string(kOp) + ": row " + std::to_string(r) +
                                                        " has negative source row " + std::to_string(source_of_row[r]));
        }
    }

    Scratch& s = scratch();

    // Distinct source rows, each converted once; slot of a source = its index in s.sources.
    s.sources.assign(source_of_row, source_of_row + n_rows);
    std::sort(s.sources.begin(), s.sources.end());
    s.sources.erase(std::unique(s.sources.begin(), s.sources.end()), s.sources.end());
    check_buffer(s.sources.size() == 1 || x_stride >= w.n_in, kOp, "activation row stride shorter than a row");
    const int64_t n_sources = static_cast<int64_t>(s.sources.size());
    if (plan.convert) {
        s.act.resize(static_cast<size_t>(n_sources) * plan.act_row_bytes);
        const int32_t* src = s.sources.data();
        convert_rows(plan, w.n_in, n_sources, [&](int64_t i) { return x + static_cast<int64_t>(src[i]) * x_stride; },
                     s.act.data(), pool);
    }
    auto act_row_of = [&](int32_t source) -> const uint8_t* {
        if (!plan.convert) return reinterpret_cast<const uint8_t*>(x + static_cast<int64_t>(source) * x_stride);
        const int64_t slot = std::lower_bound(s.sources.begin(), s.sources.end(), source) - s.sources.begin();
        return s.act.data() + static_cast<size_t>(slot) * plan.act_row_bytes;
    };

    // Rows grouped by expert (counting sort; rows of one expert keep their order).
    s.counts.assign(static_cast<size_t>(w.n_expert) + 1, 0);
    for (int64_t r = 0; r < n_rows; ++r) ++s.counts[static_cast<size_t>(expert_of_row[r]) + 1];
    for (int64_t e = 0; e < w.n_expert; ++e) s.counts[e + 1] += s.counts[e];  // counts[e] = first slot of e
    s.rows.resize(static_cast<size_t>(n_rows));
    s.outs.resize(static_cast<size_t>(n_rows));
    if (up) s.up_outs.resize(static_cast<size_t>(n_rows));
    {
        std::vector<int64_t>& next = s.counts;  // advanced while filling, restored below
        for (int64_t r = 0; r < n_rows; ++r) {
            const int64_t at = next[static_cast<size_t>(expert_of_row[r])]++;
            s.rows[at] = act_row_of(source_of_row[r]);
            s.outs[at] = y + r * y_stride;
            if (up) s.up_outs[at] = u + r * y_stride;
        }
        for (int64_t e = w.n_expert; e > 0; --e) next[e] = next[e - 1];
        next[0] = 0;
    }

    // Work items: each active expert's weight rows in chunks; experts with more routed rows get
    // shorter chunks so items cost about the same.
    int64_t total_work = 0;
    for (int64_t e = 0; e < w.n_expert; ++e) total_work += (s.counts[e + 1] - s.counts[e]) * w.n_out;
    const int64_t target = std::max<int64_t>(1, total_work / (kChunksPerThread * pool.size()));
    s.items.clear();
    for (int64_t e = 0; e < w.n_expert; ++e) {
        const int64_t first = s.counts[e], count = s.counts[e + 1] - s.counts[e];
        if (count == 0) continue;
        int64_t chunk = std::min(w.n_out, std::max<int64_t>(4, target / count));
        // Fused SwiGLU runs per chunk; chunks that start on a multiple of the widest vector keep
        // its SIMD/scalar split (and so its results) identical to a whole-row SwiGLU.
        if (up) chunk = std::min(w.n_out, (chunk + kSwigluAlign - 1) / kSwigluAlign * kSwigluAlign);
        for (int64_t o = 0; o < w.n_out; o += chunk) s.items.push_back({e, o, std::min(w.n_out, o + chunk), first, count});
    }

    const Scratch::Item* items = s.items.data();
    const uint8_t* const* rows = s.rows.data();
    float* const* outs = s.outs.data();
    float* const* up_outs = up ? s.up_outs.data() : nullptr;
    run_items(
        pool, static_cast<int64_t>(s.items.size()),
        [&](int64_t i) {
            const Scratch::Item& it = items[i];
            const WeightMatrix m = w.expert(it.expert);
            dot_tile(plan, m.data, m.row_bytes, m.n_in, it.o0, it.o1, rows + it.first, outs + it.first, it.count);
            if (!up) return;
            const WeightMatrix mu = up->expert(it.expert);
            dot_tile(plan, mu.data, mu.row_bytes, mu.n_in, it.o0, it.o1, rows + it.first, up_outs + it.first, it.count);
            for (int64_t r = it.first; r < it.first + it.count; ++r) {
                swiglu(outs[r] + it.o0, up_outs[r] + it.o0, outs[r] + it.o0, it.o1 - it.o0, isa);
            }
        },
        static_cast<uint64_t>(total_work) * w.row_bytes * (up ? 2 : 1));
}

}  // namespace

void matmul_experts(const ExpertMatrix& w, const float* x, int64_t x_stride, const int32_t* source_of_row,
                    const int32_t* expert_of_row, int64_t n_rows, float* y, int64_t y_stride,
                    runtime::ThreadPool& pool, cpu::Isa isa) {
    experts_impl("matmul_experts", w, nullptr, x, x_stride, source_of_row, expert_of_row, n_rows, y, nullptr, y_stride,
                 pool, isa);
}

void matmul_experts_swiglu(const ExpertMatrix& gate, const ExpertMatrix& up, const float* x, int64_t x_stride,
                           const int32_t* source_of_row, const int32_t* expert_of_row, int64_t n_rows, float* y,
                           float* u_scratch, int64_t y_stride, runtime::ThreadPool& pool, cpu::Isa isa) {
    static const char* const kOp = "matmul_experts_swiglu";
    check_buffer(gate.type == up.type && gate.n_in == up.n_in && gate.n_out == up.n_out && gate.n_expert == up.n_expert &&
                     gate.row_bytes == up.row_bytes && gate.expert_bytes == up.expert_bytes,
                 kOp, "gate and up differ in type or shape");
    check_buffer(n_rows == 0 || (up.data && u_scratch), kOp, "null buffer");
    experts_impl(kOp, gate, &up, x, x_stride, source_of_row, expert_of_row, n_rows, y, u_scratch, y_stride, pool, isa);
}


void matmul_reference(const WeightMatrix& w, const float* x, int64_t x_stride, int64_t n_tokens, float* y,
                      int64_t y_stride) {
    static const char* const kOp = "matmul_reference";
    plan_for(w.type, w.n_in, w.n_out, w.row_bytes, cpu::Isa::Scalar, kOp);
    check_buffer(n_tokens >= 0, kOp, "negative token count");
    if (n_tokens == 0 || w.n_out == 0) return;
    check_buffer(w.data && x && y, kOp, "null buffer");
    std::vector<float> row(static_cast<size_t>(w.n_in));
    for (int64_t o = 0; o < w.n_out; ++o) {
        quant::dequantize(w.type, w.data + static_cast<size_t>(o) * w.row_bytes, row.data(), w.n_in, cpu::Isa::Scalar);
        for (int64_t t = 0; t < n_tokens; ++t) {
            const float* xt = x + t * x_stride;
            double sum = 0.0;
            for (int64_t k = 0; k < w.n_in; ++k) sum += static_cast<double>(row[k]) * static_cast<double>(xt[k]);
            y[t * y_stride + o] = static_cast<float>(sum);
        }
    }
}

}  // namespace moe::kernels
