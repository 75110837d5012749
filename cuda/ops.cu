#include "ops.cuh"

#include <cmath>

#include "dequantize.cuh"
#include "kernels/ops.h"
#include "quant/ggml_types.h"

namespace moe::cuda {

namespace {

constexpr int kBlock = 256;          // threads of the row kernels
constexpr int64_t kMaxGridY = 65535;  // rows beyond this are looped over by the kernels

// A grid for [n_rows, n] element-wise work: x over columns, y over rows (looped past kMaxGridY).
dim3 rows_grid(int64_t n_rows, int64_t n) {
    const int64_t bx = (n + kBlock - 1) / kBlock;
    const int64_t by = n_rows < kMaxGridY ? n_rows : kMaxGridY;
    return dim3(static_cast<unsigned>(bx), static_cast<unsigned>(by));
}

// Common argument check of a [n_rows, n] operand: a stride that keeps rows apart when there are
// several, and a pointer when there is work.
bool rows_ok(const void* p, int64_t stride, int64_t n_rows, int64_t n) {
    if (n_rows < 0 || n < 0) return false;
    if (n_rows == 0 || n == 0) return true;
    return p != nullptr && (n_rows == 1 || stride >= n);
}

// ------------------------------------------------------------------------------------------------
// RMSNorm
// ------------------------------------------------------------------------------------------------

// Row r of the norm is sub-row (r % n_sub) of token (r / n_sub): rms_norm_rows has n_sub = 1,
// rms_norm_heads one sub-row per head. kRowThreads threads (a warp or the whole block) share a row.
template <int kRowThreads>
__global__ void rms_norm_kernel(const float* __restrict__ x, int64_t x_stride, int64_t x_sub_stride,
                                const float* __restrict__ w, float* y, int64_t y_stride, int64_t y_sub_stride,
                                int64_t n_rows, int n_sub, int64_t n, float eps) {
    constexpr int kRowsPerBlock = kBlock / kRowThreads;
    __shared__ double warp_sums[kBlock / 32];
    const int lane = threadIdx.x % kRowThreads;
    const int64_t row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / kRowThreads;
    if (row >= n_rows) return;  // uniform over the row's threads (a warp or the block)
    const int64_t token = row / n_sub, sub = row % n_sub;
    const float* xr = x + token * x_stride + sub * x_sub_stride;
    float* yr = y + token * y_stride + sub * y_sub_stride;

    // Each square rounded to fp32 (as ggml), summed in double.
    double sum = 0.0;
    for (int64_t i = lane; i < n; i += kRowThreads) {
        const float v = xr[i];
        const float sq = __fmul_rn(v, v);
        sum += static_cast<double>(sq);
    }
    for (int offset = 16; offset > 0; offset >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
    if (kRowThreads > 32) {
        if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = sum;
        __syncthreads();
        sum = 0.0;
        for (int i = 0; i < kRowThreads / 32; ++i) sum += warp_sums[i];
    }
    const float mean = static_cast<float>(sum / static_cast<double>(n));
    const float scale = 1.0f / sqrtf(__fadd_rn(mean, eps));  // IEEE division and sqrt (no fast math)
    // Every read of x happened before the reduction above, so y may be x.
    for (int64_t i = lane; i < n; i += kRowThreads) {
        const float s = __fmul_rn(xr[i], scale);
        yr[i] = w ? __fmul_rn(s, w[i]) : s;
    }
}

cudaError_t launch_rms_norm(const float* x, int64_t x_stride, int64_t x_sub, const float* w, float* y, int64_t y_stride,
                            int64_t y_sub, int64_t n_rows, int n_sub, int64_t n, float eps, cudaStream_t stream) {
    if (n_rows == 0 || n == 0) return cudaSuccess;
    if (n <= 512) {
        // A warp per row: short rows (heads, small models) would leave most of a block idle.
        constexpr int kRowsPerBlock = kBlock / 32;
        const int64_t blocks = (n_rows + kRowsPerBlock - 1) / kRowsPerBlock;
        rms_norm_kernel<32><<<static_cast<unsigned>(blocks), kBlock, 0, stream>>>(x, x_stride, x_sub, w, y, y_stride,
                                                                                  y_sub, n_rows, n_sub, n, eps);
    } else {
        rms_norm_kernel<kBlock><<<static_cast<unsigned>(n_rows), kBlock, 0, stream>>>(x, x_stride, x_sub, w, y, y_stride,
                                                                                     y_sub, n_rows, n_sub, n, eps);
    }
    return cudaGetLastError();
}

// ------------------------------------------------------------------------------------------------
// RoPE
// ------------------------------------------------------------------------------------------------

// What the kernel needs, with every value that the CPU derives from the config by a libm call
// (pow, log) already computed on the host by the same expressions.
struct RopeDevice {
    int neox;
    int n_rot;
    float theta_scale;  // base^(-2 / n_rot)
    float freq_scale;
    float ext_factor;
    float corr_low, corr_high;  // YaRN correction dims
    float mscale;               // attn_factor, times the YaRN magnitude when ext_factor != 0
    const float* freq_factors;
    int fused;
};

// ggml's rope_yarn_ramp: i0 / 2 is an integer division before the float arithmetic.
__device__ __forceinline__ float yarn_ramp(float low, float high, int i0) {
    const float y = __fsub_rn(static_cast<float>(i0 / 2), low);
    const float r = y / fmaxf(0.001f, __fsub_rn(high, low));
    return __fsub_rn(1.0f, fminf(1.0f, fmaxf(0.0f, r)));
}

// One block per token: the token's cos/sin table in shared memory (cache[2i] = cos θ_i · m,
// cache[2i + 1] = sin θ_i · m, as kernels::rope_cache), then every (head, pair) rotated.
__global__ void rope_kernel(RopeDevice p, float* x, int64_t x_stride, int n_heads, int64_t head_stride,
                            const int32_t* __restrict__ positions) {
    extern __shared__ float cache[];  // cache: [n_rot]
    const int64_t t = blockIdx.x;
    const int half = p.n_rot / 2;
    const float pos = static_cast<float>(positions[t]);
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        // θ_i by the CPU's chain θ_{k+1} = θ_k · theta_scale: the same i fp32 products in the same
        // order, so θ_i is bit-identical (a pow per pair would not be).
        float theta = pos;
        for (int k = 0; k < i; ++k) theta = __fmul_rn(theta, p.theta_scale);
        const float ff = p.freq_factors ? p.freq_factors[i] : 1.0f;
        const float theta_extrap = theta / ff;
        const float theta_interp = __fmul_rn(p.freq_scale, theta_extrap);
        float th = theta_interp;
        if (p.ext_factor != 0.0f) {
            const float ramp_mix = __fmul_rn(yarn_ramp(p.corr_low, p.corr_high, 2 * i), p.ext_factor);
            const float b = __fmul_rn(theta_extrap, ramp_mix);
            const float one_minus = __fsub_rn(1.0f, ramp_mix);
            th = p.fused ? fmaf(theta_interp, one_minus, b) : __fadd_rn(__fmul_rn(theta_interp, one_minus), b);
        }
        // cos / sin in double, rounded once: the correctly rounded fp32 value (glibc's cosf / sinf
        // return it too but in rare cases), where CUDA's cosf / sinf may be 1-2 ulp off.
        double s, c;
        sincos(static_cast<double>(th), &s, &c);
        cache[2 * i + 0] = __fmul_rn(static_cast<float>(c), p.mscale);
        cache[2 * i + 1] = __fmul_rn(static_cast<float>(s), p.mscale);
    }
    __syncthreads();
    float* row = x + t * x_stride;
    const int offset = p.neox ? half : 1;  // NORM pairs (2i, 2i + 1), NEOX (i, i + n_rot / 2)
    const int64_t n_items = static_cast<int64_t>(n_heads) * half;
    for (int64_t item = threadIdx.x; item < n_items; item += blockDim.x) {
        const int64_t h = item / half;
        const int i = static_cast<int>(item % half);
        const int ic = p.neox ? i : 2 * i;
        float* head = row + h * head_stride;
        const float cos_t = cache[2 * i + 0], sin_t = cache[2 * i + 1];
        const float x0 = head[ic], x1 = head[ic + offset];
        if (p.fused) {
            head[ic] = fmaf(x0, cos_t, -__fmul_rn(x1, sin_t));
            head[ic + offset] = fmaf(x0, sin_t, __fmul_rn(x1, cos_t));
        } else {
            head[ic] = __fsub_rn(__fmul_rn(x0, cos_t), __fmul_rn(x1, sin_t));
            head[ic + offset] = __fadd_rn(__fmul_rn(x0, sin_t), __fmul_rn(x1, cos_t));
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Softmax, activations
// ------------------------------------------------------------------------------------------------

__device__ __forceinline__ float block_max(float v, float* scratch) {
    for (int offset = 16; offset > 0; offset >>= 1) {
        const float o = __shfl_xor_sync(0xffffffffu, v, offset);
        v = v > o ? v : o;
    }
    if (threadIdx.x % 32 == 0) scratch[threadIdx.x / 32] = v;
    __syncthreads();
    float m = scratch[0];
    for (int i = 1; i < kBlock / 32; ++i) m = m > scratch[i] ? m : scratch[i];
    __syncthreads();  // scratch is reused by the caller's next reduction
    return m;
}

__device__ __forceinline__ double block_sum(double v, double* scratch) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    if (threadIdx.x % 32 == 0) scratch[threadIdx.x / 32] = v;
    __syncthreads();
    double s = 0.0;
    for (int i = 0; i < kBlock / 32; ++i) s += scratch[i];
    __syncthreads();
    return s;
}

// One block per row.
__global__ void softmax_kernel(const float* x, int64_t x_stride, float* y, int64_t y_stride, int64_t n) {
    __shared__ float max_scratch[kBlock / 32];
    __shared__ double sum_scratch[kBlock / 32];
    const float* xr = x + static_cast<int64_t>(blockIdx.x) * x_stride;
    float* yr = y + static_cast<int64_t>(blockIdx.x) * y_stride;
    float m = -INFINITY;
    for (int64_t i = threadIdx.x; i < n; i += kBlock) m = m > xr[i] ? m : xr[i];  // ggml's MAX
    m = block_max(m, max_scratch);
    double sum = 0.0;
    for (int64_t i = threadIdx.x; i < n; i += kBlock) {
        const float e = expf(__fsub_rn(xr[i], m));
        yr[i] = e;  // this thread alone reads it back below; every x read is done (y may be x)
        sum += static_cast<double>(e);
    }
    sum = block_sum(sum, sum_scratch);
    const float inv = static_cast<float>(1.0 / sum);
    for (int64_t i = threadIdx.x; i < n; i += kBlock) yr[i] = __fmul_rn(yr[i], inv);
}

__device__ __forceinline__ float silu(float v) { return v / __fadd_rn(1.0f, expf(-v)); }

__global__ void swiglu_kernel(const float* g, int64_t g_stride, const float* u, int64_t u_stride, float* y,
                              int64_t y_stride, int64_t n_rows, int64_t n) {
    const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= n) return;
    for (int64_t r = blockIdx.y; r < n_rows; r += gridDim.y) {
        y[r * y_stride + i] = __fmul_rn(silu(g[r * g_stride + i]), u[r * u_stride + i]);
    }
}

__global__ void swiglu_oai_kernel(const float* g, int64_t g_stride, const float* u, int64_t u_stride, float* y,
                                  int64_t y_stride, int64_t n_rows, int64_t n) {
    constexpr float kAlpha = 1.702f, kLimit = 7.0f;
    const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= n) return;
    for (int64_t r = blockIdx.y; r < n_rows; r += gridDim.y) {
        const float gv = g[r * g_stride + i], uv = u[r * u_stride + i];
        const float a = kLimit < gv ? kLimit : gv;                         // std::min(g, limit)
        const float b = uv < -kLimit ? -kLimit : (kLimit < uv ? kLimit : uv);  // std::clamp(u, -limit, limit)
        const float glu = a / __fadd_rn(1.0f, expf(__fmul_rn(kAlpha, -a)));
        y[r * y_stride + i] = __fmul_rn(glu, __fadd_rn(b, 1.0f));
    }
}

// ------------------------------------------------------------------------------------------------
// Adds, combine
// ------------------------------------------------------------------------------------------------

__global__ void add_rows_kernel(const float* x, int64_t x_stride, float* y, int64_t y_stride, int64_t n_rows,
                                int64_t n) {
    const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= n) return;
    for (int64_t r = blockIdx.y; r < n_rows; r += gridDim.y) {
        y[r * y_stride + i] = __fadd_rn(x[r * x_stride + i], y[r * y_stride + i]);
    }
}

__global__ void add_bias_kernel(float* y, int64_t y_stride, const float* __restrict__ bias, int64_t n_rows, int64_t n) {
    const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const float b = bias[i];
    for (int64_t r = blockIdx.y; r < n_rows; r += gridDim.y) y[r * y_stride + i] = __fadd_rn(y[r * y_stride + i], b);
}

__global__ void add_expert_bias_kernel(float* y, int64_t y_stride, const int32_t* __restrict__ offsets, int n_expert,
                                       const float* __restrict__ bias, int64_t bias_stride, int64_t n_rows, int64_t n) {
    const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const int64_t total = offsets[n_expert];
    for (int64_t r = blockIdx.y; r < n_rows && r < total; r += gridDim.y) {
        // The expert e with offsets[e] <= r < offsets[e + 1] (empty experts have equal offsets).
        int lo = 0, hi = n_expert;
        while (hi - lo > 1) {
            const int mid = (lo + hi) / 2;
            if (offsets[mid] <= r) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        y[r * y_stride + i] = __fadd_rn(y[r * y_stride + i], bias[lo * bias_stride + i]);
    }
}

__global__ void moe_combine_kernel(const float* __restrict__ down, int64_t down_stride, const int32_t* __restrict__ row_of,
                                   const float* __restrict__ weights, int64_t n_tokens, int k, int64_t n_embd,
                                   const float* __restrict__ shared, int64_t shared_stride,
                                   const float* __restrict__ shared_gate, float* out, int64_t out_stride) {
    const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= n_embd) return;
    for (int64_t t = blockIdx.y; t < n_tokens; t += gridDim.y) {
        // Slot order, each product rounded before its add (forward.cc's loop).
        float o = __fmul_rn(down[static_cast<int64_t>(row_of[t * k]) * down_stride + i], weights[t * k]);
        for (int s = 1; s < k; ++s) {
            const float p = __fmul_rn(down[static_cast<int64_t>(row_of[t * k + s]) * down_stride + i], weights[t * k + s]);
            o = __fadd_rn(o, p);
        }
        if (shared) {
            const float y = shared[t * shared_stride + i];
            if (shared_gate) {
                const float g = shared_gate[t];
                const float gate = silu(g) / g;  // llama.cpp's sigmoid as silu(g) / g
                o = __fadd_rn(o, __fmul_rn(y, gate));
            } else {
                o = __fadd_rn(o, y);
            }
        }
        out[t * out_stride + i] = o;
    }
}

}  // namespace

// ------------------------------------------------------------------------------------------------
// Entry points
// ------------------------------------------------------------------------------------------------

cudaError_t rms_norm_rows(const float* x, int64_t x_stride, const float* weight, float* y, int64_t y_stride,
                          int64_t n_rows, int64_t n, float eps, cudaStream_t stream) {
    if (!rows_ok(x, x_stride, n_rows, n) || !rows_ok(y, y_stride, n_rows, n)) return cudaErrorInvalidValue;
    return launch_rms_norm(x, x_stride, 0, weight, y, y_stride, 0, n_rows, 1, n, eps, stream);
}

cudaError_t rms_norm_heads(const float* x, int64_t x_stride, const float* weight, float* y, int64_t y_stride,
                           int64_t n_tokens, int n_heads, int head_dim, float eps, cudaStream_t stream) {
    if (n_heads < 0 || head_dim < 0) return cudaErrorInvalidValue;
    const int64_t width = static_cast<int64_t>(n_heads) * head_dim;
    if (!rows_ok(x, x_stride, n_tokens, width) || !rows_ok(y, y_stride, n_tokens, width)) return cudaErrorInvalidValue;
    return launch_rms_norm(x, x_stride, head_dim, weight, y, y_stride, head_dim, n_tokens * n_heads, n_heads, head_dim,
                           eps, stream);
}

RopeParams rope_params(const kernels::RopeConfig& c, const float* d_freq_factors, bool fused) {
    RopeParams p;
    p.mode = c.type == kernels::RopeType::Neox ? RopeMode::Neox : RopeMode::Norm;
    p.n_rot = c.n_rot;
    p.freq_base = c.freq_base;
    p.freq_scale = c.freq_scale;
    p.ext_factor = c.ext_factor;
    p.attn_factor = c.attn_factor;
    p.beta_fast = c.beta_fast;
    p.beta_slow = c.beta_slow;
    p.n_ctx_orig = c.n_ctx_orig;
    p.d_freq_factors = d_freq_factors;
    p.fused = fused;
    return p;
}

cudaError_t rope_rows(const RopeParams& params, float* x, int64_t x_stride, int64_t n_tokens, int n_heads,
                      int64_t head_stride, const int32_t* d_positions, cudaStream_t stream) {
    if (params.n_rot <= 0 || params.n_rot % 2 != 0 || n_heads < 0 || n_tokens < 0 || head_stride < params.n_rot) {
        return cudaErrorInvalidValue;
    }
    if (n_tokens == 0 || n_heads == 0) return cudaSuccess;
    const int64_t width = (n_heads - 1) * head_stride + params.n_rot;
    if (!x || !d_positions || (n_tokens > 1 && x_stride < width)) return cudaErrorInvalidValue;

    // The host half of kernels::rope_cache, by the CPU's own code and expressions.
    kernels::RopeConfig c;
    c.type = params.mode == RopeMode::Neox ? kernels::RopeType::Neox : kernels::RopeType::Norm;
    c.n_rot = params.n_rot;
    c.freq_base = params.freq_base;
    c.freq_scale = params.freq_scale;
    c.ext_factor = params.ext_factor;
    c.attn_factor = params.attn_factor;
    c.beta_fast = params.beta_fast;
    c.beta_slow = params.beta_slow;
    c.n_ctx_orig = params.n_ctx_orig;
    float corr[2];
    kernels::rope_corr_dims(c, corr);
    RopeDevice d;
    d.neox = params.mode == RopeMode::Neox;
    d.n_rot = params.n_rot;
    d.theta_scale = std::pow(c.freq_base, -2.0f / static_cast<float>(c.n_rot));
    d.freq_scale = params.freq_scale;
    d.ext_factor = params.ext_factor;
    d.corr_low = corr[0];
    d.corr_high = corr[1];
    d.mscale = params.attn_factor;
    if (params.ext_factor != 0.0f) {
        const float lg = std::log(1.0f / params.freq_scale);
        if (params.fused) {
            d.mscale *= std::fma(0.1f, lg, 1.0f);
        } else {
            const float t = 0.1f * lg;
            d.mscale *= 1.0f + t;
        }
    }
    d.freq_factors = params.d_freq_factors;
    d.fused = params.fused ? 1 : 0;
    constexpr int kThreads = 128;
    rope_kernel<<<static_cast<unsigned>(n_tokens), kThreads, sizeof(float) * params.n_rot, stream>>>(
        d, x, x_stride, n_heads, head_stride, d_positions);
    return cudaGetLastError();
}

cudaError_t softmax_rows(const float* x, int64_t x_stride, float* y, int64_t y_stride, int64_t n_rows, int64_t n,
                         cudaStream_t stream) {
    if (!rows_ok(x, x_stride, n_rows, n) || !rows_ok(y, y_stride, n_rows, n) || n_rows > 0x7fffffff) {
        return cudaErrorInvalidValue;
    }
    if (n_rows == 0 || n == 0) return cudaSuccess;
    softmax_kernel<<<static_cast<unsigned>(n_rows), kBlock, 0, stream>>>(x, x_stride, y, y_stride, n);
    return cudaGetLastError();
}

cudaError_t swiglu_rows(const float* g, int64_t g_stride, const float* u, int64_t u_stride, float* y, int64_t y_stride,
                        int64_t n_rows, int64_t n, cudaStream_t stream) {
    if (!rows_ok(g, g_stride, n_rows, n) || !rows_ok(u, u_stride, n_rows, n) || !rows_ok(y, y_stride, n_rows, n)) {
        return cudaErrorInvalidValue;
    }
    if (n_rows == 0 || n == 0) return cudaSuccess;
    swiglu_kernel<<<rows_grid(n_rows, n), kBlock, 0, stream>>>(g, g_stride, u, u_stride, y, y_stride, n_rows, n);
    return cudaGetLastError();
}

cudaError_t swiglu_oai_rows(const float* g, int64_t g_stride, const float* u, int64_t u_stride, float* y,
                            int64_t y_stride, int64_t n_rows, int64_t n, cudaStream_t stream) {
    if (!rows_ok(g, g_stride, n_rows, n) || !rows_ok(u, u_stride, n_rows, n) || !rows_ok(y, y_stride, n_rows, n)) {
        return cudaErrorInvalidValue;
    }
    if (n_rows == 0 || n == 0) return cudaSuccess;
    swiglu_oai_kernel<<<rows_grid(n_rows, n), kBlock, 0, stream>>>(g, g_stride, u, u_stride, y, y_stride, n_rows, n);
    return cudaGetLastError();
}

cudaError_t add_rows(const float* x, int64_t x_stride, float* y, int64_t y_stride, int64_t n_rows, int64_t n,
                     cudaStream_t stream) {
    if (!rows_ok(x, x_stride, n_rows, n) || !rows_ok(y, y_stride, n_rows, n)) return cudaErrorInvalidValue;
    if (n_rows == 0 || n == 0) return cudaSuccess;
    add_rows_kernel<<<rows_grid(n_rows, n), kBlock, 0, stream>>>(x, x_stride, y, y_stride, n_rows, n);
    return cudaGetLastError();
}

cudaError_t add_bias_rows(float* y, int64_t y_stride, const float* bias, int64_t n_rows, int64_t n,
                          cudaStream_t stream) {
    if (!rows_ok(y, y_stride, n_rows, n) || !rows_ok(bias, n, 1, n)) return cudaErrorInvalidValue;
    if (n_rows == 0 || n == 0) return cudaSuccess;
    add_bias_kernel<<<rows_grid(n_rows, n), kBlock, 0, stream>>>(y, y_stride, bias, n_rows, n);
    return cudaGetLastError();
}

cudaError_t add_expert_bias_rows(float* y, int64_t y_stride, const int32_t* d_offsets, int n_expert, const float* bias,
                                 int64_t bias_stride, int64_t n_rows_max, int64_t n, cudaStream_t stream) {
    if (n_expert <= 0 || !rows_ok(y, y_stride, n_rows_max, n) || !rows_ok(bias, bias_stride, n_expert, n)) {
        return cudaErrorInvalidValue;
    }
    if (n_rows_max == 0 || n == 0) return cudaSuccess;
    if (!d_offsets) return cudaErrorInvalidValue;
    add_expert_bias_kernel<<<rows_grid(n_rows_max, n), kBlock, 0, stream>>>(y, y_stride, d_offsets, n_expert, bias,
                                                                            bias_stride, n_rows_max, n);
    return cudaGetLastError();
}

cudaError_t moe_combine(const float* down, int64_t down_stride, const int32_t* d_row_of, const float* d_weights,
                        int64_t n_tokens, int k, int64_t n_embd, const float* shared, int64_t shared_stride,
                        const float* shared_gate, float* out, int64_t out_stride, cudaStream_t stream) {
    if (k <= 0 || n_tokens < 0 || n_embd < 0 || !rows_ok(out, out_stride, n_tokens, n_embd)) return cudaErrorInvalidValue;
    if (shared && !rows_ok(shared, shared_stride, n_tokens, n_embd)) return cudaErrorInvalidValue;
    if (shared_gate && !shared) return cudaErrorInvalidValue;
    if (n_tokens == 0 || n_embd == 0) return cudaSuccess;
    if (!down || !d_row_of || !d_weights || down_stride < n_embd) return cudaErrorInvalidValue;
    moe_combine_kernel<<<rows_grid(n_tokens, n_embd), kBlock, 0, stream>>>(down, down_stride, d_row_of, d_weights,
                                                                           n_tokens, k, n_embd, shared, shared_stride,
                                                                           shared_gate, out, out_stride);
    return cudaGetLastError();
}

cudaError_t get_rows_f32(uint32_t type_id, const void* d_table, size_t row_bytes, int64_t n_table_rows,
                         const int32_t* h_tokens, int64_t n_tokens, int64_t n_cols, float* out, int64_t out_stride,
                         cudaStream_t stream) {
    const quant::TypeTraits* traits = quant::type_traits(type_id);
    if (!traits || !can_dequantize(type_id) || n_tokens < 0 || n_cols < 0 || n_cols % traits->block_size != 0) {
        return cudaErrorInvalidValue;
    }
    if (n_tokens == 0 || n_cols == 0) return cudaSuccess;
    if (!d_table || !h_tokens || !rows_ok(out, out_stride, n_tokens, n_cols) || row_bytes < quant::row_size(*traits, n_cols)) {
        return cudaErrorInvalidValue;
    }
    // Every id is checked before the first launch, so a bad one writes nothing.
    for (int64_t t = 0; t < n_tokens; ++t) {
        if (h_tokens[t] < 0 || h_tokens[t] >= n_table_rows) return cudaErrorInvalidValue;
    }
    const uint8_t* table = static_cast<const uint8_t*>(d_table);
    for (int64_t t = 0; t < n_tokens; ++t) {
        const cudaError_t err = dequantize_row(type_id, table + static_cast<size_t>(h_tokens[t]) * row_bytes,
                                               out + t * out_stride, n_cols, stream);
        if (err != cudaSuccess) return err;
    }
    return cudaSuccess;
}

}  // namespace moe::cuda
