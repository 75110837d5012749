// What every CUDA test program shares: the device check that turns "no GPU here" into a skip, the
// main that uses it, and a device buffer that copies to and from host vectors.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <vector>

#include "../native/check.h"

namespace moe_test {

// True when a CUDA device answers; otherwise prints why the program skips.
inline bool have_device() {
    int count = 0;
    const cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess || count == 0) {
        std::printf("skipped: no CUDA device (%s)\n", err == cudaSuccess ? "0 devices" : cudaGetErrorString(err));
        return false;
    }
    return true;
}

// The body of every CUDA test program's main: runs the registered cases (those whose name contains
// argv[1]), or says why it skips them on a machine without a device.
inline int run_cuda_tests(int argc, char** argv) {
    if (!have_device()) {
        std::printf("0 passed, 0 failed\n");
        return 0;
    }
    return run_all(argc, argv);
}

// A device copy of a host vector (or n uninitialised elements), freed at scope exit.
template <class T>
struct Dev {
    T* p = nullptr;
    size_t n = 0;
    explicit Dev(size_t count) : n(count) {
        if (cudaMalloc(&p, std::max<size_t>(1, n) * sizeof(T)) != cudaSuccess) p = nullptr;
        CHECK(p != nullptr);
    }
    explicit Dev(const std::vector<T>& host) : Dev(host.size()) {
        if (p && n) CHECK(cudaMemcpy(p, host.data(), n * sizeof(T), cudaMemcpyHostToDevice) == cudaSuccess);
    }
    ~Dev() { cudaFree(p); }
    Dev(const Dev&) = delete;
    Dev& operator=(const Dev&) = delete;
    std::vector<T> get() const {
        std::vector<T> host(n);
        CHECK(cudaDeviceSynchronize() == cudaSuccess);
        if (n) CHECK(cudaMemcpy(host.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost) == cudaSuccess);
        return host;
    }
};

}  // namespace moe_test
