// readGgufInfo / readGgufTensor: the GGUF reader as seen from JS. Parsing (and dequantizing) runs
// on a thread of our own; the plain C++ result is turned into JS values on the JS thread.
#include <cstring>
#include <memory>
#include <string>

#include "../common/error.h"
#include "../cpu/cpu_features.h"
#include "../gguf/gguf_file.h"
#include "../quant/quant.h"
#include "background.h"
#include "bindings.h"
#include "errors.h"

namespace moe::napi {

namespace {

using gguf::GgufFile;
using gguf::MetadataEntry;
using gguf::ValueType;

std::string path_argument(const Napi::CallbackInfo& info, size_t index) {
    if (index >= info.Length() || !info[index].IsString()) {
        throw Napi::TypeError::New(info.Env(), "path must be a string");
    }
    return info[index].As<Napi::String>().Utf8Value();
}

Napi::Value string_value(Napi::Env env, std::string_view s) {
    return Napi::String::New(env, s.data(), s.size());
}

// A typed array holding a copy of `count` packed little-endian elements.
template <typename TypedArray>
Napi::Value typed_array_copy(Napi::Env env, const uint8_t* data, uint64_t count, size_t elem_size) {
    TypedArray out = TypedArray::New(env, static_cast<size_t>(count));
    if (count) std::memcpy(out.Data(), data, static_cast<size_t>(count) * elem_size);
    return out;
}

Napi::Value scalar_value(Napi::Env env, const MetadataEntry& e) {
    switch (e.type) {
        case ValueType::U8:
        case ValueType::U16:
        case ValueType::U32: return Napi::Number::New(env, static_cast<double>(e.u64));
        case ValueType::I8:
        case ValueType::I16:
        case ValueType::I32: return Napi::Number::New(env, static_cast<double>(e.i64));
        case ValueType::F32:
        case ValueType::F64: return Napi::Number::New(env, e.f64);
        case ValueType::Bool: return Napi::Boolean::New(env, e.u64 != 0);
        case ValueType::String: return string_value(env, e.str);
        case ValueType::U64: return Napi::BigInt::New(env, static_cast<uint64_t>(e.u64));
        case ValueType::I64: return Napi::BigInt::New(env, static_cast<int64_t>(e.i64));
        case ValueType::Array: break;
    }
    return env.Undefined();
}

// Numeric arrays become typed arrays (vocabulary scores and token types are 100k+ entries long),
// booleans and strings plain arrays.
Napi::Value array_value(Napi::Env env, const MetadataEntry& e) {
    const uint8_t* d = e.array_data;
    const uint64_t n = e.count;
    switch (e.elem_type) {
        case ValueType::U8: return typed_array_copy<Napi::Uint8Array>(env, d, n, 1);
        case ValueType::I8: return typed_array_copy<Napi::Int8Array>(env, d, n, 1);
        case ValueType::U16: return typed_array_copy<Napi::Uint16Array>(env, d, n, 2);
        case ValueType::I16: return typed_array_copy<Napi::Int16Array>(env, d, n, 2);
        case ValueType::U32: return typed_array_copy<Napi::Uint32Array>(env, d, n, 4);
        case ValueType::I32: return typed_array_copy<Napi::Int32Array>(env, d, n, 4);
        case ValueType::F32: return typed_array_copy<Napi::Float32Array>(env, d, n, 4);
        case ValueType::F64: return typed_array_copy<Napi::Float64Array>(env, d, n, 8);
        case ValueType::U64: return typed_array_copy<Napi::BigUint64Array>(env, d, n, 8);
        case ValueType::I64: return typed_array_copy<Napi::BigInt64Array>(env, d, n, 8);
        case ValueType::Bool: {
            Napi::Array out = Napi::Array::New(env, static_cast<size_t>(n));
            for (uint64_t i = 0; i < n; ++i) out.Set(static_cast<uint32_t>(i), Napi::Boolean::New(env, d[i] != 0));
            return out;
        }
        case ValueType::String: {
            Napi::Array out = Napi::Array::New(env, e.strings.size());
            for (size_t i = 0; i < e.strings.size(); ++i) out.Set(static_cast<uint32_t>(i), string_value(env, e.strings[i]));
            return out;
        }
        case ValueType::Array: break;
    }
    return env.Undefined();
}

std::string type_label(const MetadataEntry& e) {
    if (e.type != ValueType::Array) return gguf::value_type_name(e.type);
    return std::string("array<") + gguf::value_type_name(e.elem_type) + ">";
}

Napi::Value info_to_js(Napi::Env env, const GgufFile& file) {
    Napi::Object metadata = Napi::Object::New(env);
    Napi::Object metadata_types = Napi::Object::New(env);
    for (const MetadataEntry& e : file.metadata()) {
        metadata.Set(e.key, e.type == ValueType::Array ? array_value(env, e) : scalar_value(env, e));
        metadata_types.Set(e.key, type_label(e));
    }
    Napi::Array tensors = Napi::Array::New(env, file.tensors().size());
    uint32_t i = 0;
    for (const gguf::TensorInfo& t : file.tensors()) {
        Napi::Object o = Napi::Object::New(env);
        Napi::Array shape = Napi::Array::New(env, t.n_dims);
        for (uint32_t d = 0; d < t.n_dims; ++d) shape.Set(d, Napi::Number::New(env, static_cast<double>(t.ne[d])));
        o.Set("name", t.name);
        o.Set("type", quant::type_name(t.type));
        o.Set("typeId", t.type);
        o.Set("shape", shape);
        o.Set("offset", Napi::Number::New(env, static_cast<double>(t.offset)));
        o.Set("fileOffset", Napi::Number::New(env, static_cast<double>(t.file_offset)));
        o.Set("bytes", Napi::Number::New(env, static_cast<double>(t.nbytes)));
        tensors.Set(i++, o);
    }
    Napi::Object out = Napi::Object::New(env);
    out.Set("version", file.version());
    out.Set("alignment", Napi::Number::New(env, static_cast<double>(file.alignment())));
    out.Set("dataOffset", Napi::Number::New(env, static_cast<double>(file.data_offset())));
    out.Set("fileSize", Napi::Number::New(env, static_cast<double>(file.file_size())));
    out.Set("metadata", metadata);
    out.Set("metadataTypes", metadata_types);
    out.Set("tensors", tensors);
    return out;
}

Napi::Value read_gguf_info(const Napi::CallbackInfo& info) {
    std::string path = path_argument(info, 0);
    using FilePtr = std::shared_ptr<GgufFile>;
    return BackgroundTask<FilePtr>::run(
        info.Env(), [path]() { return FilePtr(GgufFile::open(path)); },
        [](Napi::Env env, FilePtr& file, const std::vector<Napi::ObjectReference>&) { return info_to_js(env, *file); });
}

struct DequantizedTensor {
    std::unique_ptr<float[]> values;
    size_t count = 0;
};

// Reads one tensor of a file and dequantizes it to F32. Types without a kernel are refused with a
// message that names the type and the tensor.
Napi::Value read_gguf_tensor(const Napi::CallbackInfo& info) {
    return call_engine(info.Env(), [&]() -> Napi::Value {
        std::string path = path_argument(info, 0);
        if (info.Length() < 2 || !info[1].IsString()) throw Napi::TypeError::New(info.Env(), "name must be a string");
        std::string name = info[1].As<Napi::String>().Utf8Value();
        cpu::Isa isa = cpu::active_isa();
        if (info.Length() > 2 && info[2].IsString()) {
            isa = cpu::parse_isa(info[2].As<Napi::String>().Utf8Value());
            cpu::require_isa(isa);
        }
        return BackgroundTask<DequantizedTensor>::run(
            info.Env(),
            [path, name, isa]() {
                std::unique_ptr<GgufFile> file = GgufFile::open(path);
                const gguf::TensorInfo* t = file->find_tensor(name);
                if (!t) throw Error(ErrorCode::InvalidArgument, "no tensor named '" + name + "' in " + path);
                DequantizedTensor out;
                out.count = static_cast<size_t>(t->element_count());
                out.values.reset(new float[out.count ? out.count : 1]);
                const std::string what = "tensor '" + name + "'";
                quant::dequantize(t->type, t->data, out.values.get(), t->element_count(), isa, what.c_str());
                return out;
            },
            [](Napi::Env env, DequantizedTensor& t, const std::vector<Napi::ObjectReference>&) -> Napi::Value {
                // Hand the buffer over instead of copying it on the JS thread.
                float* values = t.values.release();
                Napi::ArrayBuffer buffer = Napi::ArrayBuffer::New(
                    env, values, t.count * sizeof(float), [](Napi::Env, void* p) { delete[] static_cast<float*>(p); });
                return Napi::Float32Array::New(env, t.count, buffer, 0);
            });
    });
}

}  // namespace

void init_gguf_binding(Napi::Env env, Napi::Object exports) {
    exports.Set("readGgufInfo", Napi::Function::New(env, read_gguf_info, "readGgufInfo"));
    exports.Set("readGgufTensor", Napi::Function::New(env, read_gguf_tensor, "readGgufTensor"));
}

}  // namespace moe::napi
