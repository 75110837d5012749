#include "backend_kv.cuh"

#include <algorithm>
#include <memory>
#include <string>

#include "common/error.h"
#include "kernels/ops.h"
#include "kv/kv_cache.h"
#include "quant/ggml_types.h"
#include "quant/quant.h"

namespace moe::cuda::backend {

namespace {

constexpr size_t kPlaneAlign = 256;
// Positions uploaded per round (export, dequantize, copy, store).
constexpr uint32_t kUploadSlice = 256;

size_t align_up(size_t v) { return (v + kPlaneAlign - 1) / kPlaneAlign * kPlaneAlign; }

// FNV-1a of the CPU cache's K row of `pos` in `layer` (a layer without a ring: row pos).
uint64_t row_stamp(const kv::KvCache& cache, int layer, uint32_t pos) {
    const kernels::KvRows r = cache.k_rows(static_cast<uint32_t>(layer));
    const uint8_t* p = r.data + static_cast<size_t>(r.ring ? pos % r.ring : pos) * r.row_bytes;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < r.row_bytes; ++i) h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

// Copies the CPU cache's rows of positions [from, to) to the device, converting them to fp32 on the
// host (the cache may be F16, F32 or Q8_0) and to F16 on the device.
void upload_rows(DeviceKv& d, const kv::KvCache& cache, uint32_t from, uint32_t to, KvUploader& up) {
    const uint32_t type = cache.type();
    const quant::TypeTraits* traits = quant::type_traits(type);
    if (!traits) throw Error(ErrorCode::InvalidArgument, "KV cache of an unknown type");
    const KvWidths w = d.widths;
    const size_t k_row = quant::row_size(*traits, w.k);
    const size_t v_row = w.v ? quant::row_size(*traits, w.v) : 0;
    const size_t staging = sizeof(float) * kUploadSlice * std::max(w.k, w.v);
    if (up.staging.size() < staging) {
        check(cudaStreamSynchronize(up.stream), "a stream synchronization before growing the KV staging buffer");
        up.staging.allocate(staging, "staging KV rows");
    }
    float* d_rows = static_cast<float*>(up.staging.get());
    for (uint32_t p = from; p < to; p += kUploadSlice) {
        const uint32_t cnt = std::min(kUploadSlice, to - p);
        up.bytes.resize(cache.row_bytes(cnt));
        // Positions a sliding-window ring no longer holds come as zero rows, as a saved state has them.
        cache.export_rows(p, cnt, up.bytes.data(), /*unheld_as_zero=*/true);
        const uint8_t* src = up.bytes.data();  // per layer: K [cnt][k_row], then V [cnt][v_row]
        const auto plane = [&](const KvRowsDevice& dst, uint32_t width, size_t row_bytes) {
            up.rows.resize(static_cast<size_t>(cnt) * width);
            for (uint32_t r = 0; r < cnt; ++r) {
                quant::dequantize(type, src + r * row_bytes, up.rows.data() + static_cast<size_t>(r) * width, width, up.isa,
                                  "KV cache");
            }
            src += static_cast<size_t>(cnt) * row_bytes;
            // From pageable memory: returns once the host rows are staged, so up.rows may be reused;
            // the device staging buffer is reused only by later work on the same stream.
            check(cudaMemcpyAsync(d_rows, up.rows.data(), sizeof(float) * up.rows.size(), cudaMemcpyHostToDevice, up.stream),
                  "copying KV rows to the GPU");
            // store_kv stores its first plane; the second (V) is left out here.
            check(store_kv(dst, d_rows, width, width, KvRowsDevice{}, nullptr, 0, 0, p, cnt, up.stream), "store_kv (upload)");
        };
        for (size_t il = 0; il < d.k.size(); ++il) {
            plane(d.k[il], w.k, k_row);
            if (w.v) plane(d.v[il], w.v, v_row);
        }
    }
}

}  // namespace

DeviceKv::~DeviceKv() {
    if (!block) return;
    int previous = -1;
    const bool restore = cudaGetDevice(&previous) == cudaSuccess && previous != device;
    if (restore) cudaSetDevice(device);
    cudaFree(block);
    if (restore) cudaSetDevice(previous);
    cudaGetLastError();
}

DeviceKv& attach_device_kv(kv::KvCache& cache, uint64_t owner, int device, KvWidths widths, cudaStream_t stream) {
    std::shared_ptr<void>& slot = cache.device_state();
    if (slot) {
        auto* d = static_cast<DeviceKv*>(slot.get());
        if (d->magic == DeviceKv::kMagic && d->owner == owner) return *d;
        slot.reset();  // rows of a backend that no longer exists
    }
    auto d = std::make_shared<DeviceKv>();
    d->owner = owner;
    d->device = device;
    d->capacity = cache.capacity();
    d->widths = widths;
    const uint32_t n_layer = cache.n_layer();
    d->k.resize(n_layer);
    d->v.resize(n_layer);
    std::vector<size_t> k_off(n_layer), v_off(n_layer);
    size_t total = 0;
    for (uint32_t il = 0; il < n_layer; ++il) {
        const uint32_t ring = cache.k_rows(il).ring;
        const int64_t rows = ring ? ring : cache.capacity();
        d->k[il] = KvRowsDevice{nullptr, widths.k, rows, ring != 0};
        k_off[il] = total;
        total += align_up(sizeof(uint16_t) * static_cast<size_t>(rows) * widths.k);
        if (widths.v) {
            d->v[il] = KvRowsDevice{nullptr, widths.v, rows, ring != 0};
            v_off[il] = total;
            total += align_up(sizeof(uint16_t) * static_cast<size_t>(rows) * widths.v);
        }
        if (ring == 0) d->probe_layer = static_cast<int>(il);
    }
    void* block = nullptr;
    const cudaError_t err = cudaMalloc(&block, std::max<size_t>(total, 1));
    if (err != cudaSuccess) {
        cudaGetLastError();
        throw Error(ErrorCode::OutOfMemory, "CUDA: not enough GPU memory for the KV cache of a sequence of " +
                                                std::to_string(cache.capacity()) + " tokens (" + std::to_string(total) +
                                                " bytes): " + cudaGetErrorString(err));
    }
    d->block = block;  // freed by ~DeviceKv from here on
    check(cudaMemsetAsync(block, 0, total, stream), "clearing a sequence's KV rows");
    for (uint32_t il = 0; il < n_layer; ++il) {
        d->k[il].data = reinterpret_cast<uint16_t*>(static_cast<char*>(block) + k_off[il]);
        if (widths.v) d->v[il].data = reinterpret_cast<uint16_t*>(static_cast<char*>(block) + v_off[il]);
    }
    d->stamp.assign(cache.capacity(), 0);
    DeviceKv& ref = *d;
    slot = std::move(d);
    return ref;
}

void sync_from_cpu(DeviceKv& d, const kv::KvCache& cache, uint32_t pos0, KvUploader& up) {
    uint32_t v = std::min(d.valid, pos0);
    // Rows imported into the CPU cache since the device wrote its own end at the committed length:
    // the last position the device believes in tells. (Without a probe layer, i.e. only ring
    // layers, imports cannot be seen; no supported architecture has that.)
    if (v > 0 && d.probe_layer >= 0 && d.stamp[v - 1] != row_stamp(cache, d.probe_layer, v - 1)) {
        uint32_t first = 0;
        while (first < v && d.stamp[first] == row_stamp(cache, d.probe_layer, first)) ++first;
        v = first;
    }
    d.valid = v;  // rows from v on are about to change (and a failed pass must not trust them)
    if (v < pos0) {
        upload_rows(d, cache, v, pos0, up);
        if (d.probe_layer >= 0) {
            for (uint32_t p = v; p < pos0; ++p) d.stamp[p] = row_stamp(cache, d.probe_layer, p);
        }
    }
    d.valid = pos0;
}

void mark_stored(DeviceKv& d, const kv::KvCache& cache, uint32_t pos0, uint32_t n) {
    if (d.probe_layer >= 0) {
        for (uint32_t p = pos0; p < pos0 + n; ++p) d.stamp[p] = row_stamp(cache, d.probe_layer, p);
    }
    d.valid = pos0 + n;
}

}  // namespace moe::cuda::backend
