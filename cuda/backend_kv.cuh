// The CUDA backend's KV rows of one sequence, kept in the slot the CPU cache offers for them
// (kv::KvCache::device_state()), and how they stay equal to the CPU cache's rows. Internal to
// cuda/.
//
// Device layout (cuda/attention.cuh): per layer an F16 K plane of `rows` x k_width and, unless the
// layer is MLA, an F16 V plane of `rows` x v_width, row-major (V is not transposed on the GPU);
// rows = the cache's capacity, or the ring size of a sliding-window layer exactly as the CPU cache
// has it (KvCache::k_rows(layer).ring), position p in row p % ring. Whatever type the CPU cache
// uses (F16, F32, Q8_0), the device keeps F16: the attention kernels read nothing else.
//
// Who writes what: the forward pass stores a chunk's rows on the device and copies the same fp32
// rows into the CPU cache (store_k / store_v, so saveState, the prefix cache and a later CPU pass
// see them). Rows can also reach the CPU cache without a device pass: a restored prefix
// (PrefixCache::restore -> import_rows) or a loaded state (load_state: truncate(0), import_rows).
// Such imports always end at the length they commit, so a pass starting at pos0 finds them by
// checking one position: `valid` says how many leading positions the device holds equal to the CPU
// rows, `stamp[p]` is a hash of the CPU cache's K row of position p in a probe layer (the last
// layer without a ring: its row depends on the whole prefix) taken when the device row was written.
// At the start of a pass, v = min(valid, pos0); if stamp[v - 1] no longer matches the CPU row, the
// stamps are scanned from 0 for the first mismatch; the CPU rows of [v, pos0) are then uploaded.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include "attention.cuh"
#include "backend_util.cuh"
#include "cpu/cpu_features.h"

namespace moe::kv {
class KvCache;
}

namespace moe::cuda::backend {

// Elements per position of every layer's K and V rows (v == 0: MLA, no V plane).
struct KvWidths {
    uint32_t k = 0;
    uint32_t v = 0;
};

struct DeviceKv {
    static constexpr uint64_t kMagic = 0x6d6f652d6b762d31ull;  // "moe-kv-1"
    uint64_t magic = kMagic;
    uint64_t owner = 0;   // the backend that made it (a process-wide serial number)
    int device = 0;
    uint32_t capacity = 0;
    KvWidths widths;
    void* block = nullptr;             // every plane, one allocation
    std::vector<KvRowsDevice> k, v;    // [n_layer]; v[il].data is null without a V plane
    uint32_t valid = 0;                // positions [0, valid) equal the CPU cache's rows
    int probe_layer = -1;              // layer whose CPU K rows the stamps hash (-1: none, see sync)
    std::vector<uint64_t> stamp;       // [capacity]

    DeviceKv() = default;
    DeviceKv(const DeviceKv&) = delete;
    DeviceKv& operator=(const DeviceKv&) = delete;
    ~DeviceKv();
};

// The device rows of `cache` for backend `owner`: the ones its device_state() holds, else new ones
// (zeroed on `stream`) stored there, freed with the cache. Throws Error(OutOfMemory) when the
// device cannot hold them.
DeviceKv& attach_device_kv(kv::KvCache& cache, uint64_t owner, int device, KvWidths widths, cudaStream_t stream);

// Host and device staging for copying CPU cache rows to the device.
struct KvUploader {
    cudaStream_t stream = nullptr;
    cpu::Isa isa = cpu::Isa::Scalar;
    DeviceBuffer staging;          // fp32 rows of one slice of positions
    std::vector<uint8_t> bytes;    // exported rows
    std::vector<float> rows;       // one plane's rows as fp32
};

// Before a pass whose first position is pos0 (== cache.length()): makes the device rows of
// positions [0, pos0) those of the CPU cache (see the top of this file), uploading what differs.
// Leaves d.valid == pos0.
void sync_from_cpu(DeviceKv& d, const kv::KvCache& cache, uint32_t pos0, KvUploader& up);

// After a pass stored positions [pos0, pos0 + n) on the device and in the CPU cache: records their
// stamps and makes them valid.
void mark_stored(DeviceKv& d, const kv::KvCache& cache, uint32_t pos0, uint32_t n);

}  // namespace moe::cuda::backend
