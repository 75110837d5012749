#include "routing.cuh"

#include "model/hparams.h"

namespace moe::cuda {

namespace {

constexpr int kMaxExperts = 512;    // LLAMA_MAX_EXPERTS (hparams rejects more)
constexpr int kRouteWarps = 4;      // tokens per block of route_kernel
constexpr int kGroupWarps = 16;     // warps of group_by_expert_kernel, each sorting a slice of rows

// exp as libm's expf returns it in all but rare cases: exp in double, rounded once to fp32.
__device__ __forceinline__ float exp_rounded(float x) { return static_cast<float>(exp(static_cast<double>(x))); }

// route_token's order: a higher score first, equal scores by the lower index. idx < 0 is "none".
__device__ __forceinline__ bool better(float sa, int ia, float sb, int ib) {
    if (ib < 0) return ia >= 0;
    if (ia < 0) return false;
    return sa > sb || (sa == sb && ia < ib);
}

// Floats of shared memory per warp (one token): probs [X], scores [X], group_score [X] and the
// taken flags, X bytes.
__host__ __device__ __forceinline__ int route_warp_floats(int X) { return 3 * X + (X + 3) / 4; }

__global__ void route_kernel(RoutingParams p, const float* __restrict__ logits, const float* __restrict__ sel_bias,
                             int64_t n_tokens, int32_t* __restrict__ sel_out, float* __restrict__ w_out) {
    extern __shared__ float shared[];
    const int X = p.n_expert, K = p.k;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int64_t t = static_cast<int64_t>(blockIdx.x) * kRouteWarps + warp;
    if (t >= n_tokens) return;  // uniform per warp; the warps never synchronise with each other
    float* probs = shared + static_cast<size_t>(warp) * route_warp_floats(X);
    float* scores = probs + X;
    float* group_score = scores + X;
    unsigned char* taken = reinterpret_cast<unsigned char*>(group_score + X);
    const float* lt = logits + t * X;

    // probs = softmax(logits) | sigmoid(logits) | logits.
    if (p.gating == RouteGating::Softmax) {
        float m = -INFINITY;
        for (int e = lane; e < X; e += 32) m = m > lt[e] ? m : lt[e];
        for (int offset = 16; offset > 0; offset >>= 1) {
            const float o = __shfl_xor_sync(0xffffffffu, m, offset);
            m = m > o ? m : o;
        }
        double sum = 0.0;
        for (int e = lane; e < X; e += 32) {
            const float v = exp_rounded(__fsub_rn(lt[e], m));
            probs[e] = v;
            sum += static_cast<double>(v);
        }
        for (int offset = 16; offset > 0; offset >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
        const float inv = static_cast<float>(1.0 / sum);
        for (int e = lane; e < X; e += 32) probs[e] = __fmul_rn(probs[e], inv);
    } else if (p.gating == RouteGating::Sigmoid) {
        for (int e = lane; e < X; e += 32) probs[e] = 1.0f / __fadd_rn(1.0f, exp_rounded(-lt[e]));
    } else {
        for (int e = lane; e < X; e += 32) probs[e] = lt[e];
    }
    // Selection scores: probs plus the selection bias; the weights come from the unbiased probs.
    for (int e = lane; e < X; e += 32) {
        scores[e] = sel_bias ? __fadd_rn(probs[e], sel_bias[e]) : probs[e];
        taken[e] = 0;
    }
    __syncwarp();

    if (p.n_group > 1) {
        // A group scores its best plus its second best (duplicates count twice), as route_token.
        const int G = p.n_group, per = X / G;
        for (int g = lane; g < G; g += 32) {
            float b1 = -INFINITY, b2 = -INFINITY;
            for (int j = 0; j < per; ++j) {
                const float s = scores[g * per + j];
                if (s > b1) {
                    b2 = b1;
                    b1 = s;
                } else if (s > b2) {
                    b2 = s;
                }
            }
            group_score[g] = per >= 2 ? __fadd_rn(b1, b2) : b1;
        }
        __syncwarp();
        // Group g survives when fewer than n_group_used groups rank above it (descending, ties to
        // the lower group): the set route_token's sort keeps.
        for (int g = lane; g < G; g += 32) {
            int rank = 0;
            for (int h = 0; h < G; ++h) rank += better(group_score[h], h, group_score[g], g) ? 1 : 0;
            if (rank >= p.n_group_used) {
                for (int j = 0; j < per; ++j) scores[g * per + j] = -INFINITY;
            }
        }
        __syncwarp();
    }

    // Top-k: k rounds of a warp-wide arg-max over the experts not yet taken.
    for (int s = 0; s < K; ++s) {
        float best_s = -INFINITY;
        int best_i = -1;
        for (int e = lane; e < X; e += 32) {
            if (!taken[e] && better(scores[e], e, best_s, best_i)) {
                best_s = scores[e];
                best_i = e;
            }
        }
        for (int offset = 16; offset > 0; offset >>= 1) {
            const float os = __shfl_xor_sync(0xffffffffu, best_s, offset);
            const int oi = __shfl_xor_sync(0xffffffffu, best_i, offset);
            if (better(os, oi, best_s, best_i)) {
                best_s = os;
                best_i = oi;
            }
        }
        // Every lane now holds the same winner.
        if (lane == 0) {
            taken[best_i] = 1;
            sel_out[t * K + s] = best_i;
        }
        __syncwarp();
    }

    // The weights, in route_token's sequential order (lane 0: k is small).
    if (lane == 0) {
        int32_t* sel = sel_out + t * K;
        float* w = w_out + t * K;
        for (int s = 0; s < K; ++s) w[s] = probs[sel[s]];
        if (p.gating == RouteGating::SoftmaxWeight) {
            // kernels::softmax at the Scalar level over the k selected logits.
            float m = -INFINITY;
            for (int s = 0; s < K; ++s) m = m > w[s] ? m : w[s];
            double sum = 0.0;
            for (int s = 0; s < K; ++s) {
                const float e = exp_rounded(__fsub_rn(w[s], m));
                w[s] = e;
                sum += static_cast<double>(e);
            }
            const float inv = static_cast<float>(1.0 / sum);
            for (int s = 0; s < K; ++s) w[s] = __fmul_rn(w[s], inv);
        }
        if (p.norm_topk) {
            double sum = 0.0;  // ggml_sum_rows: double, stored as fp32
            for (int s = 0; s < K; ++s) sum += static_cast<double>(w[s]);
            float sumf = static_cast<float>(sum);
            sumf = sumf < 6.103515625e-5f ? 6.103515625e-5f : sumf;  // ggml_clamp to the smallest normal half
            for (int s = 0; s < K; ++s) w[s] = w[s] / sumf;
        }
        if (p.scale != 0.0f && p.scale != 1.0f) {
            for (int s = 0; s < K; ++s) w[s] = __fmul_rn(w[s], p.scale);
        }
    }
}

// One block. Shared memory: next[kGroupWarps][X] (first the rows of expert e in warp w's slice,
// then the grouped row the slice's next row of e goes to) and offsets[X + 1].
__global__ void group_by_expert_kernel(const int32_t* __restrict__ sel, int64_t n_rows, int k, int X,
                                       int32_t* __restrict__ offsets_out, int32_t* __restrict__ row_src,
                                       int32_t* __restrict__ row_of) {
    extern __shared__ int32_t sh[];
    int32_t* next = sh;                          // next: [kGroupWarps][X]
    int32_t* offsets = sh + kGroupWarps * X;     // offsets: [X + 1]
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    for (int i = threadIdx.x; i < kGroupWarps * X; i += blockDim.x) next[i] = 0;
    __syncthreads();

    // Warp w owns the contiguous rows [lo, hi): slices in row order keep the sort stable.
    const int64_t per = (n_rows + kGroupWarps - 1) / kGroupWarps;
    const int64_t lo = warp * per;
    const int64_t hi = lo + per < n_rows ? lo + per : n_rows;
    for (int64_t r = lo + lane; r < hi; r += 32) {
        const int e = sel[r];
        if (e >= 0 && e < X) atomicAdd(&next[warp * X + e], 1);
    }
    __syncthreads();

    // offsets = exclusive scan of the per-expert totals: each lane of warp 0 scans a contiguous
    // chunk of experts after a warp scan of the chunk sums.
    for (int e = threadIdx.x; e < X; e += blockDim.x) {
        int total = 0;
        for (int w = 0; w < kGroupWarps; ++w) total += next[w * X + e];
        offsets[e] = total;
    }
    __syncthreads();
    if (warp == 0) {
        const int chunk = (X + 31) / 32;
        const int begin = lane * chunk < X ? lane * chunk : X;
        const int end = begin + chunk < X ? begin + chunk : X;
        int local = 0;
        for (int e = begin; e < end; ++e) local += offsets[e];
        int inclusive = local;
        for (int d = 1; d < 32; d <<= 1) {
            const int v = __shfl_up_sync(0xffffffffu, inclusive, d);
            if (lane >= d) inclusive += v;
        }
        int run = inclusive - local;
        for (int e = begin; e < end; ++e) {
            const int c = offsets[e];
            offsets[e] = run;
            run += c;
        }
        if (lane == 31) offsets[X] = inclusive;
    }
    __syncthreads();
    // Each slice's first grouped row per expert: the expert's offset plus the earlier slices' rows.
    for (int e = threadIdx.x; e < X; e += blockDim.x) {
        int run = offsets[e];
        for (int w = 0; w < kGroupWarps; ++w) {
            const int c = next[w * X + e];
            next[w * X + e] = run;
            run += c;
        }
    }
    for (int e = threadIdx.x; e <= X; e += blockDim.x) offsets_out[e] = offsets[e];
    __syncthreads();

    // Place the slice's rows 32 at a time, in order: lanes with the same expert take consecutive
    // grouped rows by lane (match_any), then the last of them advances the expert's cursor.
    for (int64_t base = lo; base < hi; base += 32) {
        const int64_t r = base + lane;
        const int e_raw = r < hi ? sel[r] : -1;
        const int e = e_raw >= 0 && e_raw < X ? e_raw : -1;  // invalid ids are left out (row_of -1)
        const unsigned same = __match_any_sync(0xffffffffu, e);
        const int rank = __popc(same & ((1u << lane) - 1u));
        if (r < hi) {
            if (e >= 0) {
                const int pos = next[warp * X + e] + rank;
                row_src[pos] = static_cast<int32_t>(r / k);
                row_of[r] = pos;
            } else {
                row_of[r] = -1;
            }
        }
        __syncwarp();
        if (e >= 0 && lane == 31 - __clz(same)) next[warp * X + e] += __popc(same);
        __syncwarp();
    }
}

}  // namespace

RoutingParams routing_params(const model::HParams& hp) {
    RoutingParams p;
    p.n_expert = static_cast<int>(hp.n_expert);
    p.k = static_cast<int>(hp.n_expert_used);
    switch (hp.gating) {
        case model::Gating::Sigmoid: p.gating = RouteGating::Sigmoid; break;
        case model::Gating::SoftmaxWeight: p.gating = RouteGating::SoftmaxWeight; break;
        default: p.gating = RouteGating::Softmax; break;  // FromKey is resolved at load
    }
    p.n_group = static_cast<int>(hp.n_expert_groups);
    p.n_group_used = static_cast<int>(hp.n_group_used);
    p.norm_topk = hp.norm_topk;
    p.scale = hp.expert_weights_scale;
    return p;
}

cudaError_t route(const RoutingParams& p, const float* d_logits, const float* d_sel_bias, int64_t n_tokens,
                  int32_t* d_sel, float* d_weights, cudaStream_t stream) {
    if (p.n_expert < 1 || p.n_expert > kMaxExperts || p.k < 1 || p.k > p.n_expert || n_tokens < 0) {
        return cudaErrorInvalidValue;
    }
    if (p.gating != RouteGating::Softmax && p.gating != RouteGating::Sigmoid && p.gating != RouteGating::SoftmaxWeight) {
        return cudaErrorInvalidValue;
    }
    if (p.n_group > 1 && (p.n_expert % p.n_group != 0 || p.n_group_used < 1 || p.n_group_used > p.n_group)) {
        return cudaErrorInvalidValue;
    }
    if (n_tokens == 0) return cudaSuccess;
    if (!d_logits || !d_sel || !d_weights) return cudaErrorInvalidValue;
    const size_t per_warp = static_cast<size_t>(route_warp_floats(p.n_expert)) * sizeof(float);
    const int64_t blocks = (n_tokens + kRouteWarps - 1) / kRouteWarps;
    route_kernel<<<static_cast<unsigned>(blocks), 32 * kRouteWarps, per_warp * kRouteWarps, stream>>>(
        p, d_logits, d_sel_bias, n_tokens, d_sel, d_weights);
    return cudaGetLastError();
}

size_t group_by_expert_scratch_bytes(int64_t n_tokens, int k, int n_expert) {
    (void)n_tokens;
    (void)k;
    (void)n_expert;
    return 0;
}

cudaError_t group_by_expert(const int32_t* d_sel, int64_t n_tokens, int k, int n_expert, int32_t* d_offsets,
                            int32_t* d_row_src, int32_t* d_row_of, void* d_scratch, cudaStream_t stream) {
    (void)d_scratch;
    if (n_expert < 1 || n_expert > kMaxExperts || k < 1 || n_tokens < 0 || !d_offsets) return cudaErrorInvalidValue;
    const int64_t n_rows = n_tokens * k;
    if (n_rows > 0x7fffffff) return cudaErrorInvalidValue;
    if (n_rows > 0 && (!d_sel || !d_row_src || !d_row_of)) return cudaErrorInvalidValue;
    // Even with no rows the offsets are written (all zero).
    const size_t shared = (static_cast<size_t>(kGroupWarps) * n_expert + n_expert + 1) * sizeof(int32_t);
    group_by_expert_kernel<<<1, 32 * kGroupWarps, shared, stream>>>(d_sel, n_rows, k, n_expert, d_offsets, d_row_src,
                                                                    d_row_of);
    return cudaGetLastError();
}

}  // namespace moe::cuda
