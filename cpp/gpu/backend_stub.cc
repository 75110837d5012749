// The stand-in for create_cuda_backend while no build has a CUDA forward pass (see backend.h). It
// lives in moe_core so the CPU addon, the CUDA addon and the native tests all link; the CUDA
// backend's build defines NODE_MOE_CUDA_BACKEND to replace it with cuda/backend.cu.
#include "backend.h"

#include "../common/error.h"

#if !defined(NODE_MOE_CUDA_BACKEND)

namespace moe::gpu {

std::unique_ptr<GpuBackend> create_cuda_backend(const BackendPlan&, model::Model&) {
    throw Error(ErrorCode::GpuUnavailable, "this build's CUDA backend has no forward pass yet");
}

}  // namespace moe::gpu

#endif
