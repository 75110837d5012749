// Matrix-vector kernel: products of at most kMatvecMaxRows activation rows per weight (decoding, and
// the experts a few tokens route to). Memory-bound: every weight byte is read once per call and
// dequantized in registers, then used for all of the group's rows; accumulation is fp32.
//
// Launch: blocks of kWarps warps; blockIdx.x picks kWarps * kOutputsPerWarp outputs, blockIdx.y a
// row group (dense: the only one; experts: a matvec_slot, matmul_schedule.cuh). Each warp owns two
// weight rows (two outputs, or gate and up of one output for SwiGLU) and walks them in groups of 8
// elements, lane i taking groups i, i + 32, ...: a warp step reads 256 consecutive elements of each
// row (consecutive lanes, consecutive bytes) and the matching 1 KiB of each activation row as
// float4s. Lane sums are reduced with shuffles at the end.
#include <algorithm>

#include "matmul_internal.cuh"
#include "matmul_schedule.cuh"
#include "quant_blocks.cuh"

namespace moe::cuda::detail {

namespace {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kRowsPerWarp = 2;  // weight rows each warp accumulates

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int d = 16; d > 0; d >>= 1) v += __shfl_xor_sync(kFullWarp, v, d);
    return v;
}

// One warp: outputs starting at out0 (one for SwiGLU, else out0 and out0 + 1) of `expert` for rows
// [row0, row0 + n_rows), n_rows <= kTokens. Token slots past n_rows repeat the last row (and a
// missing second output repeats the first) so the loop has no guards; their sums are not stored.
template <class Fmt, bool kSwiglu, int kTokens>
__device__ void matvec_rows(const ProductArgs& a, int expert, int64_t row0, int n_rows, int64_t out0) {
    const int lane = threadIdx.x & 31;
    const uint8_t* w[kRowsPerWarp];
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
        const int mat = kSwiglu ? r : 0;
        const int64_t out = kSwiglu ? out0 : min(out0 + r, static_cast<int64_t>(a.n_out) - 1);
        w[r] = a.w[mat] + static_cast<size_t>(expert) * a.expert_bytes[mat] + static_cast<size_t>(out) * a.row_bytes[mat];
    }
    const float* x[kTokens];
    bool vec = true;  // every row on a 16-byte boundary (uniform across the warp)
#pragma unroll
    for (int t = 0; t < kTokens; ++t) {
        const int64_t r = row0 + min(t, n_rows - 1);
        const int64_t src = a.row_src ? a.row_src[r] : r;
        x[t] = a.x + src * a.x_stride;
        vec = vec && aligned16(x[t]);
    }

    float acc[kRowsPerWarp][kTokens];
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
#pragma unroll
        for (int t = 0; t < kTokens; ++t) acc[r][t] = 0.0f;
    }
    const int n_groups = (a.n_in + kGroupElems - 1) / kGroupElems;
#pragma unroll 2
    for (int gi = lane; gi < n_groups; gi += 32) {
        float wv[kRowsPerWarp][kGroupElems];
#pragma unroll
        for (int r = 0; r < kRowsPerWarp; ++r) dequant_group<Fmt>(w[r], gi, a.n_in, wv[r]);
#pragma unroll
        for (int t = 0; t < kTokens; ++t) {
            float xv[kGroupElems];
            load_x8(x[t], gi * kGroupElems, a.n_in, vec, xv);
#pragma unroll
            for (int i = 0; i < kGroupElems; ++i) {
#pragma unroll
                for (int r = 0; r < kRowsPerWarp; ++r) acc[r][t] = __fmaf_rn(wv[r][i], xv[i], acc[r][t]);
            }
        }
    }

    // Every lane ends with every sum; lane r * kTokens + t stores (row r, token t).
    float mine = 0.0f, up = 0.0f;
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
#pragma unroll
        for (int t = 0; t < kTokens; ++t) {
            const float sum = warp_sum(acc[r][t]);
            if (kSwiglu) {
                if (lane == t && r == 0) mine = sum;  // gate
                if (lane == t && r == 1) up = sum;
            } else if (lane == r * kTokens + t) {
                mine = sum;
            }
        }
    }
    if (kSwiglu) {
        if (lane < n_rows) a.y[(row0 + lane) * a.y_stride + out0] = silu(mine) * up;
    } else {
        const int t = lane % kTokens, r = lane / kTokens;
        if (r < kRowsPerWarp && t < n_rows && out0 + r < a.n_out) a.y[(row0 + t) * a.y_stride + out0 + r] = mine;
    }
}

// kMaxTokens (1, 2, 4 or 8): the largest row group the launch can meet. A kernel's registers (and so
// its occupancy) are those of its largest token body, so launches whose largest group the host knows
// to be small (a dense product's row count; no expert has more rows than the call) get a kernel
// without the bodies they never run. SwiGLU always gets all four (fewer kernels to compile).
template <class Fmt, bool kSwiglu, int kMaxTokens>
__global__ void __launch_bounds__(kThreads) matvec_kernel(ProductArgs a, int64_t n_slots) {
    constexpr int kOutputsPerWarp = kSwiglu ? 1 : kRowsPerWarp;
    const int warp = threadIdx.x / 32;
    const int64_t out0 = (static_cast<int64_t>(blockIdx.x) * kWarps + warp) * kOutputsPerWarp;
    if (out0 >= a.n_out) return;  // whole warps only: nothing below synchronises across warps
    for (int64_t slot = blockIdx.y; slot < n_slots; slot += gridDim.y) {
        RowRange rows;
        if (a.offsets == nullptr) {
            rows.count = a.n_rows;
        } else if (!matvec_slot(a.offsets, a.n_expert, a.n_rows, slot, &rows)) {
            break;  // slots are numbered in order: the later ones are empty too
        }
        for (int64_t row0 = rows.begin; row0 < rows.begin + rows.count; row0 += kMaxTokens) {
            const int n = static_cast<int>(min(static_cast<int64_t>(kMaxTokens), rows.begin + rows.count - row0));
            // Token counts round up to 1, 2, 4 or 8 (uniform per warp): four bodies instead of eight.
            if (kMaxTokens == 1 || n == 1) {
                matvec_rows<Fmt, kSwiglu, 1>(a, rows.expert, row0, n, out0);
            } else if (kMaxTokens == 2 || n == 2) {
                matvec_rows<Fmt, kSwiglu, (kMaxTokens < 2 ? kMaxTokens : 2)>(a, rows.expert, row0, n, out0);
            } else if (kMaxTokens == 4 || n <= 4) {
                matvec_rows<Fmt, kSwiglu, (kMaxTokens < 4 ? kMaxTokens : 4)>(a, rows.expert, row0, n, out0);
            } else {
                matvec_rows<Fmt, kSwiglu, kMaxTokens>(a, rows.expert, row0, n, out0);
            }
        }
    }
}

}  // namespace

cudaError_t launch_matvec(uint32_t type, bool swiglu, const ProductArgs& a, cudaStream_t stream) {
    const int outputs_per_block = kWarps * (swiglu ? 1 : kRowsPerWarp);
    // Dense: one row group. Experts: each non-empty expert needs a row, so at most
    // min(n_expert, n_rows) slots are used; blocks past 65535 loop over slots instead.
    const int64_t n_slots = a.offsets ? std::min<int64_t>(a.n_expert, a.n_rows) : 1;
    const dim3 grid(static_cast<unsigned>((a.n_out + outputs_per_block - 1) / outputs_per_block),
                    static_cast<unsigned>(std::min<int64_t>(n_slots, 65535)));
    static_assert(kMatvecMaxRows == 8, "the largest token body is 8");
    const int64_t largest_group = std::min(a.n_rows, kMatvecMaxRows);
    const bool known = visit_block_format(type, [&](auto fmt) {
        using Fmt = decltype(fmt);
        if (swiglu) {
            matvec_kernel<Fmt, true, 8><<<grid, kThreads, 0, stream>>>(a, n_slots);
        } else if (largest_group <= 1) {
            matvec_kernel<Fmt, false, 1><<<grid, kThreads, 0, stream>>>(a, n_slots);
        } else if (largest_group <= 2) {
            matvec_kernel<Fmt, false, 2><<<grid, kThreads, 0, stream>>>(a, n_slots);
        } else if (largest_group <= 4) {
            matvec_kernel<Fmt, false, 4><<<grid, kThreads, 0, stream>>>(a, n_slots);
        } else {
            matvec_kernel<Fmt, false, 8><<<grid, kThreads, 0, stream>>>(a, n_slots);
        }
    });
    return known ? cudaGetLastError() : cudaErrorInvalidValue;
}

}  // namespace moe::cuda::detail
