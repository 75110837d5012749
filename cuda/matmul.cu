// The public entry points of matmul.cuh: argument checks, then the kernel for the row count
// (matmul_matvec.cu for at most kMatvecMaxRows rows per weight, matmul_tiles.cu for more).
#include "matmul.cuh"

#include "matmul_internal.cuh"
#include "quant/ggml_types.h"
#include "quant_blocks.cuh"

namespace moe::cuda {

namespace {

using detail::ProductArgs;

// Element counts stay below this so that kernels can index groups and outputs with int.
constexpr int64_t kMaxDim = int64_t{1} << 30;

// The checks matmul.h's plan makes, plus the alignment dequant8's loads assume.
bool valid_weight(const void* data, uint32_t type, int64_t n_in, int64_t n_out, int64_t n_expert, size_t row_bytes,
                  size_t expert_bytes) {
    const quant::TypeTraits* traits = quant::type_traits(type);
    const size_t align = static_cast<size_t>(block_alignment(type));
    if (!traits || align == 0) return false;
    if (n_in <= 0 || n_in >= kMaxDim || n_in % traits->block_size != 0) return false;
    if (n_out < 0 || n_out >= kMaxDim || n_expert < 1 || n_expert >= kMaxDim) return false;
    if (row_bytes < quant::row_size(*traits, n_in) || row_bytes % align != 0) return false;
    if (n_expert > 1 && (expert_bytes < static_cast<size_t>(n_out) * row_bytes || expert_bytes % align != 0)) return false;
    if (reinterpret_cast<uintptr_t>(data) % align != 0) return false;
    return data != nullptr || n_out == 0;
}

// Activations and outputs: a stride may be short only when a single row is read or written.
bool valid_rows(const float* x, int64_t x_stride, bool one_x_row, float* y, int64_t y_stride, int64_t n_rows,
                int64_t n_in, int64_t n_out) {
    if (!x || !y || x_stride < 0 || y_stride < 0) return false;
    if (!one_x_row && x_stride < n_in) return false;
    return n_rows <= 1 || y_stride >= n_out;
}

// The expert-grouped products: the matrix-vector kernel takes every expert with 1..kMatvecMaxRows
// rows and, when some expert can have more, the tile kernel the rest (each finds its own experts in
// d_offsets; see matmul_schedule.cuh).
cudaError_t run_experts(uint32_t type, bool swiglu, const ProductArgs& a, cudaStream_t s) {
    cudaError_t err = detail::launch_matvec(type, swiglu, a, s);
    if (err == cudaSuccess && a.n_rows > kMatvecMaxRows) err = detail::launch_tiles(type, swiglu, a, s);
    return err;
}

ProductArgs expert_args(const DeviceExperts& w, const float* x, int64_t x_stride, const int32_t* d_row_src,
                        const int32_t* d_offsets, int64_t n_rows, float* y, int64_t y_stride) {
    ProductArgs a;
    a.w[0] = static_cast<const uint8_t*>(w.data);
    a.row_bytes[0] = w.row_bytes;
    a.expert_bytes[0] = w.expert_bytes;
    a.n_in = static_cast<int>(w.n_in);
    a.n_out = static_cast<int>(w.n_out);
    a.n_expert = static_cast<int>(w.n_expert);
    a.x = x;
    a.x_stride = x_stride;
    a.row_src = d_row_src;
    a.offsets = d_offsets;
    a.n_rows = n_rows;
    a.y = y;
    a.y_stride = y_stride;
    return a;
}

bool valid_experts(const DeviceExperts& w) {
    return valid_weight(w.data, w.type, w.n_in, w.n_out, w.n_expert, w.row_bytes, w.expert_bytes);
}

}  // namespace

bool can_matmul(uint32_t type) { return block_alignment(type) != 0; }

cudaError_t matmul(const DeviceWeight& w, const float* x, int64_t x_stride, int64_t n_tokens, float* y,
                   int64_t y_stride, cudaStream_t s) {
    if (!valid_weight(w.data, w.type, w.n_in, w.n_out, 1, w.row_bytes, 0) || n_tokens < 0) return cudaErrorInvalidValue;
    if (n_tokens == 0 || w.n_out == 0) return cudaSuccess;
    if (!valid_rows(x, x_stride, n_tokens == 1, y, y_stride, n_tokens, w.n_in, w.n_out)) return cudaErrorInvalidValue;
    ProductArgs a;
    a.w[0] = static_cast<const uint8_t*>(w.data);
    a.row_bytes[0] = w.row_bytes;
    a.n_in = static_cast<int>(w.n_in);
    a.n_out = static_cast<int>(w.n_out);
    a.x = x;
    a.x_stride = x_stride;
    a.n_rows = n_tokens;
    a.y = y;
    a.y_stride = y_stride;
    return n_tokens <= kMatvecMaxRows ? detail::launch_matvec(w.type, false, a, s)
                                      : detail::launch_tiles(w.type, false, a, s);
}

cudaError_t matmul_experts(const DeviceExperts& w, const float* x, int64_t x_stride, const int32_t* d_row_src,
                           const int32_t* d_offsets, int64_t n_rows, float* y, int64_t y_stride, cudaStream_t s) {
    if (!valid_experts(w) || n_rows < 0) return cudaErrorInvalidValue;
    if (n_rows == 0 || w.n_out == 0) return cudaSuccess;
    if (!valid_rows(x, x_stride, false, y, y_stride, n_rows, w.n_in, w.n_out) || !d_row_src || !d_offsets) {
        return cudaErrorInvalidValue;
    }
    return run_experts(w.type, false, expert_args(w, x, x_stride, d_row_src, d_offsets, n_rows, y, y_stride), s);
}

cudaError_t matmul_experts_swiglu(const DeviceExperts& gate, const DeviceExperts& up, const float* x,
                                  int64_t x_stride, const int32_t* d_row_src, const int32_t* d_offsets,
                                  int64_t n_rows, float* y, int64_t y_stride, cudaStream_t s) {
    if (!valid_experts(gate) || !valid_experts(up) || n_rows < 0) return cudaErrorInvalidValue;
    if (gate.type != up.type || gate.n_in != up.n_in || gate.n_out != up.n_out || gate.n_expert != up.n_expert) {
        return cudaErrorInvalidValue;
    }
    if (n_rows == 0 || gate.n_out == 0) return cudaSuccess;
    if (!valid_rows(x, x_stride, false, y, y_stride, n_rows, gate.n_in, gate.n_out) || !d_row_src || !d_offsets) {
        return cudaErrorInvalidValue;
    }
    ProductArgs a = expert_args(gate, x, x_stride, d_row_src, d_offsets, n_rows, y, y_stride);
    a.w[1] = static_cast<const uint8_t*>(up.data);
    a.row_bytes[1] = up.row_bytes;
    a.expert_bytes[1] = up.expert_bytes;
    return run_experts(gate.type, true, a, s);
}

}  // namespace moe::cuda
