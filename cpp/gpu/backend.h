// The seam between model loading and the CUDA backend. The loader (cpp/gpu/select.cc) decides
// where the model runs and, when CUDA is available and the placement fits, hands the plan to
// create_cuda_backend. Everything before that call is host code that builds and is tested without
// a GPU; everything behind it belongs to the CUDA build.
//
// Who implements what:
// - cuda/backend.cu (the CUDA build, not written yet) defines create_cuda_backend. When it lands,
//   CMakeLists.txt compiles moe_core with NODE_MOE_CUDA_BACKEND=1 under NODE_MOE_CUDA, which drops
//   the stand-in in backend_stub.cc.
// - Until then, and in every CPU build, the stand-in throws Error(GpuUnavailable, "this build's
//   CUDA backend has no forward pass yet"): gpu 'cuda' rejects with GpuUnavailableError, 'auto'
//   falls back to the CPU with that reason. A model never runs on the CPU while claiming CUDA.
//
// What create_cuda_backend must do with the plan:
// - use device `plan.device`, put exactly the tensors whose placement.tensor_device is Gpu there
//   (bytes from the model's mapping), KV rows for plan.kv_tokens positions of every GPU layer and
//   scratch for one forward chunk; the CPU keeps running what the plan leaves on the CPU (routed
//   experts of hybrid layers, whole layers below the GPU ones);
// - check free memory again before allocating (the probe ran earlier, in another process) and
//   throw MemoryError / Error(OutOfMemory) or Error(GpuUnavailable) on failure, never abort: the
//   loader turns those into typed JS errors ('cuda') or a CPU fallback ('auto');
// - release everything in ~GpuBackend (the loader destroys it after the engine thread stopped and
//   before the model it reads from). A sequence can outlive it briefly (jobs drop their captures
//   in no fixed order), so device state kept per sequence must hold what it frees by itself.
// How the engine calls the backend per forward pass is added with the forward pass itself.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "../model/model.h"
#include "../runtime/placement.h"

namespace moe::gpu {

struct BackendPlan {
    int device = 0;                  // CUDA ordinal
    std::string device_name;         // for messages
    runtime::PlacementInput input;   // what was planned: every tensor (name, bytes, layer, role), KV per layer, scratch
    runtime::Placement placement;    // where each goes; placement.fits is true
    uint32_t kv_tokens = 0;          // positions of KV cache planned per GPU layer (the load's default context)
    model::KvCacheType kv_type = model::KvCacheType::F16;
};

// A model's resources on the GPU.
class GpuBackend {
public:
    virtual ~GpuBackend() = default;
    // One line for model.info.backend.reason, e.g. "CUDA on NVIDIA H200: 61 of 61 layers on the GPU, ...".
    virtual std::string describe() const = 0;
};

// Creates the backend for `plan` over the loaded CPU model `model` (whose mapping holds the weight
// bytes). Throws moe::Error: GpuUnavailable (no forward pass in this build, driver failure),
// OutOfMemory (the device has less free memory than the plan needs).
std::unique_ptr<GpuBackend> create_cuda_backend(const BackendPlan& plan, model::Model& model);

}  // namespace moe::gpu
