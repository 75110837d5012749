// What GgufFile promises about a file it accepted, checked independently of the parser: every
// view it hands out lies inside the parsed bytes and every tensor is placed and sized as ggml
// would. Shared by test_gguf (mutation test) and gguf_corpus_check.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "../../cpp/gguf/gguf_file.h"
#include "../../cpp/quant/ggml_types.h"

namespace moe_test {

// Empty when every promise holds, else a description of the first broken one.
inline std::string gguf_invariant_violation(const moe::gguf::GgufFile& f) {
    using moe::gguf::ValueType;
    // Compare addresses as integers: relational comparison of unrelated pointers is unspecified.
    const uintptr_t begin = reinterpret_cast<uintptr_t>(f.bytes());
    const uint64_t size = f.file_size();
    auto inside = [&](const void* p, uint64_t n) {
        const uintptr_t a = reinterpret_cast<uintptr_t>(p);
        return a >= begin && a - begin <= size && n <= size - (a - begin);
    };

    const uint64_t align = f.alignment();
    if (align == 0 || (align & (align - 1)) != 0) return "alignment is not a power of two";
    if (f.data_offset() % align != 0) return "data offset is not aligned";

    for (const auto& e : f.metadata()) {
        const std::string what = "kv '" + e.key + "': ";
        if (e.key.empty()) return "empty key accepted";
        if (e.offset >= size) return what + "key offset outside the file";
        if (f.find(e.key) != &e) return what + "find() does not return it";
        if (e.type == ValueType::String && !inside(e.str.data(), e.str.size())) {
            return what + "string outside the file";
        }
        if (e.type != ValueType::Array) continue;
        if (e.elem_type == ValueType::Array) return what + "nested array accepted";
        if (e.elem_type == ValueType::String) {
            if (e.strings.size() != e.count) return what + "string count mismatch";
            for (const auto& s : e.strings) {
                if (!inside(s.data(), s.size())) return what + "array string outside the file";
            }
        } else {
            const uint64_t es = moe::gguf::value_type_size(e.elem_type);
            if (es == 0 || e.count > size / es || !inside(e.array_data, e.count * es)) {
                return what + "array data outside the file";
            }
        }
    }

    std::vector<const moe::gguf::TensorInfo*> placed;
    for (const auto& t : f.tensors()) {
        const std::string what = "tensor '" + t.name + "': ";
        if (t.name.size() > moe::gguf::kMaxTensorNameLength) return what + "name too long";
        if (f.find_tensor(t.name) != &t) return what + "find_tensor() does not return it";
        if (t.n_dims > moe::gguf::kMaxDims) return what + "too many dims";
        const moe::quant::TypeTraits* tt = moe::quant::type_traits(t.type);
        if (!tt) return what + "unknown type accepted";
        uint64_t nbytes = 0;
        for (uint32_t d = 0; d < moe::gguf::kMaxDims; ++d) {
            if (t.ne[d] < 0) return what + "negative dim";
            if (d >= t.n_dims && t.ne[d] != 1) return what + "unused dim is not 1";
        }
        if (t.ne[0] % tt->block_size != 0) return what + "ne[0] not a multiple of the block size";
        bool overflow = __builtin_mul_overflow(static_cast<uint64_t>(t.ne[0] / tt->block_size),
                                               static_cast<uint64_t>(tt->type_size), &nbytes);
        for (uint32_t d = 1; d < moe::gguf::kMaxDims; ++d) {
            overflow |= __builtin_mul_overflow(nbytes, static_cast<uint64_t>(t.ne[d]), &nbytes);
        }
        if (overflow || nbytes != t.nbytes) return what + "nbytes mismatch";
        if (t.offset % align != 0) return what + "offset not aligned";
        if (t.file_offset != f.data_offset() + t.offset) return what + "file_offset mismatch";
        if (t.file_offset > size || t.nbytes > size - t.file_offset) return what + "data outside the file";
        if (t.data != f.bytes() + t.file_offset) return what + "data pointer mismatch";
        if (t.nbytes != 0) placed.push_back(&t);
    }
    std::sort(placed.begin(), placed.end(), [](auto a, auto b) { return a->file_offset < b->file_offset; });
    for (size_t i = 1; i < placed.size(); ++i) {
        if (placed[i - 1]->file_offset + placed[i - 1]->nbytes > placed[i]->file_offset) {
            return "tensors '" + placed[i - 1]->name + "' and '" + placed[i]->name + "' overlap";
        }
    }
    return "";
}

}  // namespace moe_test
