// GGUF v2/v3 reader over a memory map (or a caller-owned buffer). Every count, length, offset,
// dimension and size is checked against the bytes that exist before it is used; any violation
// throws moe::Error(GgufFormat) carrying the byte offset of the offending field.
// Knows the file format only: nothing about architectures or kernels.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "mapped_file.h"

namespace moe::gguf {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as little-endian u32
constexpr uint64_t kDefaultAlignment = 32;
constexpr size_t kMaxTensorNameLength = 63;  // ggml's GGML_MAX_NAME (64) minus the NUL
constexpr uint32_t kMaxDims = 4;

enum class ValueType : uint32_t {
    U8 = 0, I8 = 1, U16 = 2, I16 = 3, U32 = 4, I32 = 5, F32 = 6, Bool = 7,
    String = 8, Array = 9, U64 = 10, I64 = 11, F64 = 12,
};
const char* value_type_name(ValueType t) noexcept;
// Bytes of one packed element of a fixed-size type; 0 for String / Array.
size_t value_type_size(ValueType t) noexcept;

struct MetadataEntry {
    std::string key;
    ValueType type = ValueType::U8;
    uint64_t offset = 0;  // file offset of the key's length field

    // Scalars (exactly one is meaningful, per `type`):
    uint64_t u64 = 0;   // U8, U16, U32, U64, Bool (0/1)
    int64_t i64 = 0;    // I8, I16, I32, I64
    double f64 = 0;     // F32, F64
    std::string_view str;  // String: points into the mapped bytes

    // Arrays (type == Array):
    ValueType elem_type = ValueType::U8;
    uint64_t count = 0;
    const uint8_t* array_data = nullptr;  // fixed-size element types: count packed LE elements (may be unaligned)
    std::vector<std::string_view> strings;  // String element type: each points into the mapped bytes
};

struct TensorInfo {
    std::string name;
    uint32_t n_dims = 0;
    int64_t ne[kMaxDims] = {1, 1, 1, 1};  // ne[0] is the contiguous dimension
    uint32_t type = 0;                    // ggml type id (quant::GgmlType); known to quant::type_traits
    uint64_t offset = 0;                  // relative to the data section, as stored
    uint64_t file_offset = 0;             // absolute: data_offset + offset
    uint64_t nbytes = 0;
    uint64_t info_offset = 0;             // file offset of this tensor's info record (for messages)
    const uint8_t* data = nullptr;        // file bytes + file_offset

    int64_t element_count() const noexcept { return ne[0] * ne[1] * ne[2] * ne[3]; }
};

class GgufFile {
public:
    // Maps and parses `path`.
    static std::unique_ptr<GgufFile> open(const std::string& path);
    // Parses caller-owned bytes, which must outlive the object (tests, fuzzing).
    static std::unique_ptr<GgufFile> parse(const uint8_t* data, uint64_t size);

    uint32_t version() const noexcept { return version_; }
    uint64_t alignment() const noexcept { return alignment_; }
    uint64_t data_offset() const noexcept { return data_offset_; }
    uint64_t file_size() const noexcept { return size_; }
    const uint8_t* bytes() const noexcept { return bytes_; }

    const std::vector<MetadataEntry>& metadata() const noexcept { return metadata_; }
    const std::vector<TensorInfo>& tensors() const noexcept { return tensors_; }
    const MetadataEntry* find(std::string_view key) const noexcept;
    const TensorInfo* find_tensor(std::string_view name) const noexcept;

    // The mapping, when opened from a path (nullptr for parse()).
    const MappedFile* mapping() const noexcept { return map_.get(); }

private:
    GgufFile() = default;
    void parse_all();

    std::unique_ptr<MappedFile> map_;
    const uint8_t* bytes_ = nullptr;
    uint64_t size_ = 0;
    uint32_t version_ = 0;
    uint64_t alignment_ = kDefaultAlignment;
    uint64_t data_offset_ = 0;
    std::vector<MetadataEntry> metadata_;
    std::vector<TensorInfo> tensors_;
};

}  // namespace moe::gguf
