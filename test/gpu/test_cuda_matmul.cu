// Backend consistency of the CUDA matrix products (cuda/matmul.cuh) and of the block decoders they
// share with dequantize_row (cuda/quant_blocks.cuh): every weight type, quantized on the CPU with the
// scalar quantizers, against moe::kernels::matmul_reference (dequantize, then a double dot product).
// Without a CUDA device it says so and passes nothing: run it on a GPU machine (npm run build:cuda,
// then build-cuda/test_cuda_matmul or ctest there).
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "../native/check.h"
#include "cuda_check.cuh"
#include "dequantize.cuh"
#include "kernels/matmul.h"
#include "matmul.cuh"
#include "quant/quant.h"

namespace {

using moe::quant::GgmlType;


const GgmlType kTypes[] = {GgmlType::F32,  GgmlType::F16,  GgmlType::BF16, GgmlType::Q4_0, GgmlType::Q4_1,
                           GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q8_0, GgmlType::Q2_K, GgmlType::Q3_K,
                           GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K, GgmlType::MXFP4};

const int64_t kTokenCounts[] = {1, 2, 7, 8, 9, 33, 300};

// Tolerances, as |got - ref| <= rel * sum_k |W[o,k] x[t,k]| + abs.
// Matrix-vector path (<= kMatvecMaxRows rows per weight): the dequantized weights are exact and the
// products fp32, so only the fp32 summation order differs from the double reference: a few ulps
// (6e-8 each) of the sum of magnitudes.
constexpr double kMatvecRel = 1e-4, kMatvecAbs = 1e-6;
// Tensor-core path: weights and activations are rounded to half, whose 11-bit significand puts each
// input within 2^-11 (4.9e-4) of its float and each product within ~2^-10 (9.8e-4) relative; fp32
// accumulation adds far less, so the sum is within ~1e-3 of the sum of magnitudes and 2e-3 leaves a
// factor of two. The absolute term covers half's subnormals (below 6.1e-5 a half keeps only an
// absolute precision of 6e-8).
constexpr double kTileRel = 2e-3, kTileAbs = 1e-5;

struct Tolerance {
    double rel, abs;
};
Tolerance tolerance_for(int64_t rows_per_weight) {
    return rows_per_weight <= moe::cuda::kMatvecMaxRows ? Tolerance{kMatvecRel, kMatvecAbs} : Tolerance{kTileRel, kTileAbs};
}

// Device memory freed at scope exit.
template <class T>
class DeviceBuffer {
  public:
    explicit DeviceBuffer(size_t n) {
        if (cudaMalloc(&ptr_, std::max<size_t>(n, 1) * sizeof(T)) != cudaSuccess) ptr_ = nullptr;
        n_ = n;
    }
    DeviceBuffer(const DeviceBuffer&) = delete;
    DeviceBuffer& operator=(const DeviceBuffer&) = delete;
    ~DeviceBuffer() { cudaFree(ptr_); }
    T* get() const { return ptr_; }
    bool upload(const std::vector<T>& v) {
        return ptr_ && v.size() <= n_ && cudaMemcpy(ptr_, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice) == cudaSuccess;
    }
    std::vector<T> download() const {
        std::vector<T> v(n_);
        if (!ptr_ || cudaMemcpy(v.data(), ptr_, n_ * sizeof(T), cudaMemcpyDeviceToHost) != cudaSuccess) v.clear();
        return v;
    }

  private:
    T* ptr_ = nullptr;
    size_t n_ = 0;
};

// A quantized matrix of `rows` rows of n_in (an expert tensor is n_expert * n_out rows), with its
// exact dequantized values for the error bounds.
struct HostMatrix {
    uint32_t type = 0;
    int64_t n_in = 0, rows = 0;
    size_t row_bytes = 0;
    std::vector<uint8_t> bytes;
    std::vector<float> values;  // [rows, n_in]

    moe::kernels::WeightMatrix rows_from(int64_t first_row, int64_t n_out) const {
        return {bytes.data() + static_cast<size_t>(first_row) * row_bytes, type, n_in, n_out, row_bytes};
    }
};

HostMatrix random_matrix(GgmlType type, int64_t n_in, int64_t rows, std::mt19937& rng) {
    const uint32_t id = static_cast<uint32_t>(type);
    HostMatrix m;
    m.type = id;
    m.n_in = n_in;
    m.rows = rows;
    m.row_bytes = moe::quant::row_size(*moe::quant::type_traits(id), n_in);
    m.bytes.resize(m.row_bytes * rows);
    m.values.resize(static_cast<size_t>(n_in * rows));
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<float> row(n_in);
    for (int64_t r = 0; r < rows; ++r) {
        for (float& v : row) v = normal(rng);
        row[r % n_in] *= 8.0f;  // an outlier, so block scales vary
        uint8_t* dst = m.bytes.data() + r * m.row_bytes;
        moe::quant::quantize(id, row.data(), dst, n_in, moe::cpu::Isa::Scalar);
        moe::quant::dequantize(id, dst, m.values.data() + r * n_in, n_in, moe::cpu::Isa::Scalar);
    }
    return m;
}

std::vector<float> random_floats(size_t n, std::mt19937& rng) {
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<float> v(n);
    for (float& f : v) f = normal(rng);
    return v;
}

// sum_k |W[o, k] x[k]| for one weight row and one activation row.
double magnitude(const float* w, const float* x, int64_t n) {
    double s = 0.0;
    for (int64_t k = 0; k < n; ++k) s += std::fabs(static_cast<double>(w[k]) * x[k]);
    return s;
}

// A NaN with a payload no kernel produces: output cells outside [n_rows, n_out] must keep it.
constexpr uint32_t kSentinelBits = 0x7FC0DEADu;
float sentinel() {
    float f;
    std::memcpy(&f, &kSentinelBits, sizeof f);
    return f;
}
bool is_sentinel(float f) {
    uint32_t bits;
    std::memcpy(&bits, &f, sizeof bits);
    return bits == kSentinelBits;
}

// The largest |got - ref| / allowed seen per path since the last report: the margin the tolerances
// leave on the machine that runs the test.
double g_worst[2] = {0.0, 0.0};  // [matrix-vector, tiles]

void report_worst(const char* what) {
    std::printf("  %s: worst |got - ref| / allowed: %.3f (matrix-vector), %.3f (tiles)\n", what, g_worst[0], g_worst[1]);
    g_worst[0] = g_worst[1] = 0.0;
}

// Counts failing cells of one product and reports the first; also checks that the padding columns
// of y (stride > n_out) were not written.
struct Comparison {
    int64_t failures = 0, padding_writes = 0;
    char first[256] = {};

    // tiles: the cell came from the tensor-core path (only for the margin report).
    void cell(int64_t row, int64_t out, float got, double ref, double allowed, bool tiles) {
        if (std::isfinite(got)) g_worst[tiles] = std::max(g_worst[tiles], std::fabs(got - ref) / allowed);
        if (std::isfinite(got) && std::fabs(got - ref) <= allowed) return;
        if (failures++ == 0) {
            std::snprintf(first, sizeof first, "first at row %lld out %lld: got %.9g ref %.9g (allowed %.3g)",
                          static_cast<long long>(row), static_cast<long long>(out), got, ref, allowed);
        }
    }
    void padding(float got) {
        if (!is_sentinel(got)) ++padding_writes;
    }
};

// ------------------------------------------------------------------------------------------------

TEST_CASE("cuda dequantize_row equals the scalar reference bit for bit for every matmul type") {
    std::mt19937 rng(7);
    for (GgmlType type : kTypes) {
        const uint32_t id = static_cast<uint32_t>(type);
        const moe::quant::TypeTraits& traits = *moe::quant::type_traits(id);
        CHECK_MSG(moe::cuda::can_dequantize(id), "%s", traits.name);
        std::vector<int64_t> lengths;
        for (int64_t blocks : {1, 3, 64, 1000}) lengths.push_back(blocks * traits.block_size);
        if (traits.block_size == 1) lengths.insert(lengths.end(), {5, 13, 17});  // rows ending inside a group
        for (int64_t n : lengths) {
            std::vector<float> x = random_floats(n, rng);
            x[0] = 37.0f;
            std::vector<uint8_t> bytes(moe::quant::row_size(traits, n));
            moe::quant::quantize(id, x.data(), bytes.data(), n, moe::cpu::Isa::Scalar);
            std::vector<float> expected(n);
            moe::quant::dequantize(id, bytes.data(), expected.data(), n, moe::cpu::Isa::Scalar);

            DeviceBuffer<uint8_t> d_src(bytes.size());
            DeviceBuffer<float> d_dst(n);
            CHECK(d_src.upload(bytes));
            CHECK(moe::cuda::dequantize_row(id, d_src.get(), d_dst.get(), n, nullptr) == cudaSuccess);
            const std::vector<float> got = d_dst.download();
            CHECK_MSG(got.size() == expected.size() && std::memcmp(got.data(), expected.data(), n * sizeof(float)) == 0,
                      "%s, %lld elements", traits.name, static_cast<long long>(n));
        }
    }
}

// One dense product on the device against matmul_reference. Odd cases read x through a base one
// float off 16 bytes and a stride of n_in + 3 (the scalar activation loads); y always has padding.
void check_dense(const HostMatrix& w, int64_t n_out, int64_t n_tokens, bool odd_layout, std::mt19937& rng) {
    const int64_t n_in = w.n_in;
    const int64_t x_offset = odd_layout ? 1 : 0, x_stride = n_in + (odd_layout ? 3 : 0), y_stride = n_out + 2;
    const std::vector<float> x_host = random_floats(static_cast<size_t>(x_offset + n_tokens * x_stride), rng);
    const float* x = x_host.data() + x_offset;

    std::vector<float> ref(static_cast<size_t>(n_tokens * n_out));
    moe::kernels::matmul_reference(w.rows_from(0, n_out), x, x_stride, n_tokens, ref.data(), n_out);

    DeviceBuffer<uint8_t> d_w(w.bytes.size());
    DeviceBuffer<float> d_x(x_host.size()), d_y(static_cast<size_t>(n_tokens * y_stride));
    CHECK(d_w.upload(w.bytes));
    CHECK(d_x.upload(x_host));
    CHECK(d_y.upload(std::vector<float>(static_cast<size_t>(n_tokens * y_stride), sentinel())));
    const moe::cuda::DeviceWeight dw{d_w.get(), w.type, n_in, n_out, w.row_bytes};
    CHECK(moe::cuda::matmul(dw, d_x.get() + x_offset, x_stride, n_tokens, d_y.get(), y_stride, nullptr) == cudaSuccess);
    CHECK(cudaDeviceSynchronize() == cudaSuccess);
    const std::vector<float> got = d_y.download();
    CHECK(!got.empty());
    if (got.empty()) return;

    const Tolerance tol = tolerance_for(n_tokens);
    Comparison cmp;
    for (int64_t t = 0; t < n_tokens; ++t) {
        for (int64_t o = 0; o < n_out; ++o) {
            const double bound = magnitude(w.values.data() + o * n_in, x + t * x_stride, n_in);
            cmp.cell(t, o, got[t * y_stride + o], ref[t * n_out + o], tol.rel * bound + tol.abs,
                     n_tokens > moe::cuda::kMatvecMaxRows);
        }
        for (int64_t o = n_out; o < y_stride; ++o) cmp.padding(got[t * y_stride + o]);
    }
    CHECK_MSG(cmp.failures == 0 && cmp.padding_writes == 0,
              "%s n_in %lld n_out %lld n_tokens %lld%s: %lld cells off, %lld padding writes; %s",
              moe::quant::type_name(w.type), static_cast<long long>(n_in), static_cast<long long>(n_out),
              static_cast<long long>(n_tokens), odd_layout ? " (odd layout)" : "", static_cast<long long>(cmp.failures),
              static_cast<long long>(cmp.padding_writes), cmp.first);
}

// Row lengths per type: one block, a few blocks (not a multiple of the 64-element tile step for the
// legacy formats), a longer row; float formats also rows that end inside an 8-element group.
std::vector<int64_t> row_lengths(GgmlType type) {
    const int64_t block = moe::quant::type_traits(static_cast<uint32_t>(type))->block_size;
    if (block == 1) return {1, 37, 264};
    if (block == 32) return {32, 96, 512};
    return {256, 768};
}

TEST_CASE("cuda matmul matches matmul_reference for every type, token count and shape") {
    std::mt19937 rng(11);
    for (GgmlType type : kTypes) {
        CHECK(moe::cuda::can_matmul(static_cast<uint32_t>(type)));
        const std::vector<int64_t> lengths = row_lengths(type);
        // (n_in, n_out): n_out of 1, one not a multiple of the 8-output block or the 64-output tile,
        // and one exactly a tile.
        const std::vector<std::pair<int64_t, int64_t>> shapes = {
            {lengths[0], 1}, {lengths[0], 67}, {lengths[1], 130}, {lengths.back(), 64}};
        for (const auto& [n_in, n_out] : shapes) {
            const HostMatrix w = random_matrix(type, n_in, n_out, rng);
            int variant = 0;
            for (int64_t n_tokens : kTokenCounts) check_dense(w, n_out, n_tokens, (variant++ % 2) == 1, rng);
        }
    }
    report_worst("matmul");
}

// Routed rows as the MoE layer makes them: (source row, expert) pairs in token order, then a
// counting sort by expert gives d_offsets and d_row_src.
struct Routing {
    int64_t n_expert = 0, n_x_rows = 0;
    std::vector<int32_t> offsets;  // [n_expert + 1]
    std::vector<int32_t> row_src;  // [n_rows]
    int64_t rows() const { return static_cast<int64_t>(row_src.size()); }
    int64_t count(int64_t e) const { return offsets[e + 1] - offsets[e]; }
};

Routing counting_sort(int64_t n_expert, int64_t n_x_rows, const std::vector<std::pair<int32_t, int32_t>>& pairs) {
    Routing r;
    r.n_expert = n_expert;
    r.n_x_rows = n_x_rows;
    r.offsets.assign(n_expert + 1, 0);
    for (const auto& p : pairs) ++r.offsets[p.second + 1];
    for (int64_t e = 0; e < n_expert; ++e) r.offsets[e + 1] += r.offsets[e];
    std::vector<int32_t> next(r.offsets.begin(), r.offsets.end() - 1);
    r.row_src.resize(pairs.size());
    for (const auto& p : pairs) r.row_src[next[p.second]++] = p.first;
    return r;
}

// top_k distinct experts per token, drawn with the given weights (a zero weight: never routed).
Routing route_tokens(int64_t n_tokens, int top_k, const std::vector<double>& weights, std::mt19937& rng) {
    std::vector<std::pair<int32_t, int32_t>> pairs;
    for (int64_t t = 0; t < n_tokens; ++t) {
        std::vector<double> w = weights;
        for (int k = 0; k < top_k; ++k) {
            std::discrete_distribution<int> pick(w.begin(), w.end());
            const int e = pick(rng);
            w[e] = 0.0;
            pairs.emplace_back(static_cast<int32_t>(t), e);
        }
    }
    return counting_sort(static_cast<int64_t>(weights.size()), n_tokens, pairs);
}

// Exact per-expert row counts, rows in shuffled order, each reading a random one of n_x_rows rows.
Routing route_counts(const std::vector<int>& counts, int64_t n_x_rows, std::mt19937& rng) {
    std::vector<std::pair<int32_t, int32_t>> pairs;
    std::uniform_int_distribution<int32_t> source(0, static_cast<int32_t>(n_x_rows - 1));
    for (size_t e = 0; e < counts.size(); ++e) {
        for (int i = 0; i < counts[e]; ++i) pairs.emplace_back(source(rng), static_cast<int32_t>(e));
    }
    std::shuffle(pairs.begin(), pairs.end(), rng);
    return counting_sort(static_cast<int64_t>(counts.size()), n_x_rows, pairs);
}

std::vector<Routing> routings(int64_t n_expert, std::mt19937& rng) {
    std::vector<Routing> list;
    std::vector<double> skewed(n_expert, 1.0);
    skewed[0] = 12.0;            // a popular expert
    skewed[n_expert - 1] = 0.0;  // one that is never routed to
    list.push_back(route_tokens(1, 2, skewed, rng));   // decoding: 2 rows
    list.push_back(route_tokens(4, 2, skewed, rng));   // 8 rows: the matrix-vector kernel alone
    list.push_back(route_tokens(33, 3, skewed, rng));  // small and large experts mixed
    list.push_back(route_tokens(300, 2, skewed, rng));
    // Around the thresholds: 8 / 9 rows (kernel switch), 1, 64 / 65 (a full tile, then a partial one).
    std::vector<int> counts = {8, 9, 0, 1, 64, 65};
    counts.resize(n_expert, 0);
    list.push_back(route_counts(counts, 40, rng));
    // Every row on one expert: many (tiles) and few (matrix-vector).
    std::vector<int> one(n_expert, 0);
    one[3] = 300;
    list.push_back(route_counts(one, 300, rng));
    one[3] = 5;
    list.push_back(route_counts(one, 7, rng));
    return list;
}

// matmul_experts (or the SwiGLU variant when `up` is given) on one routing, against matmul_reference
// per expert (silu(gate) * up for SwiGLU, in double). odd_layout: x rows a float apart from 16-byte
// boundaries (the scalar activation loads).
void check_experts(const HostMatrix& gate, const HostMatrix* up, int64_t n_out, int64_t n_expert, const Routing& routing,
                   bool odd_layout, std::mt19937& rng) {
    const int64_t n_in = gate.n_in, n_rows = routing.rows();
    const int64_t x_stride = n_in + (odd_layout ? 1 : 0), y_stride = n_out + 3;
    const std::vector<float> x = random_floats(static_cast<size_t>(routing.n_x_rows * x_stride), rng);
    const size_t expert_bytes = gate.row_bytes * n_out;

    // Reference: each expert's rows gathered and multiplied by matmul_reference; per cell the exact
    // product(s) and the allowed error of the path the row's expert takes.
    const size_t cells = static_cast<size_t>(n_rows * n_out);
    std::vector<double> ref_gate(cells), ref_up(cells), allowed_gate(cells), allowed_up(cells);
    for (int64_t e = 0; e < n_expert; ++e) {
        const int64_t begin = routing.offsets[e], count = routing.count(e);
        if (count == 0) continue;
        const Tolerance tol = tolerance_for(count);
        std::vector<float> xe(static_cast<size_t>(count * n_in)), g(count * n_out), u(count * n_out);
        for (int64_t i = 0; i < count; ++i) {
            std::copy_n(x.data() + routing.row_src[begin + i] * x_stride, n_in, xe.data() + i * n_in);
        }
        moe::kernels::matmul_reference(gate.rows_from(e * n_out, n_out), xe.data(), n_in, count, g.data(), n_out);
        if (up) moe::kernels::matmul_reference(up->rows_from(e * n_out, n_out), xe.data(), n_in, count, u.data(), n_out);
        for (int64_t i = 0; i < count; ++i) {
            for (int64_t o = 0; o < n_out; ++o) {
                const size_t cell = static_cast<size_t>((begin + i) * n_out + o);
                const float* xi = xe.data() + i * n_in;
                ref_gate[cell] = g[i * n_out + o];
                allowed_gate[cell] = tol.rel * magnitude(gate.values.data() + (e * n_out + o) * n_in, xi, n_in) + tol.abs;
                if (up) {
                    ref_up[cell] = u[i * n_out + o];
                    allowed_up[cell] = tol.rel * magnitude(up->values.data() + (e * n_out + o) * n_in, xi, n_in) + tol.abs;
                }
            }
        }
    }

    DeviceBuffer<uint8_t> d_gate(gate.bytes.size()), d_up(up ? up->bytes.size() : 0);
    DeviceBuffer<float> d_x(x.size()), d_y(static_cast<size_t>(n_rows * y_stride));
    DeviceBuffer<int32_t> d_offsets(routing.offsets.size()), d_src(routing.row_src.size());
    CHECK(d_gate.upload(gate.bytes));
    if (up) CHECK(d_up.upload(up->bytes));
    CHECK(d_x.upload(x));
    CHECK(d_y.upload(std::vector<float>(static_cast<size_t>(n_rows * y_stride), sentinel())));
    CHECK(d_offsets.upload(routing.offsets));
    CHECK(d_src.upload(routing.row_src));
    const moe::cuda::DeviceExperts dg{d_gate.get(), gate.type, n_in, n_out, n_expert, gate.row_bytes, expert_bytes};
    if (up) {
        const moe::cuda::DeviceExperts du{d_up.get(), up->type, n_in, n_out, n_expert, up->row_bytes, expert_bytes};
        CHECK(moe::cuda::matmul_experts_swiglu(dg, du, d_x.get(), x_stride, d_src.get(), d_offsets.get(), n_rows,
                                               d_y.get(), y_stride, nullptr) == cudaSuccess);
    } else {
        CHECK(moe::cuda::matmul_experts(dg, d_x.get(), x_stride, d_src.get(), d_offsets.get(), n_rows, d_y.get(),
                                        y_stride, nullptr) == cudaSuccess);
    }
    CHECK(cudaDeviceSynchronize() == cudaSuccess);
    const std::vector<float> got = d_y.download();
    CHECK(got.size() == static_cast<size_t>(n_rows * y_stride));
    if (got.size() != static_cast<size_t>(n_rows * y_stride)) return;

    std::vector<bool> tile_rows(n_rows, false);
    for (int64_t e = 0; e < n_expert; ++e) {
        if (routing.count(e) > moe::cuda::kMatvecMaxRows) {
            std::fill(tile_rows.begin() + routing.offsets[e], tile_rows.begin() + routing.offsets[e + 1], true);
        }
    }
    Comparison cmp;
    for (int64_t r = 0; r < n_rows; ++r) {
        for (int64_t o = 0; o < n_out; ++o) {
            const size_t cell = static_cast<size_t>(r * n_out + o);
            const float value = got[r * y_stride + o];
            if (!up) {
                cmp.cell(r, o, value, ref_gate[cell], allowed_gate[cell], tile_rows[r]);
                continue;
            }
            // silu(g) * u with g and u each off by at most dg, du: silu's slope is within [-0.1, 1.1], so
            // the error is at most 1.1 dg (|u| + du) + |silu(g)| du, plus a few ulps for the fp32 silu
            // and product.
            const double g = ref_gate[cell], u = ref_up[cell], dg = allowed_gate[cell], du = allowed_up[cell];
            const double silu = g / (1.0 + std::exp(-g)), expected = silu * u;
            const double allowed = 1.1 * dg * (std::fabs(u) + du) + std::fabs(silu) * du + 1e-6 * std::fabs(expected);
            cmp.cell(r, o, value, expected, allowed, tile_rows[r]);
        }
        for (int64_t o = n_out; o < y_stride; ++o) cmp.padding(got[r * y_stride + o]);
    }
    std::string counts;
    for (int64_t e = 0; e < n_expert; ++e) counts += (e ? "," : "") + std::to_string(routing.count(e));
    CHECK_MSG(cmp.failures == 0 && cmp.padding_writes == 0,
              "%s%s n_in %lld n_out %lld, rows per expert {%s}: %lld cells off, %lld padding writes; %s",
              moe::quant::type_name(gate.type), up ? " swiglu" : "", static_cast<long long>(n_in),
              static_cast<long long>(n_out), counts.c_str(), static_cast<long long>(cmp.failures),
              static_cast<long long>(cmp.padding_writes), cmp.first);
}

// Both expert products for every type: one-block rows and longer ones, n_out off the tile sizes.
void check_all_experts(bool swiglu) {
    std::mt19937 rng(swiglu ? 23 : 19);
    constexpr int64_t kExperts = 6;
    for (GgmlType type : kTypes) {
        const std::vector<int64_t> lengths = row_lengths(type);
        for (const auto& [n_in, n_out] : std::vector<std::pair<int64_t, int64_t>>{{lengths[0], 67}, {lengths[1], 130}}) {
            const HostMatrix gate = random_matrix(type, n_in, kExperts * n_out, rng);
            const HostMatrix up = random_matrix(type, n_in, kExperts * n_out, rng);
            int variant = 0;
            for (const Routing& routing : routings(kExperts, rng)) {
                check_experts(gate, swiglu ? &up : nullptr, n_out, kExperts, routing, (variant++ % 2) == 1, rng);
            }
        }
    }
    report_worst(swiglu ? "matmul_experts_swiglu" : "matmul_experts");
}

TEST_CASE("cuda matmul_experts matches matmul_reference per expert for every type and routing") {
    check_all_experts(false);
}

TEST_CASE("cuda matmul_experts_swiglu matches silu(reference gate) * reference up") { check_all_experts(true); }

TEST_CASE("cuda matmul refuses unsupported types, bad shapes and misaligned weights") {
    using moe::cuda::DeviceExperts;
    using moe::cuda::DeviceWeight;
    const uint32_t q4_k = static_cast<uint32_t>(GgmlType::Q4_K);
    const size_t row = moe::quant::row_size(*moe::quant::type_traits(q4_k), 256);
    DeviceBuffer<uint8_t> w(4 * row + 16);
    DeviceBuffer<float> x(4 * 256), y(4 * 4);
    DeviceBuffer<int32_t> ids(8);
    const DeviceWeight good{w.get(), q4_k, 256, 4, row};
    CHECK(moe::cuda::matmul(good, x.get(), 256, 0, y.get(), 4, nullptr) == cudaSuccess);  // no rows: no work
    CHECK(cudaDeviceSynchronize() == cudaSuccess);

    for (GgmlType type : {GgmlType::IQ2_XXS, GgmlType::Q8_1, GgmlType::Q8_K, GgmlType::I32}) {
        CHECK(!moe::cuda::can_matmul(static_cast<uint32_t>(type)));
        DeviceWeight bad = good;
        bad.type = static_cast<uint32_t>(type);
        CHECK(moe::cuda::matmul(bad, x.get(), 256, 1, y.get(), 4, nullptr) == cudaErrorInvalidValue);
    }
    DeviceWeight bad = good;
    bad.n_in = 128;  // not a multiple of 256
    CHECK(moe::cuda::matmul(bad, x.get(), 256, 1, y.get(), 4, nullptr) == cudaErrorInvalidValue);
    bad = good;
    bad.row_bytes = row - 1;
    CHECK(moe::cuda::matmul(bad, x.get(), 256, 1, y.get(), 4, nullptr) == cudaErrorInvalidValue);
    bad = good;
    bad.data = w.get() + 4;  // Q4_K blocks are read as 8-byte words
    CHECK(moe::cuda::matmul(bad, x.get(), 256, 1, y.get(), 4, nullptr) == cudaErrorInvalidValue);
    CHECK(moe::cuda::matmul(good, x.get(), 255, 2, y.get(), 4, nullptr) == cudaErrorInvalidValue);  // x rows overlap
    CHECK(moe::cuda::matmul(good, x.get(), 256, 2, y.get(), 3, nullptr) == cudaErrorInvalidValue);  // y rows overlap
    CHECK(moe::cuda::matmul(good, x.get(), 256, -1, y.get(), 4, nullptr) == cudaErrorInvalidValue);
    CHECK(moe::cuda::matmul(good, nullptr, 256, 1, y.get(), 4, nullptr) == cudaErrorInvalidValue);

    const DeviceExperts experts{w.get(), q4_k, 256, 2, 2, row, 2 * row};
    CHECK(moe::cuda::matmul_experts(experts, x.get(), 256, ids.get(), ids.get(), 0, y.get(), 2, nullptr) == cudaSuccess);
    CHECK(moe::cuda::matmul_experts(experts, x.get(), 256, nullptr, ids.get(), 2, y.get(), 2, nullptr) ==
          cudaErrorInvalidValue);
    DeviceExperts bad_experts = experts;
    bad_experts.expert_bytes = row;  // experts would overlap
    CHECK(moe::cuda::matmul_experts(bad_experts, x.get(), 256, ids.get(), ids.get(), 2, y.get(), 2, nullptr) ==
          cudaErrorInvalidValue);
    DeviceExperts other = experts;
    other.type = static_cast<uint32_t>(GgmlType::Q8_0);
    other.row_bytes = moe::quant::row_size(*moe::quant::type_traits(other.type), 256);
    other.expert_bytes = 2 * other.row_bytes;
    CHECK(moe::cuda::matmul_experts_swiglu(experts, other, x.get(), 256, ids.get(), ids.get(), 2, y.get(), 2, nullptr) ==
          cudaErrorInvalidValue);
}

}  // namespace

int main(int argc, char** argv) { return moe_test::run_cuda_tests(argc, argv); }
