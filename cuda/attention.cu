#include "attention.cuh"

#include <cuda_fp16.h>

#include <algorithm>

namespace moe::cuda {

namespace {

constexpr int kThreads = 256;         // threads of the attention kernel
constexpr int kWarps = kThreads / 32;
constexpr int kTileKeys = 32;         // keys per tile: one per lane in the softmax step
constexpr int kMaxSplits = 64;        // key splits of one query tile (flash-decoding)
constexpr int kMaxHeadDim = 576;      // MLA absorbed: kv_lora_rank 512 + rope 64
constexpr int kMaxHeadDimV = 512;
constexpr size_t kPreferredSmem = 96 * 1024;  // fits sm_86 / sm_89 (99 KB per block) and keeps 2 blocks per SM

// ------------------------------------------------------------------------------------------------
// KV store
// ------------------------------------------------------------------------------------------------

__global__ void store_rows_kernel(uint16_t* dst, int64_t dst_stride, int64_t dst_rows, int ring, const float* src,
                                  int64_t src_stride, int64_t width, int64_t pos0, int64_t n) {
    const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (c >= width) return;
    for (int64_t i = blockIdx.y; i < n; i += gridDim.y) {
        const int64_t pos = pos0 + i;
        const int64_t row = ring ? pos % dst_rows : pos;
        dst[row * dst_stride + c] = __half_as_ushort(__float2half_rn(src[i * src_stride + c]));
    }
}

cudaError_t store_plane(const KvRowsDevice& dst, const float* src, int64_t src_stride, int64_t width, int64_t pos0,
                        int64_t n, cudaStream_t stream) {
    if (!dst.data || !src || width <= 0 || width > dst.stride || dst.n_rows <= 0 || (n > 1 && src_stride < width)) {
        return cudaErrorInvalidValue;
    }
    if (!dst.ring && pos0 + n > dst.n_rows) return cudaErrorInvalidValue;
    if (dst.ring && n > dst.n_rows) {
        // Only the last n_rows positions survive in a ring; storing the others too would race.
        const int64_t skip = n - dst.n_rows;
        src += skip * src_stride;
        pos0 += skip;
        n = dst.n_rows;
    }
    constexpr int kStoreThreads = 256;
    const dim3 grid(static_cast<unsigned>((width + kStoreThreads - 1) / kStoreThreads),
                    static_cast<unsigned>(std::min<int64_t>(n, 65535)));
    store_rows_kernel<<<grid, kStoreThreads, 0, stream>>>(dst.data, dst.stride, dst.n_rows, dst.ring ? 1 : 0, src,
                                                          src_stride, width, pos0, n);
    return cudaGetLastError();
}

// ------------------------------------------------------------------------------------------------
// Attention
// ------------------------------------------------------------------------------------------------

// The first key the query at position p sees.
__host__ __device__ __forceinline__ int64_t first_key(int64_t p, int64_t window) {
    return window > 0 ? (p - window + 1 > 0 ? p - window + 1 : 0) : 0;
}

// How the work is cut (computed on the host, passed by value).
//
// A block owns `qr` query rows that share one KV head: `tt` consecutive tokens times `hg` of the
// KV head's query heads (row r: token t0 + r / heads_in_block, head head0 + r % heads_in_block),
// and one split of the keys. It walks its keys in tiles of kTileKeys:
//   1. the K (and V) tile is loaded into shared memory as F16;
//   2. warp w scores rows w, w + 8, ... (lane = key), applies the mask and the online softmax:
//      per row max m, sum l, and this tile's rescale factor alpha and probabilities p;
//   3. every thread updates its accumulators acc[row][col] = acc · alpha + Σ_j p_j · v_j[col],
//      threads laid out tx (columns) x ty (rows).
// MLA reads V from the K tile (its first head_dim_v elements), so the tile is loaded once.
struct AttnArgs {
    const float* q;
    int64_t q_stride;
    float* out;
    int64_t out_stride;
    const uint16_t* k;
    int64_t k_stride, k_rows;
    int k_ring;
    const uint16_t* v;
    int64_t v_stride, v_rows;
    int v_ring;
    int v_from_k;
    int n_head, hd, hdv, group;
    float kq_scale;
    int64_t window;
    const float* sinks;
    int64_t n_tokens, first_pos;
    int qr, hg, tt, n_hsub, tx, ty;
    int n_split;
    int64_t key_lo, key_hi, split_len;
    // Partials of split s for row R = t * n_head + h: m, l at [s * n_rows_total + R], acc at
    // [(s * n_rows_total + R) * hdv].
    float* part_m;
    float* part_l;
    float* part_acc;
    int64_t n_rows_total;
};

// Byte offsets of the kernel's shared memory: the fp32 pieces first (q at offset 0 for its 8-byte
// reads), then the F16 tiles at 4-byte aligned offsets (read and written 2 elements at a time).
struct SmemLayout {
    size_t q, p, m, l, alpha, k, v, total;
};

__host__ __device__ __forceinline__ SmemLayout smem_layout(int qr, int hd, int hdv, bool v_from_k) {
    SmemLayout s;
    s.q = 0;                                                       // q: [qr][hd] fp32
    s.p = s.q + sizeof(float) * static_cast<size_t>(qr) * hd;      // p: [qr][kTileKeys] fp32
    s.m = s.p + sizeof(float) * static_cast<size_t>(qr) * kTileKeys;
    s.l = s.m + sizeof(float) * qr;
    s.alpha = s.l + sizeof(float) * qr;
    s.k = s.alpha + sizeof(float) * qr;                            // k: [kTileKeys][hd + 2] F16
    s.v = s.k + sizeof(__half) * static_cast<size_t>(kTileKeys) * (hd + 2);
    s.total = v_from_k ? s.v : s.v + sizeof(__half) * static_cast<size_t>(kTileKeys) * (hdv + 2);  // v: [kTileKeys][hdv + 2]
    return s;
}

__device__ __forceinline__ float warp_max(float v) {
    for (int offset = 16; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
    return v;
}

__device__ __forceinline__ float warp_sum(float v) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

// kCols: output columns per thread (hdv <= 256: 1, else 2); kRowsMax: most rows per thread.
template <int kCols, int kRowsMax>
__global__ void __launch_bounds__(kThreads) attention_kernel(AttnArgs a) {
    // Rows a warp scores per pass over the K tile: 2 for the 16-row tiles of wide heads (two rows
    // per warp in all), else 4.
    constexpr int kRowGroup = kCols == 2 ? 2 : 4;
    extern __shared__ float4 smem_raw[];
    const SmemLayout lay = smem_layout(a.qr, a.hd, a.hdv, a.v_from_k != 0);
    char* smem = reinterpret_cast<char*>(smem_raw);
    float* q_s = reinterpret_cast<float*>(smem + lay.q);          // q_s: [qr][hd]
    float* p_s = reinterpret_cast<float*>(smem + lay.p);          // p_s: [qr][kTileKeys]
    float* m_s = reinterpret_cast<float*>(smem + lay.m);          // m_s: [qr] running max
    float* l_s = reinterpret_cast<float*>(smem + lay.l);          // l_s: [qr] running sum
    float* alpha_s = reinterpret_cast<float*>(smem + lay.alpha);  // alpha_s: [qr] this tile's rescale
    __half* k_s = reinterpret_cast<__half*>(smem + lay.k);        // k_s: [kTileKeys][hd + 2]
    const int k_ld = a.hd + 2;  // padded: hd / 2 + 1 words per row is odd, so lanes (keys) hit distinct banks
    __half* v_s = a.v_from_k ? k_s : reinterpret_cast<__half*>(smem + lay.v);  // v_s: [kTileKeys][v_ld]
    const int v_ld = a.v_from_k ? k_ld : a.hdv + 2;

    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    const int64_t t0 = static_cast<int64_t>(blockIdx.x) * a.tt;
    const int kvh = blockIdx.y / a.n_hsub, hsub = blockIdx.y % a.n_hsub;
    const int split = blockIdx.z;
    const int head0 = kvh * a.group + hsub * a.hg;
    const int heads = min(a.hg, a.group - hsub * a.hg);  // query heads of this block
    const int tokens = static_cast<int>(min(static_cast<int64_t>(a.tt), a.n_tokens - t0));
    const int n_valid = tokens * heads;  // rows [0, n_valid) are real queries

    // The block's keys: what its tokens see, within its split.
    const int64_t p_first = a.first_pos + t0, p_last = p_first + tokens - 1;
    const int64_t split_lo = a.key_lo + static_cast<int64_t>(split) * a.split_len;
    const int64_t split_hi = min(split_lo + a.split_len, a.key_hi);
    const int64_t kb_lo = max(first_key(p_first, a.window), split_lo);
    const int64_t kb_hi = min(p_last + 1, split_hi);

    // Queries into shared memory (rows past n_valid as zeros), running statistics initialised:
    // without splits a sink starts the row as a key of logit `sink` and no value (m = sink, l = 1);
    // with splits the combine kernel adds it once.
    for (int64_t idx = tid; idx < static_cast<int64_t>(a.qr) * a.hd; idx += kThreads) {
        const int r = static_cast<int>(idx / a.hd), d = static_cast<int>(idx % a.hd);
        float val = 0.0f;
        if (r < n_valid) {
            const int64_t t = t0 + r / heads;
            const int h = head0 + r % heads;
            val = a.q[t * a.q_stride + static_cast<int64_t>(h) * a.hd + d];
        }
        q_s[idx] = val;
    }
    for (int r = tid; r < a.qr; r += kThreads) {
        const bool sink = a.sinks && a.n_split == 1 && r < n_valid;
        m_s[r] = sink ? a.sinks[head0 + r % heads] : -INFINITY;
        l_s[r] = sink ? 1.0f : 0.0f;
        alpha_s[r] = 1.0f;
    }

    const int tx = tid % a.tx, ty = tid / a.tx;
    float acc[kRowsMax][kCols];
#pragma unroll
    for (int i = 0; i < kRowsMax; ++i) {
#pragma unroll
        for (int c = 0; c < kCols; ++c) acc[i][c] = 0.0f;
    }
    __syncthreads();

    const int hd_words = a.hd / 2, hdv_words = a.hdv / 2;
    for (int64_t j0 = kb_lo; j0 < kb_hi; j0 += kTileKeys) {
        const int n_keys = static_cast<int>(min(static_cast<int64_t>(kTileKeys), kb_hi - j0));
        // 1. K (and V) rows of the tile's keys, 4 bytes at a time; keys past the range as zeros (a
        //    zero V row times p = 0 adds nothing, where stale cache bytes could be inf / NaN).
        for (int idx = tid; idx < kTileKeys * hd_words; idx += kThreads) {
            const int j = idx / hd_words, w = idx % hd_words;
            uint32_t bits = 0;
            if (j < n_keys) {
                const int64_t pos = j0 + j;
                const int64_t row = a.k_ring ? pos % a.k_rows : pos;
                bits = reinterpret_cast<const uint32_t*>(a.k + row * a.k_stride + static_cast<int64_t>(kvh) * a.hd)[w];
            }
            reinterpret_cast<uint32_t*>(k_s + j * k_ld)[w] = bits;
        }
        if (!a.v_from_k) {
            for (int idx = tid; idx < kTileKeys * hdv_words; idx += kThreads) {
                const int j = idx / hdv_words, w = idx % hdv_words;
                uint32_t bits = 0;
                if (j < n_keys) {
                    const int64_t pos = j0 + j;
                    const int64_t row = a.v_ring ? pos % a.v_rows : pos;
                    bits = reinterpret_cast<const uint32_t*>(a.v + row * a.v_stride + static_cast<int64_t>(kvh) * a.hdv)[w];
                }
                reinterpret_cast<uint32_t*>(v_s + j * v_ld)[w] = bits;
            }
        }
        __syncthreads();

        // 2. Scores and online softmax: warp w takes rows w, w + 8, ... kRowGroup at a time (one
        //    K load feeds them all), lane j scores key j0 + j.
        for (int rb = warp; rb < n_valid; rb += kRowGroup * kWarps) {
            int rows[kRowGroup];
#pragma unroll
            for (int u = 0; u < kRowGroup; ++u) rows[u] = min(rb + u * kWarps, a.qr - 1);  // clamped; unused past n_valid
            float s[kRowGroup];
#pragma unroll
            for (int u = 0; u < kRowGroup; ++u) s[u] = 0.0f;
            const __half2* k_row = reinterpret_cast<const __half2*>(k_s + lane * k_ld);
            for (int w = 0; w < hd_words; ++w) {
                const float2 kv = __half22float2(k_row[w]);
#pragma unroll
                for (int u = 0; u < kRowGroup; ++u) {
                    const float2 qv = reinterpret_cast<const float2*>(q_s + rows[u] * a.hd)[w];
                    s[u] = fmaf(qv.x, kv.x, s[u]);
                    s[u] = fmaf(qv.y, kv.y, s[u]);
                }
            }
#pragma unroll
            for (int u = 0; u < kRowGroup; ++u) {
                const int r = rb + u * kWarps;
                if (r >= n_valid) break;  // uniform over the warp
                const int64_t p = p_first + r / heads;
                const int64_t pos = j0 + lane;
                const bool visible = lane < n_keys && pos <= p && pos >= first_key(p, a.window);
                const float z = visible ? s[u] * a.kq_scale : -INFINITY;
                const float m_old = m_s[r];
                const float m_new = fmaxf(m_old, warp_max(z));
                // Nothing seen yet (m_new = -inf): keep the zeros; otherwise exp(-inf) = 0 drops
                // what is masked.
                const float alpha = m_new == -INFINITY ? 1.0f : expf(m_old - m_new);
                const float pj = z == -INFINITY ? 0.0f : expf(z - m_new);
                const float tile_sum = warp_sum(pj);
                p_s[r * kTileKeys + lane] = pj;
                if (lane == 0) {
                    m_s[r] = m_new;
                    l_s[r] = fmaf(l_s[r], alpha, tile_sum);
                    alpha_s[r] = alpha;
                }
            }
        }
        __syncthreads();

        // 3. acc = acc · alpha + p · V over the tile's keys.
#pragma unroll
        for (int i = 0; i < kRowsMax; ++i) {
            const int r = ty + a.ty * i;
            if (r >= n_valid) break;
            const float alpha = alpha_s[r];
#pragma unroll
            for (int c = 0; c < kCols; ++c) acc[i][c] *= alpha;
        }
        for (int j = 0; j < n_keys; ++j) {
            float vv[kCols];
#pragma unroll
            for (int c = 0; c < kCols; ++c) {
                const int d = tx + a.tx * c;
                vv[c] = d < a.hdv ? __half2float(v_s[j * v_ld + d]) : 0.0f;
            }
#pragma unroll
            for (int i = 0; i < kRowsMax; ++i) {
                const int r = ty + a.ty * i;
                if (r >= n_valid) break;
                const float pj = p_s[r * kTileKeys + j];
#pragma unroll
                for (int c = 0; c < kCols; ++c) acc[i][c] = fmaf(pj, vv[c], acc[i][c]);
            }
        }
        __syncthreads();  // the next tile overwrites k_s, v_s, p_s
    }

    if (a.n_split == 1) {
#pragma unroll
        for (int i = 0; i < kRowsMax; ++i) {
            const int r = ty + a.ty * i;
            if (r >= n_valid) break;
            const float l = l_s[r];
            float* o = a.out + (t0 + r / heads) * a.out_stride + static_cast<int64_t>(head0 + r % heads) * a.hdv;
#pragma unroll
            for (int c = 0; c < kCols; ++c) {
                const int d = tx + a.tx * c;
                if (d < a.hdv) o[d] = acc[i][c] / l;
            }
        }
        return;
    }
    // Partials of this split for the combine kernel (every valid row, even with no keys here).
    const auto row_index = [&](int r) {
        return static_cast<int64_t>(split) * a.n_rows_total + (t0 + r / heads) * a.n_head + head0 + r % heads;
    };
#pragma unroll
    for (int i = 0; i < kRowsMax; ++i) {
        const int r = ty + a.ty * i;
        if (r >= n_valid) break;
        float* o = a.part_acc + row_index(r) * a.hdv;
#pragma unroll
        for (int c = 0; c < kCols; ++c) {
            const int d = tx + a.tx * c;
            if (d < a.hdv) o[d] = acc[i][c];
        }
    }
    for (int r = tid; r < n_valid; r += kThreads) {
        a.part_m[row_index(r)] = m_s[r];
        a.part_l[row_index(r)] = l_s[r];
    }
}

// One block per query row (t, h): out = Σ_s acc_s e^(m_s - M) / (Σ_s l_s e^(m_s - M) + e^(sink - M)),
// M = max(m_s, sink).
__global__ void attention_combine_kernel(const float* __restrict__ part_m, const float* __restrict__ part_l,
                                         const float* __restrict__ part_acc, int n_split, int64_t n_rows_total,
                                         int n_head, int hdv, const float* __restrict__ sinks, float* out,
                                         int64_t out_stride) {
    __shared__ float factor[kMaxSplits];
    __shared__ float total;
    const int64_t row = blockIdx.x;
    const int64_t t = row / n_head;
    const int h = static_cast<int>(row % n_head);
    if (threadIdx.x == 0) {
        float m = sinks ? sinks[h] : -INFINITY;
        for (int s = 0; s < n_split; ++s) m = fmaxf(m, part_m[s * n_rows_total + row]);
        float l = 0.0f;
        for (int s = 0; s < n_split; ++s) {
            const float ms = part_m[s * n_rows_total + row];
            const float f = ms == -INFINITY ? 0.0f : expf(ms - m);  // a split that saw no key adds nothing
            factor[s] = f;
            l = fmaf(part_l[s * n_rows_total + row], f, l);
        }
        if (sinks) l += expf(sinks[h] - m);
        total = l;
    }
    __syncthreads();
    float* o = out + t * out_stride + static_cast<int64_t>(h) * hdv;
    for (int d = threadIdx.x; d < hdv; d += blockDim.x) {
        float acc = 0.0f;
        for (int s = 0; s < n_split; ++s) acc = fmaf(factor[s], part_acc[(s * n_rows_total + row) * hdv + d], acc);
        o[d] = acc / total;
    }
}

// The host's plan of one call.
struct Plan {
    int hd, hdv, group;
    int cols;            // kCols of the kernel instance
    int tx, ty, qr, hg, tt, n_hsub;
    int64_t n_qtiles;
    bool v_from_k;
    size_t smem;
    int n_split;
    int64_t key_lo, key_hi, split_len;
};

int next_pow2(int x) {
    int p = 1;
    while (p < x) p <<= 1;
    return p;
}

int device_attribute(cudaDeviceAttr attr, int fallback) {
    int dev = 0, value = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&value, attr, dev) != cudaSuccess) {
        cudaGetLastError();  // clear it: the caller's launch status must not report this
        return fallback;
    }
    return value;
}

// The work cut of a call (see AttnArgs), and its key splits given `scratch_bytes` of scratch
// (SIZE_MAX: as many as useful). false: the shape needs more shared memory than the device has
// (only checked when check_smem).
bool make_plan(const AttentionParams& p, bool v_from_k, int64_t n_tokens, int64_t first_pos, size_t scratch_bytes,
               bool check_smem, Plan* plan) {
    Plan& pl = *plan;
    pl.hd = p.head_dim;
    pl.hdv = p.head_dim_v > 0 ? p.head_dim_v : p.head_dim;
    pl.group = p.n_head / p.n_head_kv;
    pl.v_from_k = v_from_k;
    if (pl.hdv > 256) {
        pl.cols = 2;
        pl.tx = 256;
        pl.ty = 1;
        pl.qr = 16;  // kRowsMax 16: 32 accumulators per thread
    } else {
        pl.cols = 1;
        pl.tx = next_pow2(std::max(pl.hdv, 32));
        pl.ty = kThreads / pl.tx;
        pl.qr = std::min(64, pl.ty * 32);  // kRowsMax 32
    }
    // Fewer query rows while the tile is too big for shared memory (wide heads).
    pl.smem = smem_layout(pl.qr, pl.hd, pl.hdv, v_from_k).total;
    while (pl.smem > kPreferredSmem && pl.qr > 16) {
        pl.qr /= 2;
        pl.smem = smem_layout(pl.qr, pl.hd, pl.hdv, v_from_k).total;
    }
    if (check_smem && pl.smem > static_cast<size_t>(device_attribute(cudaDevAttrMaxSharedMemoryPerBlockOptin, 48 * 1024))) {
        return false;
    }
    // Query heads per block: balanced sub-groups of at most qr heads, tokens filling the rest.
    pl.n_hsub = (pl.group + pl.qr - 1) / pl.qr;
    pl.hg = (pl.group + pl.n_hsub - 1) / pl.n_hsub;
    pl.tt = pl.qr / pl.hg;
    pl.n_qtiles = (n_tokens + pl.tt - 1) / pl.tt;

    // Key splits when the query tiles alone leave SMs idle: enough blocks for two waves, each split
    // at least two tiles of keys, within the scratch given.
    pl.key_lo = first_key(first_pos, p.window);
    pl.key_hi = first_pos + n_tokens;
    const int64_t n_keys = pl.key_hi - pl.key_lo;
    const int64_t blocks = pl.n_qtiles * p.n_head_kv * pl.n_hsub;
    const int64_t n_sm = device_attribute(cudaDevAttrMultiProcessorCount, 1);
    int64_t n_split = 1;
    if (blocks < n_sm) {
        n_split = std::min<int64_t>({(2 * n_sm + blocks - 1) / blocks, (n_keys + 2 * kTileKeys - 1) / (2 * kTileKeys),
                                     static_cast<int64_t>(kMaxSplits)});
        const size_t per_split = sizeof(float) * static_cast<size_t>(n_tokens) * p.n_head * (pl.hdv + 2);
        n_split = std::min<int64_t>(n_split, static_cast<int64_t>(scratch_bytes / per_split));
        if (n_split < 2) n_split = 1;
    }
    pl.n_split = static_cast<int>(n_split);
    const int64_t per = (n_keys + n_split - 1) / n_split;
    pl.split_len = (per + kTileKeys - 1) / kTileKeys * kTileKeys;
    return true;
}

size_t partial_bytes(const Plan& pl, int64_t n_tokens, int n_head) {
    if (pl.n_split <= 1) return 0;
    return sizeof(float) * static_cast<size_t>(pl.n_split) * static_cast<size_t>(n_tokens) * n_head * (pl.hdv + 2);
}

// The kernel reads rows 4 bytes (2 elements) at a time: a 4-byte aligned base and an even stride.
bool plane_ok(const KvRowsDevice& r, int64_t width) {
    return r.data && reinterpret_cast<uintptr_t>(r.data) % 4 == 0 && r.n_rows > 0 && r.stride >= width &&
           r.stride % 2 == 0;
}

// Whether the plane still holds every key of [key_lo, key_hi).
bool plane_holds(const KvRowsDevice& r, int64_t key_lo, int64_t key_hi) {
    return r.ring ? key_hi - key_lo <= r.n_rows : key_hi <= r.n_rows;
}

template <int kCols, int kRowsMax>
cudaError_t launch_attention(const Plan& pl, const AttnArgs& args, int n_head_kv, cudaStream_t stream) {
    const auto kernel = attention_kernel<kCols, kRowsMax>;
    if (pl.smem > 48 * 1024) {
        const cudaError_t err =
            cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(pl.smem));
        if (err != cudaSuccess) return err;
    }
    const dim3 grid(static_cast<unsigned>(pl.n_qtiles), static_cast<unsigned>(n_head_kv * pl.n_hsub),
                    static_cast<unsigned>(pl.n_split));
    kernel<<<grid, kThreads, pl.smem, stream>>>(args);
    return cudaGetLastError();
}

bool params_ok(const AttentionParams& p) {
    const int hdv = p.head_dim_v > 0 ? p.head_dim_v : p.head_dim;
    return p.n_head > 0 && p.n_head_kv > 0 && p.n_head % p.n_head_kv == 0 && p.head_dim > 0 && p.head_dim % 2 == 0 &&
           p.head_dim <= kMaxHeadDim && hdv % 2 == 0 && hdv <= kMaxHeadDimV && p.window >= 0;
}

}  // namespace

cudaError_t store_kv(const KvRowsDevice& k, const float* k_src, int64_t k_src_stride, int64_t k_width,
                     const KvRowsDevice& v, const float* v_src, int64_t v_src_stride, int64_t v_width, int64_t pos0,
                     int64_t n, cudaStream_t stream) {
    if (n < 0 || pos0 < 0) return cudaErrorInvalidValue;
    if (n == 0) return cudaSuccess;
    const bool with_v = v.data && v_src;
    // Both checked before either launch.
    if (!k.data || !k_src || k_width <= 0 || k_width > k.stride || (!k.ring && pos0 + n > k.n_rows)) {
        return cudaErrorInvalidValue;
    }
    if (with_v && (v_width <= 0 || v_width > v.stride || (!v.ring && pos0 + n > v.n_rows))) return cudaErrorInvalidValue;
    cudaError_t err = store_plane(k, k_src, k_src_stride, k_width, pos0, n, stream);
    if (err != cudaSuccess || !with_v) return err;
    return store_plane(v, v_src, v_src_stride, v_width, pos0, n, stream);
}

size_t attention_scratch_bytes(const AttentionParams& params, int64_t n_tokens, int64_t n_kv) {
    if (!params_ok(params) || n_tokens <= 0 || n_kv < n_tokens) return 0;
    // Whether V comes from the K tile (MLA) changes the shared memory and so possibly the query
    // tile and the split count: the larger of the two.
    size_t bytes = 0;
    for (bool v_from_k : {false, true}) {
        Plan pl;
        make_plan(params, v_from_k, n_tokens, n_kv - n_tokens, SIZE_MAX, false, &pl);
        bytes = std::max(bytes, partial_bytes(pl, n_tokens, params.n_head));
    }
    return bytes;
}

cudaError_t attention(const AttentionParams& params, const KvRowsDevice& k, const KvRowsDevice& v, const float* q,
                      int64_t q_stride, int64_t n_tokens, int64_t first_pos, float* out, int64_t out_stride,
                      void* d_scratch, size_t scratch_bytes, cudaStream_t stream) {
    if (!params_ok(params) || n_tokens < 0 || first_pos < 0) return cudaErrorInvalidValue;
    if (n_tokens == 0) return cudaSuccess;
    const int hd = params.head_dim, hdv = params.head_dim_v > 0 ? params.head_dim_v : params.head_dim;
    const int64_t q_width = static_cast<int64_t>(params.n_head) * hd, out_width = static_cast<int64_t>(params.n_head) * hdv;
    if (!q || !out || (n_tokens > 1 && (q_stride < q_width || out_stride < out_width))) return cudaErrorInvalidValue;
    // MLA: V is the K rows themselves (one KV head), read from the K tile.
    const bool v_from_k = v.data == k.data && v.stride == k.stride && v.n_rows == k.n_rows && v.ring == k.ring &&
                          params.n_head_kv == 1 && hdv <= hd;
    if (!plane_ok(k, static_cast<int64_t>(params.n_head_kv) * hd) ||
        (!v_from_k && !plane_ok(v, static_cast<int64_t>(params.n_head_kv) * hdv))) {
        return cudaErrorInvalidValue;
    }
    Plan pl;
    if (!make_plan(params, v_from_k, n_tokens, first_pos, d_scratch ? scratch_bytes : 0, true, &pl)) {
        return cudaErrorInvalidValue;
    }
    if (!plane_holds(k, pl.key_lo, pl.key_hi) || !plane_holds(v, pl.key_lo, pl.key_hi)) return cudaErrorInvalidValue;

    AttnArgs a{};
    a.q = q;
    a.q_stride = q_stride;
    a.out = out;
    a.out_stride = out_stride;
    a.k = k.data;
    a.k_stride = k.stride;
    a.k_rows = k.n_rows;
    a.k_ring = k.ring ? 1 : 0;
    a.v = v_from_k ? k.data : v.data;
    a.v_stride = v_from_k ? k.stride : v.stride;
    a.v_rows = v_from_k ? k.n_rows : v.n_rows;
    a.v_ring = (v_from_k ? k.ring : v.ring) ? 1 : 0;
    a.v_from_k = v_from_k ? 1 : 0;
    a.n_head = params.n_head;
    a.hd = hd;
    a.hdv = hdv;
    a.group = pl.group;
    a.kq_scale = params.kq_scale;
    a.window = params.window;
    a.sinks = params.d_sinks;
    a.n_tokens = n_tokens;
    a.first_pos = first_pos;
    a.qr = pl.qr;
    a.hg = pl.hg;
    a.tt = pl.tt;
    a.n_hsub = pl.n_hsub;
    a.tx = pl.tx;
    a.ty = pl.ty;
    a.n_split = pl.n_split;
    a.key_lo = pl.key_lo;
    a.key_hi = pl.key_hi;
    a.split_len = pl.split_len;
    a.n_rows_total = n_tokens * params.n_head;
    if (pl.n_split > 1) {
        float* part = static_cast<float*>(d_scratch);
        const int64_t n_part = static_cast<int64_t>(pl.n_split) * a.n_rows_total;
        a.part_m = part;
        a.part_l = part + n_part;
        a.part_acc = part + 2 * n_part;
    }
    if (static_cast<int64_t>(params.n_head_kv) * pl.n_hsub > 65535 || pl.n_qtiles > 0x7fffffff) {
        return cudaErrorInvalidValue;
    }

    const cudaError_t err = pl.cols == 2 ? launch_attention<2, 16>(pl, a, params.n_head_kv, stream)
                                         : launch_attention<1, 32>(pl, a, params.n_head_kv, stream);
    if (err != cudaSuccess || pl.n_split == 1) return err;
    attention_combine_kernel<<<static_cast<unsigned>(a.n_rows_total), 128, 0, stream>>>(
        a.part_m, a.part_l, a.part_acc, pl.n_split, a.n_rows_total, params.n_head, hdv, params.d_sinks, out,
        out_stride);
    return cudaGetLastError();
}

}  // namespace moe::cuda
