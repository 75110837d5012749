// The KV cache of one sequence, laid out as llama.cpp's cache_k_l* / cache_v_l* tensors are without
// flash attention: per layer, K as `capacity` rows (row p: the post-RoPE keys of all KV heads of the
// token at position p) and V transposed (row i: element i of every position's values), stored as
// F16 (default) or F32. A Q8_0 cache (an engine option; llama.cpp needs flash attention for a
// quantized V) keeps V row-major, since Q8_0 blocks run along a row.
//
// The cache separates what is stored from what is committed: a forward pass stores the rows of a
// chunk as it goes through the layers and commits the new length only when the chunk completed, so
// an aborted or failed chunk leaves length() where it was and its partial rows are simply unused.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "../cpu/cpu_features.h"
#include "../kernels/ops.h"

namespace moe::kv {

class KvCache {
public:
    // k_width / v_width: elements per row (n_head_kv * head_dim); type: ggml F16, F32 or Q8_0 (Q8_0
    // needs head_dim % 32 == 0: every head starts on a block). Throws InvalidArgument for a bad
    // shape or type, OutOfMemory when the rows cannot be allocated.
    KvCache(uint32_t n_layer, uint32_t capacity, uint32_t k_width, uint32_t v_width, uint32_t head_dim, uint32_t type);

    uint32_t capacity() const noexcept { return capacity_; }
    uint32_t length() const noexcept { return length_; }
    uint32_t type() const noexcept { return type_; }
    uint32_t n_layer() const noexcept { return n_layer_; }
    size_t bytes() const noexcept;
    bool v_transposed() const noexcept { return v_.empty() ? false : v_[0].transposed; }

    // Drops positions n.. (n <= length(); InvalidArgument otherwise).
    void truncate(uint32_t n);
    // Makes rows [0, n) the committed contents (n <= capacity()).
    void commit(uint32_t n);

    // Converts and stores rows for positions [pos, pos + n_rows) of a layer.
    // src: [n_rows, width] floats with row stride src_stride.
    void store_k(uint32_t layer, uint32_t pos, const float* src, int64_t src_stride, uint32_t n_rows, cpu::Isa isa);
    void store_v(uint32_t layer, uint32_t pos, const float* src, int64_t src_stride, uint32_t n_rows, cpu::Isa isa);

    // The rows of a layer, for kernels::attention.
    kernels::KvRows k_rows(uint32_t layer) const;
    kernels::KvRows v_rows(uint32_t layer) const;

private:
    struct Plane {
        std::unique_ptr<uint8_t[]> data;  // uninitialised until stored
        size_t row_bytes = 0;             // per position, or per element when transposed
        uint32_t width = 0;               // elements per position
        bool transposed = false;
    };
    void store(std::vector<Plane>& planes, uint32_t layer, uint32_t pos, const float* src, int64_t src_stride,
               uint32_t n_rows, cpu::Isa isa);

    uint32_t n_layer_;
    uint32_t capacity_;
    uint32_t type_;
    uint32_t length_ = 0;
    std::vector<Plane> k_;  // [n_layer]
    std::vector<Plane> v_;  // [n_layer]
};

}  // namespace moe::kv
