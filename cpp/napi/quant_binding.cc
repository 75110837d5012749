// quantize / dequantize / cpuInfo / typeTraits: the quant formats as seen from JS. Argument checks
// happen here on the JS thread; the row kernels run either inline (small, *Sync) or on a thread of
// our own (BackgroundTask) for whole tensors.
#include <cmath>
#include <cstring>
#include <string>

#include "../common/error.h"
#include "../cpu/cpu_features.h"
#include "../quant/quant.h"
#include "background.h"
#include "bindings.h"
#include "errors.h"

namespace moe::napi {

namespace {

cpu::Isa isa_argument(const Napi::CallbackInfo& info, size_t index) {
    if (index >= info.Length() || info[index].IsUndefined() || info[index].IsNull()) return cpu::active_isa();
    if (!info[index].IsString()) throw Napi::TypeError::New(info.Env(), "isa must be a string");
    cpu::Isa isa = cpu::parse_isa(info[index].As<Napi::String>().Utf8Value());
    cpu::require_isa(isa);
    return isa;
}

const quant::TypeTraits& type_argument(const Napi::CallbackInfo& info, size_t index) {
    if (index >= info.Length() || !info[index].IsNumber()) {
        throw Napi::TypeError::New(info.Env(), "type must be a ggml type id (number)");
    }
    double id = info[index].As<Napi::Number>().DoubleValue();
    const quant::TypeTraits* traits = nullptr;
    if (id >= 0 && id < quant::kGgmlTypeCount && std::floor(id) == id) traits = quant::type_traits(static_cast<uint32_t>(id));
    if (!traits) throw Error(ErrorCode::InvalidArgument, "unknown ggml type id " + std::to_string(id));
    return *traits;
}

uint32_t type_id_of(const quant::TypeTraits& t) {
    for (uint32_t id = 0; id < quant::kGgmlTypeCount; ++id) {
        if (quant::type_traits(id) == &t) return id;
    }
    return 0;
}

Napi::Float32Array float32_argument(const Napi::CallbackInfo& info, size_t index) {
    if (index >= info.Length() || !info[index].IsTypedArray() ||
        info[index].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array) {
        throw Napi::TypeError::New(info.Env(), "data must be a Float32Array");
    }
    return info[index].As<Napi::Float32Array>();
}

Napi::Uint8Array bytes_argument(const Napi::CallbackInfo& info, size_t index) {
    if (index >= info.Length() || !info[index].IsTypedArray() ||
        info[index].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
        throw Napi::TypeError::New(info.Env(), "data must be a Uint8Array");
    }
    return info[index].As<Napi::Uint8Array>();
}

// Everything a quantize call needs, checked on the JS thread.
struct QuantizeJob {
    uint32_t type_id;
    cpu::Isa isa;
    const float* src;
    int64_t n;
    Napi::Uint8Array out;
};

QuantizeJob prepare_quantize(const Napi::CallbackInfo& info) {
    const quant::TypeTraits& traits = type_argument(info, 0);
    Napi::Float32Array src = float32_argument(info, 1);
    cpu::Isa isa = isa_argument(info, 2);
    const uint32_t type_id = type_id_of(traits);
    const int64_t n = static_cast<int64_t>(src.ElementLength());
    if (!traits.can_quantize) {
        throw Error(ErrorCode::UnsupportedType, std::string("quantizing to ") + traits.name + " is not supported");
    }
    if (n % traits.block_size != 0) {
        throw Error(ErrorCode::InvalidArgument, std::to_string(n) + " values cannot be quantized to " + traits.name +
                                                    ": the count must be a multiple of its block size " +
                                                    std::to_string(traits.block_size));
    }
    Napi::Uint8Array out = Napi::Uint8Array::New(info.Env(), quant::row_size(traits, n));
    return {type_id, isa, src.Data(), n, out};
}

struct DequantizeJob {
    uint32_t type_id;
    cpu::Isa isa;
    const uint8_t* src;
    int64_t n;
    Napi::Float32Array out;
};

DequantizeJob prepare_dequantize(const Napi::CallbackInfo& info) {
    const quant::TypeTraits& traits = type_argument(info, 0);
    Napi::Uint8Array src = bytes_argument(info, 1);
    if (info.Length() < 3 || !info[2].IsNumber()) throw Napi::TypeError::New(info.Env(), "count must be a number");
    const double count = info[2].As<Napi::Number>().DoubleValue();
    cpu::Isa isa = isa_argument(info, 3);
    if (!(count >= 0) || std::floor(count) != count || count > 9.0e15) {
        throw Error(ErrorCode::InvalidArgument, "count must be a non-negative integer");
    }
    const int64_t n = static_cast<int64_t>(count);
    if (!traits.can_dequantize) {
        throw Error(ErrorCode::UnsupportedType, std::string("dequantizing ") + traits.name + " is not supported");
    }
    if (n % traits.block_size != 0) {
        throw Error(ErrorCode::InvalidArgument, std::to_string(n) + " is not a multiple of the " + traits.name +
                                                    " block size " + std::to_string(traits.block_size));
    }
    if (quant::row_size(traits, n) != src.ByteLength()) {
        throw Error(ErrorCode::InvalidArgument, std::to_string(n) + " " + traits.name + " values take " +
                                                    std::to_string(quant::row_size(traits, n)) + " bytes, got " +
                                                    std::to_string(src.ByteLength()));
    }
    Napi::Float32Array out = Napi::Float32Array::New(info.Env(), static_cast<size_t>(n));
    return {type_id_of(traits), isa, src.Data(), n, out};
}

Napi::Value quantize_sync(const Napi::CallbackInfo& info) {
    return call_engine(info.Env(), [&]() -> Napi::Value {
        QuantizeJob job = prepare_quantize(info);
        quant::quantize(job.type_id, job.src, job.out.Data(), job.n, job.isa);
        return job.out;
    });
}

Napi::Value quantize_async(const Napi::CallbackInfo& info) {
    return call_engine(info.Env(), [&]() -> Napi::Value {
        QuantizeJob job = prepare_quantize(info);
        uint8_t* dst = job.out.Data();
        return BackgroundTask<bool>::run(
            info.Env(),
            [job, dst]() {
                quant::quantize(job.type_id, job.src, dst, job.n, job.isa);
                return true;
            },
            [](Napi::Env, bool&, const std::vector<Napi::ObjectReference>& kept) -> Napi::Value {
                return kept[1].Value();
            },
            {info[1], job.out});
    });
}

Napi::Value dequantize_sync(const Napi::CallbackInfo& info) {
    return call_engine(info.Env(), [&]() -> Napi::Value {
        DequantizeJob job = prepare_dequantize(info);
        quant::dequantize(job.type_id, job.src, job.out.Data(), job.n, job.isa);
        return job.out;
    });
}

Napi::Value dequantize_async(const Napi::CallbackInfo& info) {
    return call_engine(info.Env(), [&]() -> Napi::Value {
        DequantizeJob job = prepare_dequantize(info);
        float* dst = job.out.Data();
        return BackgroundTask<bool>::run(
            info.Env(),
            [job, dst]() {
                quant::dequantize(job.type_id, job.src, dst, job.n, job.isa);
                return true;
            },
            [](Napi::Env, bool&, const std::vector<Napi::ObjectReference>& kept) -> Napi::Value {
                return kept[1].Value();
            },
            {info[1], job.out});
    });
}

Napi::Value cpu_info(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return call_engine(env, [&]() -> Napi::Value {
        const cpu::Features& f = cpu::features();
        Napi::Object features = Napi::Object::New(env);
        features.Set("sse42", f.sse42);
        features.Set("avx", f.avx && f.os_avx);
        features.Set("avx2", f.avx2 && f.os_avx);
        features.Set("fma", f.fma && f.os_avx);
        features.Set("f16c", f.f16c && f.os_avx);
        features.Set("avx512f", f.avx512f && f.os_avx512);
        features.Set("avx512bw", f.avx512bw && f.os_avx512);
        features.Set("avx512vl", f.avx512vl && f.os_avx512);
        features.Set("avx512dq", f.avx512dq && f.os_avx512);
        features.Set("neon", f.neon);
        Napi::Array supported = Napi::Array::New(env);
        uint32_t i = 0;
        for (cpu::Isa isa : {cpu::Isa::Scalar, cpu::Isa::Avx2, cpu::Isa::Avx512, cpu::Isa::Neon}) {
            if (cpu::isa_supported(isa)) supported.Set(i++, cpu::isa_name(isa));
        }
        Napi::Object out = Napi::Object::New(env);
        out.Set("arch", cpu::build_arch());
        out.Set("best", cpu::isa_name(cpu::best_isa()));
        out.Set("active", cpu::isa_name(cpu::active_isa()));
        out.Set("supported", supported);
        out.Set("features", features);
        return out;
    });
}

Napi::Value type_traits(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Array list = Napi::Array::New(env);
    uint32_t i = 0;
    for (uint32_t id = 0; id < quant::kGgmlTypeCount; ++id) {
        const quant::TypeTraits* t = quant::type_traits(id);
        if (!t) continue;
        Napi::Object o = Napi::Object::New(env);
        o.Set("id", id);
        o.Set("name", t->name);
        o.Set("blockSize", Napi::Number::New(env, static_cast<double>(t->block_size)));
        o.Set("typeSize", Napi::Number::New(env, static_cast<double>(t->type_size)));
        o.Set("canDequantize", t->can_dequantize);
        o.Set("canQuantize", t->can_quantize);
        list.Set(i++, o);
    }
    return list;
}

}  // namespace

void init_quant_binding(Napi::Env env, Napi::Object exports) {
    exports.Set("quantizeSync", Napi::Function::New(env, quantize_sync, "quantizeSync"));
    exports.Set("quantize", Napi::Function::New(env, quantize_async, "quantize"));
    exports.Set("dequantizeSync", Napi::Function::New(env, dequantize_sync, "dequantizeSync"));
    exports.Set("dequantize", Napi::Function::New(env, dequantize_async, "dequantize"));
    exports.Set("cpuInfo", Napi::Function::New(env, cpu_info, "cpuInfo"));
    exports.Set("typeTraits", Napi::Function::New(env, type_traits, "typeTraits"));
}

}  // namespace moe::napi
