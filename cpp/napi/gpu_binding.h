// The GPU side of the N-API edge: the `gpu` load option parsed into gpu::GpuRequest, and the
// loader's decision (gpu::BackendChoice) as the plain object lib/ puts in model.info.backend.
#pragma once

#include <napi.h>

#include "../gpu/select.h"

namespace moe::napi {

// `options.gpu`: undefined (GpuMode::Off), or { mode: 'auto' | 'cuda', device, deviceName,
// freeMemory, totalMemory, reserveBytes?, gpuLayers?, experts?: 'gpu' | 'cpu' | number }.
// Throws TypeError / moe::Error(InvalidArgument) for malformed values.
gpu::GpuRequest gpu_request_option(const Napi::Object& load_options);

// { kind: 'cpu' | 'cuda', reason, placement? } (placement without its per-tensor list).
Napi::Object backend_to_js(Napi::Env env, const gpu::BackendChoice& choice);

}  // namespace moe::napi
