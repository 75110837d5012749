// The KV cache of one sequence, laid out as llama.cpp's cache_k_l* / cache_v_l* tensors are without
// flash attention: per layer, K as `capacity` rows (row p: the post-RoPE keys of all KV heads of the
// token at position p) and V transposed (row i: element i of every position's values), stored as
// F16 (default) or F32. A Q8_0 cache (an engine option; llama.cpp needs flash attention for a
// quantized V) keeps V row-major, since Q8_0 blocks run along a row. Two layer kinds differ:
//  - MLA layers (deepseek2) have no V plane: a K row is [normed latent | roped key part] and V is
//    its latent part, so a token costs (kv_lora_rank + n_rot) values per layer;
//  - sliding-window layers (gpt-oss) keep a ring of window + one chunk of rows, row-major.
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

// The per-layer geometry of a cache.
struct LayerShape {
    uint32_t k_width = 0;     // elements per position of K
    uint32_t v_width = 0;     // ... of V; 0: no V plane (MLA: V is the first elements of each K row)
    uint32_t k_head_dim = 0;  // head sizes (a Q8_0 cache needs multiples of 32)
    uint32_t v_head_dim = 0;
    uint32_t window = 0;      // sliding-window layer (0: none): keys older than the window are never read
    uint32_t ring = 0;        // with a window: the rows kept (window + the longest chunk); 0: capacity rows
};

class KvCache {
public:
    // Every layer alike: k_width / v_width elements per row (n_head_kv * head_dim).
    KvCache(uint32_t n_layer, uint32_t capacity, uint32_t k_width, uint32_t v_width, uint32_t head_dim, uint32_t type);
    // Layers of their own shapes; type: ggml F16, F32 or Q8_0. Throws InvalidArgument for a bad
    // shape or type, OutOfMemory when the rows cannot be allocated.
    KvCache(uint32_t capacity, std::vector<LayerShape> layers, uint32_t type);

    uint32_t capacity() const noexcept { return capacity_; }
    uint32_t length() const noexcept { return length_; }
    uint32_t type() const noexcept { return type_; }
    uint32_t n_layer() const noexcept { return static_cast<uint32_t>(shapes_.size()); }
    size_t bytes() const noexcept;
    bool v_transposed() const noexcept { return v_.empty() ? false : v_[0].transposed; }

    // Drops positions n.. (n <= length(); InvalidArgument otherwise, or when a sliding-window layer
    // no longer holds the keys that positions from n on would read).
    void truncate(uint32_t n);
    // Makes rows [0, n) the committed contents (n <= capacity()).
    void commit(uint32_t n);

    // Converts and stores rows for positions [pos, pos + n_rows) of a layer.
    // src: [n_rows, width] floats with row stride src_stride.
    void store_k(uint32_t layer, uint32_t pos, const float* src, int64_t src_stride, uint32_t n_rows, cpu::Isa isa);
    void store_v(uint32_t layer, uint32_t pos, const float* src, int64_t src_stride, uint32_t n_rows, cpu::Isa isa);

    // The rows of a layer, for kernels::attention. A layer without a V plane returns its K rows
    // as V (the attention reads the first v_head_dim elements of each).
    kernels::KvRows k_rows(uint32_t layer) const;
    kernels::KvRows v_rows(uint32_t layer) const;

private:
    struct Plane {
        std::unique_ptr<uint8_t[]> data;  // uninitialised until stored
        size_t row_bytes = 0;             // per position, or per element when transposed
        uint32_t width = 0;               // elements per position
        uint32_t n_rows = 0;              // rows allocated
        uint32_t ring = 0;
        bool transposed = false;
    };
    void store(std::vector<Plane>& planes, uint32_t layer, uint32_t pos, const float* src, int64_t src_stride,
               uint32_t n_rows, cpu::Isa isa);

    uint32_t capacity_;
    uint32_t type_;
    uint32_t length_ = 0;
    std::vector<LayerShape> shapes_;
    std::vector<Plane> k_;  // [n_layer]
    std::vector<Plane> v_;  // [n_layer] (empty planes where a layer has none)
};

}  // namespace moe::kv
