// Matrix products of quantized weights with F32 activations, as ggml's CPU backend computes them:
// every activation row is converted once to the weight type's dot format (F32 for F32, F16 for F16,
// BF16 for BF16, Q8_0 for Q4_0/Q5_0/Q8_0/MXFP4, Q8_1 for Q4_1/Q5_1, Q8_K for Q2_K..Q6_K), then
// each output is an integer/float block dot product. Knows tensors, not architectures.
#pragma once

#include <cstddef>
#include <cstdint>

#include "../cpu/cpu_features.h"
#include "../runtime/thread_pool.h"

namespace moe::kernels {

// A 2-D weight as stored in GGUF: n_out rows of n_in elements (ggml {ne0 = n_in, ne1 = n_out}).
struct WeightMatrix {
    const uint8_t* data = nullptr;
    uint32_t type = 0;        // ggml type id
    int64_t n_in = 0;         // K: elements per row (ne0)
    int64_t n_out = 0;        // N: rows (ne1)
    size_t row_bytes = 0;     // bytes per row
    // A slice of a 3-D weight used in a batched ggml_mul_mat (MLA's k_b / v_b): llama.cpp keeps
    // such weights out of its repack buffer, so their products take the plain kernels' order.
    bool slice_of_3d = false;
    // llama.cpp multiplies this weight with a non-contiguous (permuted) src1 (MLA's k_b and q_nope):
    // an F32 weight then skips llamafile's tinyBLAS (it needs src1 contiguous or converted).
    bool strided_input = false;
};

// A 3-D expert weight: n_expert matrices of n_out rows of n_in (ggml {n_in, n_out, n_expert}).
struct ExpertMatrix {
    const uint8_t* data = nullptr;
    uint32_t type = 0;
    int64_t n_in = 0;
    int64_t n_out = 0;
    int64_t n_expert = 0;
    size_t row_bytes = 0;
    size_t expert_bytes = 0;  // n_out * row_bytes

    WeightMatrix expert(int64_t e) const { return {data + static_cast<size_t>(e) * expert_bytes, type, n_in, n_out, row_bytes}; }
};


// y[t, o] = sum_k W[o, k] * x[t, k]
// x: [n_tokens, n_in] (row stride x_stride floats); y: [n_tokens, n_out] (row stride y_stride floats).
void matmul(const WeightMatrix& w, const float* x, int64_t x_stride, int64_t n_tokens, float* y, int64_t y_stride,
            runtime::ThreadPool& pool, cpu::Isa isa);

// Rows [begin, begin + count) of a batch that belong together: one sequence's chunk in a forward
// pass that merges several sequences' tokens.
struct RowGroup {
    int64_t begin = 0;
    int64_t count = 0;
};

// matmul over a merged batch: each group's rows get the float order they would get in a product of
// their own (a single row: vec_dot / gemv; several: tinyBLAS or the repacked gemm), so merging
// sequences into one pass changes no result, while each weight row is still read once for all
// groups. Groups are ordered and disjoint; rows between groups are neither read nor written.
void matmul_groups(const WeightMatrix& w, const float* x, int64_t x_stride, const RowGroup* groups, size_t n_groups,
                   float* y, int64_t y_stride, runtime::ThreadPool& pool, cpu::Isa isa);

// Sparse expert product (ggml mul_mat_id): for every row r in [0, n_rows),
//   y[r, :] = W[expert_of_row[r]] · x[source_of_row[r], :]
// Rows are grouped by expert so each active expert's weights are read once for all rows routed to
// it; each distinct source row is converted to the dot format once.
// x: [*, n_in] (stride x_stride); y: [n_rows, n_out] (stride y_stride).
void matmul_experts(const ExpertMatrix& w, const float* x, int64_t x_stride, const int32_t* source_of_row,
                    const int32_t* expert_of_row, int64_t n_rows, float* y, int64_t y_stride,
                    runtime::ThreadPool& pool, cpu::Isa isa);

// MoE gate/up projections fused with their activation: for every row r (e = expert_of_row[r]),
//   y[r, :] = silu(gate[e] · x[src]) * (up[e] · x[src])
// with the numerics of matmul_experts for both products followed by kernels::swiglu. Each source
// row is converted once for both products, and a chunk's SwiGLU runs right after its two products
// while they are in cache. gate and up must match in type and shape; u_scratch: [n_rows, n_out]
// (stride y_stride) receives the up products.
void matmul_experts_swiglu(const ExpertMatrix& gate, const ExpertMatrix& up, const float* x, int64_t x_stride,
                           const int32_t* source_of_row, const int32_t* expert_of_row, int64_t n_rows, float* y,
                           float* u_scratch, int64_t y_stride, runtime::ThreadPool& pool, cpu::Isa isa);

// Dot format of a weight type (the ggml "vec_dot_type"); throws UnsupportedType if the weight type
// has no dot product.
uint32_t dot_type_of(uint32_t weight_type);

// F32 reference for tests: dequantize W and dot in double with F32 activations (no activation
// quantization), single-threaded.
void matmul_reference(const WeightMatrix& w, const float* x, int64_t x_stride, int64_t n_tokens, float* y,
                      int64_t y_stride);

}  // namespace moe::kernels
