// cudaBuild, probeCuda and planPlacement as seen from JS, and the parsing / conversion helpers
// model_binding.cc uses for the `gpu` load option. Arguments become plain C++ structs here; the
// probe and the planner never see a Napi type.
#include "gpu_binding.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>

#include "../common/error.h"
#include "../gpu/cuda_driver.h"
#include "../runtime/placement.h"
#include "bindings.h"
#include "errors.h"

namespace moe::napi {

namespace {

#if defined(NODE_MOE_CUDA)
constexpr bool kCudaBuild = true;
#else
constexpr bool kCudaBuild = false;
#endif

Napi::Value field(const Napi::Object& o, const char* key) { return o.Has(key) ? o.Get(key) : o.Env().Undefined(); }

bool present(const Napi::Value& v) { return !v.IsUndefined() && !v.IsNull(); }

// A byte count or count: a finite integer >= 0 that a double holds exactly.
uint64_t count_field(const Napi::Object& o, const char* key, uint64_t fallback) {
    const Napi::Value v = field(o, key);
    if (!present(v)) return fallback;
    if (!v.IsNumber()) throw Napi::TypeError::New(o.Env(), std::string(key) + " must be a number");
    const double d = v.As<Napi::Number>().DoubleValue();
    if (!(d >= 0) || d > 9007199254740991.0 || std::floor(d) != d) {
        char got[32];
        std::snprintf(got, sizeof got, "%g", d);
        throw Error(ErrorCode::InvalidArgument, std::string(key) + " must be an integer >= 0, got " + got);
    }
    return static_cast<uint64_t>(d);
}

std::string string_field(const Napi::Object& o, const char* key) {
    const Napi::Value v = field(o, key);
    if (!present(v)) return "";
    if (!v.IsString()) throw Napi::TypeError::New(o.Env(), std::string(key) + " must be a string");
    return v.As<Napi::String>().Utf8Value();
}

// gpuLayers and experts into PlacementOptions (automatic is the caller's).
runtime::PlacementOptions placement_options(const Napi::Object& o) {
    runtime::PlacementOptions p;
    if (present(field(o, "gpuLayers"))) p.gpu_layers = static_cast<int64_t>(std::min<uint64_t>(count_field(o, "gpuLayers", 0), INT32_MAX));
    const Napi::Value experts = field(o, "experts");
    if (!present(experts)) return p;
    if (experts.IsString()) {
        const std::string e = experts.As<Napi::String>().Utf8Value();
        if (e == "gpu") {
            p.experts = runtime::ExpertsMode::Gpu;
        } else if (e == "cpu") {
            p.experts = runtime::ExpertsMode::Cpu;
        } else {
            throw Error(ErrorCode::InvalidArgument, "experts must be 'gpu', 'cpu' or a number of layers, got '" + e + "'");
        }
    } else {
        p.experts = runtime::ExpertsMode::Layers;
        p.expert_layers = static_cast<uint32_t>(std::min<uint64_t>(count_field(o, "experts", 0), UINT32_MAX));
    }
    return p;
}

Napi::Number num(Napi::Env env, uint64_t v) { return Napi::Number::New(env, static_cast<double>(v)); }

Napi::Object placement_to_js(Napi::Env env, const runtime::PlacementInput& in, const runtime::Placement& p, bool with_tensors) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("fits", Napi::Boolean::New(env, p.fits));
    o.Set("summary", Napi::String::New(env, p.summary));
    o.Set("blockCount", num(env, p.n_layer));
    o.Set("gpuLayers", num(env, p.gpu_layers));
    o.Set("moeLayers", num(env, p.moe_layers));
    o.Set("expertLayersOnGpu", num(env, p.expert_layers_gpu));
    o.Set("outputOnGpu", Napi::Boolean::New(env, p.output_gpu));
    o.Set("gpuBytes", num(env, p.gpu_bytes));
    o.Set("weightsGpuBytes", num(env, p.gpu_weight_bytes));
    o.Set("weightsCpuBytes", num(env, p.cpu_weight_bytes));
    o.Set("kvGpuBytes", num(env, p.gpu_kv_bytes));
    o.Set("kvCpuBytes", num(env, p.cpu_kv_bytes));
    o.Set("computeBytes", num(env, p.compute_bytes));
    o.Set("freeMemory", num(env, in.free_bytes));
    o.Set("reserveBytes", num(env, in.reserve_bytes));
    o.Set("availableBytes", num(env, p.budget_bytes));
    Napi::Array layers = Napi::Array::New(env, p.layers.size());
    for (size_t i = 0; i < p.layers.size(); ++i) {
        const runtime::LayerPlacement& l = p.layers[i];
        Napi::Object lo = Napi::Object::New(env);
        lo.Set("gpu", Napi::Boolean::New(env, l.gpu));
        lo.Set("experts", Napi::String::New(env, !l.has_experts ? "none" : l.experts_gpu ? "gpu" : "cpu"));
        lo.Set("gpuBytes", num(env, l.gpu_bytes));
        lo.Set("cpuBytes", num(env, l.cpu_bytes));
        lo.Set("kvBytes", num(env, l.kv_bytes));
        layers.Set(static_cast<uint32_t>(i), lo);
    }
    o.Set("layers", layers);
    if (with_tensors) {
        Napi::Array tensors = Napi::Array::New(env, in.tensors.size());
        for (size_t i = 0; i < in.tensors.size(); ++i) {
            const runtime::PlacementTensor& t = in.tensors[i];
            Napi::Object to = Napi::Object::New(env);
            to.Set("name", Napi::String::New(env, t.name));
            to.Set("layer", Napi::Number::New(env, t.layer));
            to.Set("role", Napi::String::New(env, runtime::role_name(t.role)));
            to.Set("bytes", num(env, t.bytes));
            to.Set("device", Napi::String::New(env, p.tensor_device[i] == runtime::Device::Gpu ? "gpu" : "cpu"));
            tensors.Set(static_cast<uint32_t>(i), to);
        }
        o.Set("tensors", tensors);
    }
    return o;
}

// probeCuda(library?: string) → { ok, reason, driverVersion, devices: [{ index, name, totalMemory,
// freeMemory, computeCapability }] }. Synchronous: lib/ calls it in a child process of its own,
// so a driver that hangs or crashes takes only that process down. `library` replaces
// libcuda.so.1 (diagnostics and tests).
Napi::Value probe_cuda(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::string library;
    if (info.Length() > 0 && present(info[0])) {
        if (!info[0].IsString()) throw Napi::TypeError::New(env, "probeCuda(library?: string)");
        library = info[0].As<Napi::String>().Utf8Value();
    }
    const gpu::CudaProbe probe = gpu::probe_cuda(library.empty() ? nullptr : library.c_str());
    Napi::Object o = Napi::Object::New(env);
    o.Set("ok", Napi::Boolean::New(env, probe.ok));
    o.Set("reason", Napi::String::New(env, probe.reason));
    o.Set("driverVersion", Napi::Number::New(env, probe.driver_version));
    Napi::Array devices = Napi::Array::New(env, probe.devices.size());
    for (size_t i = 0; i < probe.devices.size(); ++i) {
        const gpu::CudaDevice& d = probe.devices[i];
        Napi::Object dev = Napi::Object::New(env);
        dev.Set("index", Napi::Number::New(env, d.index));
        dev.Set("name", Napi::String::New(env, d.name));
        dev.Set("totalMemory", num(env, d.total_bytes));
        dev.Set("freeMemory", num(env, d.free_bytes));
        dev.Set("computeCapability", Napi::String::New(env, std::to_string(d.cc_major) + "." + std::to_string(d.cc_minor)));
        devices.Set(static_cast<uint32_t>(i), dev);
    }
    o.Set("devices", devices);
    return o;
}

// planPlacement({ tensors: [{ name, bytes, layer?, role? }], blockCount, kvBytes?: number[],
//   computeBytes?, freeMemory, totalMemory?, reserveBytes?, mode?: 'auto' | 'cuda', gpuLayers?,
//   experts? }) → the placement with its per-tensor devices, plus `error` (the out-of-memory
// message 'cuda' would throw) when it does not fit. A tensor without layer / role is classified by
// its GGUF name. Synchronous: a few thousand additions.
Napi::Value plan_placement(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return call_engine(env, [&]() -> Napi::Value {
        if (info.Length() < 1 || !info[0].IsObject()) throw Napi::TypeError::New(env, "planPlacement(input: object)");
        const Napi::Object o = info[0].As<Napi::Object>();
        runtime::PlacementInput in;
        in.n_layer = static_cast<uint32_t>(std::min<uint64_t>(count_field(o, "blockCount", 0), 1u << 20));
        const Napi::Value tensors = field(o, "tensors");
        if (!tensors.IsArray()) throw Napi::TypeError::New(env, "planPlacement: tensors must be an array");
        const Napi::Array ta = tensors.As<Napi::Array>();
        in.tensors.reserve(ta.Length());
        for (uint32_t i = 0; i < ta.Length(); ++i) {
            if (!ta.Get(i).IsObject()) throw Napi::TypeError::New(env, "planPlacement: every tensor must be an object");
            const Napi::Object t = ta.Get(i).As<Napi::Object>();
            runtime::PlacementTensor pt;
            pt.name = string_field(t, "name");
            pt.bytes = count_field(t, "bytes", 0);
            runtime::classify_tensor(pt.name, pt.layer, pt.role);
            if (present(field(t, "layer"))) {
                const Napi::Value l = field(t, "layer");
                if (!l.IsNumber()) throw Napi::TypeError::New(env, "planPlacement: layer must be a number");
                pt.layer = l.As<Napi::Number>().Int32Value();
            }
            if (present(field(t, "role")) && !runtime::parse_role(string_field(t, "role"), pt.role)) {
                throw Error(ErrorCode::InvalidArgument, "planPlacement: unknown role '" + string_field(t, "role") + "'");
            }
            in.tensors.push_back(std::move(pt));
        }
        const Napi::Value kv = field(o, "kvBytes");
        if (present(kv)) {
            if (!kv.IsArray()) throw Napi::TypeError::New(env, "planPlacement: kvBytes must be an array");
            const Napi::Array ka = kv.As<Napi::Array>();
            for (uint32_t i = 0; i < ka.Length(); ++i) {
                const Napi::Value v = ka.Get(i);
                const double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
                if (!(d >= 0)) throw Error(ErrorCode::InvalidArgument, "planPlacement: kvBytes must hold byte counts");
                in.kv_bytes.push_back(static_cast<uint64_t>(d));
            }
        }
        in.compute_bytes = count_field(o, "computeBytes", 0);
        in.free_bytes = count_field(o, "freeMemory", 0);
        in.reserve_bytes = count_field(o, "reserveBytes", runtime::default_reserve(count_field(o, "totalMemory", 0), in.free_bytes));
        runtime::PlacementOptions options = placement_options(o);
        const std::string mode = string_field(o, "mode");
        if (!mode.empty() && mode != "auto" && mode != "cuda") {
            throw Error(ErrorCode::InvalidArgument, "planPlacement: mode must be 'auto' or 'cuda', got '" + mode + "'");
        }
        options.automatic = mode != "cuda";
        const runtime::Placement p = runtime::plan_placement(in, options);
        Napi::Object out = placement_to_js(env, in, p, true);
        if (!p.fits) out.Set("error", Napi::String::New(env, runtime::shortfall_message(in, options, p)));
        return out;
    });
}

}  // namespace

gpu::GpuRequest gpu_request_option(const Napi::Object& load_options) {
    gpu::GpuRequest r;
    const Napi::Value g = field(load_options, "gpu");
    if (!present(g)) return r;
    if (!g.IsObject()) throw Napi::TypeError::New(load_options.Env(), "options.gpu must be an object");
    const Napi::Object o = g.As<Napi::Object>();
    const std::string mode = string_field(o, "mode");
    if (mode == "auto") {
        r.mode = gpu::GpuMode::Auto;
    } else if (mode == "cuda") {
        r.mode = gpu::GpuMode::Cuda;
    } else {
        throw Error(ErrorCode::InvalidArgument, "options.gpu.mode must be 'auto' or 'cuda', got '" + mode + "'");
    }
    r.device = static_cast<int>(std::min<uint64_t>(count_field(o, "device", 0), INT32_MAX));
    r.device_name = string_field(o, "deviceName");
    r.free_bytes = count_field(o, "freeMemory", 0);
    r.total_bytes = count_field(o, "totalMemory", 0);
    if (present(field(o, "reserveBytes"))) r.reserve_bytes = static_cast<int64_t>(count_field(o, "reserveBytes", 0));
    r.placement = placement_options(o);
    return r;
}

Napi::Object backend_to_js(Napi::Env env, const gpu::BackendChoice& choice) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("kind", Napi::String::New(env, choice.cuda ? "cuda" : "cpu"));
    o.Set("reason", Napi::String::New(env, choice.reason));
    if (choice.planned) o.Set("placement", placement_to_js(env, choice.plan.input, choice.plan.placement, false));
    return o;
}

void init_gpu_binding(Napi::Env env, Napi::Object exports) {
    exports.Set("cudaBuild", Napi::Boolean::New(env, kCudaBuild));
    exports.Set("probeCuda", Napi::Function::New(env, probe_cuda, "probeCuda"));
    exports.Set("planPlacement", Napi::Function::New(env, plan_placement, "planPlacement"));
}

}  // namespace moe::napi
