// Probes the NVIDIA driver at run time: the driver library is opened with dlopen("libcuda.so.1")
// (LoadLibrary("nvcuda.dll") on Windows) and the few entry points are looked up by name, so no
// build of node-moe has a link-time dependency on the driver. A machine without one loads the
// addon as usual and gets a one-line reason instead of a loader error. macOS has no CUDA.
//
// The driver types and enum values are declared here from the public driver API (cuda.h) so this
// file compiles without the CUDA toolkit.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#if defined(_WIN32)
#define MOE_CUDAAPI __stdcall
#else
#define MOE_CUDAAPI
#endif

struct CUctx_st;  // cuda.h: typedef struct CUctx_st* CUcontext (global, so the two declarations agree)

namespace moe::gpu {

using CUresult = int;       // cuda.h: enum cudaError_enum (int-sized)
using CUdevice = int;       // cuda.h: typedef int CUdevice_v1
using CUcontext = CUctx_st*;

// The values of cuda.h this file uses.
constexpr CUresult CUDA_SUCCESS = 0;
constexpr int CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75;
constexpr int CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76;

struct CudaDevice {
    int index = 0;              // CUDA ordinal (after CUDA_VISIBLE_DEVICES)
    std::string name;           // "NVIDIA H200"
    uint64_t total_bytes = 0;   // cuDeviceTotalMem_v2
    // cuMemGetInfo_v2 with the device's primary context current: what allocations can still get,
    // after the memory that context itself takes (which the CUDA backend's context shares).
    uint64_t free_bytes = 0;
    int cc_major = 0, cc_minor = 0;  // compute capability (9.0: Hopper)
};

struct CudaProbe {
    bool ok = false;          // a driver loaded, cuInit succeeded and at least one device answered
    std::string reason;       // one line when !ok: "no NVIDIA driver (libcuda.so.1 not found)", "cuInit failed: CUDA_ERROR_NO_DEVICE"
    int driver_version = 0;   // cuDriverGetVersion: 1000 * major + 10 * minor (13000 is 13.0); 0 if unknown
    std::vector<CudaDevice> devices;
};

// The driver entry points the probe calls (the _v2 ABI where cuda.h maps a name to one). Function
// pointers, so a test can stand in for the driver.
struct DriverApi {
    CUresult(MOE_CUDAAPI* cuInit)(unsigned int flags) = nullptr;
    CUresult(MOE_CUDAAPI* cuDriverGetVersion)(int* version) = nullptr;
    CUresult(MOE_CUDAAPI* cuDeviceGetCount)(int* count) = nullptr;
    CUresult(MOE_CUDAAPI* cuDeviceGet)(CUdevice* device, int ordinal) = nullptr;
    CUresult(MOE_CUDAAPI* cuDeviceGetName)(char* name, int len, CUdevice device) = nullptr;
    CUresult(MOE_CUDAAPI* cuDeviceTotalMem)(size_t* bytes, CUdevice device) = nullptr;          // cuDeviceTotalMem_v2
    CUresult(MOE_CUDAAPI* cuDeviceGetAttribute)(int* value, int attribute, CUdevice device) = nullptr;
    CUresult(MOE_CUDAAPI* cuDevicePrimaryCtxRetain)(CUcontext* context, CUdevice device) = nullptr;
    CUresult(MOE_CUDAAPI* cuDevicePrimaryCtxRelease)(CUdevice device) = nullptr;               // _v2
    CUresult(MOE_CUDAAPI* cuCtxPushCurrent)(CUcontext context) = nullptr;                      // _v2
    CUresult(MOE_CUDAAPI* cuCtxPopCurrent)(CUcontext* context) = nullptr;                      // _v2
    CUresult(MOE_CUDAAPI* cuMemGetInfo)(size_t* free_bytes, size_t* total_bytes) = nullptr;     // _v2
    CUresult(MOE_CUDAAPI* cuGetErrorName)(CUresult error, const char** name) = nullptr;        // optional
};

// The library probe_cuda opens by default: "libcuda.so.1" (Linux), "nvcuda.dll" (Windows), "" (macOS).
const char* default_driver_library() noexcept;

// Opens `library` (nullptr: the default) and resolves every entry point. The library stays loaded
// for the life of the process: after cuInit the driver runs threads and exit handlers of its own,
// and unloading it under them would crash. Returns false with a one-line reason.
bool load_driver(const char* library, DriverApi& api, std::string& reason);

// Asks the driver about its devices, through `api`. Every primary context it retains it releases
// again; nothing is allocated on a device.
CudaProbe probe_cuda(const DriverApi& api);

// load_driver + probe_cuda.
CudaProbe probe_cuda(const char* library = nullptr);

// "CUDA_ERROR_NO_DEVICE" for 100: the driver's own name when it can say, else a built-in table of
// the codes a probe meets, else "CUDA error <code>".
std::string cuda_error_name(const DriverApi& api, CUresult code);

}  // namespace moe::gpu
