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
// (In a ring those rows still replaced older positions; each row of a sliding-window layer records
// the position it holds, so truncate() and holds() never trust a row that a later store overwrote.)
//
// export_rows / import_rows copy the stored bytes of a range of positions out and back in (saved
// chat state, prefix sharing between sequences). The exported form does not depend on capacity or on
// whether V is transposed or in a ring, for every layer in order:
//   K: [n][k_row] bytes (k_row = row size of k_width elements of the cache type)
//   V: [n][v_row] bytes (v_row = ... of v_width; absent for a layer without a V plane)
// i.e. position-major rows exactly as stored (a transposed V plane is gathered element by element),
// so import(export(x)) reproduces the cache bit for bit. A saved state may include positions a ring
// no longer holds as all-zero placeholder rows; import counts an all-zero row of a sliding-window
// layer as not held, so the restored cache holds exactly what the saved one did (a genuine all-zero
// row, which no real model produces, would merely count as not held: never a wrong row).
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
    // Whether every layer holds position pos: pos < length() and no ring slot has been overwritten
    // by a later position (a ring keeps at most its last `ring` positions).
    bool holds(uint32_t pos) const noexcept;
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

    // Bytes export_rows() writes for n positions (all layers, K and V). Depends only on the type and
    // the row widths, so it is the same for every cache with the same layout_fingerprint().
    size_t row_bytes(uint32_t n) const noexcept { return static_cast<size_t>(n) * position_bytes_; }
    // A 64-bit hash of the layout: format version, type and each layer's widths, head sizes, window,
    // ring and V layout as requested (not capacity, nor a ring that collapsed into plain rows because
    // the capacity was smaller). Equal fingerprints mean each accepts the other's exported bytes; a
    // stable function of the fields, so a fingerprint saved in a file stays valid across builds.
    uint64_t layout_fingerprint() const noexcept { return fingerprint_; }
    // Copies the stored rows of positions [pos, pos + n) into dst (row_bytes(n) bytes, layout above).
    // InvalidArgument when the range passes length(), or when some layer no longer holds a position
    // in it, unless unheld_as_zero: then that layer's rows of such positions are written as zero
    // bytes (a whole-sequence state of a model with sliding-window layers).
    void export_rows(uint32_t pos, uint32_t n, uint8_t* dst, bool unheld_as_zero = false) const;
    // Stores rows of positions [pos, pos + n) from bytes export_rows produced for a cache of the same
    // fingerprint (checking it is the caller's job); does not commit: call commit(pos + n) after.
    // pos <= length() (rows extend or overwrite the tail, as a forward pass does) and pos + n <=
    // capacity(), InvalidArgument otherwise. A ring layer given more positions than it holds keeps
    // the last ones, as storing the range chunk by chunk would; a sliding-window layer counts an
    // all-zero row (an unheld_as_zero placeholder) as not held.
    void import_rows(uint32_t pos, uint32_t n, const uint8_t* src);

    // The rows of this cache that a forward device (the CUDA backend) keeps in its own memory,
    // created by the device on the sequence's first pass and released with the cache. Opaque here.
    std::shared_ptr<void>& device_state() noexcept { return device_state_; }

private:
    std::shared_ptr<void> device_state_;
    struct Plane {
        std::unique_ptr<uint8_t[]> data;  // uninitialised until stored
        size_t row_bytes = 0;             // per position, or per element when transposed
        uint32_t width = 0;               // elements per position
        uint32_t n_rows = 0;              // rows allocated
        uint32_t ring = 0;
        bool transposed = false;
        size_t position_bytes = 0;        // one position's row in the exported (position-major) form
        // A plane of a sliding-window layer (ring or not): the position its row for pos (pos % ring,
        // or pos) holds, kNoPosition for none. Empty for other layers, which hold every position.
        std::vector<uint32_t> slot_position;

        // Whether the row of position pos still holds it (pos < length() is the caller's check).
        bool holds(uint32_t pos) const noexcept {
            return slot_position.empty() || slot_position[pos % slot_position.size()] == pos;
        }
    };
    static constexpr uint32_t kNoPosition = UINT32_MAX;
    void store(std::vector<Plane>& planes, uint32_t layer, uint32_t pos, const float* src, int64_t src_stride,
               uint32_t n_rows, cpu::Isa isa);
    // One plane's part of export_rows / import_rows: n position-major rows at dst / src.
    void export_plane(const Plane& plane, uint32_t pos, uint32_t n, uint8_t* dst) const;
    void import_plane(Plane& plane, uint32_t pos, uint32_t n, const uint8_t* src);

    uint32_t capacity_;
    uint32_t type_;
    uint32_t length_ = 0;
    size_t position_bytes_ = 0;  // exported bytes per position, all layers
    uint64_t fingerprint_ = 0;
    std::vector<LayerShape> shapes_;
    std::vector<Plane> k_;  // [n_layer]
    std::vector<Plane> v_;  // [n_layer] (empty planes where a layer has none)
};

}  // namespace moe::kv
