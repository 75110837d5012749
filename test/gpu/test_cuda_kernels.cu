// Backend consistency: every CUDA kernel against its CPU reference (cpp/quant scalar kernels), on
// random data and edge lengths. Without a CUDA device it says so and passes nothing: run it on a
// GPU machine (npm run build:cuda, then build-cuda/test_cuda_kernels or ctest there).
#include <cuda_runtime.h>

#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "../native/check.h"
#include "cuda_check.cuh"
#include "dequantize.cuh"
#include "quant/quant.h"

namespace {


TEST_CASE("cuda dequantize equals the scalar reference bit for bit") {
    using moe::quant::GgmlType;
    std::mt19937 rng(42);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (GgmlType type : {GgmlType::F32, GgmlType::F16, GgmlType::BF16, GgmlType::Q4_0, GgmlType::Q8_0,
                          GgmlType::MXFP4, GgmlType::Q4_K, GgmlType::Q6_K}) {
        const uint32_t id = static_cast<uint32_t>(type);
        const moe::quant::TypeTraits& traits = *moe::quant::type_traits(id);
        for (int64_t blocks : {1, 3, 64, 1000}) {
            const int64_t n = blocks * traits.block_size;
            std::vector<float> x(n);
            for (float& v : x) v = normal(rng);
            x[0] = 37.0f;  // an outlier, so block scales vary
            std::vector<uint8_t> bytes(moe::quant::row_size(traits, n));
            moe::quant::quantize(id, x.data(), bytes.data(), n, moe::cpu::Isa::Scalar);
            std::vector<float> expected(n), got(n);
            moe::quant::dequantize(id, bytes.data(), expected.data(), n, moe::cpu::Isa::Scalar);

            void* d_src = nullptr;
            float* d_dst = nullptr;
            CHECK(cudaMalloc(&d_src, bytes.size()) == cudaSuccess);
            CHECK(cudaMalloc(&d_dst, n * sizeof(float)) == cudaSuccess);
            CHECK(cudaMemcpy(d_src, bytes.data(), bytes.size(), cudaMemcpyHostToDevice) == cudaSuccess);
            CHECK(moe::cuda::dequantize_row(id, d_src, d_dst, n, nullptr) == cudaSuccess);
            CHECK(cudaMemcpy(got.data(), d_dst, n * sizeof(float), cudaMemcpyDeviceToHost) == cudaSuccess);
            cudaFree(d_src);
            cudaFree(d_dst);
            CHECK_MSG(std::memcmp(got.data(), expected.data(), n * sizeof(float)) == 0, "%s, %lld blocks", traits.name,
                      static_cast<long long>(blocks));
        }
    }
}

TEST_CASE("cuda dequantize refuses types without a kernel") {
    CHECK(moe::cuda::dequantize_row(static_cast<uint32_t>(moe::quant::GgmlType::IQ2_XXS), nullptr, nullptr, 256, nullptr) ==
          cudaErrorInvalidValue);
    CHECK(moe::cuda::dequantize_row(static_cast<uint32_t>(moe::quant::GgmlType::Q8_0), nullptr, nullptr, 31, nullptr) ==
          cudaErrorInvalidValue);
}

}  // namespace

int main(int argc, char** argv) { return moe_test::run_cuda_tests(argc, argv); }
