// ggml tensor type ids as stored on disk in GGUF, and their block geometry.
// The ids are stable file-format values (see ../shared/reference/llama-cpp-moe.md §2).
#pragma once

#include <cstddef>
#include <cstdint>

namespace moe::quant {

enum class GgmlType : uint32_t {
    F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3,
    Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9,
    Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15,
    IQ2_XXS = 16, IQ2_XS = 17, IQ3_XXS = 18, IQ1_S = 19, IQ4_NL = 20, IQ3_S = 21, IQ2_S = 22, IQ4_XS = 23,
    I8 = 24, I16 = 25, I32 = 26, I64 = 27, F64 = 28, IQ1_M = 29, BF16 = 30,
    TQ1_0 = 34, TQ2_0 = 35, MXFP4 = 39, NVFP4 = 40, Q1_0 = 41, Q2_0 = 42,
};

constexpr uint32_t kGgmlTypeCount = 43;  // one past the largest id we know

struct TypeTraits {
    const char* name;       // "Q4_K", as llama.cpp prints it
    int64_t block_size;     // elements per block
    size_t type_size;       // bytes per block
    bool can_dequantize;    // this build has a dequantize kernel
    bool can_quantize;      // this build has a quantize kernel
};

// Traits for a known type id, or nullptr for an id that is unknown or was removed from ggml
// (4, 5, 31-33, 36-38) and therefore must not appear in a GGUF file.
const TypeTraits* type_traits(uint32_t type_id) noexcept;

// Name for messages: the traits name, or "type#<id>" for unknown ids.
const char* type_name(uint32_t type_id) noexcept;

// Bytes needed for n elements of a type; n must be a multiple of the block size.
inline size_t row_size(const TypeTraits& t, int64_t n) {
    return static_cast<size_t>(n / t.block_size) * t.type_size;
}

}  // namespace moe::quant
