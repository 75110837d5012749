#include "gguf_file.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>
#include <unordered_set>

#include "../common/error.h"
#include "../quant/ggml_types.h"

// GGUF is little-endian and tensor data is consumed in place by the kernels, so the engine only
// runs on little-endian hosts; field loads below are plain memcpy copies.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "node-moe requires a little-endian host");

namespace moe::gguf {

namespace {

constexpr uint64_t kInt64Max = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());

// Smallest possible records, used to bound counts before anything is allocated from them.
// kv: key length (8) + a 1-byte key + value type (4) + the smallest value (1).
constexpr uint64_t kMinKvBytes = 8 + 1 + 4 + 1;
// tensor info: name length (8) + n_dims (4) + type (4) + offset (8); names may be empty.
constexpr uint64_t kMinTensorInfoBytes = 8 + 4 + 4 + 8;
// A string element is at least its u64 length.
constexpr uint64_t kMinStringBytes = 8;

// Counts are bounded by the file size before use, but in a multi-GB file that bound still allows
// reservations of many GB from one corrupt field. Reserve at most this many up front; beyond it
// vectors grow only as records actually parse.
size_t reserve_hint(uint64_t count) {
    constexpr uint64_t kMaxReserve = 1 << 16;
    return static_cast<size_t>(std::min(count, kMaxReserve));
}

// --- message helpers ------------------------------------------------------------------------

void append(std::string& s, std::string_view v) { s += v; }
template <typename T, std::enable_if_t<std::is_integral_v<T>, int> = 0>
void append(std::string& s, T v) {
    s += std::to_string(v);
}
template <typename... A>
std::string cat(const A&... parts) {
    std::string s;
    (append(s, parts), ...);
    return s;
}

// Names come from a possibly corrupt file: quote them, escape non-printable bytes and cap the
// length so a message stays readable.
std::string quoted(std::string_view s) {
    constexpr size_t kMaxShown = 80;
    std::string out = "'";
    for (size_t i = 0; i < s.size() && i < kMaxShown; ++i) {
        const auto c = static_cast<unsigned char>(s[i]);
        if (c >= 0x20 && c < 0x7f && c != '\'' && c != '\\') {
            out += static_cast<char>(c);
        } else {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\x%02x", c);
            out += buf;
        }
    }
    if (s.size() > kMaxShown) out += "...";
    out += '\'';
    return out;
}

std::string hex32(uint32_t v) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "0x%08x", v);
    return buf;
}

// "[start, end)", or "[start, start + n)" when the end does not fit in 64 bits.
std::string range_str(uint64_t start, uint64_t n) {
    uint64_t end;
    if (__builtin_add_overflow(start, n, &end)) return cat("[", start, ", ", start, " + ", n, ")");
    return cat("[", start, ", ", end, ")");
}

std::string shape_str(const TensorInfo& t) {
    std::string s = "{";
    for (uint32_t d = 0; d < t.n_dims; ++d) s += cat(d ? ", " : "", t.ne[d]);
    return s + "}";
}

// --- the one bounds-checked cursor every read goes through ----------------------------------

class Reader {
public:
    Reader(const uint8_t* data, uint64_t size) : data_(data), size_(size) {}

    uint64_t pos() const noexcept { return pos_; }
    uint64_t remaining() const noexcept { return size_ - pos_; }

    // Names the record being read ("kv 'general.name'", "tensor 'output.weight'"); it prefixes
    // every message thrown until the next call.
    void set_context(std::string context) { context_ = std::move(context); }

    [[noreturn]] void fail(uint64_t offset, const std::string& message) const {
        throw Error(ErrorCode::GgufFormat, context_.empty() ? message : context_ + ": " + message, offset);
    }

    // Advances over n bytes and returns where they start. `what` + `suffix` name the field in
    // the message, which is only built on failure.
    const uint8_t* take(uint64_t n, std::string_view what, std::string_view suffix = {}) {
        if (n > remaining()) {
            fail(pos_, cat("unexpected end of file: ", what, suffix, " needs ", n, " bytes but only ",
                           remaining(), " remain (file is ", size_, " bytes)"));
        }
        const uint8_t* p = data_ + pos_;
        pos_ += n;
        return p;
    }

    // Little-endian load of a fixed-size field; memcpy because fields are not aligned.
    template <typename T>
    T read(std::string_view what, std::string_view suffix = {}) {
        static_assert(std::is_trivially_copyable_v<T>);
        T v;
        std::memcpy(&v, take(sizeof(T), what, suffix), sizeof(T));
        return v;
    }

    // gguf_string: u64 length + bytes. The view points into the caller's buffer.
    std::string_view string(std::string_view what) {
        const uint64_t at = pos_;
        const auto len = read<uint64_t>(what, " length");
        if (len > remaining()) {
            fail(at, cat(what, " of ", len, " bytes runs past the end of the file (", remaining(),
                         " bytes remain)"));
        }
        return {reinterpret_cast<const char*>(take(len, what)), static_cast<size_t>(len)};
    }

private:
    const uint8_t* data_;
    uint64_t size_;
    uint64_t pos_ = 0;
    std::string context_;
};

// --- field readers ---------------------------------------------------------------------------

void check_version(const Reader& r, uint64_t at, uint32_t version) {
    if (version == 1) r.fail(at, "GGUF v1 is not supported");
    if (version == 0) r.fail(at, "invalid GGUF version 0");
    // ggml's heuristic: a byte-swapped small version number has its low 16 bits clear.
    if ((version & 0xFFFF) == 0) {
        r.fail(at, cat("version field reads as ", hex32(version),
                       ": this is a big-endian (byte-swapped) GGUF file, which is not supported"));
    }
    if (version > 3) r.fail(at, cat("GGUF version ", version, " is not supported (this reader handles 2 and 3)"));
}

// A u64 count field; ggml reads it as int64, so values with the top bit set are negative.
uint64_t read_count(Reader& r, std::string_view what) {
    const uint64_t at = r.pos();
    const auto n = r.read<uint64_t>(what);
    if (n > kInt64Max) r.fail(at, cat(what, " ", n, " is negative as a signed 64-bit value"));
    return n;
}

// Bounds a count by the bytes left, at min_bytes per record, before anything is allocated from it.
void check_count_fits(const Reader& r, uint64_t at, uint64_t n, std::string_view what, uint64_t min_bytes,
                      std::string_view record) {
    if (n > r.remaining() / min_bytes) {
        r.fail(at, cat(what, " ", n, " is implausible: ", r.remaining(), " bytes remain and each ", record,
                       " needs at least ", min_bytes));
    }
}

ValueType read_value_type(Reader& r, std::string_view what) {
    const uint64_t at = r.pos();
    const auto v = r.read<uint32_t>(what);
    if (v > static_cast<uint32_t>(ValueType::F64)) {
        r.fail(at, cat(what, " ", v, " is not a GGUF value type (valid: 0-12)"));
    }
    return static_cast<ValueType>(v);
}

void read_scalar(Reader& r, MetadataEntry& e) {
    switch (e.type) {
        case ValueType::U8: e.u64 = r.read<uint8_t>("u8 value"); break;
        case ValueType::I8: e.i64 = r.read<int8_t>("i8 value"); break;
        case ValueType::U16: e.u64 = r.read<uint16_t>("u16 value"); break;
        case ValueType::I16: e.i64 = r.read<int16_t>("i16 value"); break;
        case ValueType::U32: e.u64 = r.read<uint32_t>("u32 value"); break;
        case ValueType::I32: e.i64 = r.read<int32_t>("i32 value"); break;
        case ValueType::F32: e.f64 = r.read<float>("f32 value"); break;
        // ggml treats any non-zero byte as true.
        case ValueType::Bool: e.u64 = r.read<uint8_t>("bool value") != 0; break;
        case ValueType::String: e.str = r.string("string value"); break;
        case ValueType::U64: e.u64 = r.read<uint64_t>("u64 value"); break;
        case ValueType::I64: e.i64 = r.read<int64_t>("i64 value"); break;
        case ValueType::F64: e.f64 = r.read<double>("f64 value"); break;
        case ValueType::Array: break;  // handled by read_value
    }
}

void read_array(Reader& r, MetadataEntry& e) {
    const uint64_t elem_at = r.pos();
    e.elem_type = read_value_type(r, "array element type");
    if (e.elem_type == ValueType::Array) r.fail(elem_at, "nested arrays are not supported");

    const uint64_t count_at = r.pos();
    e.count = r.read<uint64_t>("array count");
    if (e.elem_type == ValueType::String) {
        if (e.count > r.remaining() / kMinStringBytes) {
            r.fail(count_at, cat("array of ", e.count, " strings cannot fit in the ", r.remaining(),
                                 " bytes that remain"));
        }
        e.strings.reserve(reserve_hint(e.count));
        for (uint64_t i = 0; i < e.count; ++i) e.strings.push_back(r.string("array string"));
        return;
    }
    const size_t elem_size = value_type_size(e.elem_type);
    if (e.count > r.remaining() / elem_size) {
        r.fail(count_at, cat("array of ", e.count, " ", value_type_name(e.elem_type), " elements (", elem_size,
                             " bytes each) runs past the end of the file (", r.remaining(), " bytes remain)"));
    }
    e.array_data = r.take(e.count * elem_size, "array data");
}

void read_value(Reader& r, MetadataEntry& e) {
    e.type = read_value_type(r, "value type");
    if (e.type == ValueType::Array) {
        read_array(r, e);
    } else {
        read_scalar(r, e);
    }
}

// general.alignment decides where the data section starts, so it gets checked as it is read.
uint64_t check_alignment(const Reader& r, const MetadataEntry& e, uint64_t type_at) {
    if (e.type != ValueType::U32) r.fail(type_at, cat("must be of type u32, not ", value_type_name(e.type)));
    if (e.u64 == 0 || (e.u64 & (e.u64 - 1)) != 0) {
        r.fail(type_at + 4, cat("alignment ", e.u64, " is not a non-zero power of two"));
    }
    return e.u64;
}

// n_dims, dims, type; fills ne, type and nbytes.
void read_shape(Reader& r, TensorInfo& t) {
    const uint64_t ndims_at = r.pos();
    t.n_dims = r.read<uint32_t>("n_dims");
    if (t.n_dims > kMaxDims) r.fail(ndims_at, cat("n_dims is ", t.n_dims, ", the maximum is ", kMaxDims));

    const uint64_t dims_at = r.pos();
    int64_t elements = 1;  // running product, kept within int64 so element_count() cannot overflow
    for (uint32_t d = 0; d < t.n_dims; ++d) {
        const uint64_t at = r.pos();
        const auto v = r.read<uint64_t>("dimension");
        if (v > kInt64Max) {
            r.fail(at, cat("dimension ", d, " is ", v, ", which is negative as a signed 64-bit value"));
        }
        t.ne[d] = static_cast<int64_t>(v);
        if (t.ne[d] != 0 && elements > std::numeric_limits<int64_t>::max() / t.ne[d]) {
            r.fail(at, cat("element count of shape ", shape_str(t), " overflows int64 at dimension ", d));
        }
        elements *= t.ne[d];
    }

    const uint64_t type_at = r.pos();
    t.type = r.read<uint32_t>("type");
    const quant::TypeTraits* traits = quant::type_traits(t.type);
    if (!traits) r.fail(type_at, cat("unknown ggml type id ", t.type));
    if (t.ne[0] % traits->block_size != 0) {
        // With no dims, ne[0] is the implicit 1 and the type is what cannot hold it.
        r.fail(t.n_dims > 0 ? dims_at : type_at,
               cat("ne[0] = ", t.ne[0], " is not a multiple of the ", traits->name, " block size ",
                   traits->block_size));
    }

    uint64_t n = static_cast<uint64_t>(t.ne[0] / traits->block_size);
    bool overflow = __builtin_mul_overflow(n, static_cast<uint64_t>(traits->type_size), &n);
    for (uint32_t d = 1; d < kMaxDims; ++d) {
        overflow |= __builtin_mul_overflow(n, static_cast<uint64_t>(t.ne[d]), &n);
    }
    if (overflow) {
        r.fail(type_at,
               cat("byte size of a ", traits->name, " tensor of shape ", shape_str(t), " overflows 64 bits"));
    }
    t.nbytes = n;
}

}  // namespace

const char* value_type_name(ValueType t) noexcept {
    switch (t) {
        case ValueType::U8: return "u8";
        case ValueType::I8: return "i8";
        case ValueType::U16: return "u16";
        case ValueType::I16: return "i16";
        case ValueType::U32: return "u32";
        case ValueType::I32: return "i32";
        case ValueType::F32: return "f32";
        case ValueType::Bool: return "bool";
        case ValueType::String: return "string";
        case ValueType::Array: return "array";
        case ValueType::U64: return "u64";
        case ValueType::I64: return "i64";
        case ValueType::F64: return "f64";
    }
    return "unknown";
}

size_t value_type_size(ValueType t) noexcept {
    switch (t) {
        case ValueType::U8:
        case ValueType::I8:
        case ValueType::Bool: return 1;
        case ValueType::U16:
        case ValueType::I16: return 2;
        case ValueType::U32:
        case ValueType::I32:
        case ValueType::F32: return 4;
        case ValueType::U64:
        case ValueType::I64:
        case ValueType::F64: return 8;
        case ValueType::String:
        case ValueType::Array: return 0;
    }
    return 0;
}

std::unique_ptr<GgufFile> GgufFile::open(const std::string& path) {
    std::unique_ptr<GgufFile> f(new GgufFile());
    f->map_ = std::make_unique<MappedFile>(path);
    f->bytes_ = f->map_->data();
    f->size_ = f->map_->size();
    f->parse_all();
    return f;
}

std::unique_ptr<GgufFile> GgufFile::parse(const uint8_t* data, uint64_t size) {
    if (data == nullptr && size != 0) {
        throw Error(ErrorCode::InvalidArgument, "GgufFile::parse: null data with non-zero size");
    }
    std::unique_ptr<GgufFile> f(new GgufFile());
    f->bytes_ = data;
    f->size_ = size;
    f->parse_all();
    return f;
}

const MetadataEntry* GgufFile::find(std::string_view key) const noexcept {
    for (const MetadataEntry& e : metadata_) {
        if (e.key == key) return &e;
    }
    return nullptr;
}

const TensorInfo* GgufFile::find_tensor(std::string_view name) const noexcept {
    for (const TensorInfo& t : tensors_) {
        if (t.name == name) return &t;
    }
    return nullptr;
}

void GgufFile::parse_all() {
    Reader r(bytes_, size_);

    // Header.
    const auto magic = r.read<uint32_t>("magic");
    if (magic != kMagic) {
        char got[16];
        std::snprintf(got, sizeof got, "%02x %02x %02x %02x", bytes_[0], bytes_[1], bytes_[2], bytes_[3]);
        r.fail(0, cat("not a GGUF file: the first 4 bytes are ", got, ", expected 47 47 55 46 (\"GGUF\")"));
    }
    const uint64_t version_at = r.pos();
    version_ = r.read<uint32_t>("version");
    check_version(r, version_at, version_);
    const uint64_t tensor_count_at = r.pos();
    const uint64_t tensor_count = read_count(r, "tensor count");
    const uint64_t kv_count_at = r.pos();
    const uint64_t kv_count = read_count(r, "kv count");
    check_count_fits(r, kv_count_at, kv_count, "kv count", kMinKvBytes, "key/value pair");

    // Metadata. Keys are views into the file bytes, so the set stays valid while metadata_ grows.
    std::unordered_set<std::string_view> keys;
    metadata_.reserve(reserve_hint(kv_count));
    for (uint64_t i = 0; i < kv_count; ++i) {
        r.set_context(cat("kv #", i));
        const uint64_t at = r.pos();
        const std::string_view key = r.string("key");
        if (key.empty()) r.fail(at, "empty key");
        if (!keys.insert(key).second) r.fail(at, cat("duplicate key ", quoted(key)));
        r.set_context(cat("kv ", quoted(key)));

        MetadataEntry& e = metadata_.emplace_back();
        e.key = key;
        e.offset = at;
        const uint64_t type_at = r.pos();
        read_value(r, e);
        if (key == "general.alignment") alignment_ = check_alignment(r, e, type_at);
    }

    // Tensor infos. Their count is bounded only now, by what the metadata left over.
    r.set_context("");
    check_count_fits(r, tensor_count_at, tensor_count, "tensor count", kMinTensorInfoBytes, "tensor info");
    std::unordered_set<std::string_view> names;
    std::vector<uint64_t> offset_field_at;  // per tensor, for placement errors below
    tensors_.reserve(reserve_hint(tensor_count));
    offset_field_at.reserve(reserve_hint(tensor_count));
    for (uint64_t i = 0; i < tensor_count; ++i) {
        r.set_context(cat("tensor #", i));
        const uint64_t at = r.pos();
        const std::string_view name = r.string("name");
        if (name.size() > kMaxTensorNameLength) {
            r.fail(at, cat("name ", quoted(name), " is ", name.size(), " bytes long, the limit is ",
                           kMaxTensorNameLength));
        }
        if (!names.insert(name).second) r.fail(at, cat("duplicate tensor name ", quoted(name)));
        r.set_context(cat("tensor ", quoted(name)));

        TensorInfo& t = tensors_.emplace_back();
        t.name = name;
        t.info_offset = at;
        read_shape(r, t);
        offset_field_at.push_back(r.pos());
        t.offset = r.read<uint64_t>("data offset");
        if (t.offset % alignment_ != 0) {
            r.fail(offset_field_at.back(),
                   cat("data offset ", t.offset, " is not a multiple of the alignment ", alignment_));
        }
    }

    // Data section: starts at the next multiple of the alignment after the tensor infos.
    r.set_context("");
    const uint64_t pad = (alignment_ - r.pos() % alignment_) % alignment_;
    if (__builtin_add_overflow(r.pos(), pad, &data_offset_)) {
        r.fail(r.pos(), "data section offset overflows 64 bits");
    }

    for (size_t i = 0; i < tensors_.size(); ++i) {
        TensorInfo& t = tensors_[i];
        r.set_context(cat("tensor ", quoted(t.name)));
        if (__builtin_add_overflow(data_offset_, t.offset, &t.file_offset)) {
            r.fail(offset_field_at[i], cat("data offset ", t.offset,
                                           " overflows 64 bits when added to the data section offset ",
                                           data_offset_));
        }
        if (t.file_offset > size_ || t.nbytes > size_ - t.file_offset) {
            r.fail(offset_field_at[i], cat("data ", range_str(t.file_offset, t.nbytes),
                                           " runs past the end of the file (", size_, " bytes)"));
        }
        t.data = bytes_ + t.file_offset;
    }

    // Overlap check over non-empty tensors sorted by start: if no neighbour pair overlaps, no
    // pair does. Empty tensors occupy no bytes and may sit anywhere.
    std::vector<size_t> order;
    order.reserve(tensors_.size());
    for (size_t i = 0; i < tensors_.size(); ++i) {
        if (tensors_[i].nbytes != 0) order.push_back(i);
    }
    std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
        const uint64_t oa = tensors_[a].file_offset, ob = tensors_[b].file_offset;
        return oa != ob ? oa < ob : a < b;
    });
    for (size_t k = 1; k < order.size(); ++k) {
        const TensorInfo& prev = tensors_[order[k - 1]];
        const TensorInfo& t = tensors_[order[k]];
        if (t.file_offset < prev.file_offset + prev.nbytes) {
            r.set_context(cat("tensor ", quoted(t.name)));
            r.fail(offset_field_at[order[k]], cat("data ", range_str(t.file_offset, t.nbytes), " overlaps tensor ",
                                                  quoted(prev.name), " data ",
                                                  range_str(prev.file_offset, prev.nbytes)));
        }
    }
}

}  // namespace moe::gguf
