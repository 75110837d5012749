// Which rows a thread block of the expert-grouped kernels works on. The host launches before it
// knows how rows are spread over experts (d_offsets lives on the device), so grids are sized for the
// worst case and each block maps its index to work by scanning the offsets:
//   matrix-vector kernel: slot k = the k-th expert (in expert order) with 1..kMatvecMaxRows rows;
//     at most min(n_expert, n_rows) slots can be non-empty.
//   tile kernel: tile t of the list made by cutting every expert with more than kMatvecMaxRows rows
//     into tiles of tile_rows rows, experts in order; at most ceil(n_rows / tile_rows) +
//     min(n_expert, n_rows / (kMatvecMaxRows + 1)) tiles exist (one partial tile per large expert).
// Blocks whose index maps to nothing exit at once, and empty experts never get a block. A scan reads
// n_expert + 1 offsets (L1/L2-resident after the first block) and costs a few shuffles per 32
// experts, so no tile list has to be built (and allocated) before the launch. Internal to cuda/.
#pragma once

#include <cstdint>

#include "matmul.cuh"

namespace moe::cuda::detail {

// Rows [begin, begin + count) of y and of the row sources, all multiplied by one expert's weights.
struct RowRange {
    int expert = 0;
    int64_t begin = 0;
    int64_t count = 0;
};

constexpr unsigned kFullWarp = 0xFFFFFFFFu;

// Expert e's rows, clamped into [0, n_rows] so that malformed offsets can never address rows
// outside y.
__device__ __forceinline__ void expert_rows(const int32_t* offsets, int e, int64_t n_rows, int64_t* begin,
                                            int64_t* count) {
    const int64_t b = min(max(static_cast<int64_t>(offsets[e]), int64_t{0}), n_rows);
    const int64_t end = min(max(static_cast<int64_t>(offsets[e + 1]), b), n_rows);
    *begin = b;
    *count = end - b;
}

// The slot-th expert with 1..kMatvecMaxRows rows. All 32 lanes of the warp call it with the same
// arguments and get the same answer; false when fewer such experts exist.
__device__ inline bool matvec_slot(const int32_t* offsets, int n_expert, int64_t n_rows, int64_t slot, RowRange* out) {
    const int lane = threadIdx.x & 31;
    for (int base = 0; base < n_expert; base += 32) {
        const int e = base + lane;
        int64_t begin = 0, count = 0;
        if (e < n_expert) expert_rows(offsets, e, n_rows, &begin, &count);
        unsigned small = __ballot_sync(kFullWarp, count >= 1 && count <= kMatvecMaxRows);
        const int n_small = __popc(small);
        if (slot < n_small) {
            for (int64_t i = 0; i < slot; ++i) small &= small - 1;  // drop the lower `slot` experts
            const int hit = __ffs(static_cast<int>(small)) - 1;
            out->expert = base + hit;
            out->begin = __shfl_sync(kFullWarp, begin, hit);
            out->count = __shfl_sync(kFullWarp, count, hit);
            return true;
        }
        slot -= n_small;
    }
    return false;
}

// Tile `tile` of the large experts' tile list (see the top of this file). Same calling rules as
// matvec_slot.
__device__ inline bool expert_tile(const int32_t* offsets, int n_expert, int64_t n_rows, int64_t tile, int tile_rows,
                                   RowRange* out) {
    const int lane = threadIdx.x & 31;
    for (int base = 0; base < n_expert; base += 32) {
        const int e = base + lane;
        int64_t begin = 0, count = 0;
        if (e < n_expert) expert_rows(offsets, e, n_rows, &begin, &count);
        const int64_t tiles = count > kMatvecMaxRows ? (count + tile_rows - 1) / tile_rows : 0;
        int64_t inclusive = tiles;  // tiles of experts base .. e
#pragma unroll
        for (int d = 1; d < 32; d <<= 1) {
            const int64_t below = __shfl_up_sync(kFullWarp, inclusive, d);
            if (lane >= d) inclusive += below;
        }
        const int64_t total = __shfl_sync(kFullWarp, inclusive, 31);
        if (tile < total) {
            // The first lane whose inclusive count passes `tile` owns it (and has tiles > 0).
            const int hit = __ffs(static_cast<int>(__ballot_sync(kFullWarp, inclusive > tile))) - 1;
            const int64_t first = __shfl_sync(kFullWarp, inclusive - tiles, hit);
            const int64_t skip = (tile - first) * tile_rows;
            out->expert = base + hit;
            out->begin = __shfl_sync(kFullWarp, begin, hit) + skip;
            out->count = min(static_cast<int64_t>(tile_rows), __shfl_sync(kFullWarp, count, hit) - skip);
            return true;
        }
        tile -= total;
    }
    return false;
}

}  // namespace moe::cuda::detail
