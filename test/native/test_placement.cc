// The host side of the CUDA backend, checkable without a GPU: the memory planner (cpp/runtime/
// placement) on tensor lists at real models' sizes, and the driver probe (cpp/gpu/cuda_driver)
// against a fake driver and against libraries that are not one.
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "../../cpp/common/error.h"
#include "../../cpp/gpu/cuda_driver.h"
#include "../../cpp/runtime/placement.h"
#include "check.h"

using namespace moe;
using runtime::Device;
using runtime::ExpertsMode;
using runtime::Placement;
using runtime::PlacementInput;
using runtime::PlacementOptions;
using runtime::TensorRole;

namespace {

constexpr uint64_t kMiB = 1ull << 20;
constexpr uint64_t kGiB = 1ull << 30;

// Bytes per weight of the formats the lists use: Q4_K (144 bytes per 256), Q8_0 (34 per 32), F32.
constexpr double kQ4K = 144.0 / 256;
constexpr double kQ8 = 34.0 / 32;
constexpr double kF32 = 4;

// A tensor list in GGUF naming, classified by name as the loader classifies a file's tensors.
struct ListBuilder {
    PlacementInput in;
    uint64_t params = 0;
    void add(const std::string& name, uint64_t elements, double bytes_per_weight) {
        runtime::PlacementTensor t;
        t.name = name;
        t.bytes = static_cast<uint64_t>(static_cast<double>(elements) * bytes_per_weight);
        runtime::classify_tensor(name, t.layer, t.role);
        in.tensors.push_back(t);
        params += elements;
    }
};

std::string blk(uint32_t l, const char* rest) { return "blk." + std::to_string(l) + "." + rest; }

// Kimi K2 (deepseek2: 61 layers, the first dense, 384 experts of 2048 top-8 + 1 shared, MLA,
// vocabulary 163,840), weights in Q4_K, norms and routers F32, KV for 4096 positions at F16.
PlacementInput kimi_k2(uint64_t* params = nullptr) {
    const uint64_t E = 7168, V = 163840, X = 384, FX = 2048, FD = 18432, H = 64;
    ListBuilder b;
    b.in.n_layer = 61;
    b.add("token_embd.weight", E * V, kQ4K);
    for (uint32_t l = 0; l < 61; ++l) {
        b.add(blk(l, "attn_norm.weight"), E, kF32);
        b.add(blk(l, "attn_q_a.weight"), E * 1536, kQ4K);
        b.add(blk(l, "attn_q_a_norm.weight"), 1536, kF32);
        b.add(blk(l, "attn_q_b.weight"), 1536 * H * 192, kQ4K);
        b.add(blk(l, "attn_kv_a_mqa.weight"), E * 576, kQ4K);
        b.add(blk(l, "attn_kv_a_norm.weight"), 512, kF32);
        b.add(blk(l, "attn_k_b.weight"), 128 * 512 * H, kQ8);
        b.add(blk(l, "attn_v_b.weight"), 512 * 128 * H, kQ8);
        b.add(blk(l, "attn_output.weight"), H * 128 * E, kQ4K);
        b.add(blk(l, "ffn_norm.weight"), E, kF32);
        if (l == 0) {
            b.add(blk(l, "ffn_gate.weight"), E * FD, kQ4K);
            b.add(blk(l, "ffn_up.weight"), E * FD, kQ4K);
            b.add(blk(l, "ffn_down.weight"), FD * E, kQ4K);
            continue;
        }
        b.add(blk(l, "ffn_gate_inp.weight"), E * X, kF32);
        b.add(blk(l, "exp_probs_b.bias"), X, kF32);
        b.add(blk(l, "ffn_gate_exps.weight"), E * FX * X, kQ4K);
        b.add(blk(l, "ffn_up_exps.weight"), E * FX * X, kQ4K);
        b.add(blk(l, "ffn_down_exps.weight"), FX * E * X, kQ4K);
        b.add(blk(l, "ffn_gate_shexp.weight"), E * FX, kQ4K);
        b.add(blk(l, "ffn_up_shexp.weight"), E * FX, kQ4K);
        b.add(blk(l, "ffn_down_shexp.weight"), FX * E, kQ4K);
    }
    b.add("output_norm.weight", E, kF32);
    b.add("output.weight", E * V, kQ4K);
    b.in.kv_bytes.assign(61, 4096ull * 576 * 2);
    b.in.compute_bytes = 1536 * kMiB;
    if (params) *params = b.params;
    return b.in;
}

// Qwen3-30B-A3B (qwen3moe: 48 layers, 128 experts of 768 top-8, GQA 32 / 4 heads of 128,
// vocabulary 151,936) at `bpw` bytes per weight, KV for 4096 positions at F16.
PlacementInput qwen3_30b(double bpw) {
    const uint64_t E = 2048, V = 151936, X = 128, FX = 768;
    ListBuilder b;
    b.in.n_layer = 48;
    b.add("token_embd.weight", E * V, bpw);
    for (uint32_t l = 0; l < 48; ++l) {
        b.add(blk(l, "attn_norm.weight"), E, kF32);
        b.add(blk(l, "attn_q.weight"), E * 4096, bpw);
        b.add(blk(l, "attn_k.weight"), E * 512, bpw);
        b.add(blk(l, "attn_v.weight"), E * 512, bpw);
        b.add(blk(l, "attn_q_norm.weight"), 128, kF32);
        b.add(blk(l, "attn_k_norm.weight"), 128, kF32);
        b.add(blk(l, "attn_output.weight"), 4096 * E, bpw);
        b.add(blk(l, "ffn_norm.weight"), E, kF32);
        b.add(blk(l, "ffn_gate_inp.weight"), E * X, kF32);
        b.add(blk(l, "ffn_gate_exps.weight"), E * FX * X, bpw);
        b.add(blk(l, "ffn_up_exps.weight"), E * FX * X, bpw);
        b.add(blk(l, "ffn_down_exps.weight"), FX * E * X, bpw);
    }
    b.add("output_norm.weight", E, kF32);
    b.add("output.weight", E * V, bpw);
    b.in.kv_bytes.assign(48, 4096ull * (512 + 512) * 2);
    b.in.compute_bytes = 1 * kGiB;
    return b.in;
}

// A dense model: `layers` layers of `layer_bytes` each, a 100 MiB output head, no experts.
PlacementInput dense(uint32_t layers, uint64_t layer_bytes) {
    PlacementInput in;
    in.n_layer = layers;
    in.tensors.push_back({"token_embd.weight", 100 * kMiB, -1, TensorRole::TokenEmbd});
    for (uint32_t l = 0; l < layers; ++l) {
        in.tensors.push_back({blk(l, "attn_q.weight"), layer_bytes / 2, static_cast<int32_t>(l), TensorRole::Attention});
        in.tensors.push_back({blk(l, "ffn_up.weight"), layer_bytes / 2, static_cast<int32_t>(l), TensorRole::DenseFfn});
    }
    in.tensors.push_back({"output.weight", 100 * kMiB, -1, TensorRole::Output});
    return in;
}

// A device of `total` bytes with `free` of them free and the default reserve.
void on_device(PlacementInput& in, uint64_t total, uint64_t free) {
    in.free_bytes = free;
    in.reserve_bytes = runtime::default_reserve(total, free);
}

uint64_t experts_of_layer(const PlacementInput& in, int32_t layer) {
    uint64_t bytes = 0;
    for (const auto& t : in.tensors) {
        if (t.layer == layer && t.role == TensorRole::RoutedExperts) bytes += t.bytes;
    }
    return bytes;
}

Device device_of(const PlacementInput& in, const Placement& p, const std::string& name) {
    for (size_t i = 0; i < in.tensors.size(); ++i) {
        if (in.tensors[i].name == name) return p.tensor_device[i];
    }
    CHECK_MSG(false, "no tensor %s", name.c_str());
    return Device::Cpu;
}

// Internal consistency every plan must have: tensor devices agree with the layer placement and
// the totals add up.
void check_consistent(const PlacementInput& in, const Placement& p) {
    CHECK(p.tensor_device.size() == in.tensors.size());
    CHECK(p.layers.size() == in.n_layer);
    uint64_t gpu = 0, cpu = 0, kv_gpu = 0, experts_gpu = 0;
    for (size_t i = 0; i < in.tensors.size(); ++i) {
        const auto& t = in.tensors[i];
        const bool on_gpu = p.tensor_device[i] == Device::Gpu;
        (on_gpu ? gpu : cpu) += t.bytes;
        if (t.layer >= 0) {
            const auto& l = p.layers[t.layer];
            CHECK_MSG(on_gpu == (t.role == TensorRole::RoutedExperts ? l.experts_gpu : l.gpu), "%s", t.name.c_str());
            if (l.experts_gpu) CHECK(l.gpu);  // experts never sit on the GPU without their layer
        } else if (t.role == TensorRole::Output) {
            CHECK(on_gpu == p.output_gpu);
        }
    }
    uint32_t gpu_layers = 0;
    for (uint32_t l = 0; l < in.n_layer; ++l) {
        if (p.layers[l].gpu) {
            ++gpu_layers;
            kv_gpu += p.layers[l].kv_bytes;
            CHECK_MSG(l >= in.n_layer - p.gpu_layers, "layer %u on the GPU below the first GPU layer", l);
        }
        if (p.layers[l].experts_gpu) ++experts_gpu;
    }
    CHECK(gpu_layers == p.gpu_layers);
    CHECK(experts_gpu == p.expert_layers_gpu);
    CHECK(gpu == p.gpu_weight_bytes);
    CHECK(cpu == p.cpu_weight_bytes);
    CHECK(kv_gpu == p.gpu_kv_bytes);
    CHECK(p.gpu_bytes == p.gpu_weight_bytes + p.gpu_kv_bytes + p.compute_bytes);
    CHECK(p.compute_bytes == (p.gpu_layers > 0 ? in.compute_bytes : 0));
}

PlacementOptions explicit_options(int64_t gpu_layers = -1, ExpertsMode experts = ExpertsMode::Gpu, uint32_t n = 0) {
    PlacementOptions o;
    o.automatic = false;
    o.gpu_layers = gpu_layers;
    o.experts = experts;
    o.expert_layers = n;
    return o;
}

bool has(const std::string& s, const char* part) { return s.find(part) != std::string::npos; }

}  // namespace

// ---- tensor names ---------------------------------------------------------------------------

TEST_CASE("classify_tensor: llama.cpp names to layer and role") {
    struct Case {
        const char* name;
        int32_t layer;
        TensorRole role;
    } cases[] = {
        {"token_embd.weight", -1, TensorRole::TokenEmbd},
        {"output.weight", -1, TensorRole::Output},
        {"output_norm.weight", -1, TensorRole::Norm},
        {"rope_freqs.weight", -1, TensorRole::Attention},
        {"blk.0.attn_norm.weight", 0, TensorRole::Norm},
        {"blk.3.attn_q.weight", 3, TensorRole::Attention},
        {"blk.3.attn_q.bias", 3, TensorRole::Attention},
        {"blk.3.attn_q_norm.weight", 3, TensorRole::Norm},
        {"blk.12.attn_kv_a_mqa.weight", 12, TensorRole::Attention},
        {"blk.12.attn_kv_a_norm.weight", 12, TensorRole::Norm},
        {"blk.12.attn_k_b.weight", 12, TensorRole::Attention},
        {"blk.7.attn_sinks.weight", 7, TensorRole::Attention},
        {"blk.7.post_attention_norm.weight", 7, TensorRole::Norm},
        {"blk.60.ffn_gate_exps.weight", 60, TensorRole::RoutedExperts},
        {"blk.60.ffn_gate_up_exps.weight", 60, TensorRole::RoutedExperts},
        {"blk.60.ffn_down_exps.bias", 60, TensorRole::RoutedExperts},
        {"blk.60.ffn_gate_inp.weight", 60, TensorRole::Router},
        {"blk.60.ffn_gate_inp.bias", 60, TensorRole::Router},
        {"blk.60.exp_probs_b.bias", 60, TensorRole::Router},
        {"blk.60.ffn_gate_inp_shexp.weight", 60, TensorRole::SharedExpert},
        {"blk.60.ffn_up_shexp.weight", 60, TensorRole::SharedExpert},
        {"blk.0.ffn_gate.weight", 0, TensorRole::DenseFfn},
        {"blk.0.ffn_down.weight", 0, TensorRole::DenseFfn},
        {"blk.0.ffn_norm.weight", 0, TensorRole::Norm},
        {"blkx.0.attn_q.weight", -1, TensorRole::Attention},
    };
    for (const Case& c : cases) {
        int32_t layer = 99;
        TensorRole role = TensorRole::TokenEmbd;
        runtime::classify_tensor(c.name, layer, role);
        CHECK_MSG(layer == c.layer && role == c.role, "%s -> layer %d, %s", c.name, layer, runtime::role_name(role));
    }
    TensorRole r;
    CHECK(runtime::parse_role("routed_experts", r) && r == TensorRole::RoutedExperts);
    CHECK(!runtime::parse_role("experts", r));
}

TEST_CASE("default_reserve is 5% + 512 MiB; format_bytes") {
    CHECK(runtime::default_reserve(20 * kGiB, 10 * kGiB) == kGiB + 512 * kMiB);
    CHECK(runtime::default_reserve(0, 20 * kGiB) == kGiB + 512 * kMiB);
    CHECK(runtime::format_bytes(0) == "0 B");
    CHECK(runtime::format_bytes(1536) == "1.5 KiB");
    CHECK(runtime::format_bytes(812 * kMiB) == "812.0 MiB");
    CHECK(runtime::format_bytes(3 * kGiB / 2) == "1.5 GiB");
}

// ---- Kimi K2 on an H200 --------------------------------------------------------------------

TEST_CASE("Kimi K2 (1T) on a 141 GB H200: auto moves the first layers' experts to the CPU") {
    uint64_t params = 0;
    PlacementInput in = kimi_k2(&params);
    CHECK_MSG(params > 1000000000000ull && params < 1100000000000ull, "%llu parameters", static_cast<unsigned long long>(params));
    on_device(in, 141000000000ull, 140000000000ull);

    const Placement all = runtime::plan_placement(in, explicit_options());
    check_consistent(in, all);
    CHECK(!all.fits);
    CHECK(all.gpu_layers == 61 && all.expert_layers_gpu == 60);
    CHECK(all.gpu_bytes > 500 * kGiB);  // ~560 GiB of Q4_K weights

    PlacementOptions automatic;
    const Placement p = runtime::plan_placement(in, automatic);
    check_consistent(in, p);
    CHECK(p.fits);
    CHECK(p.gpu_layers == 61);
    CHECK(p.moe_layers == 60);
    CHECK_MSG(p.expert_layers_gpu > 0 && p.expert_layers_gpu < 60, "%u expert layers on the GPU", p.expert_layers_gpu);
    CHECK(p.gpu_bytes <= p.budget_bytes);
    // As many as fit: one more layer's experts would not.
    CHECK(p.gpu_bytes + experts_of_layer(in, 60 - static_cast<int32_t>(p.expert_layers_gpu)) > p.budget_bytes);
    // The first MoE layers' experts went to the CPU, the last layers' stayed.
    CHECK(!p.layers[0].has_experts && p.layers[0].gpu);
    CHECK(!p.layers[1].experts_gpu);
    CHECK(p.layers[60].experts_gpu);
    CHECK(device_of(in, p, "blk.1.ffn_up_exps.weight") == Device::Cpu);
    CHECK(device_of(in, p, "blk.1.attn_q_b.weight") == Device::Gpu);
    CHECK(device_of(in, p, "blk.1.ffn_up_shexp.weight") == Device::Gpu);
    CHECK(device_of(in, p, "blk.60.ffn_up_exps.weight") == Device::Gpu);
    CHECK(device_of(in, p, "output.weight") == Device::Gpu);
    CHECK(device_of(in, p, "token_embd.weight") == Device::Cpu);
    CHECK(has(p.summary, "61 of 61 layers on the GPU, routed experts of "));

    // The shortfall message of the default 'cuda' plan names the numbers and the plan that fits.
    const std::string msg = runtime::shortfall_message(in, explicit_options(), all);
    CHECK_MSG(has(msg, "does not fit in GPU memory") && has(msg, "experts: 'cpu'") &&
                  has(msg, ("the largest plan that fits is { experts: " + std::to_string(p.expert_layers_gpu) + " }").c_str()),
              "%s", msg.c_str());
    CHECK(has(msg, runtime::format_bytes(all.gpu_bytes).c_str()));
    CHECK(has(msg, runtime::format_bytes(all.budget_bytes).c_str()));
}

TEST_CASE("Kimi K2: experts 'cpu' keeps every layer's attention on the GPU in a few GiB") {
    PlacementInput in = kimi_k2();
    on_device(in, 141000000000ull, 140000000000ull);
    const Placement p = runtime::plan_placement(in, explicit_options(-1, ExpertsMode::Cpu));
    check_consistent(in, p);
    CHECK(p.fits);
    CHECK(p.gpu_layers == 61 && p.expert_layers_gpu == 0);
    CHECK(p.gpu_bytes < 16 * kGiB);
    CHECK(p.cpu_weight_bytes > 500 * kGiB);
    CHECK(has(p.summary, "routed experts in CPU memory"));
    // Explicit numbers of expert layers count MoE layers only (layer 0 is dense).
    const Placement ten = runtime::plan_placement(in, explicit_options(-1, ExpertsMode::Layers, 10));
    check_consistent(in, ten);
    CHECK(ten.fits && ten.expert_layers_gpu == 10);
    for (uint32_t l = 0; l < 61; ++l) CHECK_MSG(ten.layers[l].experts_gpu == (l >= 51), "layer %u", l);
    const Placement sixty = runtime::plan_placement(in, explicit_options(-1, ExpertsMode::Layers, 60));
    CHECK(!sixty.fits && sixty.expert_layers_gpu == 60);
    const Placement many = runtime::plan_placement(in, explicit_options(-1, ExpertsMode::Layers, 1000));
    CHECK(many.expert_layers_gpu == 60);
    const Placement zero = runtime::plan_placement(in, explicit_options(-1, ExpertsMode::Layers, 0));
    CHECK(zero.gpu_bytes == p.gpu_bytes && zero.expert_layers_gpu == 0);
}

TEST_CASE("Kimi K2: gpuLayers counts from the last layer; auto treats options as upper bounds") {
    PlacementInput in = kimi_k2();
    on_device(in, 141000000000ull, 140000000000ull);
    const Placement ten = runtime::plan_placement(in, explicit_options(10));
    check_consistent(in, ten);
    CHECK(ten.fits);  // 10 layers with their experts: ~95 GiB
    for (uint32_t l = 0; l < 61; ++l) CHECK(ten.layers[l].gpu == (l >= 51));
    CHECK(ten.expert_layers_gpu == 10);
    CHECK(ten.cpu_kv_bytes == 51ull * 4096 * 576 * 2);
    CHECK(device_of(in, ten, "blk.50.attn_output.weight") == Device::Cpu);
    CHECK(device_of(in, ten, "blk.51.attn_output.weight") == Device::Gpu);
    CHECK(device_of(in, ten, "output_norm.weight") == Device::Gpu);

    PlacementOptions bounded;
    bounded.gpu_layers = 10;
    const Placement a = runtime::plan_placement(in, bounded);
    CHECK(a.fits && a.gpu_layers == 10 && a.expert_layers_gpu == 10);
    bounded.experts = ExpertsMode::Layers;
    bounded.expert_layers = 3;
    const Placement b = runtime::plan_placement(in, bounded);
    CHECK(b.fits && b.gpu_layers == 10 && b.expert_layers_gpu == 3);
}

// ---- Qwen3-30B-A3B on 24 GB and 80 GB ----------------------------------------------------------

TEST_CASE("Qwen3-30B-A3B Q8_0: hybrid on a 24 GB GPU, all on an 80 GB one") {
    PlacementInput small = qwen3_30b(kQ8);
    on_device(small, 24ull * kGiB, 23ull * kGiB);
    const Placement p24 = runtime::plan_placement(small, PlacementOptions{});
    check_consistent(small, p24);
    CHECK(p24.fits);
    CHECK(p24.gpu_layers == 48);
    CHECK_MSG(p24.expert_layers_gpu > 0 && p24.expert_layers_gpu < 48, "%u", p24.expert_layers_gpu);
    CHECK(!p24.layers[0].experts_gpu && p24.layers[47].experts_gpu);
    CHECK(p24.gpu_bytes + experts_of_layer(small, 47 - static_cast<int32_t>(p24.expert_layers_gpu)) > p24.budget_bytes);
    CHECK(!runtime::plan_placement(small, explicit_options()).fits);

    PlacementInput big = qwen3_30b(kQ8);
    on_device(big, 80ull * kGiB, 79ull * kGiB);
    const Placement p80 = runtime::plan_placement(big, PlacementOptions{});
    check_consistent(big, p80);
    CHECK(p80.fits && p80.gpu_layers == 48 && p80.expert_layers_gpu == 48);
    CHECK(p80.cpu_weight_bytes == small.tensors[0].bytes);  // only the token embedding stays in the mapping
    CHECK(has(p80.summary, "48 of 48 layers on the GPU, routed experts with them"));
    const Placement explicit80 = runtime::plan_placement(big, explicit_options());
    CHECK(explicit80.fits && explicit80.gpu_bytes == p80.gpu_bytes);
}

TEST_CASE("Qwen3-30B-A3B Q4_K: all on a 24 GB GPU") {
    PlacementInput in = qwen3_30b(kQ4K);
    on_device(in, 24ull * kGiB, 23ull * kGiB);
    const Placement p = runtime::plan_placement(in, explicit_options());
    check_consistent(in, p);
    CHECK(p.fits && p.expert_layers_gpu == 48);
}

TEST_CASE("Qwen3-30B-A3B on a 4 GB GPU: experts all on the CPU, then fewer layers") {
    PlacementInput in = qwen3_30b(kQ8);
    on_device(in, 4ull * kGiB, 3ull * kGiB);
    const Placement p = runtime::plan_placement(in, PlacementOptions{});
    check_consistent(in, p);
    CHECK(p.fits);
    CHECK_MSG(p.gpu_layers > 0 && p.gpu_layers < 48, "%u layers", p.gpu_layers);
    // Whatever dropping layers freed went to experts again, as long as one more layer does not fit.
    CHECK(p.gpu_bytes <= p.budget_bytes);
    const std::string msg = runtime::shortfall_message(in, explicit_options(), runtime::plan_placement(in, explicit_options()));
    CHECK_MSG(has(msg, "the largest plan that fits is { gpuLayers: "), "%s", msg.c_str());
}

// ---- explicit plans that do not fit, dense models, edge cases ----------------------------------

TEST_CASE("an explicit plan that does not fit names needed and available bytes") {
    PlacementInput in = qwen3_30b(kQ8);
    on_device(in, 24ull * kGiB, 23ull * kGiB);
    const Placement p = runtime::plan_placement(in, explicit_options(-1, ExpertsMode::Layers, 40));
    check_consistent(in, p);
    CHECK(!p.fits && p.expert_layers_gpu == 40);
    const std::string msg = runtime::shortfall_message(in, explicit_options(-1, ExpertsMode::Layers, 40), p);
    CHECK_MSG(has(msg, "routed experts of 40 of 48 MoE layers on the GPU") && has(msg, "available") &&
                  has(msg, "kept in reserve") && has(msg, "Try experts: 'cpu' or fewer gpuLayers"),
              "%s", msg.c_str());
}

TEST_CASE("a dense model drops layers, and its message does not mention experts") {
    PlacementInput in = dense(32, 512 * kMiB);
    on_device(in, 10 * kGiB, 8 * kGiB);  // budget 8 - 1 = 7 GiB
    const Placement p = runtime::plan_placement(in, PlacementOptions{});
    check_consistent(in, p);
    CHECK(p.fits && p.moe_layers == 0 && p.expert_layers_gpu == 0);
    CHECK_MSG(p.gpu_layers == 13, "%u", p.gpu_layers);  // 100 MiB head + 13 x 512 MiB <= 7 GiB < 14 x 512 MiB
    const std::string msg = runtime::shortfall_message(in, explicit_options(), runtime::plan_placement(in, explicit_options()));
    CHECK_MSG(!has(msg, "experts") && has(msg, "Try fewer gpuLayers") && has(msg, "{ gpuLayers: 13 }"), "%s", msg.c_str());
}

TEST_CASE("a plan that needs exactly the available bytes fits; one byte more does not") {
    PlacementInput in = dense(4, 256 * kMiB);
    in.reserve_bytes = 0;
    in.free_bytes = 4 * 256 * kMiB + 100 * kMiB;  // every layer + output head (token_embd stays)
    CHECK(runtime::plan_placement(in, explicit_options()).fits);
    in.free_bytes -= 1;
    CHECK(!runtime::plan_placement(in, explicit_options()).fits);
    CHECK(runtime::plan_placement(in, PlacementOptions{}).gpu_layers == 3);
}

TEST_CASE("a tied output head takes the token embedding to the GPU") {
    PlacementInput in = dense(2, 64 * kMiB);
    in.tensors.pop_back();  // no output.weight
    on_device(in, 80 * kGiB, 80 * kGiB);
    const Placement p = runtime::plan_placement(in, PlacementOptions{});
    CHECK(p.fits && device_of(in, p, "token_embd.weight") == Device::Gpu);
    CHECK(p.gpu_weight_bytes == 100 * kMiB + 2 * 64 * kMiB);
}

TEST_CASE("edge cases: no layers, no free memory, gpuLayers 0, reserve above free") {
    PlacementInput none;
    none.tensors.push_back({"token_embd.weight", kMiB, -1, TensorRole::TokenEmbd});
    none.tensors.push_back({"output.weight", kMiB, -1, TensorRole::Output});
    on_device(none, 80 * kGiB, 80 * kGiB);
    for (bool automatic : {true, false}) {
        PlacementOptions o;
        o.automatic = automatic;
        const Placement p = runtime::plan_placement(none, o);
        check_consistent(none, p);
        CHECK(!p.fits && p.gpu_layers == 0 && p.gpu_bytes == 0);
        CHECK(has(p.summary, "no layers"));
    }

    PlacementInput in = qwen3_30b(kQ4K);
    on_device(in, 24ull * kGiB, 0);
    const Placement p = runtime::plan_placement(in, PlacementOptions{});
    check_consistent(in, p);
    CHECK(!p.fits && p.gpu_layers == 0 && p.gpu_bytes == 0 && p.budget_bytes == 0);
    CHECK_MSG(has(p.summary, "does not fit on the GPU: even 1 layer with its experts in CPU memory needs"), "%s", p.summary.c_str());
    const Placement e = runtime::plan_placement(in, explicit_options());
    CHECK(!e.fits);
    const std::string msg = runtime::shortfall_message(in, explicit_options(), e);
    CHECK_MSG(has(msg, "0 B available") && has(msg, "use gpu: false"), "%s", msg.c_str());

    on_device(in, 24ull * kGiB, 23ull * kGiB);
    const Placement zero = runtime::plan_placement(in, explicit_options(0));
    check_consistent(in, zero);
    CHECK(!zero.fits && zero.gpu_layers == 0 && zero.gpu_bytes == 0);
    CHECK(has(zero.summary, "gpuLayers: 0"));
    PlacementOptions auto_zero;
    auto_zero.gpu_layers = 0;
    CHECK(!runtime::plan_placement(in, auto_zero).fits);

    in.free_bytes = 1 * kGiB;
    in.reserve_bytes = 2 * kGiB;
    CHECK(runtime::plan_placement(in, PlacementOptions{}).budget_bytes == 0);
}

TEST_CASE("inputs that do not match n_layer are rejected") {
    PlacementInput in = dense(2, kMiB);
    in.kv_bytes = {1, 2, 3};
    bool threw = false;
    try {
        runtime::plan_placement(in, PlacementOptions{});
    } catch (const Error& e) {
        threw = e.code() == ErrorCode::InvalidArgument;
    }
    CHECK(threw);
    in.kv_bytes.clear();
    in.tensors.push_back({"blk.2.attn_q.weight", 1, 2, TensorRole::Attention});
    threw = false;
    try {
        runtime::plan_placement(in, PlacementOptions{});
    } catch (const Error& e) {
        threw = e.code() == ErrorCode::InvalidArgument && has(e.what(), "blk.2.attn_q.weight");
    }
    CHECK(threw);
}

// ---- the driver probe ----------------------------------------------------------------------

namespace fake {

// A two-device driver whose answers the cases set; counts what the probe holds.
int init_result = 0, count = 2, retain_fail_device = -1, retained = 0, pushed = 0;
bool with_error_names = false;

gpu::CUresult MOE_CUDAAPI init(unsigned int) { return init_result; }
gpu::CUresult MOE_CUDAAPI version(int* v) {
    *v = 13000;
    return 0;
}
gpu::CUresult MOE_CUDAAPI get_count(int* n) {
    *n = count;
    return 0;
}
gpu::CUresult MOE_CUDAAPI device_get(gpu::CUdevice* d, int i) {
    *d = i;
    return 0;
}
gpu::CUresult MOE_CUDAAPI name(char* out, int len, gpu::CUdevice d) {
    std::snprintf(out, static_cast<size_t>(len), "Fake GPU %d", d);
    return 0;
}
gpu::CUresult MOE_CUDAAPI total_mem(size_t* bytes, gpu::CUdevice d) {
    *bytes = (d + 1) * 80 * kGiB;
    return 0;
}
gpu::CUresult MOE_CUDAAPI attribute(int* v, int attr, gpu::CUdevice) {
    *v = attr == gpu::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR ? 9 : 0;
    return attr == gpu::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR || attr == gpu::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR ? 0 : 1;
}
// Context handles are addresses in this array, one per device (the probe never dereferences them).
char contexts[8];
gpu::CUcontext context_of(gpu::CUdevice d) { return reinterpret_cast<gpu::CUcontext>(&contexts[d]); }
gpu::CUdevice current = -1;
gpu::CUresult MOE_CUDAAPI retain(gpu::CUcontext* c, gpu::CUdevice d) {
    if (d == retain_fail_device) return 46;
    *c = context_of(d);
    ++retained;
    return 0;
}
gpu::CUresult MOE_CUDAAPI release(gpu::CUdevice) {
    --retained;
    return 0;
}
gpu::CUresult MOE_CUDAAPI push(gpu::CUcontext c) {
    current = static_cast<gpu::CUdevice>(reinterpret_cast<char*>(c) - contexts);
    ++pushed;
    return 0;
}
gpu::CUresult MOE_CUDAAPI pop(gpu::CUcontext* c) {
    *c = context_of(current);
    --pushed;
    current = -1;
    return 0;
}
gpu::CUresult MOE_CUDAAPI mem_info(size_t* free_bytes, size_t* total) {
    if (current < 0) return 201;  // CUDA_ERROR_INVALID_CONTEXT: the probe forgot to push
    *free_bytes = (current + 1) * 79 * kGiB;
    *total = (current + 1) * 80 * kGiB;
    return 0;
}
gpu::CUresult MOE_CUDAAPI error_name(gpu::CUresult code, const char** out) {
    if (code != 100) return 1;
    *out = "CUDA_ERROR_NO_DEVICE (from the driver)";
    return 0;
}

gpu::DriverApi api() {
    gpu::DriverApi a;
    a.cuInit = init;
    a.cuDriverGetVersion = version;
    a.cuDeviceGetCount = get_count;
    a.cuDeviceGet = device_get;
    a.cuDeviceGetName = name;
    a.cuDeviceTotalMem = total_mem;
    a.cuDeviceGetAttribute = attribute;
    a.cuDevicePrimaryCtxRetain = retain;
    a.cuDevicePrimaryCtxRelease = release;
    a.cuCtxPushCurrent = push;
    a.cuCtxPopCurrent = pop;
    a.cuMemGetInfo = mem_info;
    a.cuGetErrorName = with_error_names ? error_name : nullptr;
    return a;
}

void reset() {
    init_result = 0;
    count = 2;
    retain_fail_device = -1;
    retained = pushed = 0;
    with_error_names = false;
    current = -1;
}

}  // namespace fake

TEST_CASE("probe: two devices with name, memory and compute capability; contexts given back") {
    fake::reset();
    const gpu::CudaProbe p = gpu::probe_cuda(fake::api());
    CHECK(p.ok && p.reason.empty());
    CHECK(p.driver_version == 13000);
    CHECK(p.devices.size() == 2);
    if (p.devices.size() == 2) {
        CHECK(p.devices[0].name == "Fake GPU 0" && p.devices[1].name == "Fake GPU 1");
        CHECK(p.devices[0].total_bytes == 80 * kGiB && p.devices[1].total_bytes == 160 * kGiB);
        CHECK(p.devices[0].free_bytes == 79 * kGiB && p.devices[1].free_bytes == 158 * kGiB);
        CHECK(p.devices[1].cc_major == 9 && p.devices[1].cc_minor == 0 && p.devices[1].index == 1);
    }
    CHECK(fake::retained == 0 && fake::pushed == 0);
}

TEST_CASE("probe: reasons for cuInit failures, no devices, and devices that do not answer") {
    fake::reset();
    fake::init_result = 100;
    gpu::CudaProbe p = gpu::probe_cuda(fake::api());
    CHECK(!p.ok && p.reason == "cuInit failed: CUDA_ERROR_NO_DEVICE");
    fake::with_error_names = true;
    p = gpu::probe_cuda(fake::api());
    CHECK_MSG(p.reason == "cuInit failed: CUDA_ERROR_NO_DEVICE (from the driver)", "%s", p.reason.c_str());
    fake::init_result = 803;  // the driver's cuGetErrorName does not know it: the table does
    p = gpu::probe_cuda(fake::api());
    CHECK(p.reason == "cuInit failed: CUDA_ERROR_SYSTEM_DRIVER_MISMATCH");
    fake::init_result = 12345;
    p = gpu::probe_cuda(fake::api());
    CHECK(p.reason == "cuInit failed: CUDA error 12345");

    fake::reset();
    fake::count = 0;
    p = gpu::probe_cuda(fake::api());
    CHECK(!p.ok && has(p.reason, "no CUDA device found"));

    fake::reset();
    fake::retain_fail_device = 0;
    p = gpu::probe_cuda(fake::api());
    CHECK(p.ok && p.devices.size() == 1 && p.devices[0].index == 1);
    CHECK(fake::retained == 0 && fake::pushed == 0);
    fake::count = 1;
    p = gpu::probe_cuda(fake::api());
    CHECK_MSG(!p.ok && p.reason == "device 0: cuDevicePrimaryCtxRetain failed: CUDA_ERROR_DEVICE_UNAVAILABLE", "%s",
              p.reason.c_str());
}

TEST_CASE("probe: a missing library and a library that is not a driver") {
    gpu::DriverApi api;
    std::string reason;
#if defined(__linux__)
    CHECK(!gpu::load_driver("libnode-moe-no-such-driver.so.1", api, reason));
    CHECK_MSG(reason == "no NVIDIA driver (libnode-moe-no-such-driver.so.1 not found)", "%s", reason.c_str());
    CHECK(!gpu::load_driver("libm.so.6", api, reason));
    CHECK_MSG(reason == "the NVIDIA driver is too old (libm.so.6 has no cuInit)", "%s", reason.c_str());
    CHECK(api.cuInit == nullptr);
    // This machine: whatever it has, the probe answers without throwing, with a reason when not ok.
    const gpu::CudaProbe p = gpu::probe_cuda();
    CHECK(p.ok || !p.reason.empty());
    if (!gpu::load_driver(nullptr, api, reason)) CHECK(!p.ok && p.reason == reason);
#else
    (void)api;
    (void)reason;
#endif
}

TEST_MAIN()
