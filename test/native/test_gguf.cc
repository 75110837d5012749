// Unit tests for the GGUF reader (cpp/gguf/): valid files built byte by byte, one test per class
// of malformed input (asserting the error code and the offset of the bad field), every truncation
// of a valid file, and a seeded mutation loop. Build under ASan/UBSan to make the "never crash"
// parts meaningful.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "../../cpp/common/error.h"
#include "../../cpp/gguf/gguf_file.h"
#include "../../cpp/gguf/mapped_file.h"
#include "../../cpp/quant/ggml_types.h"
#include "check.h"
#include "gguf_invariants.h"

namespace {

using moe::ErrorCode;
using moe::gguf::GgufFile;
using moe::gguf::MappedFile;
using moe::gguf::MetadataEntry;
using moe::gguf::TensorInfo;
using moe::gguf::ValueType;
using moe::quant::GgmlType;
using Bytes = std::vector<uint8_t>;

constexpr uint64_t kU64Max = UINT64_MAX;
constexpr uint64_t kI64Min = uint64_t{1} << 63;  // the bit pattern of INT64_MIN

struct TensorSpec {
    std::string name;
    std::vector<int64_t> dims;  // ne0 first
    uint32_t type;
};

// File offsets of the fields of one tensor info record.
struct TensorFields {
    uint64_t name = 0;
    uint64_t n_dims = 0;
    std::vector<uint64_t> dims;
    uint64_t type = 0;
    uint64_t offset = 0;
};

uint64_t nbytes_of(const TensorSpec& t) {
    const moe::quant::TypeTraits* tt = moe::quant::type_traits(t.type);
    uint64_t n = tt->type_size;
    for (size_t d = 0; d < t.dims.size(); ++d) {
        n *= static_cast<uint64_t>(d == 0 ? t.dims[0] / tt->block_size : t.dims[d]);
    }
    return n;
}

uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

// Appends GGUF fields little-endian. Every append returns the offset it wrote at, so a test can
// point at, patch, or expect an error at any field. Fields can be given any value, valid or not.
class GgufBuilder {
public:
    uint64_t size() const { return buf_.size(); }
    const Bytes& bytes() const { return buf_; }
    // Offsets of every u32 / u64 field written, for the mutation test.
    const std::vector<uint64_t>& u32_fields() const { return u32_fields_; }
    const std::vector<uint64_t>& u64_fields() const { return u64_fields_; }

    uint64_t raw(const void* p, size_t n) {
        const uint64_t at = size();
        const auto* b = static_cast<const uint8_t*>(p);
        buf_.insert(buf_.end(), b, b + n);
        return at;
    }
    template <typename T>
    uint64_t scalar(T v) {
        return raw(&v, sizeof v);  // the tests, like the engine, run on little-endian hosts
    }
    uint64_t u32(uint32_t v) {
        u32_fields_.push_back(size());
        return scalar(v);
    }
    uint64_t u64(uint64_t v) {
        u64_fields_.push_back(size());
        return scalar(v);
    }
    uint64_t str(std::string_view s) {
        const uint64_t at = u64(s.size());
        raw(s.data(), s.size());
        return at;
    }
    uint64_t header(uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
        const uint64_t at = raw("GGUF", 4);
        u32(version);
        u64(n_tensors);
        u64(n_kv);
        return at;
    }
    // Key and value type; the caller appends the value. Returns the key's offset.
    uint64_t key(std::string_view k, ValueType t) {
        const uint64_t at = str(k);
        u32(static_cast<uint32_t>(t));
        return at;
    }
    template <typename T>
    uint64_t kv(std::string_view k, ValueType t, T v) {
        const uint64_t at = key(k, t);
        scalar(v);
        return at;
    }
    uint64_t kv_u32(std::string_view k, uint32_t v) {
        const uint64_t at = key(k, ValueType::U32);
        u32(v);
        return at;
    }
    uint64_t kv_str(std::string_view k, std::string_view v) {
        const uint64_t at = key(k, ValueType::String);
        str(v);
        return at;
    }
    // Array header (element type, count); the caller appends the elements.
    uint64_t array(std::string_view k, ValueType elem, uint64_t count) {
        const uint64_t at = key(k, ValueType::Array);
        u32(static_cast<uint32_t>(elem));
        u64(count);
        return at;
    }
    TensorFields tensor_info(std::string_view name, const std::vector<int64_t>& dims, uint32_t type,
                             uint64_t offset) {
        TensorFields f;
        f.name = str(name);
        f.n_dims = u32(static_cast<uint32_t>(dims.size()));
        for (int64_t d : dims) f.dims.push_back(u64(static_cast<uint64_t>(d)));
        f.type = u32(type);
        f.offset = u64(offset);
        return f;
    }
    void pad_to(uint64_t alignment) { buf_.resize(align_up(size(), alignment), 0); }
    void fill(uint64_t n, uint8_t seed) {
        for (uint64_t i = 0; i < n; ++i) buf_.push_back(static_cast<uint8_t>(seed + i * 7));
    }

    // Tensor infos for `specs` packed densely in order (as ggml writes them), the padding, and
    // pattern data. Returns each record's field offsets; data_start receives the data offset.
    std::vector<TensorFields> tensors(const std::vector<TensorSpec>& specs, uint64_t alignment,
                                      uint64_t* data_start = nullptr) {
        std::vector<TensorFields> fields;
        uint64_t offset = 0;
        for (const TensorSpec& t : specs) {
            fields.push_back(tensor_info(t.name, t.dims, t.type, offset));
            offset += align_up(nbytes_of(t), alignment);
        }
        if (!specs.empty()) pad_to(alignment);  // no data section, no padding
        if (data_start) *data_start = size();
        for (size_t i = 0; i < specs.size(); ++i) {
            if (i > 0) pad_to(alignment);
            fill(nbytes_of(specs[i]), static_cast<uint8_t>(i * 31 + 1));
        }
        return fields;
    }

    void patch_u32(uint64_t at, uint32_t v) { std::memcpy(&buf_[at], &v, 4); }
    void patch_u64(uint64_t at, uint64_t v) { std::memcpy(&buf_[at], &v, 8); }

private:
    Bytes buf_;
    std::vector<uint64_t> u32_fields_, u64_fields_;
};

std::unique_ptr<GgufFile> parse(const Bytes& b) { return GgufFile::parse(b.data(), b.size()); }

// Empty when parsing `bytes` throws moe::Error(GgufFormat) at `offset` with a message containing
// `needle`; otherwise says what happened instead.
std::string gguf_error_mismatch(const Bytes& bytes, uint64_t offset, std::string_view needle) {
    try {
        parse(bytes);
        return "parsed without error";
    } catch (const moe::Error& e) {
        const std::string msg = e.what();
        if (e.code() != ErrorCode::GgufFormat) return "error code " + std::to_string(int(e.code())) + ": " + msg;
        if (e.offset() != offset) {
            return "offset " + std::to_string(e.offset()) + ", expected " + std::to_string(offset) + ": " + msg;
        }
        if (msg.find(needle) == std::string::npos) {
            return "message '" + msg + "' lacks '" + std::string(needle) + "'";
        }
        if (std::getenv("GGUF_TEST_VERBOSE")) {
            std::printf("     [%llu] %s\n", (unsigned long long)offset, msg.c_str());
        }
        return "";
    } catch (const std::exception& e) {
        return std::string("unexpected exception: ") + e.what();
    }
}

#define CHECK_GGUF_ERROR(bytes, offset, needle)                                   \
    do {                                                                          \
        const std::string mismatch_ = gguf_error_mismatch(bytes, offset, needle); \
        CHECK_MSG(mismatch_.empty(), "%s", mismatch_.c_str());                    \
    } while (0)

// --- the sample file ---------------------------------------------------------------------------

const std::vector<TensorSpec>& sample_tensors() {
    static const std::vector<TensorSpec> specs = {
        {"token_embd.weight", {8, 3}, uint32_t(GgmlType::F32)},
        {"blk.0.ffn_down.weight", {512, 2}, uint32_t(GgmlType::Q4_K)},
        {"blk.0.ffn_gate_exps.weight", {64, 2, 3}, uint32_t(GgmlType::MXFP4)},
        {"empty", {0, 4}, uint32_t(GgmlType::F16)},
        {"blk.0.attn_norm.weight", {5}, uint32_t(GgmlType::BF16)},
        {"output.weight", {32, 2, 1, 2}, uint32_t(GgmlType::Q8_0)},  // last: its data ends the file
    };
    return specs;
}

// Writes one kv of every scalar type and one array of every element type (plus empty ones).
void sample_metadata(GgufBuilder& b) {
    b.kv_str("general.architecture", "llama");
    b.kv<uint8_t>("t.u8", ValueType::U8, 200);
    b.kv<int8_t>("t.i8", ValueType::I8, -5);
    b.kv<uint16_t>("t.u16", ValueType::U16, 60000);
    b.kv<int16_t>("t.i16", ValueType::I16, -30000);
    b.kv_u32("t.u32", 4000000000u);
    b.kv<int32_t>("t.i32", ValueType::I32, -2000000000);
    b.kv<float>("t.f32", ValueType::F32, 1.5f);
    b.kv<uint8_t>("t.bool", ValueType::Bool, 1);
    b.kv<uint8_t>("t.bool2", ValueType::Bool, 7);  // ggml reads any non-zero as true
    b.kv_str("t.string", "h\xc3\xa9llo");
    b.kv<uint64_t>("t.u64", ValueType::U64, kI64Min + 5);
    b.kv<int64_t>("t.i64", ValueType::I64, -(int64_t{1} << 62));
    b.kv<double>("t.f64", ValueType::F64, 3.25);

    b.array("a.u8", ValueType::U8, 3);
    for (uint8_t v : {1, 2, 255}) b.scalar(v);
    b.array("a.i8", ValueType::I8, 2);
    for (int8_t v : {-1, 127}) b.scalar(v);
    b.array("a.u16", ValueType::U16, 2);
    for (uint16_t v : {1, 65535}) b.scalar(v);
    b.array("a.i16", ValueType::I16, 2);
    for (int16_t v : {-2, 300}) b.scalar(v);
    b.array("a.u32", ValueType::U32, 2);
    for (uint32_t v : {7u, 0xdeadbeefu}) b.u32(v);
    b.array("a.i32", ValueType::I32, 3);
    for (int32_t v : {-7, 0, 9}) b.scalar(v);
    b.array("a.f32", ValueType::F32, 2);
    for (float v : {0.25f, -2.0f}) b.scalar(v);
    b.array("a.bool", ValueType::Bool, 2);
    for (uint8_t v : {0, 1}) b.scalar(v);
    b.array("a.string", ValueType::String, 3);
    for (const char* s : {"a", "", "bc"}) b.str(s);
    b.array("a.u64", ValueType::U64, 2);
    for (uint64_t v : {uint64_t{1}, kU64Max}) b.u64(v);
    b.array("a.i64", ValueType::I64, 1);
    b.scalar<int64_t>(-3);
    b.array("a.f64", ValueType::F64, 2);
    for (double v : {1e300, -0.5}) b.scalar(v);
    b.array("a.empty_u32", ValueType::U32, 0);
    b.array("a.empty_string", ValueType::String, 0);
}
constexpr uint64_t kSampleKvCount = 28;  // written by sample_metadata

struct Sample {
    GgufBuilder b;
    std::vector<TensorFields> fields;
    uint64_t data_start = 0;
};

// A v3 file with every value type, a custom alignment and tensors of several types.
Sample make_sample(uint32_t version = 3, uint32_t alignment = 64) {
    Sample s;
    s.b.header(version, sample_tensors().size(), kSampleKvCount + 1);
    sample_metadata(s.b);
    s.b.kv_u32("general.alignment", alignment);
    s.fields = s.b.tensors(sample_tensors(), alignment, &s.data_start);
    return s;
}

// A small file: `kvs` writes kv_count pairs, then the given tensors at the default alignment.
template <typename KvWriter>
Sample make_file(uint64_t kv_count, KvWriter kvs, const std::vector<TensorSpec>& tensors = {}) {
    Sample s;
    s.b.header(3, tensors.size(), kv_count);
    kvs(s.b);
    s.fields = s.b.tensors(tensors, moe::gguf::kDefaultAlignment, &s.data_start);
    return s;
}
void no_kvs(GgufBuilder&) {}

// One valid tensor {32, 2} F32 named `name`.
TensorSpec f32_tensor(std::string name) { return {std::move(name), {32, 2}, uint32_t(GgmlType::F32)}; }

// --- valid files ---------------------------------------------------------------------------

TEST_CASE("gguf: every scalar type") {
    Sample s = make_sample();
    auto f = parse(s.b.bytes());
    CHECK(f->version() == 3);
    CHECK(f->metadata().size() == kSampleKvCount + 1);
    CHECK(f->metadata()[0].key == "general.architecture");  // file order is kept
    CHECK(f->metadata()[0].offset == 24);
    CHECK(f->metadata().back().key == "general.alignment");
    CHECK(f->find("general.architecture")->str == "llama");
    CHECK(f->find("t.u8")->type == ValueType::U8 && f->find("t.u8")->u64 == 200);
    CHECK(f->find("t.i8")->type == ValueType::I8 && f->find("t.i8")->i64 == -5);
    CHECK(f->find("t.u16")->u64 == 60000);
    CHECK(f->find("t.i16")->i64 == -30000);
    CHECK(f->find("t.u32")->u64 == 4000000000u);
    CHECK(f->find("t.i32")->i64 == -2000000000);
    CHECK(f->find("t.f32")->type == ValueType::F32 && f->find("t.f32")->f64 == 1.5);
    CHECK(f->find("t.bool")->type == ValueType::Bool && f->find("t.bool")->u64 == 1);
    CHECK(f->find("t.bool2")->u64 == 1);
    CHECK(f->find("t.string")->str == "h\xc3\xa9llo");
    CHECK(f->find("t.u64")->u64 == kI64Min + 5);
    CHECK(f->find("t.i64")->i64 == -(int64_t{1} << 62));
    CHECK(f->find("t.f64")->f64 == 3.25);
    CHECK(f->find("missing") == nullptr);
    CHECK(f->find("t.u") == nullptr);
    CHECK(std::string(moe::gguf::value_type_name(ValueType::Bool)) == "bool");
    CHECK(moe::gguf::value_type_size(ValueType::F64) == 8 && moe::gguf::value_type_size(ValueType::String) == 0);
    CHECK(moe_test::gguf_invariant_violation(*f).empty());
}

template <typename T>
T element(const MetadataEntry* e, size_t i) {
    T v;
    std::memcpy(&v, e->array_data + i * sizeof(T), sizeof(T));
    return v;
}

TEST_CASE("gguf: arrays of every element type") {
    Sample s = make_sample();
    auto f = parse(s.b.bytes());
    auto arr = [&](const char* key, ValueType elem, uint64_t count) {
        const MetadataEntry* e = f->find(key);
        CHECK_MSG(e && e->type == ValueType::Array && e->elem_type == elem && e->count == count, "%s", key);
        return e;
    };
    auto e = arr("a.u8", ValueType::U8, 3);
    CHECK(element<uint8_t>(e, 0) == 1 && element<uint8_t>(e, 2) == 255);
    CHECK(element<int8_t>(arr("a.i8", ValueType::I8, 2), 0) == -1);
    CHECK(element<uint16_t>(arr("a.u16", ValueType::U16, 2), 1) == 65535);
    CHECK(element<int16_t>(arr("a.i16", ValueType::I16, 2), 1) == 300);
    CHECK(element<uint32_t>(arr("a.u32", ValueType::U32, 2), 1) == 0xdeadbeefu);
    CHECK(element<int32_t>(arr("a.i32", ValueType::I32, 3), 0) == -7);
    CHECK(element<float>(arr("a.f32", ValueType::F32, 2), 1) == -2.0f);
    CHECK(element<uint8_t>(arr("a.bool", ValueType::Bool, 2), 1) == 1);
    CHECK(element<uint64_t>(arr("a.u64", ValueType::U64, 2), 1) == kU64Max);
    CHECK(element<int64_t>(arr("a.i64", ValueType::I64, 1), 0) == -3);
    CHECK(element<double>(arr("a.f64", ValueType::F64, 2), 0) == 1e300);
    e = arr("a.string", ValueType::String, 3);
    CHECK(e->strings.size() == 3 && e->strings[0] == "a" && e->strings[1].empty() && e->strings[2] == "bc");
    CHECK(arr("a.empty_u32", ValueType::U32, 0) != nullptr);
    CHECK(arr("a.empty_string", ValueType::String, 0)->strings.empty());
}

TEST_CASE("gguf: tensors of several types") {
    Sample s = make_sample();
    auto f = parse(s.b.bytes());
    CHECK(f->alignment() == 64);
    CHECK(f->data_offset() == s.data_start && f->data_offset() % 64 == 0);
    CHECK(f->data_offset() - 64 < s.fields.back().offset + 8);  // the padding is less than one alignment
    const auto& specs = sample_tensors();
    CHECK(f->tensors().size() == specs.size());
    const uint64_t expected_nbytes[] = {8 * 3 * 4, 2 * 2 * 144, 2 * 17 * 2 * 3, 0, 5 * 2, 1 * 34 * 2 * 1 * 2};
    uint64_t offset = 0;
    for (size_t i = 0; i < specs.size(); ++i) {
        const TensorInfo& t = f->tensors()[i];
        CHECK(t.name == specs[i].name);
        CHECK(f->find_tensor(specs[i].name) == &t);
        CHECK(t.type == specs[i].type);
        CHECK(t.n_dims == specs[i].dims.size());
        int64_t elements = 1;
        for (size_t d = 0; d < 4; ++d) {
            const int64_t want = d < specs[i].dims.size() ? specs[i].dims[d] : 1;
            CHECK(t.ne[d] == want);
            elements *= want;
        }
        CHECK(t.element_count() == elements);
        CHECK_MSG(t.nbytes == expected_nbytes[i], "%s: nbytes %llu", t.name.c_str(), (unsigned long long)t.nbytes);
        CHECK(t.offset == offset);
        CHECK(t.file_offset == f->data_offset() + offset);
        CHECK(t.info_offset == s.fields[i].name);
        CHECK(t.data == s.b.bytes().data() + t.file_offset);
        if (t.nbytes > 0) {
            CHECK(t.data[0] == uint8_t(i * 31 + 1));
            CHECK(t.data[t.nbytes - 1] == uint8_t(i * 31 + 1 + (t.nbytes - 1) * 7));
        }
        offset += align_up(t.nbytes, 64);
    }
    const TensorInfo& last = f->tensors().back();
    CHECK(last.file_offset + last.nbytes == s.b.size());
    CHECK(f->find_tensor("output") == nullptr);
    CHECK(moe_test::gguf_invariant_violation(*f).empty());
}

TEST_CASE("gguf: default and custom alignment") {
    for (uint32_t a : {1u, 8u, 32u, 128u, 4096u}) {
        Sample s = make_sample(3, a);
        auto f = parse(s.b.bytes());
        CHECK(f->alignment() == a);
        CHECK(f->data_offset() % a == 0 && f->data_offset() == s.data_start);
        for (const TensorInfo& t : f->tensors()) CHECK(t.offset % a == 0);
        CHECK(moe_test::gguf_invariant_violation(*f).empty());
    }
    Sample s = make_file(0, no_kvs, {f32_tensor("a"), f32_tensor("b")});
    auto f = parse(s.b.bytes());
    CHECK(f->alignment() == 32);
    CHECK(f->data_offset() % 32 == 0 && f->tensors()[1].offset == 256);
}

TEST_CASE("gguf: v2 file") {
    Sample s = make_sample(2);
    auto f = parse(s.b.bytes());
    CHECK(f->version() == 2);
    CHECK(f->tensors().size() == sample_tensors().size());
}

TEST_CASE("gguf: header only, empty tensors, maximal names") {
    Sample s = make_file(0, no_kvs);
    auto f = parse(s.b.bytes());
    CHECK(f->metadata().empty() && f->tensors().empty());

    // A tensor whose name has exactly 63 bytes, and empty tensors placed anywhere in the file.
    const std::string name63(63, 'x');
    s = make_file(0, no_kvs, {f32_tensor(name63), {"z0", {0}, 0}, {"z1", {256, 0, 3}, uint32_t(GgmlType::Q4_K)}});
    f = parse(s.b.bytes());
    CHECK(f->find_tensor(name63) != nullptr);
    CHECK(f->find_tensor("z1")->nbytes == 0 && f->find_tensor("z1")->element_count() == 0);

    // Zero dims: a scalar.
    s = make_file(0, no_kvs, {{"scalar", {}, 0}, f32_tensor("after")});
    f = parse(s.b.bytes());
    CHECK(f->tensors()[0].n_dims == 0 && f->tensors()[0].nbytes == 4 && f->tensors()[0].element_count() == 1);
}

// --- malformed files: one test per error class ---------------------------------------------

TEST_CASE("gguf: every truncation of a valid file is rejected") {
    const Bytes full = make_sample().b.bytes();
    CHECK(parse(full) != nullptr);
    for (size_t n = 0; n < full.size(); ++n) {
        const Bytes prefix(full.begin(), full.begin() + n);  // exact-size copy so ASan sees overreads
        const std::string m = [&]() -> std::string {
            try {
                parse(prefix);
                return "parsed";
            } catch (const moe::Error& e) {
                if (e.code() != ErrorCode::GgufFormat) return std::string("wrong code: ") + e.what();
                if (!e.has_offset() || e.offset() > n) return std::string("bad offset: ") + e.what();
                return "";
            }
        }();
        CHECK_MSG(m.empty(), "prefix of %zu bytes: %s", n, m.c_str());
    }
    CHECK_GGUF_ERROR(Bytes{}, 0, "unexpected end of file: magic");
    CHECK_GGUF_ERROR(Bytes(full.begin(), full.begin() + 10), 8, "unexpected end of file: tensor count");
}

TEST_CASE("gguf: bad magic") {
    Bytes b = make_file(0, no_kvs).b.bytes();
    b[3] = 'X';
    CHECK_GGUF_ERROR(b, 0, "not a GGUF file");
}

TEST_CASE("gguf: unsupported versions") {
    GgufBuilder b;
    b.header(1, 0, 0);
    CHECK_GGUF_ERROR(b.bytes(), 4, "GGUF v1 is not supported");
    b.patch_u32(4, 0);
    CHECK_GGUF_ERROR(b.bytes(), 4, "version 0");
    b.patch_u32(4, 3u << 24);  // 3 written big-endian
    CHECK_GGUF_ERROR(b.bytes(), 4, "big-endian");
    b.patch_u32(4, 2u << 16);
    CHECK_GGUF_ERROR(b.bytes(), 4, "big-endian");
    b.patch_u32(4, 4);
    CHECK_GGUF_ERROR(b.bytes(), 4, "version 4 is not supported");
    b.patch_u32(4, 0xFFFFFFFF);
    CHECK_GGUF_ERROR(b.bytes(), 4, "is not supported");
}

TEST_CASE("gguf: negative and implausible counts") {
    GgufBuilder b;
    b.header(3, kI64Min, 0);
    CHECK_GGUF_ERROR(b.bytes(), 8, "tensor count 9223372036854775808 is negative");
    b.patch_u64(8, 0);
    b.patch_u64(16, kU64Max);
    CHECK_GGUF_ERROR(b.bytes(), 16, "kv count 18446744073709551615 is negative");

    // 1 kv needs at least 14 bytes: 13 remaining bytes cannot hold one.
    b.patch_u64(16, 1);
    b.fill(13, 0);
    CHECK_GGUF_ERROR(b.bytes(), 16, "kv count 1 is implausible");
    b.patch_u64(16, uint64_t{1} << 40);
    CHECK_GGUF_ERROR(b.bytes(), 16, "implausible");

    // The tensor count is bounded by what the metadata leaves over.
    Sample s = make_file(1, [](GgufBuilder& g) { g.kv_u32("k", 1); });
    s.b.patch_u64(8, 1);  // one tensor info (>= 24 bytes) but nothing after the kv
    CHECK_GGUF_ERROR(s.b.bytes(), 8, "tensor count 1 is implausible");
    s.b.patch_u64(8, (uint64_t{1} << 63) - 1);
    CHECK_GGUF_ERROR(s.b.bytes(), 8, "implausible");
}

TEST_CASE("gguf: string length past the end") {
    // Key length.
    Sample s = make_file(1, [](GgufBuilder& g) { g.kv_str("general.name", "abc"); });
    s.b.patch_u64(24, 1000);
    CHECK_GGUF_ERROR(s.b.bytes(), 24, "key of 1000 bytes runs past the end of the file");
    s.b.patch_u64(24, kU64Max);  // would wrap any "pos + len" arithmetic
    CHECK_GGUF_ERROR(s.b.bytes(), 24, "runs past the end");

    // String value length.
    s = make_file(1, [](GgufBuilder& g) { g.kv_str("general.name", "abc"); });
    const uint64_t value_at = 24 + 8 + 12 + 4;
    s.b.patch_u64(value_at, 4);
    CHECK_GGUF_ERROR(s.b.bytes(), value_at, "kv 'general.name': string value of 4 bytes runs past the end");
    s.b.patch_u64(value_at, kU64Max - 2);
    CHECK_GGUF_ERROR(s.b.bytes(), value_at, "runs past the end");

    // A string element inside an array.
    uint64_t elem_at = 0;
    s = make_file(1, [&](GgufBuilder& g) {
        g.array("tokenizer.ggml.tokens", ValueType::String, 2);
        g.str("a");
        elem_at = g.str("b");
    });
    s.b.patch_u64(elem_at, 2);
    CHECK_GGUF_ERROR(s.b.bytes(), elem_at, "array string of 2 bytes runs past the end");

    // Tensor name.
    s = make_file(0, no_kvs, {f32_tensor("w")});
    s.b.patch_u64(s.fields[0].name, kU64Max);
    CHECK_GGUF_ERROR(s.b.bytes(), s.fields[0].name, "tensor #0: name of 18446744073709551615 bytes");
}

TEST_CASE("gguf: empty key, duplicate key, unknown value type") {
    Sample s = make_file(1, [](GgufBuilder& g) { g.kv_u32("", 1); });
    CHECK_GGUF_ERROR(s.b.bytes(), 24, "empty key");

    uint64_t second = 0;
    s = make_file(3, [&](GgufBuilder& g) {
        g.kv_u32("a", 1);
        g.kv_str("b", "x");
        second = g.kv_u32("a", 2);
    });
    CHECK_GGUF_ERROR(s.b.bytes(), second, "kv #2: duplicate key 'a'");

    s = make_file(1, [](GgufBuilder& g) { g.kv_u32("k", 1); });
    s.b.patch_u32(24 + 9, 13);
    CHECK_GGUF_ERROR(s.b.bytes(), 24 + 9, "kv 'k': value type 13 is not a GGUF value type");
}

TEST_CASE("gguf: huge array counts") {
    uint64_t count_at = 0;
    auto with_array = [&](ValueType elem) {
        return make_file(1, [&](GgufBuilder& g) {
            count_at = g.array("arr", elem, 1) + 8 + 3 + 4 + 4;
            g.u64(0);
        }).b;
    };
    for (ValueType elem : {ValueType::U8, ValueType::U16, ValueType::F32, ValueType::U64, ValueType::String}) {
        for (uint64_t count : {uint64_t{1000}, uint64_t{1} << 61, uint64_t{1} << 62, kI64Min, kU64Max}) {
            GgufBuilder b = with_array(elem);
            b.patch_u64(count_at, count);
            CHECK_GGUF_ERROR(b.bytes(), count_at, "kv 'arr': array of " + std::to_string(count));
        }
    }
    // Unknown element type.
    GgufBuilder b = with_array(ValueType::U8);
    b.patch_u32(count_at - 4, 99);
    CHECK_GGUF_ERROR(b.bytes(), count_at - 4, "array element type 99 is not a GGUF value type");
}

TEST_CASE("gguf: nested array") {
    uint64_t key_at = 0;
    Sample s = make_file(1, [&](GgufBuilder& g) {
        key_at = g.array("nested", ValueType::Array, 1);
        g.u32(uint32_t(ValueType::U8));
        g.u64(0);
    });
    CHECK_GGUF_ERROR(s.b.bytes(), key_at + 8 + 6 + 4, "kv 'nested': nested arrays are not supported");
}

TEST_CASE("gguf: bad general.alignment") {
    // Wrong type: the offset is that of the value type field.
    for (ValueType t : {ValueType::U64, ValueType::I32, ValueType::U16, ValueType::String}) {
        Sample s = make_file(1, [&](GgufBuilder& g) {
            g.key("general.alignment", t);
            if (t == ValueType::String) {
                g.str("32");
            } else {
                g.u64(32);
            }
        });
        const uint64_t type_at = 24 + 8 + 17;
        CHECK_GGUF_ERROR(s.b.bytes(), type_at, "kv 'general.alignment': must be of type u32, not ");
    }
    // Bad values: the offset is that of the value.
    for (uint32_t v : {0u, 3u, 48u, 0xFFFFFFFFu}) {
        Sample s = make_file(1, [&](GgufBuilder& g) { g.kv_u32("general.alignment", v); });
        CHECK_GGUF_ERROR(s.b.bytes(), 24 + 8 + 17 + 4,
                         "alignment " + std::to_string(v) + " is not a non-zero power of two");
    }
}

TEST_CASE("gguf: tensor names") {
    Sample s = make_file(0, no_kvs, {f32_tensor("a"), f32_tensor("b"), f32_tensor("a")});
    CHECK_GGUF_ERROR(s.b.bytes(), s.fields[2].name, "tensor #2: duplicate tensor name 'a'");

    s = make_file(0, no_kvs, {f32_tensor(std::string(64, 'n'))});
    CHECK_GGUF_ERROR(s.b.bytes(), s.fields[0].name, "is 64 bytes long, the limit is 63");
}

TEST_CASE("gguf: n_dims > 4") {
    GgufBuilder b;
    b.header(3, 1, 0);
    const TensorFields f = b.tensor_info("t", {1, 1, 1, 1, 1}, 0, 0);
    b.fill(64, 0);
    CHECK_GGUF_ERROR(b.bytes(), f.n_dims, "tensor 't': n_dims is 5, the maximum is 4");
}

TEST_CASE("gguf: negative dimension and element count overflow") {
    Sample s = make_file(0, no_kvs, {{"t", {32, 2, 2}, 0}});
    s.b.patch_u64(s.fields[0].dims[1], kU64Max);
    CHECK_GGUF_ERROR(s.b.bytes(), s.fields[0].dims[1], "dimension 1 is 18446744073709551615, which is negative");

    s = make_file(0, no_kvs, {{"t", {32, 2, 2}, 0}});
    s.b.patch_u64(s.fields[0].dims[0], uint64_t{1} << 32);
    s.b.patch_u64(s.fields[0].dims[1], uint64_t{1} << 30);
    s.b.patch_u64(s.fields[0].dims[2], 2);  // 2^32 * 2^30 * 2 = 2^63 > INT64_MAX
    CHECK_GGUF_ERROR(s.b.bytes(), s.fields[0].dims[2], "overflows int64 at dimension 2");

    // Fits int64 as an element count, but not as a byte count of F64.
    s = make_file(0, no_kvs, {{"t", {32, 2}, uint32_t(GgmlType::F64)}});
    s.b.patch_u64(s.fields[0].dims[0], uint64_t{1} << 61);
    CHECK_GGUF_ERROR(s.b.bytes(), s.fields[0].type,
                     "byte size of a F64 tensor of shape {2305843009213693952, 2} overflows");
}

TEST_CASE("gguf: unknown type id") {
    for (uint32_t id : {4u, 5u, 31u, 33u, 36u, 43u, 1000u, 0xFFFFFFFFu}) {
        Sample s = make_file(0, no_kvs, {f32_tensor("t")});
        s.b.patch_u32(s.fields[0].type, id);
        CHECK_GGUF_ERROR(s.b.bytes(), s.fields[0].type, "tensor 't': unknown ggml type id " + std::to_string(id));
    }
}

TEST_CASE("gguf: ne0 not a multiple of the block size") {
    Sample s = make_file(0, no_kvs, {{"q", {256, 2}, uint32_t(GgmlType::Q4_K)}});
    s.b.patch_u64(s.fields[0].dims[0], 100);
    CHECK_GGUF_ERROR(s.b.bytes(), s.fields[0].dims[0], "ne[0] = 100 is not a multiple of the Q4_K block size 256");
    s = make_file(0, no_kvs, {{"m", {32}, uint32_t(GgmlType::MXFP4)}});
    s.b.patch_u64(s.fields[0].dims[0], 48);
    CHECK_GGUF_ERROR(s.b.bytes(), s.fields[0].dims[0], "MXFP4 block size 32");
    // No dims at all: a quantized scalar cannot exist; blame the type.
    GgufBuilder b;
    b.header(3, 1, 0);
    const TensorFields f = b.tensor_info("s", {}, uint32_t(GgmlType::Q8_0), 0);
    b.fill(64, 0);
    CHECK_GGUF_ERROR(b.bytes(), f.type, "ne[0] = 1 is not a multiple");
}

TEST_CASE("gguf: misaligned tensor offset") {
    Sample s = make_file(0, no_kvs, {f32_tensor("a"), f32_tensor("b")});
    s.b.patch_u64(s.fields[1].offset, 260);
    CHECK_GGUF_ERROR(s.b.bytes(), s.fields[1].offset,
                     "tensor 'b': data offset 260 is not a multiple of the alignment 32");
}

TEST_CASE("gguf: tensor data past the end of the file") {
    Sample s = make_file(0, no_kvs, {f32_tensor("a"), f32_tensor("b")});
    const uint64_t size = s.b.size();
    const uint64_t start = s.data_start + 256;
    s.b.patch_u64(s.fields[1].offset, 512);
    CHECK_GGUF_ERROR(s.b.bytes(), s.fields[1].offset,
                     "tensor 'b': data [" + std::to_string(start + 256) + ", " + std::to_string(start + 512) +
                         ") runs past the end of the file (" + std::to_string(size) + " bytes)");

    // The data would end past the file because the shape grew.
    s = make_file(0, no_kvs, {f32_tensor("a"), f32_tensor("b")});
    s.b.patch_u64(s.fields[1].dims[1], 3);
    CHECK_GGUF_ERROR(s.b.bytes(), s.fields[1].offset, "runs past the end of the file");

    // Offsets that wrap when added to the data section offset.
    s = make_file(0, no_kvs, {f32_tensor("a")});
    s.b.patch_u64(s.fields[0].offset, kU64Max - 31);
    CHECK_GGUF_ERROR(s.b.bytes(), s.fields[0].offset, "overflows 64 bits");
    s.b.patch_u64(s.fields[0].offset, kI64Min);
    CHECK_GGUF_ERROR(s.b.bytes(), s.fields[0].offset, "runs past the end of the file");

    // Even an empty tensor must lie inside the file.
    s = make_file(0, no_kvs, {{"z", {0, 8}, 0}, f32_tensor("a")});
    s.b.patch_u64(s.fields[0].offset, 4096);
    CHECK_GGUF_ERROR(s.b.bytes(), s.fields[0].offset, "tensor 'z': data [");
}

TEST_CASE("gguf: overlapping tensors") {
    Sample s = make_file(0, no_kvs, {f32_tensor("a"), f32_tensor("b"), f32_tensor("c")});
    s.b.patch_u64(s.fields[2].offset, 288);  // 'c' at [288, 544) overlaps 'b' at [256, 512), relative
    const uint64_t d = s.data_start;
    auto range = [](uint64_t a, uint64_t b) { return "[" + std::to_string(a) + ", " + std::to_string(b) + ")"; };
    CHECK_GGUF_ERROR(s.b.bytes(), s.fields[2].offset,
                     "tensor 'c': data " + range(d + 288, d + 544) + " overlaps tensor 'b' data " +
                         range(d + 256, d + 512));

    // Same offset.
    s = make_file(0, no_kvs, {f32_tensor("a"), f32_tensor("b")});
    s.b.patch_u64(s.fields[1].offset, 0);
    CHECK_GGUF_ERROR(s.b.bytes(), s.fields[1].offset, "tensor 'b': data [");

    // A small tensor nested inside a large one listed first.
    s = make_file(0, no_kvs, {{"big", {32, 8}, 0}, f32_tensor("x"), f32_tensor("y")});
    s.b.patch_u64(s.fields[1].offset, 32);
    CHECK_GGUF_ERROR(s.b.bytes(), s.fields[1].offset, "tensor 'x': data [");

    // Empty tensors overlap nothing.
    s = make_file(0, no_kvs, {f32_tensor("a"), {"e", {0}, 0}});
    s.b.patch_u64(s.fields[1].offset, 0);
    CHECK(parse(s.b.bytes())->find_tensor("e")->offset == 0);
}

TEST_CASE("gguf: null buffer") {
    bool threw = false;
    try {
        GgufFile::parse(nullptr, 10);
    } catch (const moe::Error& e) {
        threw = e.code() == ErrorCode::InvalidArgument;
    }
    CHECK(threw);
}

// --- mutation loop ----------------------------------------------------------------------------

struct XorShift {
    uint64_t s;
    uint64_t next() {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        return s;
    }
    uint64_t below(uint64_t n) { return next() % n; }
};

TEST_CASE("gguf: random mutants parse or throw GgufFormat") {
    const Sample sample = make_sample();
    const Bytes& base = sample.b.bytes();
    const auto& u32s = sample.b.u32_fields();
    const auto& u64s = sample.b.u64_fields();
    XorShift rng{0x9E3779B97F4A7C15ull};
    int parsed = 0, rejected = 0, bad = 0;
    for (int iter = 0; iter < 20000 && bad < 10; ++iter) {
        Bytes m = base;
        const int n_mutations = 1 + int(rng.below(3));
        for (int k = 0; k < n_mutations && !m.empty(); ++k) {
            switch (rng.below(6)) {
                case 0:  // flip one bit
                    m[rng.below(m.size())] ^= uint8_t(1u << rng.below(8));
                    break;
                case 1:  // replace one byte
                    m[rng.below(m.size())] = uint8_t(rng.next());
                    break;
                case 2:  // truncate
                    m.resize(rng.below(m.size()));
                    break;
                case 3: {  // a u64 field (count, length, dim, offset) set to an edge value
                    const uint64_t at = u64s[rng.below(u64s.size())];
                    if (at + 8 > m.size()) break;
                    const uint64_t edges[] = {0, 1, 2, 63, 64, m.size(), m.size() + 1, uint64_t{1} << 32,
                                              (uint64_t{1} << 63) - 1, kI64Min, kU64Max, kU64Max - 7, rng.next()};
                    const uint64_t v = edges[rng.below(sizeof edges / sizeof edges[0])];
                    std::memcpy(&m[at], &v, 8);
                    break;
                }
                case 4: {  // a u32 field (version, value type, n_dims, tensor type) set to an edge value
                    const uint64_t at = u32s[rng.below(u32s.size())];
                    if (at + 4 > m.size()) break;
                    const uint32_t edges[] = {0,  1,  2,  3,  4,  8,          9,
                                              12, 13, 31, 39, 43, 0xFFFFFFFF, uint32_t(rng.next())};
                    const uint32_t v = edges[rng.below(sizeof edges / sizeof edges[0])];
                    std::memcpy(&m[at], &v, 4);
                    break;
                }
                case 5: {  // drop a few bytes from the middle, shifting everything after
                    const size_t at = rng.below(m.size());
                    const size_t n = std::min<size_t>(1 + rng.below(8), m.size() - at);
                    m.erase(m.begin() + at, m.begin() + at + n);
                    break;
                }
            }
        }
        m.shrink_to_fit();  // exact-size heap block so ASan sees any overread
        try {
            auto f = parse(m);
            ++parsed;
            const std::string v = moe_test::gguf_invariant_violation(*f);
            if (!v.empty()) {
                ++bad;
                CHECK_MSG(false, "mutant %d parsed but %s", iter, v.c_str());
            }
        } catch (const moe::Error& e) {
            ++rejected;
            if (e.code() != ErrorCode::GgufFormat || !e.has_offset() || e.offset() > m.size()) {
                ++bad;
                CHECK_MSG(false, "mutant %d: code %d offset %llu: %s", iter, int(e.code()),
                          (unsigned long long)e.offset(), e.what());
            }
        } catch (const std::exception& e) {
            ++bad;
            CHECK_MSG(false, "mutant %d: unexpected exception %s", iter, e.what());
        }
    }
    std::printf("     mutants: %d parsed, %d rejected\n", parsed, rejected);
    CHECK(parsed > 100 && rejected > 100);  // the mutations reach both outcomes
}

// --- MappedFile and GgufFile::open --------------------------------------------------------

struct TempFile {
    std::string path;
    explicit TempFile(const Bytes& content) {
        char tmpl[] = "/tmp/test_gguf_XXXXXX";
        const int fd = mkstemp(tmpl);
        CHECK(fd >= 0);
        path = tmpl;
        size_t done = 0;
        while (done < content.size()) {
            const ssize_t n = write(fd, content.data() + done, content.size() - done);
            CHECK(n > 0);
            if (n <= 0) break;
            done += size_t(n);
        }
        close(fd);
    }
    ~TempFile() { unlink(path.c_str()); }
};

template <typename F>
std::string io_error_of(F&& fn) {
    try {
        fn();
    } catch (const moe::Error& e) {
        if (e.code() == ErrorCode::Io) return e.what();
        return std::string("wrong code: ") + e.what();
    }
    return "no error";
}

TEST_CASE("mapped file: open errors, empty file, release_range") {
    std::string msg = io_error_of([] { MappedFile m("/nonexistent/dir/model.gguf"); });
    CHECK_MSG(msg == "cannot open '/nonexistent/dir/model.gguf': No such file or directory", "%s", msg.c_str());
    msg = io_error_of([] { MappedFile m("/tmp"); });
    CHECK_MSG(msg == "cannot open '/tmp': Is a directory", "%s", msg.c_str());
    msg = io_error_of([] { GgufFile::open("/nonexistent.gguf"); });
    CHECK(msg.rfind("cannot open '/nonexistent.gguf'", 0) == 0);

    {
        TempFile empty(Bytes{});
        MappedFile m(empty.path);
        CHECK(m.size() == 0 && m.data() == nullptr && m.path() == empty.path);
        m.release_range(0, 100);
        CHECK_GGUF_ERROR(Bytes{}, 0, "magic");
        bool format_error = false;
        try {
            GgufFile::open(empty.path);
        } catch (const moe::Error& e) {
            format_error = e.code() == ErrorCode::GgufFormat && e.offset() == 0;
        }
        CHECK(format_error);
    }

    // Dropped pages of a private read-only mapping read back from the file unchanged.
    Bytes content(3 * 65536 + 123);
    for (size_t i = 0; i < content.size(); ++i) content[i] = uint8_t(i * 13 + (i >> 12));
    TempFile file(content);
    MappedFile m(file.path);
    CHECK(m.size() == content.size());
    CHECK(std::memcmp(m.data(), content.data(), content.size()) == 0);
    m.release_range(0, m.size());
    m.release_range(100, 70000);
    m.release_range(m.size() - 10, 10);
    m.release_range(m.size(), 5);
    m.release_range(5, kU64Max);
    m.release_range(kU64Max, kU64Max);
    CHECK(std::memcmp(m.data(), content.data(), content.size()) == 0);
}

TEST_CASE("gguf: open from a path") {
    const Sample s = make_sample();
    TempFile file(s.b.bytes());
    auto f = GgufFile::open(file.path);
    CHECK(f->mapping() != nullptr && f->mapping()->path() == file.path);
    CHECK(f->bytes() == f->mapping()->data() && f->file_size() == s.b.size());
    CHECK(f->tensors().size() == sample_tensors().size());
    CHECK(f->find("t.string")->str == "h\xc3\xa9llo");
    CHECK(moe_test::gguf_invariant_violation(*f).empty());
    CHECK(parse(s.b.bytes())->mapping() == nullptr);
}

}  // namespace

TEST_MAIN()
