#include "kv_cache.h"

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
    : n_layer_(n_layer), capacity_(capacity), type_(type) {
    if (type != kF16 && type != kF32 && type != kQ8_0) {
        throw Error(ErrorCode::InvalidArgument,
                    std::string("KV cache type must be F16, F32 or Q8_0, got ") + quant::type_name(type));
    }
    if (head_dim == 0 || k_width == 0 || v_width == 0 || k_width % head_dim != 0 || v_width % head_dim != 0) {
        throw Error(ErrorCode::InvalidArgument, "KV cache: row widths must be whole numbers of heads");
    }
    if (type == kQ8_0 && head_dim % 32 != 0) {
        throw Error(ErrorCode::InvalidArgument, "a Q8_0 KV cache needs a head size that is a multiple of 32, got " +
                                                    std::to_string(head_dim));
    }
    const size_t k_row = row_bytes_of(type, k_width);
    const bool v_t = type != kQ8_0;
    // Transposed V: one row per element, `capacity` positions long.
    const size_t v_row = v_t ? row_bytes_of(type, capacity) : row_bytes_of(type, v_width);
    const size_t v_rows = v_t ? v_width : capacity;
    try {
        k_.resize(n_layer);
        v_.resize(n_layer);
        for (uint32_t l = 0; l < n_layer; ++l) {
            // new[] without () leaves the bytes uninitialised, so untouched pages are never committed.
            k_[l].data.reset(new uint8_t[static_cast<size_t>(capacity) * k_row]);
            k_[l].row_bytes = k_row;
            k_[l].width = k_width;
            v_[l].data.reset(new uint8_t[v_rows * v_row]);
            v_[l].row_bytes = v_row;
            v_[l].width = v_width;
            v_[l].transposed = v_t;
        }
    } catch (const std::bad_alloc&) {
        throw Error(ErrorCode::OutOfMemory, "cannot allocate a KV cache of " +
                                                std::to_string((k_row * capacity + v_row * v_rows) * n_layer) + " bytes");
    }
}

size_t KvCache::bytes() const noexcept {
    size_t total = 0;
    for (uint32_t l = 0; l < n_layer_; ++l) {
        total += k_[l].row_bytes * capacity_ + v_[l].row_bytes * (v_[l].transposed ? v_[l].width : capacity_);
    }
    return total;
}

void KvCache::truncate(uint32_t n) {
    if (n > length_) {
        throw Error(ErrorCode::InvalidArgument, "cannot truncate a sequence of " + std::to_string(length_) +
                                                    " tokens to " + std::to_string(n));
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
    if (layer >= n_layer_ || pos > capacity_ || n_rows > capacity_ - pos) {
        throw Error(ErrorCode::InvalidArgument, "KV cache store out of range");
    }
    Plane& plane = planes[layer];
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
        uint8_t* d = plane.data.get() + static_cast<size_t>(pos + r) * plane.row_bytes;
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
    return {p.data.get(), p.row_bytes, type_, false};
}

kernels::KvRows KvCache::v_rows(uint32_t layer) const {
    const Plane& p = v_.at(layer);
    return {p.data.get(), p.row_bytes, type_, p.transposed};
}

}  // namespace moe::kv
