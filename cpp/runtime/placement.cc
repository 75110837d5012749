#include "placement.h"

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "../common/error.h"

namespace moe::runtime {

namespace {

constexpr uint64_t kMiB = 1ull << 20;

struct RoleName {
    TensorRole role;
    const char* name;
};
constexpr RoleName kRoleNames[] = {
    {TensorRole::TokenEmbd, "token_embd"},   {TensorRole::Output, "output"},
    {TensorRole::Norm, "norm"},              {TensorRole::Attention, "attention"},
    {TensorRole::SharedExpert, "shared_expert"}, {TensorRole::RoutedExperts, "routed_experts"},
    {TensorRole::DenseFfn, "dense_ffn"},     {TensorRole::Router, "router"},
};

bool starts_with(const std::string& s, const char* prefix) { return s.compare(0, std::strlen(prefix), prefix) == 0; }
bool contains(const std::string& s, const char* part) { return s.find(part) != std::string::npos; }

// The byte sums a plan is made of, computed once so that the cost of a plan (G GPU layers, the
// routed experts of the last E MoE layers on the GPU) is O(1): the search tries O(n_layer^2) plans.
struct Sums {
    uint32_t n_layer = 0;
    std::vector<uint64_t> layer_fixed;  // [n_layer] weights that go with the layer (not routed experts) + its KV
    std::vector<uint64_t> layer_experts;
    std::vector<bool> has_experts;
    std::vector<uint32_t> moe_layers;   // ascending layer indices with routed experts
    // fixed_suffix[g]: layer_fixed of the last g layers; expert_suffix[e]: experts of the last e MoE layers.
    std::vector<uint64_t> fixed_suffix, expert_suffix;
    uint64_t head = 0;  // what goes to the GPU with the first GPU layer: output head, global vectors, tied embedding, scratch
    bool tied = false;  // no output tensor: token_embd is the LM head
};

Sums sum_input(const PlacementInput& in) {
    Sums s;
    s.n_layer = in.n_layer;
    if (!in.kv_bytes.empty() && in.kv_bytes.size() != in.n_layer) {
        throw Error(ErrorCode::InvalidArgument, "placement: kv_bytes has " + std::to_string(in.kv_bytes.size()) +
                                                    " entries for " + std::to_string(in.n_layer) + " layers");
    }
    s.layer_fixed.assign(in.n_layer, 0);
    s.layer_experts.assign(in.n_layer, 0);
    s.has_experts.assign(in.n_layer, false);
    bool has_output = false;
    uint64_t embd = 0;
    for (const PlacementTensor& t : in.tensors) {
        if (t.layer < -1 || t.layer >= static_cast<int64_t>(in.n_layer)) {
            throw Error(ErrorCode::InvalidArgument, "placement: tensor '" + t.name + "' has layer " +
                                                        std::to_string(t.layer) + " of " + std::to_string(in.n_layer));
        }
        if (t.role == TensorRole::Output) has_output = true;
        if (t.layer < 0) {
            if (t.role == TensorRole::TokenEmbd) {
                embd += t.bytes;
            } else {
                s.head += t.bytes;
            }
        } else if (t.role == TensorRole::RoutedExperts) {
            s.layer_experts[t.layer] += t.bytes;
            s.has_experts[t.layer] = true;
        } else {
            s.layer_fixed[t.layer] += t.bytes;
        }
    }
    s.tied = !has_output;
    if (s.tied) s.head += embd;
    s.head += in.compute_bytes;
    for (uint32_t l = 0; l < in.n_layer; ++l) {
        if (!in.kv_bytes.empty()) s.layer_fixed[l] += in.kv_bytes[l];
        if (s.has_experts[l]) s.moe_layers.push_back(l);
    }
    s.fixed_suffix.assign(in.n_layer + 1, 0);
    for (uint32_t g = 1; g <= in.n_layer; ++g) s.fixed_suffix[g] = s.fixed_suffix[g - 1] + s.layer_fixed[in.n_layer - g];
    s.expert_suffix.assign(s.moe_layers.size() + 1, 0);
    for (size_t e = 1; e <= s.moe_layers.size(); ++e) {
        s.expert_suffix[e] = s.expert_suffix[e - 1] + s.layer_experts[s.moe_layers[s.moe_layers.size() - e]];
    }
    return s;
}

// MoE layers among the last g layers.
uint32_t moe_layers_in_last(const Sums& s, uint32_t g) {
    const uint32_t first = s.n_layer - g;
    return static_cast<uint32_t>(s.moe_layers.end() - std::lower_bound(s.moe_layers.begin(), s.moe_layers.end(), first));
}

// Device bytes of the plan (g layers, experts of the last e MoE layers on the GPU; e <= MoE layers in g).
uint64_t gpu_cost(const Sums& s, uint32_t g, uint32_t e) {
    if (g == 0) return 0;
    return s.head + s.fixed_suffix[g] + s.expert_suffix[e];
}

uint32_t layer_limit(const PlacementInput& in, const PlacementOptions& o) {
    return o.gpu_layers < 0 || o.gpu_layers > static_cast<int64_t>(in.n_layer) ? in.n_layer
                                                                              : static_cast<uint32_t>(o.gpu_layers);
}

// The most MoE layers of the last g whose experts the options allow on the GPU.
uint32_t expert_limit(const Sums& s, const PlacementOptions& o, uint32_t g) {
    const uint32_t moe = moe_layers_in_last(s, g);
    switch (o.experts) {
        case ExpertsMode::Cpu: return 0;
        case ExpertsMode::Layers: return std::min(moe, o.expert_layers);
        case ExpertsMode::Gpu: break;
    }
    return moe;
}

uint64_t budget_of(const PlacementInput& in) { return in.free_bytes > in.reserve_bytes ? in.free_bytes - in.reserve_bytes : 0; }

std::string describe(const Placement& p) {
    std::string out = std::to_string(p.gpu_layers) + " of " + std::to_string(p.n_layer) + " layers on the GPU";
    if (p.gpu_layers > 0 && p.moe_layers > 0) {
        if (p.expert_layers_gpu == 0) {
            out += ", routed experts in CPU memory";
        } else {
            const uint32_t moe_on_gpu = static_cast<uint32_t>(
                std::count_if(p.layers.begin(), p.layers.end(), [](const LayerPlacement& l) { return l.gpu && l.has_experts; }));
            out += p.expert_layers_gpu == moe_on_gpu
                       ? ", routed experts with them"
                       : ", routed experts of " + std::to_string(p.expert_layers_gpu) + " of " + std::to_string(moe_on_gpu) +
                             " MoE layers on the GPU (the others in CPU memory)";
        }
    }
    return out;
}

// The plan of g GPU layers with the experts of the last e MoE layers on the GPU.
Placement build(const PlacementInput& in, const Sums& s, uint32_t g, uint32_t e) {
    Placement p;
    p.n_layer = in.n_layer;
    p.gpu_layers = g;
    p.moe_layers = static_cast<uint32_t>(s.moe_layers.size());
    p.expert_layers_gpu = e;
    p.output_gpu = g > 0;
    p.budget_bytes = budget_of(in);
    p.layers.assign(in.n_layer, LayerPlacement{});
    const uint32_t first_gpu = in.n_layer - g;
    // Experts on the GPU: the last e MoE layers (all of them at or after first_gpu, since e <= MoE layers in g).
    const uint32_t first_gpu_experts = e == 0 ? in.n_layer : s.moe_layers[s.moe_layers.size() - e];
    for (uint32_t l = 0; l < in.n_layer; ++l) {
        LayerPlacement& lp = p.layers[l];
        lp.gpu = l >= first_gpu;
        lp.has_experts = s.has_experts[l];
        lp.experts_gpu = lp.has_experts && l >= first_gpu_experts;
        lp.kv_bytes = in.kv_bytes.empty() ? 0 : in.kv_bytes[l];
        (lp.gpu ? p.gpu_kv_bytes : p.cpu_kv_bytes) += lp.kv_bytes;
    }
    p.tensor_device.assign(in.tensors.size(), Device::Cpu);
    for (size_t i = 0; i < in.tensors.size(); ++i) {
        const PlacementTensor& t = in.tensors[i];
        bool gpu;
        if (t.layer < 0) {
            gpu = p.output_gpu && (t.role != TensorRole::TokenEmbd || s.tied);
        } else {
            const LayerPlacement& lp = p.layers[t.layer];
            gpu = t.role == TensorRole::RoutedExperts ? lp.experts_gpu : lp.gpu;
            (gpu ? p.layers[t.layer].gpu_bytes : p.layers[t.layer].cpu_bytes) += t.bytes;
        }
        p.tensor_device[i] = gpu ? Device::Gpu : Device::Cpu;
        (gpu ? p.gpu_weight_bytes : p.cpu_weight_bytes) += t.bytes;
    }
    p.compute_bytes = g > 0 ? in.compute_bytes : 0;
    p.gpu_bytes = p.gpu_weight_bytes + p.gpu_kv_bytes + p.compute_bytes;
    p.fits = g > 0 && p.gpu_bytes <= p.budget_bytes;
    return p;
}

// The largest plan within the options' limits that fits (see plan_placement), or g == 0.
void search(const PlacementInput& in, const Sums& s, const PlacementOptions& o, uint32_t& g_out, uint32_t& e_out) {
    const uint64_t budget = budget_of(in);
    for (uint32_t g = layer_limit(in, o); g > 0; --g) {
        if (gpu_cost(s, g, 0) > budget) continue;  // not even this many layers with all experts on the CPU
        uint32_t e = expert_limit(s, o, g);
        while (e > 0 && gpu_cost(s, g, e) > budget) --e;
        g_out = g;
        e_out = e;
        return;
    }
    g_out = 0;
    e_out = 0;
}

// The options that give plan p, as a JS object literal for messages: "{ gpuLayers: 40, experts: 'cpu' }".
std::string options_literal(const Placement& p, uint32_t moe_in_gpu_layers) {
    std::string parts;
    if (p.gpu_layers < p.n_layer) parts += "gpuLayers: " + std::to_string(p.gpu_layers);
    if (p.moe_layers > 0 && p.expert_layers_gpu < moe_in_gpu_layers) {
        if (!parts.empty()) parts += ", ";
        parts += p.expert_layers_gpu == 0 ? std::string("experts: 'cpu'") : "experts: " + std::to_string(p.expert_layers_gpu);
    }
    return parts.empty() ? "{}" : "{ " + parts + " }";
}

}  // namespace

const char* role_name(TensorRole role) noexcept {
    for (const RoleName& r : kRoleNames) {
        if (r.role == role) return r.name;
    }
    return "attention";
}

bool parse_role(const std::string& name, TensorRole& role) noexcept {
    for (const RoleName& r : kRoleNames) {
        if (name == r.name) {
            role = r.role;
            return true;
        }
    }
    return false;
}

void classify_tensor(const std::string& name, int32_t& layer, TensorRole& role) {
    layer = -1;
    if (starts_with(name, "blk.")) {
        // "blk.<n>.<rest>"
        size_t i = 4;
        int64_t n = 0;
        while (i < name.size() && name[i] >= '0' && name[i] <= '9' && n < 1000000) n = n * 10 + (name[i++] - '0');
        if (i > 4 && i < name.size() && name[i] == '.') {
            layer = static_cast<int32_t>(n);
            const std::string rest = name.substr(i + 1);
            // Order matters: ffn_gate_inp_shexp is the shared expert's gate, not the router;
            // ffn_gate_exps.bias (gpt-oss) belongs to the experts.
            if (contains(rest, "_exps")) {
                role = TensorRole::RoutedExperts;
            } else if (contains(rest, "_shexp")) {
                role = TensorRole::SharedExpert;
            } else if (starts_with(rest, "ffn_gate_inp") || starts_with(rest, "exp_probs_b")) {
                role = TensorRole::Router;
            } else if (contains(rest, "norm")) {
                role = TensorRole::Norm;
            } else if (starts_with(rest, "ffn_")) {
                role = TensorRole::DenseFfn;
            } else {
                role = TensorRole::Attention;
            }
            return;
        }
    }
    if (starts_with(name, "token_embd.")) {
        role = TensorRole::TokenEmbd;
    } else if (starts_with(name, "output_norm")) {
        role = TensorRole::Norm;
    } else if (starts_with(name, "output.")) {
        role = TensorRole::Output;
    } else {
        role = TensorRole::Attention;  // rope_freqs and anything else global: small, goes with the output head
    }
}

uint64_t default_reserve(uint64_t total_bytes, uint64_t free_bytes) noexcept {
    return (total_bytes > 0 ? total_bytes : free_bytes) / 20 + 512 * kMiB;
}

Placement plan_placement(const PlacementInput& input, const PlacementOptions& options) {
    const Sums s = sum_input(input);
    if (options.automatic) {
        uint32_t g = 0, e = 0;
        search(input, s, options, g, e);
        Placement p = build(input, s, g, e);
        if (input.n_layer == 0) {
            p.summary = "the model has no layers to place on the GPU";
        } else if (p.fits) {
            p.summary = describe(p) + ": " + format_bytes(p.gpu_bytes) + " of the " + format_bytes(p.budget_bytes) +
                        " available";
        } else {
            const uint32_t g_min = std::min<uint32_t>(1, layer_limit(input, options));
            p.summary = g_min == 0 ? "gpuLayers: 0 puts nothing on the GPU"
                                   : "the model does not fit on the GPU: even 1 layer" +
                                         std::string(s.moe_layers.empty() ? "" : " with its experts in CPU memory") +
                                         " needs " + format_bytes(gpu_cost(s, 1, 0)) + ", " +
                                         format_bytes(budget_of(input)) + " available (" +
                                         format_bytes(input.free_bytes) + " free, " +
                                         format_bytes(input.reserve_bytes) + " kept in reserve)";
        }
        return p;
    }
    const uint32_t g = layer_limit(input, options);
    Placement p = build(input, s, g, expert_limit(s, options, g));
    if (g == 0) {
        p.summary = input.n_layer == 0 ? "the model has no layers to place on the GPU" : "gpuLayers: 0 puts nothing on the GPU";
    } else if (p.fits) {
        p.summary = describe(p) + ": " + format_bytes(p.gpu_bytes) + " of the " + format_bytes(p.budget_bytes) + " available";
    } else {
        p.summary = describe(p) + " needs " + format_bytes(p.gpu_bytes) + ", " + format_bytes(p.budget_bytes) + " available";
    }
    return p;
}

std::string shortfall_message(const PlacementInput& input, const PlacementOptions& options, const Placement& plan) {
    if (plan.gpu_layers == 0) return plan.summary;
    std::string msg = "the model does not fit in GPU memory: the plan (" + describe(plan) + ") needs " +
                      format_bytes(plan.gpu_bytes) + ", " + format_bytes(plan.budget_bytes) + " available (" +
                      format_bytes(input.free_bytes) + " free, " + format_bytes(input.reserve_bytes) + " kept in reserve)";
    const bool moe = plan.moe_layers > 0;
    PlacementOptions automatic = options;
    automatic.automatic = true;
    const Placement best = plan_placement(input, automatic);
    msg += moe ? ". Try experts: 'cpu' or fewer gpuLayers" : ". Try fewer gpuLayers";
    const Sums s = sum_input(input);
    if (best.fits) {
        msg += "; the largest plan that fits is " + options_literal(best, moe_layers_in_last(s, best.gpu_layers));
    } else {
        msg += std::string("; but not even 1 layer") + (moe ? " with its experts in CPU memory" : "") + " fits (it needs " +
               format_bytes(gpu_cost(s, 1, 0)) + "): use gpu: false to run on the CPU";
    }
    return msg;
}

std::string format_bytes(uint64_t bytes) {
    char buf[48];
    const double b = static_cast<double>(bytes);
    if (bytes >= (1ull << 30)) {
        std::snprintf(buf, sizeof buf, "%.1f GiB", b / (1ull << 30));
    } else if (bytes >= kMiB) {
        std::snprintf(buf, sizeof buf, "%.1f MiB", b / kMiB);
    } else if (bytes >= 1024) {
        std::snprintf(buf, sizeof buf, "%.1f KiB", b / 1024);
    } else {
        std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(bytes));
    }
    return buf;
}

}  // namespace moe::runtime
