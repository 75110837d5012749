#include "cuda_driver.h"

#include <cstring>
#include <type_traits>

#if defined(_WIN32)
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#include <windows.h>
#elif !defined(__APPLE__)
#include <dlfcn.h>
#endif

namespace moe::gpu {

namespace {

// Names of the codes a probe can meet (cuda.h, CUresult), for drivers whose cuGetErrorName is
// missing or fails.
struct ErrorName {
    CUresult code;
    const char* name;
};
constexpr ErrorName kErrorNames[] = {
    {1, "CUDA_ERROR_INVALID_VALUE"},
    {2, "CUDA_ERROR_OUT_OF_MEMORY"},
    {3, "CUDA_ERROR_NOT_INITIALIZED"},
    {4, "CUDA_ERROR_DEINITIALIZED"},
    {34, "CUDA_ERROR_STUB_LIBRARY"},
    {36, "CUDA_ERROR_CALL_REQUIRES_NEWER_DRIVER"},
    {46, "CUDA_ERROR_DEVICE_UNAVAILABLE"},
    {100, "CUDA_ERROR_NO_DEVICE"},
    {101, "CUDA_ERROR_INVALID_DEVICE"},
    {102, "CUDA_ERROR_DEVICE_NOT_LICENSED"},
    {201, "CUDA_ERROR_INVALID_CONTEXT"},
    {214, "CUDA_ERROR_ECC_UNCORRECTABLE"},
    {304, "CUDA_ERROR_OPERATING_SYSTEM"},
    {800, "CUDA_ERROR_NOT_PERMITTED"},
    {801, "CUDA_ERROR_NOT_SUPPORTED"},
    {802, "CUDA_ERROR_SYSTEM_NOT_READY"},
    {803, "CUDA_ERROR_SYSTEM_DRIVER_MISMATCH"},
    {804, "CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE"},
    {999, "CUDA_ERROR_UNKNOWN"},
};

std::string failed(const DriverApi& api, const char* call, CUresult code) {
    return std::string(call) + " failed: " + cuda_error_name(api, code);
}

#if defined(_WIN32)
using Library = HMODULE;
Library open_library(const char* name, std::string& error) {
    Library lib = LoadLibraryA(name);
    if (!lib) error = "Windows error " + std::to_string(GetLastError());
    return lib;
}
void* find_symbol(Library lib, const char* name) { return reinterpret_cast<void*>(GetProcAddress(lib, name)); }
bool is_not_found(const std::string& error) { return error == "Windows error 126"; }  // ERROR_MOD_NOT_FOUND
#elif !defined(__APPLE__)
using Library = void*;
Library open_library(const char* name, std::string& error) {
    // RTLD_LOCAL: the driver's symbols must not interpose on anything else in the process.
    Library lib = dlopen(name, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        const char* e = dlerror();
        error = e ? e : "unknown dlopen error";
    }
    return lib;
}
void* find_symbol(Library lib, const char* name) { return dlsym(lib, name); }
bool is_not_found(const std::string& error) { return error.find("No such file") != std::string::npos; }
#endif

}  // namespace

const char* default_driver_library() noexcept {
#if defined(_WIN32)
    return "nvcuda.dll";
#elif defined(__APPLE__)
    return "";
#else
    return "libcuda.so.1";
#endif
}

std::string cuda_error_name(const DriverApi& api, CUresult code) {
    const char* name = nullptr;
    if (api.cuGetErrorName && api.cuGetErrorName(code, &name) == CUDA_SUCCESS && name && *name) return name;
    for (const ErrorName& e : kErrorNames) {
        if (e.code == code) return e.name;
    }
    return "CUDA error " + std::to_string(code);
}

bool load_driver(const char* library, DriverApi& api, std::string& reason) {
    api = DriverApi{};
#if defined(__APPLE__)
    (void)library;
    reason = "CUDA is not available on macOS";
    return false;
#else
    const std::string name = library && *library ? library : default_driver_library();
    std::string error;
    Library lib = open_library(name.c_str(), error);
    if (!lib) {
        reason = is_not_found(error) ? "no NVIDIA driver (" + name + " not found)"
                                     : "the NVIDIA driver could not be loaded (" + name + ": " + error + ")";
        return false;
    }
    // The library is never closed: see the header.
    bool complete = true;
    std::string missing;
    const auto bind = [&](auto& fn, const char* symbol, bool required = true) {
        void* p = find_symbol(lib, symbol);
        if (!p && required && complete) {
            complete = false;
            missing = symbol;
        }
        // A data-to-function pointer cast: what dlsym's contract provides for.
        fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(p);
    };
    bind(api.cuInit, "cuInit");
    bind(api.cuDriverGetVersion, "cuDriverGetVersion");
    bind(api.cuDeviceGetCount, "cuDeviceGetCount");
    bind(api.cuDeviceGet, "cuDeviceGet");
    bind(api.cuDeviceGetName, "cuDeviceGetName");
    bind(api.cuDeviceTotalMem, "cuDeviceTotalMem_v2");
    bind(api.cuDeviceGetAttribute, "cuDeviceGetAttribute");
    bind(api.cuDevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain");
    bind(api.cuDevicePrimaryCtxRelease, "cuDevicePrimaryCtxRelease_v2");
    bind(api.cuCtxPushCurrent, "cuCtxPushCurrent_v2");
    bind(api.cuCtxPopCurrent, "cuCtxPopCurrent_v2");
    bind(api.cuMemGetInfo, "cuMemGetInfo_v2");
    bind(api.cuGetErrorName, "cuGetErrorName", /*required=*/false);
    if (!complete) {
        // Every name above exists since CUDA 11 drivers (the _v2 ones since 4.0 / 11.0).
        reason = "the NVIDIA driver is too old (" + name + " has no " + missing + ")";
        api = DriverApi{};
        return false;
    }
    return true;
#endif
}

CudaProbe probe_cuda(const DriverApi& api) {
    CudaProbe probe;
    CUresult r = api.cuInit(0);
    if (r != CUDA_SUCCESS) {
        probe.reason = failed(api, "cuInit", r);
        return probe;
    }
    int version = 0;
    if (api.cuDriverGetVersion(&version) == CUDA_SUCCESS) probe.driver_version = version;
    int count = 0;
    r = api.cuDeviceGetCount(&count);
    if (r != CUDA_SUCCESS) {
        probe.reason = failed(api, "cuDeviceGetCount", r);
        return probe;
    }
    if (count <= 0) {
        probe.reason = "no CUDA device found (the driver reports 0 devices; check CUDA_VISIBLE_DEVICES)";
        return probe;
    }
    std::string first_error;  // of a device that did not answer, for the reason when none did
    for (int i = 0; i < count; ++i) {
        const std::string where = "device " + std::to_string(i) + ": ";
        CUdevice dev = 0;
        if ((r = api.cuDeviceGet(&dev, i)) != CUDA_SUCCESS) {
            if (first_error.empty()) first_error = where + failed(api, "cuDeviceGet", r);
            continue;
        }
        CudaDevice d;
        d.index = i;
        char name[256] = {};
        if ((r = api.cuDeviceGetName(name, static_cast<int>(sizeof name - 1), dev)) != CUDA_SUCCESS) {
            if (first_error.empty()) first_error = where + failed(api, "cuDeviceGetName", r);
            continue;
        }
        d.name = name;
        size_t total = 0;
        if ((r = api.cuDeviceTotalMem(&total, dev)) != CUDA_SUCCESS) {
            if (first_error.empty()) first_error = where + failed(api, "cuDeviceTotalMem", r);
            continue;
        }
        d.total_bytes = total;
        if ((r = api.cuDeviceGetAttribute(&d.cc_major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev)) != CUDA_SUCCESS ||
            (r = api.cuDeviceGetAttribute(&d.cc_minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev)) != CUDA_SUCCESS) {
            if (first_error.empty()) first_error = where + failed(api, "cuDeviceGetAttribute", r);
            continue;
        }
        // Free memory is a property of a context: borrow the primary one (the context the CUDA
        // runtime, and so our backend, will use), and give it back, so the probe leaves nothing.
        CUcontext ctx = nullptr;
        if ((r = api.cuDevicePrimaryCtxRetain(&ctx, dev)) != CUDA_SUCCESS) {
            // E.g. CUDA_ERROR_DEVICE_UNAVAILABLE: an exclusive-process device another process holds.
            if (first_error.empty()) first_error = where + failed(api, "cuDevicePrimaryCtxRetain", r);
            continue;
        }
        CUresult mem = CUDA_SUCCESS;
        size_t free_bytes = 0, total_ctx = 0;
        r = api.cuCtxPushCurrent(ctx);
        if (r == CUDA_SUCCESS) {
            mem = api.cuMemGetInfo(&free_bytes, &total_ctx);
            CUcontext popped = nullptr;
            api.cuCtxPopCurrent(&popped);
        }
        api.cuDevicePrimaryCtxRelease(dev);
        if (r != CUDA_SUCCESS || mem != CUDA_SUCCESS) {
            if (first_error.empty()) {
                first_error = where + (r != CUDA_SUCCESS ? failed(api, "cuCtxPushCurrent", r) : failed(api, "cuMemGetInfo", mem));
            }
            continue;
        }
        d.free_bytes = free_bytes;
        probe.devices.push_back(std::move(d));
    }
    if (probe.devices.empty()) {
        probe.reason = first_error;
        return probe;
    }
    probe.ok = true;
    return probe;
}

CudaProbe probe_cuda(const char* library) {
    DriverApi api;
    CudaProbe probe;
    if (!load_driver(library, api, probe.reason)) return probe;
    return probe_cuda(api);
}

}  // namespace moe::gpu
