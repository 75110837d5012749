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
    for (LayerShape& l : shapes_) {
        if (l.k_head_dim == 0 || l.k_width == 0 || l.k_width % l.k_head_dim != 0 ||
            (l.v_width != 0 && (l.v_head_dim == 0 || l.v_width % l.v_head_dim != 0))) {
            throw Error(ErrorCode::InvalidArgument, "KV cache: row widths must be whole numbers of heads");
        }
        if (type == kQ8_0 && (l.k_head_dim % 32 != 0 || (l.v_head_dim != 0 && l.v_head_dim % 32 != 0))) {
            throw Error(ErrorCode::InvalidArgument, "a Q8_0 KV cache needs a head size that is a multiple of 32, got " +
                                                        std::to_string(l.k_head_dim % 32 != 0 ? l.k_head_dim : l.v_head_dim));
        }
        if (l.window == 0 || l.ring >= capacity) l.ring = 0;  // a ring as long as the context is just rows
        if (l.ring != 0 && l.ring < l.window) {
            throw Error(ErrorCode::InvalidArgument, "KV cache: a sliding-window ring must hold the window");
        }
        const uint32_t rows = l.ring ? l.ring : capacity;
        const bool v_t = l.v_width != 0 && type != kQ8_0 && l.ring == 0;
        total += row_bytes_of(type, l.k_width) * rows +
                 (l.v_width == 0 ? 0 : v_t ? row_bytes_of(type, rows) * l.v_width : row_bytes_of(type, l.v_width) * rows);
    }
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
            k.data.reset(new uint8_t[static_cast<size_t>(rows) * k.row_bytes]);
            if (l.v_width == 0) continue;
            Plane& v = v_[i];
            v.transposed = type != kQ8_0 && l.ring == 0;
            // Transposed V: one row per element, `rows` positions long.
            v.row_bytes = v.transposed ? row_bytes_of(type, rows) : row_bytes_of(type, l.v_width);
            v.n_rows = v.transposed ? l.v_width : rows;
            v.width = l.v_width;
            v.ring = l.ring;
            v.data.reset(new uint8_t[static_cast<size_t>(v.n_rows) * v.row_bytes]);
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
    for (const LayerShape& l : shapes_) {
        // A ring holds positions [length - ring, length); the next token at n reads from n + 1 - window.
        const int64_t first_needed = std::max<int64_t>(0, static_cast<int64_t>(n) + 1 - l.window);
        const int64_t oldest_held = std::max<int64_t>(0, static_cast<int64_t>(length_) - l.ring);
        if (l.ring && first_needed < oldest_held) {
            throw Error(ErrorCode::InvalidArgument,
                        "cannot truncate a sequence of " + std::to_string(length_) + " tokens to " + std::to_string(n) +
                            ": its sliding-window layers keep only the last " + std::to_string(l.ring) +
                            " positions; evaluate the tokens again from a shorter prefix instead");
        }
    }
    length_ = n;
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

kernels::KvRows KvCache::k_rows(uint32_t layer) const {
    const Plane& p = k_.at(layer);
    return {p.data.get(), p.row_bytes, type_, false, p.ring};
}

kernels::KvRows KvCache::v_rows(uint32_t layer) const {
    const Plane& p = v_.at(layer).data ? v_.at(layer) : k_.at(layer);
    return {p.data.get(), p.row_bytes, type_, p.transposed, p.ring};
}

}  // namespace moe::kv
