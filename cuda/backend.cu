// The CUDA backend: create_cuda_backend (cpp/gpu/backend.h) and the forward pass it installs as the
// model's model::ForwardDevice. Same contract as model::forward_batch (cpp/model/forward.cc), step
// for step in the same order, with the kernels of matmul.cuh, ops.cuh, routing.cuh and
// attention.cuh in place of the CPU ones.
//
// Memory:
//  - weights: every tensor the GPU part reads (attention, norms, routers, shared experts, dense
//    FFNs, the output head, and the routed experts of layers whose placement says experts_gpu) is
//    copied whole from the mapping into one device arena; views (k_b / v_b per head, a tied output
//    head) become offsets into it. Weights the loader computed on the host (k_b / v_b split from an
//    older attn_kv_b, norms stored as F16) are copied from their host copies. Routed experts of
//    hybrid layers stay in the mapping and run on the CPU kernels.
//  - scratch: one device arena sized for `rows_` rows of a pass (Model::kMaxChunk at first, grown
//    when a merged pass has more), the same buffers as model::Workspace; page-locked host buffers
//    for token embeddings, K/V rows going back to the CPU cache, expert choices, and the hybrid
//    layers' activations.
//  - KV: per sequence, in the cache's device_state() slot (backend_kv.cuh), F16 on the device.
//
// Per pass (one stream; the host enqueues, polls should_abort between layers, and waits once at the
// end; hybrid layers wait for their expert inputs):
//   sync each segment's device KV with its CPU cache (uploads rows a restored prefix or a loaded
//   state put there) -> token embeddings dequantized on the host (exactly as the CPU) and copied ->
//   per layer: rms_norm, attention (projections, biases, QK norm, RoPE, per-segment KV store and
//   attention; MLA in the absorbed form), the fp32 K/V rows copied to pinned memory, output
//   projection + residual, rms_norm, MoE (router, top-k, expert grouping, experts, combine with the
//   shared expert) or dense FFN, residual -> output norm and head for the logit rows -> logits to
//   the segments, K/V rows into each CPU cache (store_k / store_v: saveState, the prefix cache and
//   a CPU pass after the backend is gone keep working), expert counts.
//
// Hybrid layers (routed experts in CPU memory): the GPU computes the router and the top-k choice,
// copies the FFN input rows, choices and weights to pinned memory and records an event, then
// enqueues the shared expert; the host waits for the event only, runs the routed experts with the
// CPU kernels (kernels::matmul_experts(_swiglu) on the model's thread pool, exactly forward.cc's
// moe_ffn routed part) while the GPU runs the shared expert, and copies the weighted sum back,
// where moe_combine adds the shared expert's output.
//
// Not supported (create_cuda_backend throws GpuUnavailable, so 'auto' falls back to the CPU):
// layers left on the CPU (gpuLayers below the block count), shapes the kernels refuse.
#include "gpu/backend.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <map>
#include <mutex>
#include <numeric>
#include <string>
#include <vector>

#include "attention.cuh"
#include "backend_kv.cuh"
#include "backend_util.cuh"
#include "common/error.h"
#include "kernels/matmul.h"
#include "kernels/ops.h"
#include "matmul.cuh"
#include "model/forward.h"
#include "ops.cuh"
#include "quant/ggml_types.h"
#include "quant/quant.h"
#include "routing.cuh"
#include "runtime/placement.h"

namespace moe::cuda::backend {

namespace {

using model::BatchSegment;
using model::HParams;
using model::LayerWeights;
using model::ModelState;

constexpr size_t kAlign = 256;
// Flash-decoding partials of one attention call; attention() uses fewer key splits with less.
constexpr size_t kMaxAttentionScratch = size_t{256} << 20;

size_t align_up(size_t v) { return (v + kAlign - 1) / kAlign * kAlign; }

std::string layer_name(uint32_t il, const char* what) { return "blk." + std::to_string(il) + "." + what; }

// Runs fn(row) for rows [0, n_rows) of `width` values each, spread over the pool when large
// (forward.cc's for_rows).
template <class Fn>
void for_rows(runtime::ThreadPool& pool, int64_t n_rows, int64_t width, Fn&& fn) {
    const int64_t min_rows = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, width));
    pool.parallel_for(n_rows, min_rows, [&](int64_t begin, int64_t end, int) {
        for (int64_t r = begin; r < end; ++r) fn(r);
    });
}

// ------------------------------------------------------------------------------------------------
// Weights on the device
// ------------------------------------------------------------------------------------------------

// The device copies of host weight bytes. Requests name host ranges; a range inside a GGUF tensor
// brings the whole tensor (once), any other range (a host-computed copy) is copied alone. After
// upload(), device() maps a host pointer inside any requested range to its device twin.
class WeightArena {
public:
    explicit WeightArena(const gguf::GgufFile& file) {
        for (const gguf::TensorInfo& t : file.tensors()) {
            if (t.data && t.nbytes > 0) tensors_.push_back(&t);
        }
        std::sort(tensors_.begin(), tensors_.end(),
                  [](const gguf::TensorInfo* a, const gguf::TensorInfo* b) { return a->data < b->data; });
    }

    void need(const uint8_t* host, size_t bytes) {
        if (!host || bytes == 0) return;
        const gguf::TensorInfo* t = tensor_containing(host, bytes);
        const uint8_t* start = t ? t->data : host;
        const size_t n = t ? static_cast<size_t>(t->nbytes) : bytes;
        auto it = regions_.find(start);
        if (it == regions_.end()) {
            regions_.emplace(start, Region{n, 0});
        } else {
            it->second.bytes = std::max(it->second.bytes, n);
        }
    }

    size_t total_bytes() const {
        size_t total = 0;
        for (const auto& r : regions_) total += align_up(r.second.bytes);
        return total;
    }

    void upload() {
        size_t off = 0;
        for (auto& r : regions_) {
            r.second.offset = off;
            off += align_up(r.second.bytes);
        }
        memory_.allocate(off, "the model's weights");
        for (const auto& r : regions_) {
            check(cudaMemcpy(static_cast<char*>(memory_.get()) + r.second.offset, r.first, r.second.bytes,
                             cudaMemcpyHostToDevice),
                  "copying weights to the GPU");
        }
    }

    const void* device(const uint8_t* host) const {
        auto it = regions_.upper_bound(host);
        if (it == regions_.begin()) throw missing();
        --it;
        if (host >= it->first + it->second.bytes) throw missing();
        return static_cast<const char*>(memory_.get()) + it->second.offset + (host - it->first);
    }

private:
    struct Region {
        size_t bytes;
        size_t offset;
    };

    static Error missing() { return Error(ErrorCode::GpuUnavailable, "CUDA backend: a weight was not uploaded (internal error)"); }

    const gguf::TensorInfo* tensor_containing(const uint8_t* host, size_t bytes) const {
        auto it = std::upper_bound(tensors_.begin(), tensors_.end(), host,
                                   [](const uint8_t* p, const gguf::TensorInfo* t) { return p < t->data; });
        if (it == tensors_.begin()) return nullptr;
        const gguf::TensorInfo* t = *(it - 1);
        return host + bytes <= t->data + t->nbytes ? t : nullptr;
    }

    std::vector<const gguf::TensorInfo*> tensors_;
    std::map<const uint8_t*, Region> regions_;
    DeviceBuffer memory_;
};

// One layer's weights as the GPU part reads them (null / empty where the layer has none).
struct DeviceLayer {
    const float* attn_norm = nullptr;
    const float* ffn_norm = nullptr;
    DeviceWeight wq, wk, wv, wqkv, wo;
    const float *bq = nullptr, *bk = nullptr, *bv = nullptr, *bqkv = nullptr, *bo = nullptr;
    const float *q_norm = nullptr, *k_norm = nullptr, *sinks = nullptr;
    // MLA
    DeviceWeight wq_a, wq_b, wkv_a_mqa;
    const float *q_a_norm = nullptr, *kv_a_norm = nullptr;
    std::vector<DeviceWeight> k_b, v_b;
    // Dense FFN
    DeviceWeight ffn_gate, ffn_up, ffn_down;
    const float *ffn_gate_b = nullptr, *ffn_up_b = nullptr, *ffn_down_b = nullptr;
    // MoE
    bool experts_gpu = false;  // routed experts on the GPU (else the CPU runs them from the mapping)
    DeviceWeight gate_inp;
    const float *gate_inp_b = nullptr, *exp_probs_b = nullptr;
    DeviceExperts gate_exps, up_exps, gate_up_exps, down_exps;
    const float *gate_exps_b = nullptr, *up_exps_b = nullptr, *down_exps_b = nullptr;
    // Shared expert
    DeviceWeight shexp_gate_inp, shexp_gate, shexp_up, shexp_down;
};

// Binds weights in two rounds over the same code: the first (resolve == false) only tells the arena
// what to upload, the second returns the device views and checks every type has a kernel.
struct Binder {
    WeightArena& arena;
    bool resolve;

    DeviceWeight matrix(const kernels::WeightMatrix& w, const std::string& name) {
        if (!w.data) return {};
        if (!resolve) {
            arena.need(w.data, static_cast<size_t>(w.n_out) * w.row_bytes);
            return {};
        }
        if (!can_matmul(w.type)) unsupported(name, w.type);
        return DeviceWeight{arena.device(w.data), w.type, w.n_in, w.n_out, w.row_bytes};
    }

    DeviceExperts experts(const kernels::ExpertMatrix& w, const std::string& name) {
        if (!w.data) return {};
        if (!resolve) {
            arena.need(w.data, static_cast<size_t>(w.n_expert) * w.expert_bytes);
            return {};
        }
        if (!can_matmul(w.type)) unsupported(name, w.type);
        return DeviceExperts{arena.device(w.data), w.type, w.n_in, w.n_out, w.n_expert, w.row_bytes, w.expert_bytes};
    }

    const float* floats(const float* data, int64_t n) {
        if (!data || n <= 0) return nullptr;
        const auto* bytes = reinterpret_cast<const uint8_t*>(data);
        if (!resolve) {
            arena.need(bytes, sizeof(float) * static_cast<size_t>(n));
            return nullptr;
        }
        return static_cast<const float*>(arena.device(bytes));
    }

    const float* vec(const model::Vector& v) { return floats(v.data, v.n); }

    [[noreturn]] static void unsupported(const std::string& name, uint32_t type) {
        throw Error(ErrorCode::GpuUnavailable, "the CUDA kernels cannot multiply " + name + " of type " +
                                                   quant::type_name(type) + " (use gpu: false)");
    }
};

// ------------------------------------------------------------------------------------------------
// The backend
// ------------------------------------------------------------------------------------------------

// Rows [begin, begin + count) of a pass's batch (one segment's).
struct Group {
    int64_t begin = 0;
    int64_t count = 0;
};

std::atomic<uint64_t> g_backend_serial{0};

class CudaBackend final : public gpu::GpuBackend, public model::ForwardDevice {
public:
    CudaBackend(const gpu::BackendPlan& plan, ModelState& m);
    ~CudaBackend() override;
    CudaBackend(const CudaBackend&) = delete;
    CudaBackend& operator=(const CudaBackend&) = delete;

    std::string describe() const override { return description_; }
    void forward_batch(const BatchSegment* segs, size_t n_segs, const std::function<bool()>& should_abort) override;

private:
    struct Stream {
        cudaStream_t s = nullptr;
        ~Stream() {
            if (s) cudaStreamDestroy(s);
        }
    };
    struct Event {
        cudaEvent_t e = nullptr;
        ~Event() {
            if (e) cudaEventDestroy(e);
        }
    };

    // What one pass needs to know about its rows.
    struct Pass {
        const BatchSegment* segs = nullptr;
        size_t n_segs = 0;
        std::vector<Group> in, out;   // every row / the logit rows (compacted), per segment
        int64_t n = 0, n_out = 0;
        std::vector<DeviceKv*> kv;    // per segment
        bool want_counts = false;
        std::vector<bool> routed;     // [n_layer]: the layer's choices are in h_counts_
    };

    void forward_pass(const BatchSegment* segs, size_t n_segs, const std::function<bool()>& should_abort);
    void check_supported(const gpu::BackendPlan& plan) const;
    std::vector<DeviceLayer> bind(Binder& b, const gpu::BackendPlan& plan);
    void reserve_rows(int64_t n);
    void* attention_scratch(size_t want, size_t* got);
    void sync_or_ignore() noexcept;

    void attention_gqa(Pass& p, uint32_t il, const float* xn, bool last, float* attn);
    void attention_mla(Pass& p, uint32_t il, const float* xn, bool last, float* attn);
    void moe_ffn(Pass& p, uint32_t il, const float* xn, int64_t nr, float* out);
    void shared_expert(const DeviceLayer& D, const float* xn, int64_t nr);
    void dense_ffn(const DeviceLayer& D, const float* xn, int64_t nr, float* out);
    void cpu_routed_experts(const LayerWeights& L, int64_t nr);
    void write_back_kv(Pass& p);

    ModelState& m_;
    const HParams& hp_;
    int device_ = 0;
    uint64_t serial_ = 0;
    std::string description_;
    bool mla_ = false;
    bool oai_ = false;       // gpt-oss's clamped SwiGLU with expert biases
    bool gated_shared_ = false;
    // Widths (forward.cc's names).
    int64_t E_ = 0, AW_ = 0, QW_ = 0, KVW_ = 0, QKVW_ = 0;
    int64_t H_ = 0, QK_ = 0, NOPE_ = 0, ROT_ = 0, R_ = 0, DV_ = 0, KR_ = 0, QL_ = 0;
    int64_t FF_ = 0;                 // widest dense / shared FFN
    int64_t X_ = 0, K_ = 0, F_ = 0;  // experts, used per token, expert width
    int64_t V_ = 0;
    int64_t KVROW_ = 0;              // fp32 values per row and layer going back to the CPU cache
    KvWidths kv_widths_;
    bool any_hybrid_ = false;

    WeightArena arena_;
    std::vector<DeviceLayer> layers_;
    DeviceWeight output_;
    const float* output_norm_ = nullptr;
    const float* rope_freq_ = nullptr;      // device rope_freqs of the two RoPE configurations, or null
    const float* rope_swa_freq_ = nullptr;
    RopeParams rope_, rope_swa_;
    RoutingParams routing_;

    Stream stream_;
    Event experts_in_;  // hybrid layers: the expert inputs reached pinned memory

    // Scratch of rows_ rows.
    int64_t rows_ = 0;
    DeviceBuffer scratch_;
    float *x_ = nullptr, *xn_ = nullptr, *attn_ = nullptr, *proj_ = nullptr, *sh_ = nullptr, *moe_in_ = nullptr;
    float* qkv_ = nullptr;
    float *mq_ = nullptr, *mqa_ = nullptr, *mkv_ = nullptr, *mqabs_ = nullptr, *molat_ = nullptr, *mqsel_ = nullptr;
    float *ff_a_ = nullptr, *ff_b_ = nullptr;
    float *router_ = nullptr, *sw_ = nullptr, *sg_ = nullptr, *ones_ = nullptr;
    int32_t *sel_ = nullptr, *row_src_ = nullptr, *row_of_ = nullptr, *identity_ = nullptr, *offsets_ = nullptr;
    int32_t* pos_ = nullptr;
    float *exp_a_ = nullptr, *exp_b_ = nullptr, *exp_out_ = nullptr;
    float* logits_ = nullptr;
    void* group_scratch_ = nullptr;
    size_t group_scratch_bytes_ = 0;
    DeviceBuffer attn_scratch_;

    // Pinned host buffers of rows_ rows.
    PinnedBuffer h_x_, h_pos_, h_kv_, h_counts_;
    PinnedBuffer h_xn_, h_sel_, h_sw_, h_moe_;  // hybrid layers

    // Host scratch of the CPU experts (forward.cc's Workspace fields).
    struct CpuExperts {
        std::vector<int32_t> fill, row_src, row_expert, row_of, row_self;
        std::vector<float> a, b, down;
    } cpu_;

    KvUploader uploader_;
};

CudaBackend::CudaBackend(const gpu::BackendPlan& plan, ModelState& m)
    : m_(m), hp_(m.hp), device_(plan.device), serial_(++g_backend_serial), arena_(*m.file) {
    const HParams& hp = hp_;
    mla_ = m.spec->attention == model::Attention::Mla;
    oai_ = m.spec->expert_act == model::ExpertAct::SwigluOai;
    gated_shared_ = m.spec->shared_expert == model::SharedExpert::SigmoidGated;
    E_ = hp.n_embd;
    QW_ = hp.q_width();
    KVW_ = hp.kv_width();
    QKVW_ = QW_ + 2 * KVW_;
    H_ = hp.n_head;
    QK_ = hp.mla.qk_head_dim;
    NOPE_ = hp.mla.qk_nope;
    ROT_ = hp.n_rot;
    R_ = hp.mla.kv_lora_rank;
    DV_ = hp.mla.v_head_dim;
    KR_ = R_ + ROT_;
    QL_ = hp.mla.q_lora_rank;
    AW_ = mla_ ? H_ * DV_ : QW_;
    X_ = hp.n_expert;
    K_ = hp.n_expert_used;
    F_ = hp.n_ff_exp;
    V_ = hp.n_vocab;
    kv_widths_.k = hp.kv_width();  // MLA: head_dim = kv_lora_rank + n_rot, one KV head
    kv_widths_.v = mla_ ? 0 : hp.n_head_kv * hp.head_dim_v;
    KVROW_ = kv_widths_.k + kv_widths_.v;
    for (const LayerWeights& L : m.w.layers) {
        FF_ = std::max<int64_t>(FF_, L.ffn_up.n_out);
        if (L.shared) FF_ = std::max<int64_t>(FF_, L.shexp_gate.n_out);
    }

    check_supported(plan);

    // The device, and its free memory now (the plan was made from a probe in another process).
    int count = 0;
    cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess || plan.device < 0 || plan.device >= count) {
        cudaGetLastError();
        throw Error(ErrorCode::GpuUnavailable, "CUDA device " + std::to_string(plan.device) + " is not available (" +
                                                   (err != cudaSuccess ? std::string(cudaGetErrorString(err))
                                                                       : std::to_string(count) + " devices") +
                                                   ")");
    }
    check(cudaSetDevice(device_), "cudaSetDevice");
    size_t free_bytes = 0, total_bytes = 0;
    check(cudaMemGetInfo(&free_bytes, &total_bytes), "cudaMemGetInfo");
    const uint64_t needed = plan.placement.gpu_bytes;
    if (free_bytes < needed) {
        throw MemoryError("the GPU (" + plan.device_name + ") has " + runtime::format_bytes(free_bytes) +
                              " free now, the placement needs " + runtime::format_bytes(needed) +
                              " (memory was taken since it was probed); try experts: 'cpu' or gpu: false",
                          needed, free_bytes);
    }

    // Weights: what to upload, the upload, then the device views.
    {
        Binder plan_round{arena_, false};
        bind(plan_round, plan);
    }
    if (arena_.total_bytes() > free_bytes) {
        throw MemoryError("the model's GPU weights need " + runtime::format_bytes(arena_.total_bytes()) + ", the GPU (" +
                              plan.device_name + ") has " + runtime::format_bytes(free_bytes) + " free",
                          arena_.total_bytes(), free_bytes);
    }
    arena_.upload();
    {
        Binder resolve_round{arena_, true};
        layers_ = bind(resolve_round, plan);
    }
    const bool fused_rope = m.isa == cpu::Isa::Avx2 || m.isa == cpu::Isa::Avx512;
    rope_ = rope_params(hp.rope, rope_freq_, fused_rope);
    rope_swa_ = rope_params(hp.rope_swa, rope_swa_freq_, fused_rope);
    if (hp.is_moe()) routing_ = routing_params(hp);

    check(cudaStreamCreateWithFlags(&stream_.s, cudaStreamNonBlocking), "cudaStreamCreate");
    check(cudaEventCreateWithFlags(&experts_in_.e, cudaEventDisableTiming), "cudaEventCreate");
    uploader_.stream = stream_.s;
    uploader_.isa = m.isa;
    reserve_rows(model::Model::kMaxChunk);
    check(cudaStreamSynchronize(stream_.s), "initialising the GPU scratch");

    description_ = "CUDA on " + (plan.device_name.empty() ? "device " + std::to_string(device_) : plan.device_name) + ": " +
                   plan.placement.summary;

    std::lock_guard<std::mutex> lock(m_.compute);
    if (m_.device) throw Error(ErrorCode::GpuUnavailable, "the model already runs on another forward device");
    m_.device = this;
}

CudaBackend::~CudaBackend() {
    {
        std::lock_guard<std::mutex> lock(m_.compute);  // no pass is running on this backend after this
        if (m_.device == this) m_.device = nullptr;
    }
    if (stream_.s) {
        cudaSetDevice(device_);
        cudaStreamSynchronize(stream_.s);
    }
    cudaGetLastError();
}

void CudaBackend::check_supported(const gpu::BackendPlan& plan) const {
    const HParams& hp = hp_;
    const auto refuse = [](const std::string& why) { throw Error(ErrorCode::GpuUnavailable, why); };
    if (plan.placement.gpu_layers < hp.n_layer) {
        refuse("gpuLayers below the model's " + std::to_string(hp.n_layer) +
               " layers is not supported by this build yet (the CUDA backend runs every layer on the GPU; experts: "
               "'cpu' keeps the routed experts in CPU memory)");
    }
    if (plan.placement.layers.size() != hp.n_layer) refuse("CUDA backend: the placement does not match the model's layers");
    if (mla_) {
        if (KR_ > 576 || R_ > 512 || KR_ % 2 != 0 || R_ % 2 != 0) {
            refuse("the CUDA attention kernel cannot run MLA with kv_lora_rank " + std::to_string(R_) + " and rope width " +
                   std::to_string(ROT_));
        }
    } else {
        if (hp.head_dim > 576 || hp.head_dim % 2 != 0 || hp.head_dim_v != hp.head_dim) {
            refuse("the CUDA attention kernel cannot run heads of " + std::to_string(hp.head_dim) + " / " +
                   std::to_string(hp.head_dim_v) + " values");
        }
    }
    if (hp.is_moe() && (hp.n_expert > 512 || hp.n_expert_used < 1)) {
        refuse("the CUDA routing kernel handles at most 512 experts (this model: " + std::to_string(hp.n_expert) + ")");
    }
    if (hp.rope.n_rot <= 0 || hp.rope.n_rot % 2 != 0) refuse("the CUDA RoPE kernel needs an even rotated width");
}

std::vector<DeviceLayer> CudaBackend::bind(Binder& b, const gpu::BackendPlan& plan) {
    const ModelState& m = m_;
    std::vector<DeviceLayer> out(hp_.n_layer);
    for (uint32_t il = 0; il < hp_.n_layer; ++il) {
        const LayerWeights& L = m.w.layers[il];
        DeviceLayer& D = out[il];
        const auto name = [il](const char* what) { return layer_name(il, what); };
        D.attn_norm = b.vec(L.attn_norm);
        D.ffn_norm = b.vec(L.ffn_norm);
        D.wq = b.matrix(L.wq, name("attn_q"));
        D.wk = b.matrix(L.wk, name("attn_k"));
        D.wv = b.matrix(L.wv, name("attn_v"));
        D.wqkv = b.matrix(L.wqkv, name("attn_qkv"));
        D.wo = b.matrix(L.wo, name("attn_output"));
        D.bq = b.vec(L.bq);
        D.bk = b.vec(L.bk);
        D.bv = b.vec(L.bv);
        D.bqkv = b.vec(L.bqkv);
        D.bo = b.vec(L.bo);
        D.q_norm = b.vec(L.q_norm);
        D.k_norm = b.vec(L.k_norm);
        D.sinks = b.vec(L.sinks);
        D.wq_a = b.matrix(L.wq_a, name("attn_q_a"));
        D.q_a_norm = b.vec(L.q_a_norm);
        D.wq_b = b.matrix(L.wq_b, name("attn_q_b"));
        D.wkv_a_mqa = b.matrix(L.wkv_a_mqa, name("attn_kv_a_mqa"));
        D.kv_a_norm = b.vec(L.kv_a_norm);
        D.k_b.clear();
        D.v_b.clear();
        for (const kernels::WeightMatrix& w : L.k_b) D.k_b.push_back(b.matrix(w, name("attn_k_b")));
        for (const kernels::WeightMatrix& w : L.v_b) D.v_b.push_back(b.matrix(w, name("attn_v_b")));
        D.ffn_gate = b.matrix(L.ffn_gate, name("ffn_gate"));
        D.ffn_up = b.matrix(L.ffn_up, name("ffn_up"));
        D.ffn_down = b.matrix(L.ffn_down, name("ffn_down"));
        D.ffn_gate_b = b.vec(L.ffn_gate_b);
        D.ffn_up_b = b.vec(L.ffn_up_b);
        D.ffn_down_b = b.vec(L.ffn_down_b);
        if (L.moe) {
            D.experts_gpu = plan.placement.layers[il].experts_gpu;
            D.gate_inp = b.matrix(L.gate_inp, name("ffn_gate_inp"));
            D.gate_inp_b = b.vec(L.gate_inp_b);
            D.exp_probs_b = b.vec(L.exp_probs_b);
            if (D.experts_gpu) {
                D.gate_exps = b.experts(L.gate_exps, name("ffn_gate_exps"));
                D.up_exps = b.experts(L.up_exps, name("ffn_up_exps"));
                D.gate_up_exps = b.experts(L.gate_up_exps, name("ffn_gate_up_exps"));
                D.down_exps = b.experts(L.down_exps, name("ffn_down_exps"));
                D.gate_exps_b = b.vec(L.gate_exps_b);
                D.up_exps_b = b.vec(L.up_exps_b);
                D.down_exps_b = b.vec(L.down_exps_b);
            } else {
                any_hybrid_ = true;
            }
        }
        if (L.shared) {
            D.shexp_gate_inp = b.matrix(L.shexp_gate_inp, name("ffn_gate_inp_shexp"));
            D.shexp_gate = b.matrix(L.shexp_gate, name("ffn_gate_shexp"));
            D.shexp_up = b.matrix(L.shexp_up, name("ffn_up_shexp"));
            D.shexp_down = b.matrix(L.shexp_down, name("ffn_down_shexp"));
        }
    }
    output_ = b.matrix(m.w.output, "output");
    output_norm_ = b.vec(m.w.output_norm);
    rope_freq_ = b.floats(hp_.rope.freq_factors, hp_.rope.n_rot / 2);
    rope_swa_freq_ = b.floats(hp_.rope_swa.freq_factors, hp_.rope_swa.n_rot / 2);
    return out;
}

// Carves the scratch arena (and sizes the pinned buffers) for n rows. Growing waits for the stream.
void CudaBackend::reserve_rows(int64_t n) {
    if (n <= rows_) return;
    const int64_t N = std::max<int64_t>(n, rows_ == 0 ? n : (n + 63) / 64 * 64);
    check(cudaStreamSynchronize(stream_.s), "a stream synchronization before growing the GPU scratch");
    scratch_.reset();
    rows_ = 0;

    const int64_t RK = N * std::max<int64_t>(K_, 1);
    const int64_t X = std::max<int64_t>(X_, 1);
    const size_t group_bytes = X_ > 0 ? group_by_expert_scratch_bytes(N, static_cast<int>(K_), static_cast<int>(X_)) : 0;
    for (int round = 0; round < 2; ++round) {
        char* base = round == 0 ? nullptr : static_cast<char*>(scratch_.get());
        size_t off = 0;
        const auto take = [&](int64_t count, size_t elem) -> void* {
            void* p = base ? base + off : nullptr;
            off += align_up(static_cast<size_t>(std::max<int64_t>(count, 1)) * elem);
            return p;
        };
        const auto f32 = [&](int64_t count) { return static_cast<float*>(take(count, sizeof(float))); };
        const auto i32 = [&](int64_t count) { return static_cast<int32_t*>(take(count, sizeof(int32_t))); };
        x_ = f32(N * E_);
        xn_ = f32(N * E_);
        proj_ = f32(N * E_);
        attn_ = f32(N * AW_);
        if (mla_) {
            mq_ = f32(N * H_ * QK_);
            mqa_ = f32(N * std::max<int64_t>(QL_, 1));
            mkv_ = f32(N * KR_);
            mqabs_ = f32(N * H_ * KR_);
            molat_ = f32(N * H_ * R_);
            mqsel_ = f32(N * H_ * QK_);
        } else {
            qkv_ = f32(N * QKVW_);
        }
        ff_a_ = f32(N * std::max<int64_t>(FF_, 1));
        ff_b_ = f32(N * std::max<int64_t>(FF_, 1));
        pos_ = i32(N);
        identity_ = i32(std::max(RK, N));
        if (X_ > 0) {
            sh_ = f32(N * E_);
            moe_in_ = f32(N * E_);
            router_ = f32(N * X);
            sw_ = f32(RK);
            sg_ = f32(N);
            ones_ = f32(N);
            sel_ = i32(RK);
            row_src_ = i32(RK);
            row_of_ = i32(RK);
            offsets_ = i32(X + 1);
            exp_a_ = f32(RK * 2 * std::max<int64_t>(F_, 1));
            exp_b_ = f32(RK * std::max<int64_t>(F_, 1));
            exp_out_ = f32(RK * E_);
            group_scratch_ = take(static_cast<int64_t>(group_bytes), 1);
            group_scratch_bytes_ = group_bytes;
        }
        logits_ = f32(N * V_);
        if (round == 0) scratch_.allocate(off, "the forward pass's scratch");
    }
    rows_ = N;
    check(fill_iota(identity_, std::max(RK, N), stream_.s), "filling the identity rows");
    if (ones_) check(fill_f32(ones_, 1.0f, N, stream_.s), "filling the unit weights");

    h_x_.reserve(sizeof(float) * N * E_, "token embeddings");
    h_pos_.reserve(sizeof(int32_t) * N, "positions");
    h_kv_.reserve(sizeof(float) * hp_.n_layer * N * KVROW_, "K/V rows for the CPU cache");
    if (X_ > 0) h_counts_.reserve(sizeof(int32_t) * hp_.n_layer * RK, "expert choices");
    if (any_hybrid_) {
        h_xn_.reserve(sizeof(float) * N * E_, "expert inputs");
        h_sel_.reserve(sizeof(int32_t) * RK, "expert choices");
        h_sw_.reserve(sizeof(float) * RK, "expert weights");
        h_moe_.reserve(sizeof(float) * N * E_, "expert outputs");
    }
}

void* CudaBackend::attention_scratch(size_t want, size_t* got) {
    want = std::min(want, kMaxAttentionScratch);
    if (want > attn_scratch_.size()) {
        check(cudaStreamSynchronize(stream_.s), "a stream synchronization before growing the attention scratch");
        attn_scratch_.allocate(want, "attention partials");
    }
    *got = want == 0 ? 0 : attn_scratch_.size();
    return want == 0 ? nullptr : attn_scratch_.get();
}

void CudaBackend::sync_or_ignore() noexcept {
    cudaSetDevice(device_);
    cudaStreamSynchronize(stream_.s);
    cudaGetLastError();
}

// Grouped-query attention of one layer (forward.cc's attention_gqa).
void CudaBackend::attention_gqa(Pass& p, uint32_t il, const float* xn, bool last, float* attn) {
    const HParams& hp = hp_;
    const DeviceLayer& D = layers_[il];
    cudaStream_t s = stream_.s;
    const int64_t n = p.n, E = E_, QW = QW_, KVW = KVW_, QKVW = QKVW_;
    const int hd = static_cast<int>(hp.head_dim);
    const float eps = hp.rms_eps;
    float* q = qkv_;  // qkv: [n, q | k | v]
    float* k = qkv_ + QW;
    float* v = qkv_ + QW + KVW;
    if (D.wqkv.data) {
        check(matmul(D.wqkv, xn, E, n, qkv_, QKVW, s), "matmul attn_qkv");
        if (D.bqkv) check(add_bias_rows(qkv_, QKVW, D.bqkv, n, QKVW, s), "attn_qkv bias");
    } else {
        check(matmul(D.wq, xn, E, n, q, QKVW, s), "matmul attn_q");
        check(matmul(D.wk, xn, E, n, k, QKVW, s), "matmul attn_k");
        check(matmul(D.wv, xn, E, n, v, QKVW, s), "matmul attn_v");
    }
    if (D.bq) check(add_bias_rows(q, QKVW, D.bq, n, QW, s), "attn_q bias");
    if (D.bk) check(add_bias_rows(k, QKVW, D.bk, n, KVW, s), "attn_k bias");
    if (D.bv) check(add_bias_rows(v, QKVW, D.bv, n, KVW, s), "attn_v bias");
    const model::QkNorm qk_norm = m_.spec->qk_norm;
    if (qk_norm == model::QkNorm::PerHead) {
        check(rms_norm_heads(q, QKVW, D.q_norm, q, QKVW, n, static_cast<int>(hp.n_head), hd, eps, s), "q norm");
        check(rms_norm_heads(k, QKVW, D.k_norm, k, QKVW, n, static_cast<int>(hp.n_head_kv), hd, eps, s), "k norm");
    } else if (qk_norm == model::QkNorm::Full) {
        check(rms_norm_rows(q, QKVW, D.q_norm, q, QKVW, n, QW, eps, s), "q norm");
        check(rms_norm_rows(k, QKVW, D.k_norm, k, QKVW, n, KVW, eps, s), "k norm");
    }
    const RopeParams& rope = hp.is_swa(il) ? rope_swa_ : rope_;
    check(rope_rows(rope, q, QKVW, n, static_cast<int>(hp.n_head), hd, pos_, s), "rope q");
    check(rope_rows(rope, k, QKVW, n, static_cast<int>(hp.n_head_kv), hd, pos_, s), "rope k");

    // The fp32 K / V rows for the CPU cache: [n, KVW] then [n, KVW] at this layer's place.
    float* staged = h_kv_.as<float>() + static_cast<size_t>(il) * n * KVROW_;
    check(cudaMemcpy2DAsync(staged, sizeof(float) * KVW, k, sizeof(float) * QKVW, sizeof(float) * KVW, n,
                            cudaMemcpyDeviceToHost, s),
          "copying K rows to the host");
    check(cudaMemcpy2DAsync(staged + n * KVW, sizeof(float) * KVW, v, sizeof(float) * QKVW, sizeof(float) * KVW, n,
                            cudaMemcpyDeviceToHost, s),
          "copying V rows to the host");

    AttentionParams ap;
    ap.n_head = static_cast<int>(hp.n_head);
    ap.n_head_kv = static_cast<int>(hp.n_head_kv);
    ap.head_dim = hd;
    ap.head_dim_v = hd;
    ap.kq_scale = hp.kq_scale;
    ap.window = hp.is_swa(il) ? hp.n_swa : 0;
    ap.d_sinks = D.sinks;
    const std::vector<Group>& outg = last ? p.out : p.in;
    for (size_t si = 0; si < p.n_segs; ++si) {
        const BatchSegment& seg = p.segs[si];
        const DeviceKv& kv = *p.kv[si];
        const int64_t first = p.in[si].begin;
        check(store_kv(kv.k[il], k + first * QKVW, QKVW, KVW, kv.v[il], v + first * QKVW, QKVW, KVW, seg.pos0, seg.n, s),
              "store_kv");
        const int64_t nr = outg[si].count;  // the segment's last nr rows
        if (nr == 0) continue;
        const int64_t r0 = seg.n - nr;
        size_t scratch_bytes = 0;
        void* scratch = attention_scratch(attention_scratch_bytes(ap, nr, seg.pos0 + seg.n), &scratch_bytes);
        check(attention(ap, kv.k[il], kv.v[il], q + (first + r0) * QKVW, QKVW, nr, seg.pos0 + r0, attn + outg[si].begin * QW,
                        QW, scratch, scratch_bytes, s),
              "attention");
    }
}

// Multi-head latent attention of one deepseek2 layer, absorbed (forward.cc's attention_mla).
void CudaBackend::attention_mla(Pass& p, uint32_t il, const float* xn, bool last, float* attn) {
    const HParams& hp = hp_;
    const DeviceLayer& D = layers_[il];
    cudaStream_t s = stream_.s;
    const int64_t n = p.n, E = E_, H = H_, QK = QK_, NOPE = NOPE_, ROT = ROT_, R = R_, DV = DV_, KR = KR_, QL = QL_;
    const float eps = hp.rms_eps;

    float* q = mq_;  // q: [n, H, qk_nope + rot]
    if (D.wq_a.data) {
        check(matmul(D.wq_a, xn, E, n, mqa_, QL, s), "matmul attn_q_a");  // qa: [n, q_lora_rank]
        check(rms_norm_rows(mqa_, QL, D.q_a_norm, mqa_, QL, n, QL, eps, s), "q_a norm");
        check(matmul(D.wq_b, mqa_, QL, n, q, H * QK, s), "matmul attn_q_b");
    } else {
        check(matmul(D.wq, xn, E, n, q, H * QK, s), "matmul attn_q");
    }
    float* kv = mkv_;  // kv: [n, kv_lora_rank | rot]
    check(matmul(D.wkv_a_mqa, xn, E, n, kv, KR, s), "matmul attn_kv_a_mqa");
    check(rope_rows(rope_, q + NOPE, H * QK, n, static_cast<int>(H), QK, pos_, s), "rope q_pe");
    check(rope_rows(rope_, kv + R, KR, n, 1, ROT, pos_, s), "rope k_pe");
    check(rms_norm_rows(kv, KR, D.kv_a_norm, kv, KR, n, R, eps, s), "kv_a norm");

    float* staged = h_kv_.as<float>() + static_cast<size_t>(il) * n * KVROW_;  // [n, KR]
    check(cudaMemcpyAsync(staged, kv, sizeof(float) * n * KR, cudaMemcpyDeviceToHost, s), "copying MLA rows to the host");
    for (size_t si = 0; si < p.n_segs; ++si) {
        const BatchSegment& seg = p.segs[si];
        const int64_t first = p.in[si].begin;
        check(store_kv(p.kv[si]->k[il], kv + first * KR, KR, KR, KvRowsDevice{}, nullptr, 0, 0, seg.pos0, seg.n, s),
              "store_kv (MLA)");
    }
    const std::vector<Group>& outg = last ? p.out : p.in;
    const int64_t nr = last ? p.n_out : p.n;
    if (nr == 0) return;

    // The query rows of the output rows, compacted like them: qo: [nr, H, qk_nope + rot].
    const float* qo = q;
    if (nr != n) {
        for (size_t si = 0; si < p.n_segs; ++si) {
            const int64_t cnt = outg[si].count;
            if (cnt == 0) continue;
            const int64_t src = p.in[si].begin + p.segs[si].n - cnt;
            check(cudaMemcpyAsync(mqsel_ + outg[si].begin * H * QK, q + src * H * QK, sizeof(float) * cnt * H * QK,
                                  cudaMemcpyDeviceToDevice, s),
                  "gathering MLA queries");
        }
        qo = mqsel_;
    }
    // Absorbed queries: qabs[t, h] = [k_b[h] · q_nope[t, h] | q_pe[t, h]]: [nr, H, KR].
    for (int64_t h = 0; h < H; ++h) {
        check(matmul(D.k_b[h], qo + h * QK, H * QK, nr, mqabs_ + h * KR, H * KR, s), "matmul attn_k_b");
    }
    check(cudaMemcpy2DAsync(mqabs_ + R, sizeof(float) * KR, qo + NOPE, sizeof(float) * QK, sizeof(float) * ROT, nr * H,
                            cudaMemcpyDeviceToDevice, s),
          "copying q_pe");
    AttentionParams ap;
    ap.n_head = static_cast<int>(H);
    ap.n_head_kv = 1;
    ap.head_dim = static_cast<int>(KR);
    ap.head_dim_v = static_cast<int>(R);
    ap.kq_scale = hp.kq_scale;
    for (size_t si = 0; si < p.n_segs; ++si) {
        const BatchSegment& seg = p.segs[si];
        const int64_t cnt = outg[si].count, at = outg[si].begin;
        if (cnt == 0) continue;
        const KvRowsDevice& rows = p.kv[si]->k[il];  // V = the first R values of the same rows
        size_t scratch_bytes = 0;
        void* scratch = attention_scratch(attention_scratch_bytes(ap, cnt, seg.pos0 + seg.n), &scratch_bytes);
        check(attention(ap, rows, rows, mqabs_ + at * H * KR, H * KR, cnt, seg.pos0 + seg.n - cnt, molat_ + at * H * R, H * R,
                        scratch, scratch_bytes, s),
              "attention (MLA)");
    }
    for (int64_t h = 0; h < H; ++h) {
        check(matmul(D.v_b[h], molat_ + h * R, H * R, nr, attn + h * DV, H * DV, s), "matmul attn_v_b");
    }
}

// The shared expert of nr rows into sh_ (and its gate logit into sg_ when gated).
void CudaBackend::shared_expert(const DeviceLayer& D, const float* xn, int64_t nr) {
    cudaStream_t s = stream_.s;
    const int64_t E = E_, S = D.shexp_gate.n_out;
    check(matmul(D.shexp_up, xn, E, nr, ff_b_, S, s), "matmul ffn_up_shexp");
    check(matmul(D.shexp_gate, xn, E, nr, ff_a_, S, s), "matmul ffn_gate_shexp");
    check(swiglu_rows(ff_a_, S, ff_b_, S, ff_a_, S, nr, S, s), "swiglu (shared expert)");
    check(matmul(D.shexp_down, ff_a_, S, nr, sh_, E, s), "matmul ffn_down_shexp");
    if (gated_shared_) check(matmul(D.shexp_gate_inp, xn, E, nr, sg_, 1, s), "matmul ffn_gate_inp_shexp");
}

// The MoE FFN of nr rows: out[nr, n_embd] from xn (forward.cc's moe_ffn).
void CudaBackend::moe_ffn(Pass& p, uint32_t il, const float* xn, int64_t nr, float* out) {
    const DeviceLayer& D = layers_[il];
    const LayerWeights& L = m_.w.layers[il];
    cudaStream_t s = stream_.s;
    const int64_t E = E_, X = X_, K = K_, F = F_, R = nr * K;

    check(matmul(D.gate_inp, xn, E, nr, router_, X, s), "matmul ffn_gate_inp");
    if (D.gate_inp_b) check(add_bias_rows(router_, X, D.gate_inp_b, nr, X, s), "router bias");
    check(route(routing_, router_, D.exp_probs_b, nr, sel_, sw_, s), "route");
    if (p.want_counts) {
        check(cudaMemcpyAsync(h_counts_.as<int32_t>() + static_cast<size_t>(il) * rows_ * K, sel_, sizeof(int32_t) * R,
                              cudaMemcpyDeviceToHost, s),
              "copying expert choices to the host");
        p.routed[il] = true;
    }
    const bool shared = L.shared;
    const float* shared_gate = gated_shared_ ? sg_ : nullptr;

    if (!D.experts_gpu) {
        // Hybrid: the routed experts run on the CPU from the mapping, the shared expert meanwhile on the GPU.
        check(cudaMemcpyAsync(h_xn_.as<float>(), xn, sizeof(float) * nr * E, cudaMemcpyDeviceToHost, s), "copying expert inputs");
        check(cudaMemcpyAsync(h_sel_.as<int32_t>(), sel_, sizeof(int32_t) * R, cudaMemcpyDeviceToHost, s), "copying expert choices");
        check(cudaMemcpyAsync(h_sw_.as<float>(), sw_, sizeof(float) * R, cudaMemcpyDeviceToHost, s), "copying expert weights");
        check(cudaEventRecord(experts_in_.e, s), "cudaEventRecord");
        if (shared) shared_expert(D, xn, nr);
        check(cudaEventSynchronize(experts_in_.e), "waiting for the expert inputs");
        cpu_routed_experts(L, nr);
        if (shared) {
            check(cudaMemcpyAsync(moe_in_, h_moe_.as<float>(), sizeof(float) * nr * E, cudaMemcpyHostToDevice, s),
                  "copying expert outputs to the GPU");
            // out = routed · 1 + shared (· gate): the CPU's sum, then the shared expert as forward.cc adds it.
            check(moe_combine(moe_in_, E, identity_, ones_, nr, 1, E, sh_, E, shared_gate, out, E, s), "moe_combine");
        } else {
            check(cudaMemcpyAsync(out, h_moe_.as<float>(), sizeof(float) * nr * E, cudaMemcpyHostToDevice, s),
                  "copying expert outputs to the GPU");
        }
        return;
    }

    // Rows grouped by expert (stable in token, then slot order).
    check(group_by_expert(sel_, nr, static_cast<int>(K), static_cast<int>(X), offsets_, row_src_, row_of_, group_scratch_, s),
          "group_by_expert");
    // gate, up -> activation act [R, F] (row stride act_stride).
    float* act = exp_a_;
    int64_t act_stride = F;
    if (oai_) {
        float* g = exp_a_;
        float* u = exp_b_;
        check(matmul_experts(D.up_exps, xn, E, row_src_, offsets_, R, u, F, s), "matmul ffn_up_exps");
        if (D.up_exps_b) check(add_expert_bias_rows(u, F, offsets_, static_cast<int>(X), D.up_exps_b, F, R, F, s), "up bias");
        check(matmul_experts(D.gate_exps, xn, E, row_src_, offsets_, R, g, F, s), "matmul ffn_gate_exps");
        if (D.gate_exps_b) {
            check(add_expert_bias_rows(g, F, offsets_, static_cast<int>(X), D.gate_exps_b, F, R, F, s), "gate bias");
        }
        check(swiglu_oai_rows(g, F, u, F, g, F, R, F, s), "swiglu_oai");
    } else if (L.fused_gate_up) {
        float* gu = exp_a_;  // [R, 2F]: gate, then up
        check(matmul_experts(D.gate_up_exps, xn, E, row_src_, offsets_, R, gu, 2 * F, s), "matmul ffn_gate_up_exps");
        check(swiglu_rows(gu, 2 * F, gu + F, 2 * F, gu, 2 * F, R, F, s), "swiglu (experts)");
        act_stride = 2 * F;
    } else {
        const DeviceExperts& G = D.gate_exps;
        const DeviceExperts& U = D.up_exps;
        if (G.type == U.type && G.n_in == U.n_in && G.n_out == U.n_out && G.n_expert == U.n_expert) {
            check(matmul_experts_swiglu(G, U, xn, E, row_src_, offsets_, R, act, F, s), "matmul_experts_swiglu");
        } else {
            check(matmul_experts(U, xn, E, row_src_, offsets_, R, exp_b_, F, s), "matmul ffn_up_exps");
            check(matmul_experts(G, xn, E, row_src_, offsets_, R, act, F, s), "matmul ffn_gate_exps");
            check(swiglu_rows(act, F, exp_b_, F, act, F, R, F, s), "swiglu (experts)");
        }
    }
    check(matmul_experts(D.down_exps, act, act_stride, identity_, offsets_, R, exp_out_, E, s), "matmul ffn_down_exps");
    if (D.down_exps_b) {
        check(add_expert_bias_rows(exp_out_, E, offsets_, static_cast<int>(X), D.down_exps_b, E, R, E, s), "down bias");
    }
    if (shared) shared_expert(D, xn, nr);
    check(moe_combine(exp_out_, E, row_of_, sw_, nr, static_cast<int>(K), E, shared ? sh_ : nullptr, E,
                      shared ? shared_gate : nullptr, out, E, s),
          "moe_combine");
}

// The routed experts of a hybrid layer on the CPU: h_moe_[nr, E] = Σ_s w · expert(h_xn_) from the
// GPU's choices (h_sel_, h_sw_), exactly as forward.cc's moe_ffn computes its routed part.
void CudaBackend::cpu_routed_experts(const LayerWeights& L, int64_t nr) {
    runtime::ThreadPool& pool = *m_.pool;
    const cpu::Isa isa = m_.isa;
    const int64_t E = E_, X = X_, K = K_, F = F_, R = nr * K;
    const float* xn = h_xn_.as<float>();
    const int32_t* sel = h_sel_.as<int32_t>();
    const float* sw = h_sw_.as<float>();
    float* out = h_moe_.as<float>();
    CpuExperts& c = cpu_;

    c.fill.assign(static_cast<size_t>(X + 1), 0);
    for (int64_t r = 0; r < R; ++r) {
        if (sel[r] < 0 || sel[r] >= X) throw Error(ErrorCode::GpuUnavailable, "CUDA routing returned an invalid expert");
        ++c.fill[sel[r] + 1];
    }
    for (int64_t e = 0; e < X; ++e) c.fill[e + 1] += c.fill[e];
    c.row_src.resize(R);
    c.row_expert.resize(R);
    c.row_of.resize(R);
    c.row_self.resize(R);
    for (int64_t t = 0; t < nr; ++t) {
        for (int64_t sl = 0; sl < K; ++sl) {
            const int32_t e = sel[t * K + sl];
            const int32_t r = c.fill[e]++;
            c.row_src[r] = static_cast<int32_t>(t);
            c.row_expert[r] = e;
            c.row_of[t * K + sl] = r;
        }
    }
    std::iota(c.row_self.begin(), c.row_self.end(), 0);
    const int32_t* row_expert = c.row_expert.data();
    const auto add_expert_bias = [&](float* y, int64_t width, const model::Vector& b) {
        if (!b) return;
        for_rows(pool, R, width, [&](int64_t r) {
            float* row = y + r * width;
            const float* bias = b.data + static_cast<int64_t>(row_expert[r]) * width;
            for (int64_t i = 0; i < width; ++i) row[i] = row[i] + bias[i];
        });
    };

    float* act;
    int64_t act_stride;
    if (oai_) {
        c.a.resize(R * F);
        c.b.resize(R * F);
        float* g = c.a.data();
        float* u = c.b.data();
        kernels::matmul_experts(L.up_exps, xn, E, c.row_src.data(), row_expert, R, u, F, pool, isa);
        add_expert_bias(u, F, L.up_exps_b);
        kernels::matmul_experts(L.gate_exps, xn, E, c.row_src.data(), row_expert, R, g, F, pool, isa);
        add_expert_bias(g, F, L.gate_exps_b);
        for_rows(pool, R, F, [&](int64_t r) {
            // forward.cc's swiglu_oai_row (ggml_swiglu_oai, alpha 1.702, limit 7).
            constexpr float alpha = 1.702f, limit = 7.0f;
            float* gr = g + r * F;
            const float* ur = u + r * F;
            for (int64_t i = 0; i < F; ++i) {
                const float xv = std::min(gr[i], limit);
                const float yv = std::clamp(ur[i], -limit, limit);
                const float out_glu = xv / (1.0f + std::exp(alpha * (-xv)));
                gr[i] = out_glu * (yv + 1.0f);
            }
        });
        act = g;
        act_stride = F;
    } else if (L.fused_gate_up) {
        c.a.resize(R * 2 * F);
        float* gu = c.a.data();
        kernels::matmul_experts(L.gate_up_exps, xn, E, c.row_src.data(), row_expert, R, gu, 2 * F, pool, isa);
        for_rows(pool, R, F, [&](int64_t r) { kernels::swiglu(gu + r * 2 * F, gu + r * 2 * F + F, gu + r * 2 * F, F, isa); });
        act = gu;
        act_stride = 2 * F;
    } else {
        c.a.resize(R * F);
        c.b.resize(R * F);
        float* g = c.a.data();
        float* u = c.b.data();
        const kernels::ExpertMatrix& G = L.gate_exps;
        const kernels::ExpertMatrix& U = L.up_exps;
        if (G.type == U.type && G.row_bytes == U.row_bytes && G.expert_bytes == U.expert_bytes) {
            kernels::matmul_experts_swiglu(G, U, xn, E, c.row_src.data(), row_expert, R, g, u, F, pool, isa);
        } else {
            kernels::matmul_experts(U, xn, E, c.row_src.data(), row_expert, R, u, F, pool, isa);
            kernels::matmul_experts(G, xn, E, c.row_src.data(), row_expert, R, g, F, pool, isa);
            for_rows(pool, R, F, [&](int64_t r) { kernels::swiglu(g + r * F, u + r * F, g + r * F, F, isa); });
        }
        act = g;
        act_stride = F;
    }
    c.down.resize(R * E);
    float* down = c.down.data();
    kernels::matmul_experts(L.down_exps, act, act_stride, c.row_self.data(), row_expert, R, down, E, pool, isa);
    add_expert_bias(down, E, L.down_exps_b);

    // out = y_0 w_0 + y_1 w_1 + ...: each product rounded, summed in slot order.
    const int32_t* row_of = c.row_of.data();
    for_rows(pool, nr, E * K, [&](int64_t t) {
        float* o = out + t * E;
        const float* y0 = down + static_cast<int64_t>(row_of[t * K]) * E;
        const float w0 = sw[t * K];
        for (int64_t i = 0; i < E; ++i) o[i] = y0[i] * w0;
        for (int64_t sl = 1; sl < K; ++sl) {
            const float* ys = down + static_cast<int64_t>(row_of[t * K + sl]) * E;
            const float wsv = sw[t * K + sl];
            for (int64_t i = 0; i < E; ++i) {
                const float prod = ys[i] * wsv;
                o[i] = o[i] + prod;
            }
        }
    });
}

// The dense SwiGLU FFN of nr rows (forward.cc's dense_ffn).
void CudaBackend::dense_ffn(const DeviceLayer& D, const float* xn, int64_t nr, float* out) {
    cudaStream_t s = stream_.s;
    const int64_t E = E_, F = D.ffn_up.n_out;
    check(matmul(D.ffn_up, xn, E, nr, ff_b_, F, s), "matmul ffn_up");
    if (D.ffn_up_b) check(add_bias_rows(ff_b_, F, D.ffn_up_b, nr, F, s), "ffn_up bias");
    check(matmul(D.ffn_gate, xn, E, nr, ff_a_, F, s), "matmul ffn_gate");
    if (D.ffn_gate_b) check(add_bias_rows(ff_a_, F, D.ffn_gate_b, nr, F, s), "ffn_gate bias");
    check(swiglu_rows(ff_a_, F, ff_b_, F, ff_a_, F, nr, F, s), "swiglu");
    check(matmul(D.ffn_down, ff_a_, F, nr, out, E, s), "matmul ffn_down");
    if (D.ffn_down_b) check(add_bias_rows(out, E, D.ffn_down_b, nr, E, s), "ffn_down bias");
}

// The pass's K/V rows (staged in h_kv_, the stream synchronized) into every segment's CPU cache.
void CudaBackend::write_back_kv(Pass& p) {
    const float* staged = h_kv_.as<float>();
    const int64_t n = p.n;
    const uint32_t n_layer = hp_.n_layer;
    const int64_t KW = kv_widths_.k, VW = kv_widths_.v;
    std::mutex failure_lock;
    std::string failure;
    const int64_t jobs = static_cast<int64_t>(p.n_segs) * n_layer;
    m_.pool->parallel_for(jobs, 1, [&](int64_t begin, int64_t end, int) {
        for (int64_t j = begin; j < end; ++j) {
            const size_t si = static_cast<size_t>(j / n_layer);
            const uint32_t il = static_cast<uint32_t>(j % n_layer);
            const BatchSegment& seg = p.segs[si];
            const int64_t first = p.in[si].begin;
            const float* layer = staged + static_cast<size_t>(il) * n * KVROW_;  // K [n, KW], then V [n, VW]
            try {
                seg.cache->store_k(il, seg.pos0, layer + first * KW, KW, seg.n, m_.isa);
                if (VW) seg.cache->store_v(il, seg.pos0, layer + n * KW + first * VW, VW, seg.n, m_.isa);
            } catch (const std::exception& e) {
                std::lock_guard<std::mutex> lock(failure_lock);
                if (failure.empty()) failure = e.what();
            }
        }
    });
    if (!failure.empty()) throw Error(ErrorCode::InvalidArgument, "storing K/V rows in the CPU cache: " + failure);
}

void CudaBackend::forward_batch(const BatchSegment* segs, size_t n_segs, const std::function<bool()>& should_abort) {
    try {
        forward_pass(segs, n_segs, should_abort);
    } catch (...) {
        // Nothing queued by a failed pass may still run when its caller frees or reuses memory
        // (a disposed sequence's KV rows, the logits buffers).
        sync_or_ignore();
        throw;
    }
}

void CudaBackend::forward_pass(const BatchSegment* segs, size_t n_segs, const std::function<bool()>& should_abort) {
    const HParams& hp = hp_;
    Pass p;
    p.segs = segs;
    p.n_segs = n_segs;
    p.in.resize(n_segs);
    p.out.resize(n_segs);
    for (size_t si = 0; si < n_segs; ++si) {
        if (segs[si].out_begin > segs[si].n) throw Error(ErrorCode::InvalidArgument, "forward: out_begin past the segment");
        p.in[si] = Group{p.n, segs[si].n};
        p.out[si] = Group{p.n_out, segs[si].n - segs[si].out_begin};
        p.n += segs[si].n;
        p.n_out += segs[si].n - segs[si].out_begin;
    }
    const int64_t n = p.n;
    if (n == 0) return;
    cudaStream_t s = stream_.s;
    check(cudaSetDevice(device_), "cudaSetDevice");
    check(cudaStreamSynchronize(s), "a stream synchronization");  // an aborted pass may have left work queued
    reserve_rows(n);
    p.want_counts = false;
    for (size_t si = 0; si < n_segs; ++si) p.want_counts = p.want_counts || (segs[si].expert_counts && hp.is_moe());
    p.routed.assign(hp.n_layer, false);

    // Each segment's device KV, equal to its CPU cache's rows before pos0.
    p.kv.resize(n_segs);
    for (size_t si = 0; si < n_segs; ++si) {
        kv::KvCache& cache = *segs[si].cache;
        DeviceKv& kv = attach_device_kv(cache, serial_, device_, kv_widths_, s);
        if (kv.capacity != cache.capacity() || segs[si].pos0 + static_cast<uint64_t>(segs[si].n) > cache.capacity()) {
            throw Error(ErrorCode::InvalidArgument, "forward: a segment passes its sequence's context");
        }
        sync_from_cpu(kv, cache, segs[si].pos0, uploader_);
        p.kv[si] = &kv;
    }

    // Positions and token embeddings (dequantized on the host, as forward.cc does).
    int32_t* h_pos = h_pos_.as<int32_t>();
    float* h_x = h_x_.as<float>();
    const kernels::WeightMatrix& te = m_.w.token_embd;
    for (size_t si = 0; si < n_segs; ++si) {
        const BatchSegment& seg = segs[si];
        const int64_t first = p.in[si].begin;
        for (uint32_t t = 0; t < seg.n; ++t) h_pos[first + t] = static_cast<int32_t>(seg.pos0 + t);
        for_rows(*m_.pool, seg.n, E_, [&](int64_t t) {
            quant::dequantize(te.type, te.data + static_cast<size_t>(seg.tokens[t]) * te.row_bytes, h_x + (first + t) * E_, E_,
                              m_.isa, "token_embd.weight");
        });
    }
    check(cudaMemcpyAsync(pos_, h_pos, sizeof(int32_t) * n, cudaMemcpyHostToDevice, s), "copying positions");
    check(cudaMemcpyAsync(x_, h_x, sizeof(float) * n * E_, cudaMemcpyHostToDevice, s), "copying token embeddings");

    const int64_t E = E_, AW = AW_;
    const float eps = hp.rms_eps;
    float* x = x_;    // x: [n, n_embd] residual stream
    float* xn = xn_;  // xn: [n, n_embd] normed input of a block
    int64_t nr = n;   // rows of x: every row, then (last layer) the logit rows
    for (uint32_t il = 0; il < hp.n_layer; ++il) {
        if (should_abort && should_abort()) throw Error(ErrorCode::Aborted, "evaluation aborted");
        const DeviceLayer& D = layers_[il];
        const LayerWeights& L = m_.w.layers[il];
        const bool last = il + 1 == hp.n_layer;

        check(rms_norm_rows(x, E, D.attn_norm, xn, E, n, E, eps, s), "attn_norm");
        if (mla_) {
            attention_mla(p, il, xn, last, attn_);
        } else {
            attention_gqa(p, il, xn, last, attn_);
        }
        if (last) {
            if (p.n_out == 0) break;  // last layer of a batch whose logits nobody reads
            if (p.n_out != n) {
                // Each segment's logit rows, compacted in segment order, into the other buffer.
                for (size_t si = 0; si < n_segs; ++si) {
                    const int64_t cnt = p.out[si].count;
                    if (cnt == 0) continue;
                    const int64_t src = p.in[si].begin + segs[si].n - cnt;
                    check(cudaMemcpyAsync(xn + p.out[si].begin * E, x + src * E, sizeof(float) * cnt * E,
                                          cudaMemcpyDeviceToDevice, s),
                          "compacting the logit rows");
                }
                std::swap(x, xn);
            }
            nr = p.n_out;
        }
        check(matmul(D.wo, attn_, AW, nr, proj_, E, s), "matmul attn_output");
        if (D.bo) check(add_bias_rows(proj_, E, D.bo, nr, E, s), "attn_output bias");
        check(add_rows(proj_, E, x, E, nr, E, s), "residual");  // x = attention out + residual

        check(rms_norm_rows(x, E, D.ffn_norm, xn, E, nr, E, eps, s), "ffn_norm");
        if (L.moe) {
            moe_ffn(p, il, xn, nr, proj_);
        } else {
            dense_ffn(D, xn, nr, proj_);
        }
        check(add_rows(proj_, E, x, E, nr, E, s), "residual");
    }

    if (p.n_out > 0) {
        // x holds the logit rows at the front (the last layer compacted them).
        const int64_t V = V_;
        check(rms_norm_rows(x, E, output_norm_, xn, E, p.n_out, E, eps, s), "output_norm");
        check(matmul(output_, xn, E, p.n_out, logits_, V, s), "matmul output");
        for (size_t si = 0; si < n_segs; ++si) {
            const int64_t cnt = p.out[si].count;
            if (cnt == 0) continue;
            check(cudaMemcpyAsync(segs[si].logits, logits_ + p.out[si].begin * V, sizeof(float) * cnt * V,
                                  cudaMemcpyDeviceToHost, s),
                  "copying logits to the host");
        }
    }
    check(cudaStreamSynchronize(s), "the forward pass");

    // The CPU caches get the same rows (uncommitted, as a CPU pass leaves them), then the device
    // rows count as equal to them.
    write_back_kv(p);
    for (size_t si = 0; si < n_segs; ++si) mark_stored(*p.kv[si], *segs[si].cache, segs[si].pos0, segs[si].n);

    // Expert-usage statistics of the segments that asked for them: [n_layer, n_expert].
    if (p.want_counts) {
        const int64_t K = K_;
        for (uint32_t il = 0; il < hp.n_layer; ++il) {
            if (!p.routed[il]) continue;
            const int32_t* sel = h_counts_.as<int32_t>() + static_cast<size_t>(il) * rows_ * K;
            const std::vector<Group>& groups = il + 1 == hp.n_layer ? p.out : p.in;
            for (size_t si = 0; si < n_segs; ++si) {
                uint32_t* counts = segs[si].expert_counts;
                if (!counts) continue;
                counts += static_cast<size_t>(il) * hp.n_expert;
                const Group& g = groups[si];
                for (int64_t r = g.begin * K; r < (g.begin + g.count) * K; ++r) {
                    if (sel[r] >= 0 && sel[r] < X_) ++counts[sel[r]];
                }
            }
        }
    }
}

}  // namespace

}  // namespace moe::cuda::backend

namespace moe::gpu {

std::unique_ptr<GpuBackend> create_cuda_backend(const BackendPlan& plan, model::Model& model) {
    model::ModelState& state = model::state_of(model);
    if (!state.file || !state.spec || !state.pool) {
        throw Error(ErrorCode::GpuUnavailable, "CUDA backend: the model is not loaded");
    }
    try {
        return std::make_unique<cuda::backend::CudaBackend>(plan, state);
    } catch (const std::bad_alloc&) {
        throw Error(ErrorCode::OutOfMemory, "CUDA backend: out of host memory");
    }
}

}  // namespace moe::gpu
