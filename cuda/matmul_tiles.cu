// Tensor-core tile kernel: products of more than kMatvecMaxRows activation rows per weight (prompt
// chunks, and the experts many tokens route to). WMMA 16x16x16 with half inputs and fp32
// accumulators (sm_70+; the build targets sm_80+).
//
// A block computes a kTileRows x kTileOuts tile of y (rows x outputs) over K in steps of kTileK:
// each step its 128 threads stage the activation tile (x rows -> half) and the weight tile(s)
// (dequantized in registers from the GGUF blocks -> half) in shared memory, then each of the four
// warps multiplies its 32 x 32 quarter (2 x 2 fragments). The accumulators go through shared memory
// to y so that partial tiles (rows past the group, outputs past n_out) are simply not stored.
// SwiGLU stages gate and up tiles for the same rows and combines the two accumulators elementwise
// (fragments of one type share their element mapping) before the store.
//
// Launch: blockIdx.x picks kTileOuts outputs, blockIdx.y a row tile (dense: rows
// [64 t, 64 t + 64); experts: an expert_tile, matmul_schedule.cuh). Consecutive blocks share a row
// tile, so its activation rows stay in L2 while the weights stream.
//
// Precision: half has an 11-bit significand, so each rounded input is within 2^-11 relative of its
// float, each product within ~2^-10, and the fp32 sum of K products within ~1e-3 * sum |w x|.
#include <mma.h>

#include <algorithm>

#include "matmul_internal.cuh"
#include "matmul_schedule.cuh"
#include "quant_blocks.cuh"

namespace moe::cuda::detail {

namespace {

constexpr int kTileRows = 64;   // activation rows per tile
constexpr int kTileOuts = 64;   // outputs (weight rows) per tile
constexpr int kTileK = 64;      // K elements per step
constexpr int kThreads = 128;   // 4 warps, 2 x 2 over the tile
constexpr int kHalfLd = kTileK + 8;       // half tiles' row stride: a multiple of 8 (WMMA), skewed off 128 bytes
constexpr int kOutLd = kTileOuts + 4;     // float output tile's row stride
constexpr int kGroupsPerRow = kTileK / kGroupElems;                  // 8-element groups per staged row
constexpr int kStagedPerThread = kTileRows * kGroupsPerRow / kThreads;  // groups each thread stages per tile
static_assert(kTileRows == kTileOuts, "activation and weight tiles share one staging pattern");
static_assert(kThreads % kGroupsPerRow == 0 && kStagedPerThread * kThreads == kTileRows * kGroupsPerRow);

// Shared memory of a block: the staged half tiles, later overlaid by the float output tile.
template <int kMats>
constexpr int kStagingBytes = (kTileRows + kMats * kTileOuts) * kHalfLd * 2;
constexpr int kOutputBytes = kTileRows * kOutLd * 4;
template <int kMats>
constexpr int kSmemBytes = kStagingBytes<kMats> > kOutputBytes ? kStagingBytes<kMats> : kOutputBytes;

// 8 floats as halves (round to nearest) into 16 bytes of shared memory at a 16-byte boundary.
__device__ __forceinline__ void store_half8(__half* dst, const float v[8]) {
    union {
        __half2 h[4];
        uint4 u;
    } pack;
#pragma unroll
    for (int i = 0; i < 4; ++i) pack.h[i] = __floats2half2_rn(v[2 * i], v[2 * i + 1]);
    *reinterpret_cast<uint4*>(dst) = pack.u;
}

// One kTileRows x kTileOuts tile of y: rows `rows`, outputs [out_base, out_base + kTileOuts).
// xs: [kTileRows][kHalfLd], ws: [kMats][kTileOuts][kHalfLd] (half); os: [kTileRows][kOutLd] (float)
// overlays both once the K loop is done.
template <class Fmt, bool kSwiglu>
__device__ void tile_product(const ProductArgs& a, const RowRange& rows, int64_t out_base, __half* xs, __half* ws,
                             float* os) {
    using namespace nvcuda;
    constexpr int kMats = kSwiglu ? 2 : 1;
    const int tid = threadIdx.x, warp = tid / 32;
    const int warp_row = 32 * (warp / 2), warp_out = 32 * (warp % 2);  // this warp's 32 x 32 quarter

    // Each thread stages the same slots every K step: tile rows tid / 8 + 16 i, group tid % 8 of the
    // step. Null pointers mark rows past the group / outputs past n_out (staged as zeros).
    const int group_in_step = tid % kGroupsPerRow;
    const float* x_row[kStagedPerThread];
    bool x_vec[kStagedPerThread];
    const uint8_t* w_row[kMats][kStagedPerThread];
#pragma unroll
    for (int i = 0; i < kStagedPerThread; ++i) {
        const int m = tid / kGroupsPerRow + i * (kThreads / kGroupsPerRow);
        x_row[i] = nullptr;
        if (m < rows.count) {
            const int64_t r = rows.begin + m;
            x_row[i] = a.x + (a.row_src ? a.row_src[r] : r) * a.x_stride;
        }
        x_vec[i] = aligned16(x_row[i]);
        const int64_t out = out_base + m;
#pragma unroll
        for (int mat = 0; mat < kMats; ++mat) {
            w_row[mat][i] = out < a.n_out ? a.w[mat] + static_cast<size_t>(rows.expert) * a.expert_bytes[mat] +
                                                static_cast<size_t>(out) * a.row_bytes[mat]
                                          : nullptr;
        }
    }

    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[kMats][2][2];
#pragma unroll
    for (int mat = 0; mat < kMats; ++mat) {
#pragma unroll
        for (int i = 0; i < 2; ++i) {
#pragma unroll
            for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc[mat][i][j], 0.0f);
        }
    }

    for (int k0 = 0; k0 < a.n_in; k0 += kTileK) {
        const int k = k0 + kGroupElems * group_in_step;  // first element of this thread's group
#pragma unroll
        for (int i = 0; i < kStagedPerThread; ++i) {
            const int m = tid / kGroupsPerRow + i * (kThreads / kGroupsPerRow);
            float v[kGroupElems];
            if (x_row[i] && k < a.n_in) {
                load_x8(x_row[i], k, a.n_in, x_vec[i], v);
            } else {
#pragma unroll
                for (int e = 0; e < kGroupElems; ++e) v[e] = 0.0f;
            }
            store_half8(xs + m * kHalfLd + kGroupElems * group_in_step, v);
#pragma unroll
            for (int mat = 0; mat < kMats; ++mat) {
                if (w_row[mat][i] && k < a.n_in) {
                    dequant_group<Fmt>(w_row[mat][i], k / kGroupElems, a.n_in, v);
                } else {
#pragma unroll
                    for (int e = 0; e < kGroupElems; ++e) v[e] = 0.0f;
                }
                store_half8(ws + (mat * kTileOuts + m) * kHalfLd + kGroupElems * group_in_step, v);
            }
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < kTileK; kk += 16) {
            // A = x rows (row-major); B[k][n] = W[n][k], i.e. the staged weight rows read column-major.
            wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> frag_x[2];
#pragma unroll
            for (int i = 0; i < 2; ++i) wmma::load_matrix_sync(frag_x[i], xs + (warp_row + 16 * i) * kHalfLd + kk, kHalfLd);
#pragma unroll
            for (int mat = 0; mat < kMats; ++mat) {
#pragma unroll
                for (int j = 0; j < 2; ++j) {
                    wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::col_major> frag_w;
                    wmma::load_matrix_sync(frag_w, ws + (mat * kTileOuts + warp_out + 16 * j) * kHalfLd + kk, kHalfLd);
#pragma unroll
                    for (int i = 0; i < 2; ++i) wmma::mma_sync(acc[mat][i][j], frag_x[i], frag_w, acc[mat][i][j]);
                }
            }
        }
        __syncthreads();  // the next step (or the output tile) overwrites the staged tiles
    }

#pragma unroll
    for (int i = 0; i < 2; ++i) {
#pragma unroll
        for (int j = 0; j < 2; ++j) {
            if constexpr (kSwiglu) {
                for (int e = 0; e < acc[0][i][j].num_elements; ++e) {
                    acc[0][i][j].x[e] = silu(acc[0][i][j].x[e]) * acc[1][i][j].x[e];
                }
            }
            wmma::store_matrix_sync(os + (warp_row + 16 * i) * kOutLd + warp_out + 16 * j, acc[0][i][j], kOutLd,
                                    wmma::mem_row_major);
        }
    }
    __syncthreads();
    // Consecutive threads store consecutive outputs of a row.
    for (int idx = tid; idx < kTileRows * kTileOuts; idx += kThreads) {
        const int m = idx / kTileOuts, n = idx % kTileOuts;
        const int64_t out = out_base + n;
        if (m < rows.count && out < a.n_out) a.y[(rows.begin + m) * a.y_stride + out] = os[m * kOutLd + n];
    }
    __syncthreads();  // the next tile's staging overwrites os
}

template <class Fmt, bool kSwiglu>
__global__ void __launch_bounds__(kThreads) tile_kernel(ProductArgs a, int64_t n_tiles) {
    constexpr int kMats = kSwiglu ? 2 : 1;
    __shared__ __align__(128) unsigned char smem[kSmemBytes<kMats>];
    __half* xs = reinterpret_cast<__half*>(smem);
    __half* ws = xs + kTileRows * kHalfLd;
    float* os = reinterpret_cast<float*>(smem);
    const int64_t out_base = static_cast<int64_t>(blockIdx.x) * kTileOuts;
    for (int64_t tile = blockIdx.y; tile < n_tiles; tile += gridDim.y) {
        RowRange rows;
        if (a.offsets == nullptr) {
            rows.begin = tile * kTileRows;
            rows.count = min(static_cast<int64_t>(kTileRows), a.n_rows - rows.begin);
        } else if (!expert_tile(a.offsets, a.n_expert, a.n_rows, tile, kTileRows, &rows)) {
            break;  // every warp gets the same answer; tiles are numbered in order, so later ones are empty too
        }
        tile_product<Fmt, kSwiglu>(a, rows, out_base, xs, ws, os);
    }
}

}  // namespace

cudaError_t launch_tiles(uint32_t type, bool swiglu, const ProductArgs& a, cudaStream_t stream) {
    int64_t n_tiles = (a.n_rows + kTileRows - 1) / kTileRows;
    if (a.offsets) n_tiles += std::min<int64_t>(a.n_expert, a.n_rows / (kMatvecMaxRows + 1));  // partial tiles
    const dim3 grid(static_cast<unsigned>((a.n_out + kTileOuts - 1) / kTileOuts),
                    static_cast<unsigned>(std::min<int64_t>(n_tiles, 65535)));
    const bool known = visit_block_format(type, [&](auto fmt) {
        using Fmt = decltype(fmt);
        if (swiglu) {
            tile_kernel<Fmt, true><<<grid, kThreads, 0, stream>>>(a, n_tiles);
        } else {
            tile_kernel<Fmt, false><<<grid, kThreads, 0, stream>>>(a, n_tiles);
        }
    });
    return known ? cudaGetLastError() : cudaErrorInvalidValue;
}

}  // namespace moe::cuda::detail
