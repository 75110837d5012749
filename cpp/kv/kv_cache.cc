#include "kv_cache.h"

#include <algorithm>
#include <cstring>
#include <new>
#include <string>

#include "../common/error.h"
#include "../quant/fp16.h"
#include "../quant/ggml_types.h"
#include "../quant/quant.h"

namespace moe::kv {

namespace {

constexpr uint32_t kF32 = static_cast<uint32_t>(quant::GgmlType::F32);
constexpr uint32_t kF16 = static_cast<uint32_t>(quant::GgmlType::F16);
constexpr uint32_t kQ8_0 = static_cast<uint32_t>(quant::GgmlType::Q8_0);

size_t row_bytes_of(uint32_t type, uint32_t width) {
    const quant::TypeTraits* t = quant::type_traits(type);
    return quant::row_size(*t, width);
}

// Version of the exported row layout, hashed into every fingerprint: bump it when the layout of
// export_rows changes, so bytes saved by an older build are refused rather than misread.
constexpr uint32_t kExportFormat = 1;

// FNV-1a over 32-bit fields fed byte by byte in little-endian order: the same value on every
// platform and build, as a fingerprint stored in a file must be.
class FieldHash {
public:
    void add(uint32_t v) noexcept {
        for (int i = 0; i < 4; ++i) {
            h_ ^= (v >> (8 * i)) & 0xffu;
            h_ *= 0x100000001b3ull;
        }
    }
    uint64_t value() const noexcept { return h_; }

private:
    uint64_t h_ = 0xcbf29ce484222325ull;
};

// Where a V plane keeps a position's elements, given the layer as requested (not as a small
// capacity may have collapsed its ring): 0 none (MLA), 1 row-major (Q8_0 or a ring), 2 transposed.
uint32_t requested_v_layout(const LayerShape& l, uint32_t type) {
    if (l.v_width == 0) return 0;
    return type != kQ8_0 && (l.window == 0 || l.ring == 0) ? 2 : 1;
}

// Copies a grid of [width elements][n positions] of kElem bytes between two layouts given by their
// strides: element i of position j is at src + i * src_elem + j * src_pos and goes to the same
// place in dst's strides. Used between a transposed V plane (elements row_bytes apart, positions
// adjacent) and position-major rows. Blocks of positions keep the rows being filled or read in
// cache while a plane row is walked along; kElem is a constant, so each memcpy is a single move
// (the caller's buffer may have any alignment).
template <size_t kElem>
void copy_grid(const uint8_t* src, size_t src_elem, size_t src_pos, uint8_t* dst, size_t dst_elem, size_t dst_pos,
               uint32_t width, uint32_t n) {
    constexpr uint32_t kBlock = 64;
    for (uint32_t j0 = 0; j0 < n; j0 += kBlock) {
        const uint32_t jn = std::min(kBlock, n - j0);
        for (uint32_t i = 0; i < width; ++i) {
            const uint8_t* s = src + i * src_elem + j0 * src_pos;
            uint8_t* d = dst + i * dst_elem + j0 * dst_pos;
            for (uint32_t j = 0; j < jn; ++j) std::memcpy(d + j * dst_pos, s + j * src_pos, kElem);
        }
    }
}

std::string range_text(uint32_t pos, uint32_t n) {
    return "[" + std::to_string(pos) + ", " + std::to_string(static_cast<uint64_t>(pos) + n) + ")";
}

}  // namespace

KvCache::KvCache(uint32_t n_layer, uint32_t capacity, uint32_t k_width, uint32_t v_width, uint32_t head_dim,
                 uint32_t type)
    : KvCache(capacity, std::vector<LayerShape>(n_layer, LayerShape{k_width, v_width, head_dim, head_dim, 0, 0}), type) {
    if (v_width == 0) throw Error(ErrorCode::InvalidArgument, "KV cache: row widths must be whole numbers of heads");
}

KvCache::KvCache(uint32_t capacity, std::vector<LayerShape> layers, uint32_t type)
    : capacity_(capacity), type_(type), shapes_(std::move(layers)) {
    if (type != kF16 && type != kF32 && type != kQ8_0) {
        throw Error(ErrorCode::InvalidArgument,
                    std::string("KV cache type must be F16, F32 or Q8_0, got ") + quant::type_name(type));
    }
    size_t total = 0;
    FieldHash fingerprint;
    fingerprint.add(kExportFormat);
    fingerprint.add(type);
    fingerprint.add(static_cast<uint32_t>(shapes_.size()));
    for (LayerShape& l : shapes_) {
        if (l.k_head_dim == 0 || l.k_width == 0 || l.k_width % l.k_head_dim != 0 ||
            (l.v_width != 0 && (l.v_head_dim == 0 || l.v_width % l.v_head_dim != 0))) {
            throw Error(ErrorCode::InvalidArgument, "KV cache: row widths must be whole numbers of heads");
        }
        if (type == kQ8_0 && (l.k_head_dim % 32 != 0 || (l.v_head_dim != 0 && l.v_head_dim % 32 != 0))) {
            throw Error(ErrorCode::InvalidArgument, "a Q8_0 KV cache needs a head size that is a multiple of 32, got " +
                                                        std::to_string(l.k_head_dim % 32 != 0 ? l.k_head_dim : l.v_head_dim));
        }
        // The layer as requested, before a capacity no longer than the ring turns it into plain rows:
        // the exported bytes do not depend on that, so neither may the fingerprint.
        for (uint32_t field : {l.k_width, l.v_width, l.k_head_dim, l.v_head_dim, l.window, l.window ? l.ring : 0u,
                               requested_v_layout(l, type)}) {
            fingerprint.add(field);
        }
        if (l.window == 0 || l.ring >= capacity) l.ring = 0;  // a ring as long as the context is just rows
        if (l.ring != 0 && l.ring < l.window) {
            throw Error(ErrorCode::InvalidArgument, "KV cache: a sliding-window ring must hold the window");
        }
        const uint32_t rows = l.ring ? l.ring : capacity;
        const bool v_t = l.v_width != 0 && type != kQ8_0 && l.ring == 0;
        total += row_bytes_of(type, l.k_width) * rows +
                 (l.v_width == 0 ? 0 : v_t ? row_bytes_of(type, rows) * l.v_width : row_bytes_of(type, l.v_width) * rows);
        position_bytes_ += row_bytes_of(type, l.k_width) + (l.v_width == 0 ? 0 : row_bytes_of(type, l.v_width));
    }
    fingerprint_ = fingerprint.value();
    try {
        k_.resize(shapes_.size());
        v_.resize(shapes_.size());
        for (size_t i = 0; i < shapes_.size(); ++i) {
            const LayerShape& l = shapes_[i];
            const uint32_t rows = l.ring ? l.ring : capacity;
            // new[] without () leaves the bytes uninitialised, so untouched pages are never committed.
            Plane& k = k_[i];
            k.row_bytes = row_bytes_of(type, l.k_width);
            k.width = l.k_width;
            k.n_rows = rows;
            k.ring = l.ring;
            k.position_bytes = k.row_bytes;
            k.data.reset(new uint8_t[static_cast<size_t>(rows) * k.row_bytes]);
            if (l.window) k.slot_position.assign(rows, kNoPosition);
            if (l.v_width == 0) continue;
            Plane& v = v_[i];
            v.transposed = type != kQ8_0 && l.ring == 0;
            // Transposed V: one row per element, `rows` positions long.
            v.row_bytes = v.transposed ? row_bytes_of(type, rows) : row_bytes_of(type, l.v_width);
            v.n_rows = v.transposed ? l.v_width : rows;
            v.width = l.v_width;
            v.ring = l.ring;
            v.position_bytes = row_bytes_of(type, l.v_width);
            v.data.reset(new uint8_t[static_cast<size_t>(v.n_rows) * v.row_bytes]);
            if (l.window) v.slot_position.assign(rows, kNoPosition);
        }
    } catch (const std::bad_alloc&) {
        throw Error(ErrorCode::OutOfMemory, "cannot allocate a KV cache of " + std::to_string(total) + " bytes");
    }
}

size_t KvCache::bytes() const noexcept {
    size_t total = 0;
    for (size_t i = 0; i < k_.size(); ++i) {
        total += k_[i].row_bytes * k_[i].n_rows + v_[i].row_bytes * v_[i].n_rows;
    }
    return total;
}

void KvCache::truncate(uint32_t n) {
    if (n > length_) {
        throw Error(ErrorCode::InvalidArgument, "cannot truncate a sequence of " + std::to_string(length_) +
                                                    " tokens to " + std::to_string(n));
    }
    for (size_t il = 0; il < shapes_.size(); ++il) {
        const LayerShape& l = shapes_[il];
        if (!l.window) continue;
        // The next token at n reads keys from n + 1 - window on. The rows, not length - ring, say
        // what a ring holds: an earlier truncate or an aborted chunk's stores past length() have
        // overwritten rows of positions that length - ring would count as held (and an imported
        // state may lack old positions even where the capacity left no ring).
        const uint32_t first_needed = n >= l.window ? n - l.window + 1 : 0;
        for (uint32_t p = first_needed; p < n; ++p) {
            if (!k_[il].holds(p) || (v_[il].data && !v_[il].holds(p))) {
                throw Error(ErrorCode::InvalidArgument,
                            "cannot truncate a sequence of " + std::to_string(length_) + " tokens to " +
                                std::to_string(n) + ": its sliding-window layers no longer hold position " +
                                std::to_string(p) + ", which the next token would read" +
                                (l.ring ? " (they keep only the last " + std::to_string(l.ring) + " positions stored)"
                                        : std::string()) +
                                "; evaluate the tokens again from a shorter prefix instead");
            }
        }
    }
    length_ = n;
}

bool KvCache::holds(uint32_t pos) const noexcept {
    if (pos >= length_) return false;
    for (size_t il = 0; il < shapes_.size(); ++il) {
        if (!k_[il].holds(pos) || (v_[il].data && !v_[il].holds(pos))) return false;
    }
    return true;
}

void KvCache::commit(uint32_t n) {
    if (n > capacity_) {
        throw Error(ErrorCode::ContextOverflow, "KV cache holds " + std::to_string(capacity_) + " tokens, not " +
                                                    std::to_string(n));
    }
    length_ = n;
}

void KvCache::store(std::vector<Plane>& planes, uint32_t layer, uint32_t pos, const float* src, int64_t src_stride,
                    uint32_t n_rows, cpu::Isa isa) {
    if (layer >= shapes_.size() || pos > capacity_ || n_rows > capacity_ - pos) {
        throw Error(ErrorCode::InvalidArgument, "KV cache store out of range");
    }
    Plane& plane = planes[layer];
    if (!plane.data) throw Error(ErrorCode::InvalidArgument, "KV cache: this layer has no V plane");
    if (plane.ring && n_rows > plane.ring) throw Error(ErrorCode::InvalidArgument, "KV cache store longer than the ring");
    const size_t elem = type_ == kF32 ? 4 : 2;
    for (uint32_t r = 0; r < n_rows; ++r) {
        const float* s = src + static_cast<int64_t>(r) * src_stride;
        if (!plane.slot_position.empty()) plane.slot_position[(pos + r) % plane.slot_position.size()] = pos + r;
        if (plane.transposed) {
            // Element i of position pos + r goes to row i (llama.cpp's V layout without flash
            // attention); F16 rounds to nearest even as ggml's F32 -> F16 conversion (F16C) does.
            uint8_t* base = plane.data.get() + static_cast<size_t>(pos + r) * elem;
            for (uint32_t i = 0; i < plane.width; ++i) {
                uint8_t* d = base + static_cast<size_t>(i) * plane.row_bytes;
                if (type_ == kF32) {
                    std::memcpy(d, s + i, 4);
                } else {
                    const uint16_t h = quant::fp32_to_fp16(s[i]);
                    std::memcpy(d, &h, 2);
                }
            }
            continue;
        }
        const uint32_t row = plane.ring ? (pos + r) % plane.ring : pos + r;
        uint8_t* d = plane.data.get() + static_cast<size_t>(row) * plane.row_bytes;
        if (type_ == kF32) {
            std::memcpy(d, s, sizeof(float) * plane.width);
        } else if (type_ == kF16) {
            for (uint32_t i = 0; i < plane.width; ++i) {
                const uint16_t h = quant::fp32_to_fp16(s[i]);
                std::memcpy(d + 2 * i, &h, 2);
            }
        } else {
            quant::quantize(kQ8_0, s, d, plane.width, isa, "KV cache");
        }
    }
}

void KvCache::store_k(uint32_t layer, uint32_t pos, const float* src, int64_t src_stride, uint32_t n_rows,
                      cpu::Isa isa) {
    store(k_, layer, pos, src, src_stride, n_rows, isa);
}

void KvCache::store_v(uint32_t layer, uint32_t pos, const float* src, int64_t src_stride, uint32_t n_rows,
                      cpu::Isa isa) {
    store(v_, layer, pos, src, src_stride, n_rows, isa);
}

void KvCache::export_plane(const Plane& plane, uint32_t pos, uint32_t n, uint8_t* dst) const {
    if (plane.transposed) {
        // Row i holds element i of every position: gather each position's elements into one row.
        const uint8_t* column = plane.data.get() + static_cast<size_t>(pos) * (type_ == kF32 ? 4 : 2);
        if (type_ == kF32) {
            copy_grid<4>(column, plane.row_bytes, 4, dst, 4, plane.position_bytes, plane.width, n);
        } else {
            copy_grid<2>(column, plane.row_bytes, 2, dst, 2, plane.position_bytes, plane.width, n);
        }
        return;
    }
    if (!plane.ring) {
        std::memcpy(dst, plane.data.get() + static_cast<size_t>(pos) * plane.row_bytes,
                    static_cast<size_t>(n) * plane.row_bytes);
        return;
    }
    for (uint32_t j = 0; j < n; ++j) {
        const size_t row = (pos + j) % plane.ring;
        std::memcpy(dst + static_cast<size_t>(j) * plane.row_bytes, plane.data.get() + row * plane.row_bytes,
                    plane.row_bytes);
    }
}

void KvCache::import_plane(Plane& plane, uint32_t pos, uint32_t n, const uint8_t* src) {
    // Storing the range in order would overwrite all but a ring's last `ring` positions before its end.
    const uint32_t first = plane.ring && n > plane.ring ? n - plane.ring : 0;
    if (plane.transposed) {
        uint8_t* column = plane.data.get() + static_cast<size_t>(pos) * (type_ == kF32 ? 4 : 2);
        if (type_ == kF32) {
            copy_grid<4>(src, 4, plane.position_bytes, column, plane.row_bytes, 4, plane.width, n);
        } else {
            copy_grid<2>(src, 2, plane.position_bytes, column, plane.row_bytes, 2, plane.width, n);
        }
    } else if (!plane.ring) {
        std::memcpy(plane.data.get() + static_cast<size_t>(pos) * plane.row_bytes, src,
                    static_cast<size_t>(n) * plane.row_bytes);
    } else {
        for (uint32_t j = first; j < n; ++j) {
            const size_t row = (pos + j) % plane.ring;
            std::memcpy(plane.data.get() + row * plane.row_bytes, src + static_cast<size_t>(j) * plane.row_bytes,
                        plane.row_bytes);
        }
    }
    if (plane.slot_position.empty()) return;
    // An all-zero row is an unheld_as_zero placeholder: the row now holds no position.
    for (uint32_t j = first; j < n; ++j) {
        const uint8_t* row = src + static_cast<size_t>(j) * plane.position_bytes;
        const bool placeholder = std::all_of(row, row + plane.position_bytes, [](uint8_t b) { return b == 0; });
        plane.slot_position[(pos + j) % plane.slot_position.size()] = placeholder ? kNoPosition : pos + j;
    }
}

void KvCache::export_rows(uint32_t pos, uint32_t n, uint8_t* dst, bool unheld_as_zero) const {
    if (static_cast<uint64_t>(pos) + n > length_) {
        throw Error(ErrorCode::InvalidArgument, "cannot export KV rows of positions " + range_text(pos, n) +
                                                    ": the sequence has " + std::to_string(length_) + " tokens");
    }
    for (uint32_t p = pos; p < pos + n && !unheld_as_zero; ++p) {
        if (!holds(p)) {
            throw Error(ErrorCode::InvalidArgument,
                        "cannot export KV rows of positions " + range_text(pos, n) + ": position " + std::to_string(p) +
                            " is no longer held by a sliding-window layer (a ring keeps only its last positions)");
        }
    }
    if (n == 0) return;  // dst may be null then
    for (size_t il = 0; il < shapes_.size(); ++il) {
        for (const Plane* plane : {&k_[il], &v_[il]}) {
            if (!plane->data) continue;
            export_plane(*plane, pos, n, dst);
            // Whatever a row holds in place of an unheld position is not that position's row.
            for (uint32_t j = 0; j < n && !plane->slot_position.empty(); ++j) {
                if (plane->holds(pos + j)) continue;
                std::memset(dst + static_cast<size_t>(j) * plane->position_bytes, 0, plane->position_bytes);
            }
            dst += static_cast<size_t>(n) * plane->position_bytes;
        }
    }
}

void KvCache::import_rows(uint32_t pos, uint32_t n, const uint8_t* src) {
    if (pos > length_) {
        throw Error(ErrorCode::InvalidArgument, "cannot import KV rows at position " + std::to_string(pos) +
                                                    ": the sequence has " + std::to_string(length_) +
                                                    " tokens, and rows can only extend or overwrite its tail");
    }
    if (static_cast<uint64_t>(pos) + n > capacity_) {
        throw Error(ErrorCode::InvalidArgument, "cannot import KV rows of positions " + range_text(pos, n) +
                                                    ": the KV cache holds " + std::to_string(capacity_) + " tokens");
    }
    if (n == 0) return;  // src may be null then
    for (size_t il = 0; il < shapes_.size(); ++il) {
        for (Plane* plane : {&k_[il], &v_[il]}) {
            if (!plane->data) continue;
            import_plane(*plane, pos, n, src);
            src += static_cast<size_t>(n) * plane->position_bytes;
        }
    }
}

kernels::KvRows KvCache::k_rows(uint32_t layer) const {
    const Plane& p = k_.at(layer);
    return {p.data.get(), p.row_bytes, type_, false, p.ring};
}

kernels::KvRows KvCache::v_rows(uint32_t layer) const {
    const Plane& p = v_.at(layer).data ? v_.at(layer) : k_.at(layer);
    return {p.data.get(), p.row_bytes, type_, p.transposed, p.ring};
}

}  // namespace moe::kv
