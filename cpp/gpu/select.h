// Where a model runs: the loader's part of the CUDA decision. lib/gpu.ts has already checked that
// the addon is a CUDA build and probed the driver in a child process; what is left needs the model:
// plan its memory against the device's free memory (before anything is allocated), then, after the
// CPU model is loaded, create the CUDA backend from the plan. 'cuda' turns every failure into a
// typed error; 'auto' turns it into a CPU model with a one-line reason.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "../gguf/gguf_file.h"
#include "../model/model.h"
#include "../runtime/placement.h"
#include "backend.h"

namespace moe::gpu {

enum class GpuMode : uint8_t {
    Off,   // no GPU request reached the loader (lib/ decided on the CPU and knows why)
    Auto,  // use the GPU if the model fits and the backend starts, else the CPU with a reason
    Cuda,  // use the GPU or fail with a typed error
};

// The device lib/ probed and the user's placement options.
struct GpuRequest {
    GpuMode mode = GpuMode::Off;
    int device = 0;               // CUDA ordinal
    std::string device_name;
    uint64_t free_bytes = 0;      // as probed
    uint64_t total_bytes = 0;
    int64_t reserve_bytes = -1;   // kept free; -1: runtime::default_reserve
    runtime::PlacementOptions placement;  // `automatic` is set from `mode`
};

struct BackendChoice {
    bool cuda = false;            // the model runs on the CUDA backend
    std::string reason;           // why it runs where it runs (empty with GpuMode::Off)
    bool planned = false;         // `plan` holds a placement (a device was planned for, fitting or not)
    BackendPlan plan;
    std::unique_ptr<GpuBackend> backend;  // set when cuda
};

// The planner's view of a model: its tensors with layer and role, the KV cache of each layer for
// `context` positions of `kv_type` (0: Model::load's default, min(4096, training context), which
// is stored in *resolved_context), and the device scratch of one forward chunk. Free memory and
// reserve are left 0. Throws what reading the hyper-parameters throws (ModelFormat for an
// unsupported architecture or a bad key).
runtime::PlacementInput placement_input(const gguf::GgufFile& file, uint32_t context, model::KvCacheType kv_type,
                                        uint32_t* resolved_context = nullptr);

// Before the model is loaded: plans its placement. 'cuda' with a plan that does not fit throws
// MemoryError (needed vs available bytes, what would fit); 'auto' returns a CPU choice whose
// reason says what did not fit. Reopens the file's header, which Model::load parses again.
BackendChoice plan_backend(const std::string& path, const model::LoadOptions& options, const GpuRequest& request);

// After the model is loaded: creates the CUDA backend for a fitting plan. A typed failure
// (GpuUnavailable, OutOfMemory) propagates for 'cuda' and becomes the CPU reason for 'auto'.
void start_backend(BackendChoice& choice, model::Model& model, GpuMode mode);

}  // namespace moe::gpu
