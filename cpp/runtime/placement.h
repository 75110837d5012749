// Memory placement of a model between one GPU and the CPU, planned before anything is allocated:
// which tensors, KV-cache layers and scratch go to the device, and whether that fits its free
// memory. Pure arithmetic over byte counts (no CUDA dependency), so it is unit-tested on machines
// without a GPU and the loader can refuse a plan with a typed error instead of a driver abort.
//
// The model of the device: layers [n_layer - gpu_layers, n_layer) run on the GPU (counted from the
// last, like llama.cpp's n_gpu_layers); a GPU layer holds its attention, norms, router, shared
// expert or dense FFN and its KV cache, and its routed experts unless they are kept in (mapped)
// CPU memory and run by the CPU kernels. The output head follows the last layer; the token
// embedding stays in the mapping (its lookups are row copies) unless it doubles as a tied output
// head on the GPU.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace moe::runtime {

// What a tensor is for. Only three roles steer placement (routed experts, token embedding, output
// head); the rest follow their layer, and are kept apart for summaries and tests.
enum class TensorRole : uint8_t {
    TokenEmbd,      // token_embd: input rows (and the output head when tied)
    Output,         // output: the LM head
    Norm,           // any *_norm vector (output_norm when layer == -1)
    Attention,      // attn_* projections, sinks, biases; rope_freqs (layer -1)
    SharedExpert,   // ffn_*_shexp: run for every token
    RoutedExperts,  // ffn_*_exps: [n_expert] stacks, k of them read per token
    DenseFfn,       // ffn_gate / ffn_up / ffn_down of a dense layer
    Router,         // ffn_gate_inp, exp_probs_b
};

const char* role_name(TensorRole role) noexcept;  // "token_embd", "routed_experts", ...
bool parse_role(const std::string& name, TensorRole& role) noexcept;

struct PlacementTensor {
    std::string name;
    uint64_t bytes = 0;
    int32_t layer = -1;  // block index, -1 for tensors outside the blocks
    TensorRole role = TensorRole::Attention;
};

// The layer and role of a GGUF tensor name in llama.cpp's naming ("blk.12.ffn_up_exps.weight" ->
// {12, RoutedExperts}). Unknown per-layer names are Attention (they follow their layer).
void classify_tensor(const std::string& name, int32_t& layer, TensorRole& role);

enum class Device : uint8_t { Cpu, Gpu };

// What the model needs, in bytes.
struct PlacementInput {
    uint32_t n_layer = 0;
    std::vector<PlacementTensor> tensors;
    std::vector<uint64_t> kv_bytes;  // [n_layer] KV cache of each layer for the planned context (empty: none)
    uint64_t compute_bytes = 0;      // device scratch of one forward chunk, needed once any layer is on the GPU
    uint64_t free_bytes = 0;         // the device's free memory now
    uint64_t reserve_bytes = 0;      // kept free (driver, fragmentation, other processes): see default_reserve
};

// 5% of the device's memory + 512 MiB: room for the driver's own allocations, fragmentation and
// estimates that come out low. `total_bytes` 0 (unknown): 5% of `free_bytes` + 512 MiB.
uint64_t default_reserve(uint64_t total_bytes, uint64_t free_bytes) noexcept;

enum class ExpertsMode : uint8_t {
    Gpu,     // every GPU layer keeps its routed experts on the GPU (default)
    Cpu,     // every layer's routed experts stay in CPU memory (hybrid: GPU attention, CPU experts)
    Layers,  // the last `expert_layers` MoE layers on the GPU keep theirs; earlier ones use the CPU
};

struct PlacementOptions {
    // true ('auto'): the options are upper bounds and the planner shrinks the plan until it fits;
    // false ('cuda'): exactly these options, fitting or not.
    bool automatic = true;
    int64_t gpu_layers = -1;  // layers on the GPU, counted from the last; -1 or > n_layer: all
    ExpertsMode experts = ExpertsMode::Gpu;
    uint32_t expert_layers = 0;  // with ExpertsMode::Layers; more than the MoE layers: all of them
};

struct LayerPlacement {
    bool gpu = false;          // attention, norms, router, shared expert / dense FFN and KV on the GPU
    bool has_experts = false;  // the layer has routed experts (an MoE layer)
    bool experts_gpu = false;  // its routed experts are on the GPU
    uint64_t gpu_bytes = 0;    // weights on the GPU
    uint64_t cpu_bytes = 0;    // weights computed from CPU memory
    uint64_t kv_bytes = 0;     // KV cache (on the layer's device)
};

struct Placement {
    bool fits = false;           // the GPU part fits in free - reserve (an empty GPU part never "fits")
    uint32_t n_layer = 0;
    uint32_t gpu_layers = 0;     // layers [n_layer - gpu_layers, n_layer) on the GPU
    uint32_t moe_layers = 0;     // layers with routed experts
    uint32_t expert_layers_gpu = 0;  // MoE layers whose experts are on the GPU
    bool output_gpu = false;
    std::vector<Device> tensor_device;  // [input.tensors.size()]
    std::vector<LayerPlacement> layers; // [n_layer]
    uint64_t gpu_weight_bytes = 0, cpu_weight_bytes = 0;
    uint64_t gpu_kv_bytes = 0, cpu_kv_bytes = 0;
    uint64_t compute_bytes = 0;  // scratch counted on the GPU (0 when nothing is there)
    uint64_t gpu_bytes = 0;      // gpu_weight_bytes + gpu_kv_bytes + compute_bytes: what the device must hold
    uint64_t budget_bytes = 0;   // free - reserve
    std::string summary;         // one line: what is where, or why nothing fits
};

// Places the model. With options.automatic, the largest plan that fits, tried in this order: every
// layer with its experts on the GPU; then the routed experts of as few layers as needed in CPU
// memory (the first layers' first: experts dominate the bytes and each token reads only k of them,
// so they cost the least speed per byte moved); then fewer GPU layers (dropped from the first),
// filling what that frees with experts again. When not even one layer fits, the CPU plan
// (gpu_layers 0, fits false) with the reason in `summary`. Without automatic, exactly the
// options; `fits` says whether that plan fits. Throws moe::Error(InvalidArgument) for an input
// whose tensor layers or kv_bytes do not match n_layer.
Placement plan_placement(const PlacementInput& input, const PlacementOptions& options);

// The message of the out-of-memory error for a plan that does not fit: needed and free bytes, and
// what would fit (experts: 'cpu', a number of expert layers, fewer gpuLayers) found by the
// automatic search under the same limits.
std::string shortfall_message(const PlacementInput& input, const PlacementOptions& options, const Placement& plan);

// "1.5 GiB", "812.0 MiB", "64 B": for messages.
std::string format_bytes(uint64_t bytes);

}  // namespace moe::runtime
