// Whole models, GPU vs CPU, with no Node.js: every NAME.gguf in the fixtures folder (written by
// scripts/gpu-fixtures.mjs with the project's GGUF writer, next to NAME.tokens) runs its 64 tokens
// teacher-forced on the CPU engine and on the CUDA backend (all layers and experts on the GPU, then
// routed experts on the CPU), as one prompt and as single decoding steps. The next-token
// distributions must agree within the CPU conformance gate's tolerances (test/conformance): arg-max
// equal wherever the CPU's top two differ by >= 0.05 nats and at >= 98% of positions overall, mean
// KL(cpu || gpu) <= 1e-3 for float weights and <= 5e-3 for quantized ones.
//   test_cuda_model [fixtures-dir]     (default test/gpu/fixtures; without a device or fixtures: skipped)
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <dirent.h>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "../native/check.h"
#include "cuda_check.cuh"
#include "cpu/cpu_features.h"
#include "gpu/select.h"
#include "model/model.h"

namespace {

std::string g_dir = "test/gpu/fixtures";

struct Fixture {
    std::string name, gguf;
    std::vector<int32_t> tokens;
    bool float_weights = false;
};

std::vector<Fixture> fixtures() {
    std::vector<Fixture> out;
    DIR* d = opendir(g_dir.c_str());
    if (!d) return out;
    while (dirent* e = readdir(d)) {
        const std::string f = e->d_name;
        if (f.size() < 6 || f.substr(f.size() - 5) != ".gguf") continue;
        Fixture x;
        x.name = f.substr(0, f.size() - 5);
        x.gguf = g_dir + "/" + f;
        std::ifstream in(g_dir + "/" + x.name + ".tokens");
        for (int32_t t; in >> t;) x.tokens.push_back(t);
        x.float_weights = x.name.find("-F16") != std::string::npos || x.name.find("-F32") != std::string::npos ||
                          x.name.find("-BF16") != std::string::npos;
        if (!x.tokens.empty()) out.push_back(std::move(x));
    }
    closedir(d);
    std::sort(out.begin(), out.end(), [](const Fixture& a, const Fixture& b) { return a.name < b.name; });
    return out;
}

moe::model::LoadOptions load_options() {
    moe::model::LoadOptions o;
    o.isa = moe::cpu::best_isa();
    o.context_size = 128;
    o.prefix_cache_bytes = 0;
    return o;
}

// The model on the CUDA backend with the given placement ('cuda': exactly these options).
std::unique_ptr<moe::model::Model> load_gpu(const std::string& path, moe::runtime::ExpertsMode experts,
                                            std::unique_ptr<moe::gpu::GpuBackend>& backend) {
    size_t free_bytes = 0, total_bytes = 0;
    if (cudaMemGetInfo(&free_bytes, &total_bytes) != cudaSuccess) return nullptr;
    cudaDeviceProp prop{};
    cudaGetDeviceProperties(&prop, 0);
    moe::gpu::GpuRequest request;
    request.mode = moe::gpu::GpuMode::Cuda;
    request.device = 0;
    request.device_name = prop.name;
    request.free_bytes = free_bytes;
    request.total_bytes = total_bytes;
    request.placement.automatic = false;
    request.placement.experts = experts;
    const moe::model::LoadOptions options = load_options();
    moe::gpu::BackendChoice choice = moe::gpu::plan_backend(path, options, request);
    auto model = moe::model::Model::load(path, options);
    moe::gpu::start_backend(choice, *model, moe::gpu::GpuMode::Cuda);
    CHECK_MSG(choice.cuda, "%s: not on CUDA: %s", path.c_str(), choice.reason.c_str());
    backend = std::move(choice.backend);
    return model;
}

// logits: [64, vocab] for every position, evaluated as one prompt (batch) or one token at a time.
std::vector<float> logits_of(moe::model::Model& model, const std::vector<int32_t>& tokens, bool one_by_one) {
    const size_t vocab = model.info().vocab_size;
    auto seq = model.create_sequence(128);
    std::vector<float> all, step;
    if (!one_by_one) {
        seq->evaluate(tokens.data(), tokens.size(), true, all);
        return all;
    }
    all.reserve(tokens.size() * vocab);
    for (size_t i = 0; i < tokens.size(); ++i) {
        seq->evaluate(tokens.data() + i, 1, false, step);
        all.insert(all.end(), step.begin(), step.begin() + vocab);
    }
    return all;
}

void softmax_row(const float* x, size_t n, std::vector<double>& p) {
    p.resize(n);
    double mx = x[0], sum = 0;
    for (size_t i = 1; i < n; ++i) mx = std::max(mx, static_cast<double>(x[i]));
    for (size_t i = 0; i < n; ++i) sum += p[i] = std::exp(static_cast<double>(x[i]) - mx);
    for (double& v : p) v /= sum;
}

void compare(const Fixture& f, const char* what, const std::vector<float>& cpu, const std::vector<float>& gpu,
             size_t vocab) {
    CHECK_MSG(cpu.size() == gpu.size(), "%s %s: %zu vs %zu logits", f.name.c_str(), what, cpu.size(), gpu.size());
    if (cpu.size() != gpu.size()) return;
    const size_t n = cpu.size() / vocab;
    std::vector<double> p, q;
    double kl_sum = 0;
    size_t agree = 0, must_agree_failed = 0;
    for (size_t t = 0; t < n; ++t) {
        softmax_row(cpu.data() + t * vocab, vocab, p);
        softmax_row(gpu.data() + t * vocab, vocab, q);
        double kl = 0;
        size_t a = 0, b = 0, second = vocab > 1 ? 1 : 0;
        for (size_t i = 0; i < vocab; ++i) {
            if (p[i] > 0) kl += p[i] * std::log(p[i] / std::max(q[i], 1e-300));
            if (p[i] > p[a]) a = i;
            if (q[i] > q[b]) b = i;
        }
        for (size_t i = 0; i < vocab; ++i) {
            if (i != a && (second == a || p[i] > p[second])) second = i;
        }
        kl_sum += kl;
        if (a == b) {
            ++agree;
        } else if (std::log(p[a] / p[second]) >= 0.05) {
            ++must_agree_failed;
        }
    }
    const double mean_kl = kl_sum / static_cast<double>(n);
    const double bound = f.float_weights ? 1e-3 : 5e-3;
    std::printf("  %-24s %-22s mean KL %.2e, arg-max %zu/%zu\n", f.name.c_str(), what, mean_kl, agree, n);
    CHECK_MSG(mean_kl <= bound, "%s %s: mean KL %g > %g", f.name.c_str(), what, mean_kl, bound);
    CHECK_MSG(must_agree_failed == 0, "%s %s: arg-max differs at %zu clear positions", f.name.c_str(), what,
              must_agree_failed);
    CHECK_MSG(static_cast<double>(agree) >= 0.98 * static_cast<double>(n), "%s %s: arg-max agreement %zu/%zu",
              f.name.c_str(), what, agree, n);
}

TEST_CASE("whole models: CUDA backend logits agree with the CPU engine (prompt, decode, hybrid experts)") {
    const std::vector<Fixture> all = fixtures();
    if (all.empty()) {
        std::printf("  no fixtures in %s (node scripts/gpu-fixtures.mjs makes them): skipped\n", g_dir.c_str());
        return;
    }
    for (const Fixture& f : all) {
        try {
            auto cpu_model = moe::model::Model::load(f.gguf, load_options());
            const size_t vocab = cpu_model->info().vocab_size;
            const std::vector<float> cpu_batch = logits_of(*cpu_model, f.tokens, false);
            const std::vector<float> cpu_steps = logits_of(*cpu_model, f.tokens, true);
            const bool moe_model = cpu_model->info().expert_count > 0;
            cpu_model.reset();

            for (const auto experts : {moe::runtime::ExpertsMode::Gpu, moe::runtime::ExpertsMode::Cpu}) {
                if (experts == moe::runtime::ExpertsMode::Cpu && !moe_model) continue;
                const char* where = experts == moe::runtime::ExpertsMode::Gpu ? "gpu" : "experts on cpu";
                // Declared in this order so that the backend goes first, before the model it reads from.
                std::unique_ptr<moe::model::Model> gpu_model;
                std::unique_ptr<moe::gpu::GpuBackend> backend;
                gpu_model = load_gpu(f.gguf, experts, backend);
                if (!gpu_model) {
                    CHECK_MSG(false, "%s: cudaMemGetInfo failed", f.name.c_str());
                    continue;
                }
                compare(f, (std::string(where) + ", prompt").c_str(), cpu_batch, logits_of(*gpu_model, f.tokens, false),
                        vocab);
                compare(f, (std::string(where) + ", decode").c_str(), cpu_steps, logits_of(*gpu_model, f.tokens, true),
                        vocab);
            }
        } catch (const std::exception& e) {
            CHECK_MSG(false, "%s: %s", f.name.c_str(), e.what());
        }
    }
}

}  // namespace

int main(int argc, char** argv) {
    // argv[1] is the fixtures folder here, not a test-name filter.
    if (argc > 1) g_dir = argv[1];
    char* no_args[] = {argv[0]};
    return moe_test::run_cuda_tests(1, no_args);
}
