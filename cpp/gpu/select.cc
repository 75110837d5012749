#include "select.h"

#include <algorithm>

#include "../common/error.h"
#include "../kernels/ops.h"
#include "../model/arch.h"
#include "../model/hparams.h"

namespace moe::gpu {

namespace {

constexpr uint64_t kMiB = 1ull << 20;
// Rows of one forward chunk (Model::kMaxChunk, llama.cpp's default ubatch).
constexpr uint64_t kChunk = model::Model::kMaxChunk;
// Keys per attention tile the scratch estimate assumes: a kernel that holds the scores of every
// key of a long context at once would need n_head x chunk x context floats (17 GiB for Kimi K2
// at 128k), which no GPU kernel does.
constexpr uint64_t kAttentionTile = 4096;
// Kernel workspaces beyond the activations (reductions, staging of expert rows).
constexpr uint64_t kWorkspaceSlack = 256 * kMiB;

// Bytes of one cache position of a layer: K and V rows (MLA: the one [latent | rope] row).
uint64_t kv_row_bytes(uint64_t values, model::KvCacheType type) {
    switch (type) {
        case model::KvCacheType::F32: return values * 4;
        case model::KvCacheType::Q8_0: return values / 32 * 34;  // blocks of 32: fp16 scale + 32 int8
        case model::KvCacheType::F16: break;
    }
    return values * 2;
}

}  // namespace

runtime::PlacementInput placement_input(const gguf::GgufFile& file, uint32_t context, model::KvCacheType kv_type,
                                        uint32_t* resolved_context) {
    const gguf::MetadataEntry* arch = file.find("general.architecture");
    if (!arch || arch->type != gguf::ValueType::String) throw Error(ErrorCode::ModelFormat, "missing key general.architecture");
    const std::string arch_name(arch->str);
    const model::ArchSpec* spec = model::find_arch(arch_name);
    if (!spec) {
        throw Error(ErrorCode::ModelFormat,
                    "unsupported architecture '" + arch_name + "' (supported: " + model::supported_arch_names() + ")");
    }
    const model::HParams hp = model::read_hparams(file, *spec);
    const bool mla = spec->attention == model::Attention::Mla;
    // Model::load's default context of new sequences.
    if (context == 0) context = std::min<uint32_t>(4096, hp.n_ctx_train);
    if (resolved_context) *resolved_context = context;

    runtime::PlacementInput in;
    in.n_layer = hp.n_layer;
    uint64_t n_vocab = hp.n_vocab;
    for (const gguf::TensorInfo& t : file.tensors()) {
        runtime::PlacementTensor pt;
        pt.name = t.name;
        pt.bytes = t.nbytes;
        runtime::classify_tensor(t.name, pt.layer, pt.role);
        // A block index past block_count is not a tensor the model binds: keep it on the CPU side of
        // the ledger rather than reject the file here (Model::load decides what is valid).
        if (pt.layer >= static_cast<int32_t>(hp.n_layer)) continue;
        if (pt.role == runtime::TensorRole::TokenEmbd && n_vocab == 0) n_vocab = static_cast<uint64_t>(t.ne[1]);
        in.tensors.push_back(std::move(pt));
    }

    // KV: what cpp/model/model.cc's cache_shapes allocates per layer: K rows of n_head_kv * head_dim
    // and V rows of n_head_kv * head_dim_v (MLA: no V plane), `context` positions, or a ring of
    // window + alignment + one chunk for sliding-window layers.
    in.kv_bytes.assign(hp.n_layer, 0);
    const uint64_t k_width = hp.kv_width();
    const uint64_t v_width = mla ? 0 : static_cast<uint64_t>(hp.n_head_kv) * hp.head_dim_v;
    for (uint32_t il = 0; il < hp.n_layer; ++il) {
        uint64_t rows = context;
        if (hp.is_swa(il)) {
            rows = std::min<uint64_t>(rows, hp.n_swa + static_cast<uint64_t>(kernels::kAttentionWindowAlign) + kChunk);
        }
        in.kv_bytes[il] = rows * kv_row_bytes(k_width + v_width, kv_type);
    }

    // Scratch of one chunk in fp32, after forward.h's Workspace: residual, normed input and block
    // output [n_embd] x 3; q | k | v and the attention output; dense / shared FFN gate and up; router
    // scores twice; k expert rows of gate, up and down; MLA's query and latent buffers. Plus the
    // attention scores of one tile per head, the logits of every row (an allLogits chunk) and slack.
    uint64_t n_ff = 0;
    for (uint32_t f : hp.n_ff) n_ff = std::max<uint64_t>(n_ff, f);
    n_ff = std::max<uint64_t>(n_ff, static_cast<uint64_t>(hp.n_ff_shexp) * std::max<uint32_t>(1, hp.n_expert_shared));
    uint64_t per_token = 3ull * hp.n_embd + 2ull * hp.q_width() + 2 * k_width + 2 * n_ff + 2ull * hp.n_expert +
                         static_cast<uint64_t>(hp.n_expert_used) * (3ull * hp.n_ff_exp + hp.n_embd);
    if (mla) {
        per_token += hp.mla.q_lora_rank + static_cast<uint64_t>(hp.n_head) * (hp.mla.qk_head_dim + 2ull * k_width);
    }
    const uint64_t scores = static_cast<uint64_t>(hp.n_head) * kChunk * std::min<uint64_t>(context, kAttentionTile);
    in.compute_bytes = 4 * (kChunk * per_token + scores + kChunk * n_vocab) + kWorkspaceSlack;
    return in;
}

BackendChoice plan_backend(const std::string& path, const model::LoadOptions& options, const GpuRequest& request) {
    BackendChoice choice;
    if (request.mode == GpuMode::Off) return choice;
    const auto file = gguf::GgufFile::open(path);
    BackendPlan& plan = choice.plan;
    plan.device = request.device;
    plan.device_name = request.device_name;
    plan.kv_type = options.kv_type;
    plan.input = placement_input(*file, options.context_size, options.kv_type, &plan.kv_tokens);
    plan.input.free_bytes = request.free_bytes;
    plan.input.reserve_bytes = request.reserve_bytes >= 0 ? static_cast<uint64_t>(request.reserve_bytes)
                                                          : runtime::default_reserve(request.total_bytes, request.free_bytes);
    runtime::PlacementOptions placement_options = request.placement;
    placement_options.automatic = request.mode == GpuMode::Auto;
    plan.placement = runtime::plan_placement(plan.input, placement_options);
    choice.planned = true;
    if (!plan.placement.fits) {
        if (request.mode == GpuMode::Cuda) {
            throw MemoryError(runtime::shortfall_message(plan.input, placement_options, plan.placement),
                              plan.placement.gpu_bytes, plan.placement.budget_bytes);
        }
        choice.reason = plan.placement.summary;
    }
    return choice;
}

void start_backend(BackendChoice& choice, model::Model& model, GpuMode mode) {
    if (mode == GpuMode::Off || !choice.planned || !choice.plan.placement.fits) return;
    try {
        choice.backend = create_cuda_backend(choice.plan, model);
    } catch (const Error& e) {
        const bool typed = e.code() == ErrorCode::GpuUnavailable || e.code() == ErrorCode::OutOfMemory;
        if (mode == GpuMode::Cuda || !typed) throw;
        choice.reason = e.what();
        return;
    }
    choice.cuda = true;
    choice.reason = choice.backend->describe();
}

}  // namespace moe::gpu
