// Native tests for the dot products (cpp/quant/vec_dot*) and the matrix products (cpp/kernels/matmul):
//   1. every weight type's scalar vec_dot equals a double-precision dot of the dequantized weight row
//      and the dequantized activation row within 1e-5 * M (same math, only float rounding/order
//      differs), on quantized gaussian rows, random-byte blocks (every code pattern) and random /
//      extreme (+-127) activation codes;
//   2. every SIMD level this CPU runs equals the scalar vec_dot within 4e-6 * M, and bit for bit on
//      rows where every float step is exact (power-of-two scales), which pins the integer parts;
//      MXFP4 E8M0 edge exponents (subnormal scales);
//   3. matmul equals matmul_reference (F32 activations, double) within a bound derived from the
//      activation conversion error of each dot format, on every level, for 1/5/33 tokens;
//   4. matmul does not depend on the thread count (1/2/3) or on how tokens are batched, and
//      matmul_experts equals a loop of single-row matmuls bit for bit (experts with zero rows,
//      repeated sources, strided rows), also for work large enough to be split over the pool;
//   5. dot_type_of and the validation errors.
//
// M = sum_i |w_i| * |a_i| is the magnitude of a dot (for affine formats |w_i| counts the scaled code
// and the min separately, |d sc q| + |dmin m|, because the kernels sum those two parts separately):
// float rounding of block sums is bounded by a small multiple of eps * M, whatever cancellation the
// true result has.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "check.h"
#include "rng.h"
#include "error_check.h"
#include "common/error.h"
#include "cpu/cpu_features.h"
#include "kernels/matmul.h"
#include "kernels/ops.h"
#include "quant/fp16.h"
#include "quant/ggml_types.h"
#include "quant/quant.h"
#include "quant/vec_dot.h"
#include "runtime/thread_pool.h"

using moe::Error;
using moe::ErrorCode;
using moe::cpu::Isa;
namespace q = moe::quant;
namespace k = moe::kernels;
using q::GgmlType;

namespace {

// ------------------------------------------------------------------------------------------------
// Utilities
// ------------------------------------------------------------------------------------------------

using moe_test::Rng;

uint32_t tid(GgmlType t) { return static_cast<uint32_t>(t); }
const q::TypeTraits& traits(uint32_t t) { return *q::type_traits(t); }
const char* name(uint32_t t) { return q::type_name(t); }

const GgmlType kWeightTypes[] = {GgmlType::F32,  GgmlType::F16,  GgmlType::BF16, GgmlType::Q4_0, GgmlType::Q4_1,
                                 GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q8_0, GgmlType::MXFP4, GgmlType::Q2_K,
                                 GgmlType::Q3_K, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K};

bool is_float(uint32_t t) { return t == tid(GgmlType::F32) || t == tid(GgmlType::F16) || t == tid(GgmlType::BF16); }

std::vector<Isa> simd_levels() {
    std::vector<Isa> out;
    for (Isa isa : {Isa::Avx2, Isa::Avx512, Isa::Neon}) {
        if (moe::cpu::isa_supported(isa)) out.push_back(isa);
    }
    return out;
}

std::vector<Isa> all_levels() {
    std::vector<Isa> out = {Isa::Scalar};
    for (Isa isa : simd_levels()) out.push_back(isa);
    return out;
}

size_t row_bytes(uint32_t type, int64_t n) { return q::row_size(traits(type), n); }

std::vector<float> dequant(uint32_t type, const uint8_t* src, int64_t n) {
    std::vector<float> out(static_cast<size_t>(n));
    q::dequantize(type, src, out.data(), n, Isa::Scalar);
    return out;
}

std::vector<uint8_t> quantize_row(uint32_t type, const float* x, int64_t n, Isa isa = Isa::Scalar) {
    std::vector<uint8_t> out(row_bytes(type, n));
    q::quantize(type, x, out.data(), n, isa);
    return out;
}

// Gaussian values with a few outliers (activations of real models have some).
std::vector<float> gaussian(Rng& rng, int64_t n, double sigma = 1.0, bool outliers = true) {
    std::vector<float> v(static_cast<size_t>(n));
    for (float& x : v) x = static_cast<float>(rng.gauss() * sigma);
    if (outliers) {
        for (int64_t i = 0; i < n / 97; ++i) v[static_cast<size_t>(rng.below(static_cast<int>(n)))] *= 8.0f;
    }
    return v;
}

void put_f16(uint8_t* p, float v) {
    const uint16_t h = q::fp32_to_fp16(v);
    std::memcpy(p, &h, 2);
}

// A block scale: random in +-[0.001, 0.051], or the fixed power of two `dyadic` when that is not 0
// (then every product and block sum of a dot is exact in float, see the exactness test).
float random_scale(Rng& rng, bool allow_negative, float dyadic = 0.0f) {
    if (dyadic != 0.0f) return dyadic;
    const float mag = static_cast<float>(0.001 + 0.05 * rng.uniform());
    return (allow_negative && (rng.next() & 1)) ? -mag : mag;
}

// Small integers as floats (exact in F16/BF16; products and sums exact in float).
std::vector<float> small_integers(Rng& rng, int64_t n) {
    std::vector<float> v(static_cast<size_t>(n));
    for (float& x : v) x = static_cast<float>(rng.below(201) - 100);
    return v;
}

// A weight row of random bytes (every code pattern, Q8_0 weights including -128) with sane block
// scales: finite f16 d/dmin/m, MXFP4 exponents around 2^0. Float types: quantized gaussians.
// `dyadic`: every scale a fixed power of two (float types: small integers).
std::vector<uint8_t> random_weight_bytes(uint32_t type, int64_t n, Rng& rng, bool dyadic = false) {
    if (is_float(type)) {
        const std::vector<float> x = dyadic ? small_integers(rng, n) : gaussian(rng, n);
        return quantize_row(type, x.data(), n);
    }
    const float d1 = dyadic ? 0x1p-6f : 0.0f, d2 = dyadic ? 0x1p-5f : 0.0f;
    const q::TypeTraits& t = traits(type);
    std::vector<uint8_t> out(row_bytes(type, n));
    for (uint8_t& b : out) b = rng.byte();
    for (int64_t i = 0; i < n / t.block_size; ++i) {
        uint8_t* b = out.data() + static_cast<size_t>(i) * t.type_size;
        switch (static_cast<GgmlType>(type)) {
            case GgmlType::Q4_0:
            case GgmlType::Q5_0:
            case GgmlType::Q8_0: put_f16(b, random_scale(rng, true, d1)); break;
            case GgmlType::Q4_1:
            case GgmlType::Q5_1:
                put_f16(b, random_scale(rng, false, d1));
                put_f16(b + 2, random_scale(rng, true, d2));
                break;
            case GgmlType::MXFP4: {
                // Mostly exponents around 2^0; sometimes the E8M0 subnormal cases (e < 2) or a large one.
                const uint8_t rare[4] = {0, 1, 2, 200};
                b[0] = dyadic ? 124 : rng.below(16) == 0 ? rare[rng.below(4)] : static_cast<uint8_t>(118 + rng.below(20));
                break;
            }
            case GgmlType::Q2_K:
                put_f16(b + 80, random_scale(rng, false, d1));
                put_f16(b + 82, random_scale(rng, false, d2));
                break;
            case GgmlType::Q3_K: put_f16(b + 108, random_scale(rng, true, d1)); break;
            case GgmlType::Q4_K:
            case GgmlType::Q5_K:
                put_f16(b, random_scale(rng, false, d1));
                put_f16(b + 2, random_scale(rng, false, d2));
                break;
            case GgmlType::Q6_K: put_f16(b + 208, random_scale(rng, true, d1)); break;
            default: break;
        }
    }
    return out;
}

// Byte offset of the min scale (dmin or m) in a block of an affine format, or -1.
int min_field_offset(uint32_t type) {
    switch (static_cast<GgmlType>(type)) {
        case GgmlType::Q4_1:
        case GgmlType::Q5_1:
        case GgmlType::Q4_K:
        case GgmlType::Q5_K: return 2;
        case GgmlType::Q2_K: return 82;
        default: return -1;
    }
}

// Per element: |scaled code| + |min part| (= |w| for symmetric formats), and the |min part| alone.
struct WeightMagnitude {
    std::vector<double> mag, offset;
};

WeightMagnitude weight_magnitude(uint32_t type, const uint8_t* row, int64_t n) {
    const std::vector<float> w = dequant(type, row, n);
    WeightMagnitude m;
    m.mag.resize(static_cast<size_t>(n));
    m.offset.assign(static_cast<size_t>(n), 0.0);
    const int off = min_field_offset(type);
    if (off < 0) {
        for (int64_t i = 0; i < n; ++i) m.mag[i] = std::fabs(static_cast<double>(w[i]));
        return m;
    }
    const q::TypeTraits& t = traits(type);
    std::vector<uint8_t> no_min(row, row + row_bytes(type, n));
    for (int64_t b = 0; b < n / t.block_size; ++b) put_f16(no_min.data() + b * t.type_size + off, 0.0f);
    const std::vector<float> scaled = dequant(type, no_min.data(), n);
    for (int64_t i = 0; i < n; ++i) {
        m.offset[i] = std::fabs(static_cast<double>(w[i]) - scaled[i]);
        m.mag[i] = std::fabs(static_cast<double>(scaled[i])) + m.offset[i];
    }
    return m;
}

// An activation row in dot format `act` built from codes directly: random codes in [-127, 127], or
// only +-127 (`extreme`, the i16 saturation boundary of the SIMD byte products), random scales.
std::vector<uint8_t> random_act_codes(uint32_t act, int64_t n, Rng& rng, bool extreme, bool dyadic = false) {
    if (is_float(act)) {
        const std::vector<float> x = dyadic ? small_integers(rng, n) : gaussian(rng, n);
        return quantize_row(act, x.data(), n);
    }
    const q::TypeTraits& t = traits(act);
    std::vector<uint8_t> out(row_bytes(act, n));
    auto code = [&]() -> int8_t {
        if (extreme) return (rng.next() & 1) ? 127 : -127;
        return static_cast<int8_t>(rng.below(255) - 127);
    };
    for (int64_t i = 0; i < n / t.block_size; ++i) {
        uint8_t* b = out.data() + static_cast<size_t>(i) * t.type_size;
        const float d = random_scale(rng, false, dyadic ? 0x1p-7f : 0.0f);
        if (act == tid(GgmlType::Q8_K)) {
            std::memcpy(b, &d, 4);
            int8_t* qs = reinterpret_cast<int8_t*>(b + 4);
            for (int j = 0; j < 256; ++j) qs[j] = code();
            for (int g = 0; g < 16; ++g) {
                int16_t s = 0;
                for (int j = 0; j < 16; ++j) s = static_cast<int16_t>(s + qs[16 * g + j]);
                std::memcpy(b + 260 + 2 * g, &s, 2);
            }
        } else {
            const int qs_off = act == tid(GgmlType::Q8_1) ? 4 : 2;
            put_f16(b, d);
            int8_t* qs = reinterpret_cast<int8_t*>(b + qs_off);
            int sum = 0;
            for (int j = 0; j < 32; ++j) sum += (qs[j] = code());
            if (act == tid(GgmlType::Q8_1)) put_f16(b + 2, q::fp16_to_fp32(q::fp32_to_fp16(d)) * static_cast<float>(sum));
        }
    }
    return out;
}

// The activation row for a dot test: quantized gaussians (kind 0), random codes (1), extreme codes (2).
std::vector<uint8_t> make_act(uint32_t act, int64_t n, Rng& rng, int kind) {
    if (kind == 0 || is_float(act)) {
        const std::vector<float> x = gaussian(rng, n);
        return quantize_row(act, x.data(), n);
    }
    return random_act_codes(act, n, rng, kind == 2);
}

// The Q8_1 s field is d * sum(qs) rounded to f16 (from the unrounded d for quantized rows): its error
// against the dequantized values is up to 2^-10 of |d * sum(qs)| per block, and it multiplies the
// weight's min m. Returns sum over blocks of |m| * 2^-10 * sum_j |a_j| (a bound of |m| * 2^-10 *
// |d sum qs|), or 0 for other formats.
double q8_1_s_error(uint32_t wtype, const WeightMagnitude& wm, const std::vector<float>& a) {
    if (q::vec_dot_type(wtype) != tid(GgmlType::Q8_1)) return 0.0;
    double e = 0.0;
    for (size_t i = 0; i < a.size(); ++i) e += wm.offset[i] * std::fabs(static_cast<double>(a[i]));
    return e * 0x1p-10 * 1.01;
}

int64_t block_of(uint32_t type) { return traits(type).block_size; }

std::vector<int64_t> dot_lengths(uint32_t type) {
    const int64_t b = std::max(block_of(type), block_of(q::vec_dot_type(type)));
    if (b == 1) return {1, 7, 8, 37, 256, 1000, 4096};
    // Block counts around the SIMD group sizes (2, 4, 8) with every remainder; 2880 = gpt-oss rows.
    if (b == 32) return {32, 64, 96, 224, 256, 288, 480, 1024, 2880, 4096};
    return {256, 512, 4096};
}

// ------------------------------------------------------------------------------------------------
// 1 / 2. vec_dot
// ------------------------------------------------------------------------------------------------

TEST_CASE("vec_dot table: every weight type has a dot on every level; dot formats as ggml") {
    const std::pair<GgmlType, GgmlType> expect[] = {
        {GgmlType::F32, GgmlType::F32},    {GgmlType::F16, GgmlType::F16},   {GgmlType::BF16, GgmlType::BF16},
        {GgmlType::Q4_0, GgmlType::Q8_0},  {GgmlType::Q5_0, GgmlType::Q8_0}, {GgmlType::Q8_0, GgmlType::Q8_0},
        {GgmlType::MXFP4, GgmlType::Q8_0}, {GgmlType::Q4_1, GgmlType::Q8_1}, {GgmlType::Q5_1, GgmlType::Q8_1},
        {GgmlType::Q2_K, GgmlType::Q8_K},  {GgmlType::Q3_K, GgmlType::Q8_K}, {GgmlType::Q4_K, GgmlType::Q8_K},
        {GgmlType::Q5_K, GgmlType::Q8_K},  {GgmlType::Q6_K, GgmlType::Q8_K},
    };
    for (auto [w, a] : expect) {
        CHECK_MSG(q::vec_dot_type(tid(w)) == tid(a), "%s", name(tid(w)));
        CHECK(k::dot_type_of(tid(w)) == tid(a));
    }
    for (Isa isa : all_levels()) {
        const q::VecDotKernels& kt = q::vec_dot_kernels_for(isa);
        for (uint32_t t = 0; t < q::kGgmlTypeCount; ++t) {
            const bool has = q::vec_dot_type(t) != q::kNoDotType;
            CHECK_MSG((kt.dot[t] != nullptr) == has, "%s on %s", name(t), moe::cpu::isa_name(isa));
        }
    }
}

// Scalar vec_dot vs double dot of the dequantized rows; tolerance 1e-5 * M (+ the Q8_1 s-field
// rounding for Q4_1/Q5_1, which is ggml's math and not a dot of dequantized values).
TEST_CASE("scalar vec_dot equals the double dot of dequantized weight and activation rows") {
    Rng rng(101);
    const q::VecDotKernels& scalar = q::vec_dot_kernels_for(Isa::Scalar);
    for (GgmlType wt : kWeightTypes) {
        const uint32_t w = tid(wt), a = q::vec_dot_type(w);
        double worst = 0.0;
        for (int64_t n : dot_lengths(w)) {
            for (int wkind = 0; wkind < 2; ++wkind) {
                for (int akind = 0; akind < 3; ++akind) {
                    std::vector<uint8_t> wrow;
                    if (wkind == 0) {
                        const std::vector<float> x = gaussian(rng, n, 0.02);
                        wrow = quantize_row(w, x.data(), n);
                    } else {
                        wrow = random_weight_bytes(w, n, rng);
                    }
                    const std::vector<uint8_t> arow = make_act(a, n, rng, akind);
                    const std::vector<float> wd = dequant(w, wrow.data(), n), ad = dequant(a, arow.data(), n);
                    const WeightMagnitude wm = weight_magnitude(w, wrow.data(), n);
                    double ref = 0.0, mag = 0.0;
                    for (int64_t i = 0; i < n; ++i) {
                        ref += static_cast<double>(wd[i]) * ad[i];
                        mag += wm.mag[i] * std::fabs(static_cast<double>(ad[i]));
                    }
                    const double got = scalar.dot[w](n, wrow.data(), arow.data());
                    const double tol = 1e-5 * mag + q8_1_s_error(w, wm, ad) + 1e-30;
                    const double err = std::fabs(got - ref);
                    worst = std::max(worst, err / tol);
                    CHECK_MSG(err <= tol, "%s n=%lld wkind=%d akind=%d: got %.9g want %.9g (err %.3g, tol %.3g)",
                              name(w), static_cast<long long>(n), wkind, akind, got, ref, err, tol);
                }
            }
        }
        if (worst > 0.5) std::printf("     %s: worst error %.2f of tolerance\n", name(w), worst);
    }
}

TEST_CASE("vec_dot of an all-zero activation row is exactly zero") {
    Rng rng(7);
    for (Isa isa : all_levels()) {
        for (GgmlType wt : kWeightTypes) {
            const uint32_t w = tid(wt), a = q::vec_dot_type(w);
            const int64_t n = 512;
            const std::vector<uint8_t> wrow = random_weight_bytes(w, n, rng);
            const std::vector<float> zeros(n, 0.0f);
            const std::vector<uint8_t> arow = quantize_row(a, zeros.data(), n);
            const float got = q::vec_dot_kernels_for(isa).dot[w](n, wrow.data(), arow.data());
            CHECK_MSG(got == 0.0f, "%s on %s: %g", name(w), moe::cpu::isa_name(isa), got);
        }
    }
}

// SIMD vs scalar on the same bytes: |simd - scalar| <= 4e-6 * M. The integer block sums are
// identical; only the float accumulation order differs (8 lanes vs block by block).
TEST_CASE("every SIMD vec_dot equals the scalar vec_dot within 4e-6 of the dot's magnitude") {
    const std::vector<Isa> levels = simd_levels();
    if (levels.empty()) std::printf("     (no SIMD level on this CPU)\n");
    Rng rng(202);
    const q::VecDotKernels& scalar = q::vec_dot_kernels_for(Isa::Scalar);
    for (GgmlType wt : kWeightTypes) {
        const uint32_t w = tid(wt), a = q::vec_dot_type(w);
        std::vector<int64_t> lengths = dot_lengths(w);
        for (int64_t n : lengths) {
            for (int kind = 0; kind < 6; ++kind) {
                std::vector<uint8_t> wrow;
                if (kind < 3) {
                    const std::vector<float> x = gaussian(rng, n, 0.02);
                    wrow = quantize_row(w, x.data(), n);
                } else {
                    wrow = random_weight_bytes(w, n, rng);
                }
                const std::vector<uint8_t> arow = make_act(a, n, rng, kind % 3);
                const std::vector<float> ad = dequant(a, arow.data(), n);
                const WeightMagnitude wm = weight_magnitude(w, wrow.data(), n);
                double mag = 0.0;
                for (int64_t i = 0; i < n; ++i) mag += wm.mag[i] * std::fabs(static_cast<double>(ad[i]));
                const double ref = scalar.dot[w](n, wrow.data(), arow.data());
                for (Isa isa : levels) {
                    const double got = q::vec_dot_kernels_for(isa).dot[w](n, wrow.data(), arow.data());
                    // The NEON quantized kernels evaluate the reference's float expression per block.
                    const double tol = (isa == Isa::Neon && !is_float(w)) ? 0.0 : 4e-6 * mag + 1e-30;
                    CHECK_MSG(std::fabs(got - ref) <= tol, "%s on %s n=%lld kind=%d: %.9g vs scalar %.9g (tol %.3g)",
                              name(w), moe::cpu::isa_name(isa), static_cast<long long>(n), kind, got, ref, tol);
                }
            }
        }
    }
}

// E8M0 edge cases on whole rows (so they dominate the magnitude): e < 2 are fp32 subnormal scales
// built from bits, e = 2 the smallest normal one. SIMD vs scalar within 4e-6 of the magnitude; the
// scalar dot vs the double dot only for normal factors (d_a * 2^(e-128) rounds when subnormal).
TEST_CASE("MXFP4 vec_dot: E8M0 exponents 0, 1, 2, 3, 127, 128, 200 on every level") {
    Rng rng(808);
    const uint32_t w = tid(GgmlType::MXFP4), a = tid(GgmlType::Q8_0);
    const q::VecDotKernels& scalar = q::vec_dot_kernels_for(Isa::Scalar);
    for (int e : {0, 1, 2, 3, 127, 128, 200}) {
        for (int64_t n : {32, 288, 2880}) {
            std::vector<uint8_t> wrow = random_weight_bytes(w, n, rng);
            for (int64_t b = 0; b < n / 32; ++b) wrow[static_cast<size_t>(b) * 17] = static_cast<uint8_t>(e);
            const std::vector<uint8_t> arow = make_act(a, n, rng, 1);
            const std::vector<float> wd = dequant(w, wrow.data(), n), ad = dequant(a, arow.data(), n);
            double ref = 0.0, mag = 0.0;
            for (int64_t i = 0; i < n; ++i) {
                ref += static_cast<double>(wd[i]) * ad[i];
                mag += std::fabs(static_cast<double>(wd[i]) * ad[i]);
            }
            const double got = scalar.dot[w](n, wrow.data(), arow.data());
            if (e >= 2) {
                CHECK_MSG(std::fabs(got - ref) <= 1e-5 * mag, "e=%d n=%lld: scalar %.9g vs double %.9g", e,
                          static_cast<long long>(n), got, ref);
            }
            CHECK_MSG(got != 0.0 && std::fabs(got - ref) <= 1e-2 * mag, "e=%d n=%lld: scalar %.9g vs double %.9g", e,
                      static_cast<long long>(n), got, ref);
            for (Isa isa : simd_levels()) {
                const double simd = q::vec_dot_kernels_for(isa).dot[w](n, wrow.data(), arow.data());
                CHECK_MSG(std::fabs(simd - got) <= 4e-6 * mag, "e=%d n=%lld on %s: %.9g vs scalar %.9g", e,
                          static_cast<long long>(n), moe::cpu::isa_name(isa), simd, got);
            }
        }
    }
}

// With power-of-two block scales and small-integer float rows every product and partial sum is
// exact in float, so any float order gives the same bits: SIMD must equal scalar exactly. This pins
// the integer parts (code unpacking, scale/min handling, byte-product widening) to the reference.
TEST_CASE("every SIMD vec_dot equals the scalar vec_dot bit for bit when all float steps are exact") {
    Rng rng(909);
    const q::VecDotKernels& scalar = q::vec_dot_kernels_for(Isa::Scalar);
    for (GgmlType wt : kWeightTypes) {
        const uint32_t w = tid(wt), a = q::vec_dot_type(w);
        for (int64_t n : dot_lengths(w)) {
            if (n > 1024) continue;  // keep every partial sum below 2^24 units
            for (int rep = 0; rep < 8; ++rep) {
                const std::vector<uint8_t> wrow = random_weight_bytes(w, n, rng, true);
                const std::vector<uint8_t> arow = random_act_codes(a, n, rng, false, true);
                const float ref = scalar.dot[w](n, wrow.data(), arow.data());
                for (Isa isa : simd_levels()) {
                    const float got = q::vec_dot_kernels_for(isa).dot[w](n, wrow.data(), arow.data());
                    CHECK_MSG(got == ref, "%s on %s n=%lld: %.9g vs scalar %.9g", name(w), moe::cpu::isa_name(isa),
                              static_cast<long long>(n), got, ref);
                }
            }
        }
    }
}

// ------------------------------------------------------------------------------------------------
// llama.cpp's other float orders (VecDotKernels::tinyblas / repack / repack_gemm) and its x86
// activation quantizer
// ------------------------------------------------------------------------------------------------

namespace order {

float f16(const uint8_t* p) {
    uint16_t h;
    std::memcpy(&h, p, 2);
    return q::fp16_to_fp32(h);
}

// Signed codes of one 32-element legacy block (Q8_0 bytes; Q4_0 nibble - 8; MXFP4 table values,
// low nibbles first).
void codes32(uint32_t type, const uint8_t* blk, int out[32]) {
    static const int kMx[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};
    if (type == tid(GgmlType::Q8_0)) {
        for (int i = 0; i < 32; ++i) out[i] = static_cast<int8_t>(blk[2 + i]);
        return;
    }
    const uint8_t* qs = blk + (type == tid(GgmlType::Q4_0) ? 2 : 1);
    for (int i = 0; i < 16; ++i) {
        const int lo = qs[i] & 15, hi = qs[i] >> 4;
        out[i] = type == tid(GgmlType::Q4_0) ? lo - 8 : kMx[lo];
        out[i + 16] = type == tid(GgmlType::Q4_0) ? hi - 8 : kMx[hi];
    }
}

float scale32(uint32_t type, const uint8_t* wblk, const uint8_t* ablk) {
    const float da = f16(ablk);
    if (type == tid(GgmlType::MXFP4)) return da * std::ldexp(1.0f, wblk[0] - 128);  // E8M0 / 2
    return f16(wblk) * da;
}

// tinyBLAS_Q0_AVX: 8 lanes of 4-byte partial sums, FMA per block, reduced ((l0+l4)+(l2+l6)) +
// ((l1+l5)+(l3+l7)).
float tinyblas(uint32_t type, int64_t n, const uint8_t* w, const uint8_t* a) {
    const size_t wb = row_bytes(type, 32), ab = 34;
    float lane[8] = {};
    for (int64_t b = 0; b < n / 32; ++b) {
        int cw[32];
        codes32(type, w + b * wb, cw);
        const float d = scale32(type, w + b * wb, a + b * ab);
        for (int j = 0; j < 8; ++j) {
            int sum = 0;
            for (int k = 4 * j; k < 4 * j + 4; ++k) sum += cw[k] * static_cast<int8_t>(a[b * ab + 2 + k]);
            lane[j] = std::fma(d, static_cast<float>(sum), lane[j]);
        }
    }
    float s[4];
    for (int k = 0; k < 4; ++k) s[k] = lane[k] + lane[k + 4];
    return (s[0] + s[2]) + (s[1] + s[3]);
}

// Repacked legacy blocks: one float, FMA of each block's whole integer sum.
float repack32(uint32_t type, int64_t n, const uint8_t* w, const uint8_t* a) {
    const size_t wb = row_bytes(type, 32), ab = 34;
    float acc = 0.0f;
    for (int64_t b = 0; b < n / 32; ++b) {
        int cw[32], sum = 0;
        codes32(type, w + b * wb, cw);
        for (int k = 0; k < 32; ++k) sum += cw[k] * static_cast<int8_t>(a[b * ab + 2 + k]);
        acc = std::fma(static_cast<float>(sum), scale32(type, w + b * wb, a + b * ab), acc);
    }
    return acc;
}

// Repacked Q4_K: FMA per super-block (gemv) or per pair of sub-blocks (gemm), mins apart.
float repack_q4_k(int64_t n, const uint8_t* w, const uint8_t* a, bool per_pair) {
    float acc = 0.0f, acc_min = 0.0f;
    for (int64_t b = 0; b < n / 256; ++b) {
        const uint8_t* x = w + b * 144;
        const uint8_t* y = a + b * 292;
        float da;
        std::memcpy(&da, y, 4);
        const float d = f16(x) * da, dmin = f16(x + 2) * da;
        const uint8_t* sc = x + 4;
        int64_t sum = 0, msum = 0;
        for (int c = 0; c < 4; ++c) {
            int64_t pair = 0, mpair = 0;
            for (int h = 0; h < 2; ++h) {
                const int j = 2 * c + h;
                const int scale = j < 4 ? sc[j] & 63 : (sc[j + 4] & 15) | ((sc[j - 4] >> 6) << 4);
                const int min = j < 4 ? sc[j + 4] & 63 : (sc[j + 4] >> 4) | ((sc[j] >> 6) << 4);
                int dot = 0, bsum = 0;
                for (int i = 0; i < 32; ++i) {
                    const int code = h == 0 ? x[16 + 32 * c + i] & 15 : x[16 + 32 * c + i] >> 4;
                    const int act = static_cast<int8_t>(y[4 + 32 * j + i]);
                    dot += code * act;
                    bsum += act;
                }
                pair += scale * dot;
                mpair += min * bsum;
            }
            if (per_pair) {
                acc = std::fma(static_cast<float>(pair), d, acc);
                acc_min = std::fma(static_cast<float>(mpair), dmin, acc_min);
            }
            sum += pair;
            msum += mpair;
        }
        if (!per_pair) {
            acc = std::fma(static_cast<float>(sum), d, acc);
            acc_min = std::fma(static_cast<float>(msum), dmin, acc_min);
        }
    }
    return acc - acc_min;
}

}  // namespace order

TEST_CASE("tinyBLAS and repacked-kernel dots follow llama.cpp's float orders bit for bit") {
    Rng rng(4242);
    const GgmlType kTypes[] = {GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::MXFP4, GgmlType::Q4_K};
    int checked = 0;
    for (Isa isa : simd_levels()) {
        const q::VecDotKernels& kt = q::vec_dot_kernels_for(isa);
        for (GgmlType wt : kTypes) {
            const uint32_t w = tid(wt), a = q::vec_dot_type(w);
            for (int64_t n : {256, 512, 2048}) {
                for (int rep = 0; rep < 6; ++rep) {
                    const std::vector<uint8_t> wrow = random_weight_bytes(w, n, rng);
                    const std::vector<uint8_t> arow = random_act_codes(a, n, rng, rep == 0);
                    const auto check = [&](q::VecDotFn fn, float want, const char* which) {
                        if (!fn) return;
                        const float got = fn(n, wrow.data(), arow.data());
                        ++checked;
                        CHECK_MSG(got == want || (std::isnan(got) && std::isnan(want)), "%s %s on %s n=%lld: %.9g vs %.9g",
                                  which, name(w), moe::cpu::isa_name(isa), static_cast<long long>(n), got, want);
                    };
                    if (wt == GgmlType::Q4_K) {
                        check(kt.repack[w], order::repack_q4_k(n, wrow.data(), arow.data(), false), "repack");
                        check(kt.repack_gemm[w], order::repack_q4_k(n, wrow.data(), arow.data(), true), "repack_gemm");
                    } else {
                        check(kt.tinyblas[w], order::tinyblas(w, n, wrow.data(), arow.data()), "tinyblas");
                        check(kt.repack[w], order::repack32(w, n, wrow.data(), arow.data()), "repack");
                    }
                }
            }
        }
        // x86 tables carry every order llama.cpp's x86 backend uses for these types.
        if (isa == Isa::Avx2 || isa == Isa::Avx512) {
            CHECK(kt.tinyblas[tid(GgmlType::Q8_0)] && kt.tinyblas[tid(GgmlType::Q4_0)]);
            CHECK(kt.repack[tid(GgmlType::Q4_0)] && kt.repack[tid(GgmlType::MXFP4)] && kt.repack[tid(GgmlType::Q4_K)]);
            CHECK(kt.repack_gemm[tid(GgmlType::Q4_K)]);
        }
    }
    CHECK(q::vec_dot_kernels_for(Isa::Scalar).tinyblas[tid(GgmlType::Q8_0)] == nullptr);
    const bool x86 = moe::cpu::isa_supported(Isa::Avx2);
    CHECK(!x86 || checked > 0);
}

TEST_CASE("four-row (and two-by-four-row) kernels equal their one-row kernels bit for bit, row by row") {
    Rng rng(777);
    int checked = 0;
    for (Isa isa : simd_levels()) {
        const q::VecDotKernels& kt = q::vec_dot_kernels_for(isa);
        for (uint32_t w = 0; w < q::kGgmlTypeCount; ++w) {
            for (const q::Dot4& pair : {kt.dot4[w], kt.repack4[w], kt.repack_gemm4[w]}) {
                const q::VecDot4Fn four = pair.four;
                const q::VecDotFn one = pair.one;
                if (!four) continue;
                CHECK_MSG(one != nullptr, "%s on %s: a four-row kernel without its one-row kernel", name(w), moe::cpu::isa_name(isa));
                const uint32_t a = q::vec_dot_type(w);
                for (int64_t n : {256, 2048}) {
                    for (int rep = 0; rep < 8; ++rep) {
                        const std::vector<uint8_t> wrow = random_weight_bytes(w, n, rng);
                        std::vector<std::vector<uint8_t>> arows;
                        for (int r = 0; r < 4; ++r) arows.push_back(random_act_codes(a, n, rng, rep == 0 && r == 1));
                        const void* ptrs[4] = {arows[0].data(), arows[1].data(), arows[2].data(), arows[3].data()};
                        float out[4];
                        four(n, wrow.data(), ptrs, out);
                        for (int r = 0; r < 4; ++r) {
                            const float want = one(n, wrow.data(), ptrs[r]);
                            ++checked;
                            CHECK_MSG(out[r] == want || (std::isnan(out[r]) && std::isnan(want)), "%s on %s n=%lld row %d: %.9g vs %.9g",
                                      name(w), moe::cpu::isa_name(isa), static_cast<long long>(n), r, out[r], want);
                        }
                        if (!pair.two_by_four) continue;
                        // Two weight rows, adjacent with a gap (row stride past the row's bytes).
                        const std::vector<uint8_t> second = random_weight_bytes(w, n, rng);
                        std::vector<uint8_t> both(2 * wrow.size() + 64);
                        std::memcpy(both.data(), wrow.data(), wrow.size());
                        std::memcpy(both.data() + wrow.size() + 64, second.data(), second.size());
                        float eight[8];
                        pair.two_by_four(n, both.data(), wrow.size() + 64, ptrs, eight);
                        for (int o = 0; o < 8; ++o) {
                            const float want = one(n, o < 4 ? wrow.data() : second.data(), ptrs[o % 4]);
                            ++checked;
                            CHECK_MSG(eight[o] == want || (std::isnan(eight[o]) && std::isnan(want)),
                                      "%s on %s n=%lld two rows, output %d: %.9g vs %.9g", name(w), moe::cpu::isa_name(isa),
                                      static_cast<long long>(n), o, eight[o], want);
                        }
                    }
                }
            }
        }
    }
    CHECK(!moe::cpu::isa_supported(Isa::Avx512) || checked > 0);
}

TEST_CASE("x86 activation quantizer: 127 / amax and round half to even, unlike the weight quantizer") {
    // amax = 127 makes the multiplier exactly 1, so k + 0.5 is a tie: x86 rounds it to even, the
    // reference (weight) quantizer away from zero.
    std::vector<float> x(64);
    for (int i = 0; i < 64; ++i) x[i] = static_cast<float>(i % 32) - 15.5f;
    x[31] = 127.0f;
    x[63] = -127.0f;
    std::vector<uint8_t> got(2 * 34);
    q::quantize_row_q8_0_x86(x.data(), got.data(), 64);
    const std::vector<uint8_t> ref = quantize_row(tid(GgmlType::Q8_0), x.data(), 64);
    bool all_even = true, ref_differs = false;
    for (int b = 0; b < 2; ++b) {
        CHECK(order::f16(got.data() + 34 * b) == 1.0f);
        for (int i = 0; i < 32; ++i) {
            const int code = static_cast<int8_t>(got[34 * b + 2 + i]);
            const float v = x[32 * b + i];
            all_even = all_even && code == static_cast<int>(std::nearbyint(v));
            ref_differs = ref_differs || code != static_cast<int8_t>(ref[34 * b + 2 + i]);
        }
    }
    CHECK(all_even);
    CHECK(ref_differs);
    // Random rows: codes are round-half-even(x * (127 / amax)), d = amax / 127 as F16.
    Rng rng(77);
    for (int rep = 0; rep < 20; ++rep) {
        const std::vector<float> v = gaussian(rng, 256);
        std::vector<uint8_t> out(8 * 34);
        q::quantize_row_q8_0_x86(v.data(), out.data(), 256);
        bool ok = true;
        for (int b = 0; b < 8; ++b) {
            float amax = 0.0f;
            for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(v[32 * b + i]));
            const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
            ok = ok && order::f16(out.data() + 34 * b) == q::fp16_to_fp32(q::fp32_to_fp16(amax / 127.0f));
            for (int i = 0; i < 32; ++i) {
                ok = ok && static_cast<int8_t>(out[34 * b + 2 + i]) == static_cast<int>(std::nearbyint(v[32 * b + i] * id));
            }
        }
        CHECK(ok);
    }
}

// ------------------------------------------------------------------------------------------------
// 3 / 4. matmul, matmul_experts
// ------------------------------------------------------------------------------------------------

struct Matrix {
    uint32_t type;
    int64_t n_in, n_out;
    std::vector<uint8_t> bytes;
    k::WeightMatrix view() const { return {bytes.data(), type, n_in, n_out, row_bytes(type, n_in)}; }
};

Matrix make_matrix(uint32_t type, int64_t n_in, int64_t n_out, Rng& rng) {
    Matrix m{type, n_in, n_out, {}};
    const std::vector<float> x = gaussian(rng, n_in * n_out, 0.05, false);
    m.bytes.resize(row_bytes(type, n_in) * static_cast<size_t>(n_out));
    for (int64_t o = 0; o < n_out; ++o) {
        q::quantize(type, x.data() + o * n_in, m.bytes.data() + o * row_bytes(type, n_in), n_in, Isa::Scalar);
    }
    return m;
}

// Upper bound of |a - converted(a)| per element for the dot format `act`, from the block's amax:
//   F16 / BF16: relative half-ulp (plus the f16 subnormal step);
//   Q8_0 / Q8_1: d/2 rounding with d = amax/127, plus d's rounding to f16 (<= 127 * d * 2^-11);
//   Q8_K: d/2 (d is f32).
std::vector<double> conversion_error(uint32_t act, const float* x, int64_t n) {
    std::vector<double> e(static_cast<size_t>(n), 0.0);
    const GgmlType at = static_cast<GgmlType>(act);
    if (at == GgmlType::F32) return e;
    if (at == GgmlType::F16 || at == GgmlType::BF16) {
        const double rel = at == GgmlType::F16 ? 0x1p-11 : 0x1p-8;
        for (int64_t i = 0; i < n; ++i) e[i] = std::fabs(static_cast<double>(x[i])) * rel * 1.001 + 0x1p-25;
        return e;
    }
    const int64_t b = traits(act).block_size;
    const double factor = at == GgmlType::Q8_K ? 0.5 * 1.001 : 0.5 + 127.0 * 0x1p-11 + 0.001;
    for (int64_t i0 = 0; i0 < n; i0 += b) {
        double amax = 0.0;
        for (int64_t i = i0; i < i0 + b; ++i) amax = std::max(amax, std::fabs(static_cast<double>(x[i])));
        for (int64_t i = i0; i < i0 + b; ++i) e[i] = factor * amax / 127.0;
    }
    return e;
}

// matmul vs matmul_reference: for output (t, o),
//   |y - y_ref| <= sum_i |w_i| * conv_err_i + (Q8_1 s-field term) + 1e-5 * sum_i |w_i| * |x_i|.
void check_against_reference(const Matrix& m, const std::vector<float>& x, int64_t n_tokens, const std::vector<float>& y,
                             const char* what) {
    std::vector<float> ref(static_cast<size_t>(n_tokens * m.n_out));
    k::matmul_reference(m.view(), x.data(), m.n_in, n_tokens, ref.data(), m.n_out);
    const uint32_t act = q::vec_dot_type(m.type);
    const size_t rb = row_bytes(m.type, m.n_in);
    int bad = 0;
    double worst = 0.0;
    for (int64_t o = 0; o < m.n_out; ++o) {
        const WeightMagnitude wm = weight_magnitude(m.type, m.bytes.data() + o * rb, m.n_in);
        for (int64_t t = 0; t < n_tokens; ++t) {
            const float* xt = x.data() + t * m.n_in;
            const std::vector<double> ce = conversion_error(act, xt, m.n_in);
            std::vector<float> ax(static_cast<size_t>(m.n_in));
            double bound = 0.0, mag = 0.0;
            for (int64_t i = 0; i < m.n_in; ++i) {
                bound += wm.mag[i] * ce[i];
                mag += wm.mag[i] * std::fabs(static_cast<double>(xt[i]));
                ax[i] = static_cast<float>(std::fabs(static_cast<double>(xt[i])) + ce[i]);
            }
            bound += 1e-5 * mag + q8_1_s_error(m.type, wm, ax) + 1e-30;
            const double err = std::fabs(static_cast<double>(y[t * m.n_out + o]) - ref[t * m.n_out + o]);
            worst = std::max(worst, err / bound);
            if (err > bound && bad++ < 3) {
                std::fprintf(stderr, "  %s %s t=%lld o=%lld: %.9g vs ref %.9g (err %.3g > bound %.3g)\n", name(m.type),
                             what, static_cast<long long>(t), static_cast<long long>(o), y[t * m.n_out + o],
                             ref[t * m.n_out + o], err, bound);
            }
        }
    }
    CHECK_MSG(bad == 0, "%s %s: %d outputs outside the bound", name(m.type), what, bad);
    CHECK_MSG(worst < 1.0, "%s %s: worst %.3f of bound", name(m.type), what, worst);
}

TEST_CASE("matmul equals matmul_reference within the activation-conversion bound (all types and levels)") {
    Rng rng(303);
    moe::runtime::ThreadPool pools[] = {moe::runtime::ThreadPool(1), moe::runtime::ThreadPool(2),
                                        moe::runtime::ThreadPool(3)};
    for (GgmlType wt : kWeightTypes) {
        const uint32_t w = tid(wt);
        const int64_t n_in = block_of(w) == 256 || block_of(q::vec_dot_type(w)) == 256 ? 512 : 320;
        const Matrix m = make_matrix(w, n_in, 37, rng);
        for (int64_t n_tokens : {1, 5, 33}) {
            const std::vector<float> x = gaussian(rng, n_tokens * n_in);
            std::vector<float> first;
            for (Isa isa : all_levels()) {
                for (auto& pool : pools) {
                    std::vector<float> y(static_cast<size_t>(n_tokens * m.n_out), NAN);
                    k::matmul(m.view(), x.data(), n_in, n_tokens, y.data(), m.n_out, pool, isa);
                    if (isa == Isa::Scalar && pool.size() == 1) {
                        const std::string what = "tokens=" + std::to_string(n_tokens);
                        check_against_reference(m, x, n_tokens, y, what.c_str());
                        first = y;
                    } else if (isa == Isa::Scalar) {
                        // Same level: bit-identical whatever the thread count.
                        CHECK_MSG(std::memcmp(y.data(), first.data(), y.size() * sizeof(float)) == 0,
                                  "%s tokens=%lld: %d threads differ from 1", name(w), static_cast<long long>(n_tokens),
                                  pool.size());
                    } else if (pool.size() == 1) {
                        const std::string what = std::string(moe::cpu::isa_name(isa)) + " tokens=" + std::to_string(n_tokens);
                        check_against_reference(m, x, n_tokens, y, what.c_str());
                    }
                }
            }
        }
    }
}

TEST_CASE("matmul: strided rows, padding untouched, batching and threads do not change a bit") {
    Rng rng(404);
    moe::runtime::ThreadPool pool1(1), pool3(3);
    for (GgmlType wt : kWeightTypes) {
        const uint32_t w = tid(wt);
        const int64_t n_in = 256, n_out = 29, n_tokens = 5, xs = n_in + 3, ys = n_out + 2;
        const Matrix m = make_matrix(w, n_in, n_out, rng);
        const std::vector<float> x = gaussian(rng, n_tokens * xs);
        for (Isa isa : all_levels()) {
            std::vector<float> y(static_cast<size_t>(n_tokens * ys), -7.0f);
            k::matmul(m.view(), x.data(), xs, n_tokens, y.data(), ys, pool3, isa);
            // Types with a batched order of their own (llama.cpp's tinyBLAS for Q8_0 / Q4_0) give
            // single tokens the vec_dot order, so a token of the batch is compared with a batch of
            // two copies of it: the other rows of a batch must not change a bit.
            const bool batched_order = q::vec_dot_kernels_for(isa).tinyblas[w] != nullptr;
            bool pad_ok = true, same = true;
            for (int64_t t = 0; t < n_tokens; ++t) {
                for (int64_t o = n_out; o < ys; ++o) pad_ok = pad_ok && y[t * ys + o] == -7.0f;
                std::vector<float> one(static_cast<size_t>(2 * n_out));
                if (batched_order) {
                    std::vector<float> pair(x.begin() + t * xs, x.begin() + t * xs + n_in);
                    pair.insert(pair.end(), pair.begin(), pair.end());
                    k::matmul(m.view(), pair.data(), n_in, 2, one.data(), n_out, pool1, isa);
                    same = same && std::memcmp(one.data(), one.data() + n_out, n_out * sizeof(float)) == 0;
                } else {
                    k::matmul(m.view(), x.data() + t * xs, n_in, 1, one.data(), n_out, pool1, isa);
                }
                same = same && std::memcmp(one.data(), y.data() + t * ys, n_out * sizeof(float)) == 0;
            }
            CHECK_MSG(pad_ok, "%s on %s: padding written", name(w), moe::cpu::isa_name(isa));
            CHECK_MSG(same, "%s on %s: batched tokens differ from single-token calls", name(w), moe::cpu::isa_name(isa));
        }
    }
}

TEST_CASE("matmul: decode-sized matrices split over threads give the single-thread result") {
    Rng rng(505);
    moe::runtime::ThreadPool pool1(1), pool2(2), pool3(3);
    for (GgmlType wt : {GgmlType::Q4_K, GgmlType::Q8_0, GgmlType::MXFP4, GgmlType::Q6_K, GgmlType::F32}) {
        const Matrix m = make_matrix(tid(wt), 2048, 300, rng);
        const std::vector<float> x = gaussian(rng, 2048);
        const Isa isa = moe::cpu::best_isa();
        std::vector<float> y1(300), y2(300), y3(300);
        k::matmul(m.view(), x.data(), 2048, 1, y1.data(), 300, pool1, isa);
        k::matmul(m.view(), x.data(), 2048, 1, y2.data(), 300, pool2, isa);
        k::matmul(m.view(), x.data(), 2048, 1, y3.data(), 300, pool3, isa);
        CHECK_MSG(std::memcmp(y1.data(), y2.data(), sizeof(float) * 300) == 0, "%s 2 threads", name(tid(wt)));
        CHECK_MSG(std::memcmp(y1.data(), y3.data(), sizeof(float) * 300) == 0, "%s 3 threads", name(tid(wt)));
        if (wt == GgmlType::Q4_K) check_against_reference(m, x, 1, y1, "decode");
    }
}

// Work above matmul's inline threshold (weight bytes x rows >= 256 KiB) is split over the pool; the
// split must not change a bit, for every type and level.
TEST_CASE("every type: products split over 2 and 3 threads equal the single-thread result bit for bit") {
    Rng rng(1111);
    moe::runtime::ThreadPool pool1(1), pool2(2), pool3(3);
    for (GgmlType wt : kWeightTypes) {
        const uint32_t w = tid(wt);
        const int64_t n_in = 1024, n_out = 131, n_tokens = 9;
        const Matrix m = make_matrix(w, n_in, n_out, rng);
        const std::vector<float> x = gaussian(rng, n_tokens * n_in);
        const k::ExpertMatrix ex{m.bytes.data(), w, n_in, 32, 4, row_bytes(w, n_in), row_bytes(w, n_in) * 32};
        std::vector<int32_t> src, eid;
        for (int r = 0; r < 40; ++r) {
            src.push_back(rng.below(static_cast<int>(n_tokens)));
            eid.push_back(rng.below(3));  // expert 3 unused
        }
        for (Isa isa : all_levels()) {
            std::vector<float> y1(static_cast<size_t>(n_tokens * n_out)), y2(y1.size()), y3(y1.size());
            k::matmul(m.view(), x.data(), n_in, n_tokens, y1.data(), n_out, pool1, isa);
            k::matmul(m.view(), x.data(), n_in, n_tokens, y2.data(), n_out, pool2, isa);
            k::matmul(m.view(), x.data(), n_in, n_tokens, y3.data(), n_out, pool3, isa);
            CHECK_MSG(std::memcmp(y1.data(), y2.data(), y1.size() * sizeof(float)) == 0 &&
                          std::memcmp(y1.data(), y3.data(), y1.size() * sizeof(float)) == 0,
                      "%s on %s: matmul", name(w), moe::cpu::isa_name(isa));
            std::vector<float> e1(40 * 32), e3(40 * 32);
            k::matmul_experts(ex, x.data(), n_in, src.data(), eid.data(), 40, e3.data(), 32, pool3, isa);
            k::matmul_experts(ex, x.data(), n_in, src.data(), eid.data(), 40, e1.data(), 32, pool1, isa);
            CHECK_MSG(std::memcmp(e1.data(), e3.data(), e1.size() * sizeof(float)) == 0, "%s on %s: experts", name(w),
                      moe::cpu::isa_name(isa));
        }
    }
}

// Batches of more than 64K activation elements are converted on all threads.
TEST_CASE("matmul / matmul_experts: large batches (parallel activation conversion) equal the 1-thread result") {
    Rng rng(1001);
    moe::runtime::ThreadPool pool1(1), pool3(3);
    const Isa isa = moe::cpu::best_isa();
    for (GgmlType wt : {GgmlType::Q4_K, GgmlType::Q8_0, GgmlType::F16}) {
        const uint32_t w = tid(wt);
        const int64_t n_in = 1024, n_out = 24, n_tokens = 70;
        const Matrix m = make_matrix(w, n_in, n_out, rng);
        const std::vector<float> x = gaussian(rng, n_tokens * n_in);
        std::vector<float> y1(static_cast<size_t>(n_tokens * n_out)), y3(y1.size());
        // The multi-thread call first: scratch buffers are reused, so a row the parallel conversion
        // skipped must not find the right values left over from an earlier call.
        k::matmul(m.view(), x.data(), n_in, n_tokens, y3.data(), n_out, pool3, isa);
        k::matmul(m.view(), x.data(), n_in, n_tokens, y1.data(), n_out, pool1, isa);
        CHECK_MSG(std::memcmp(y1.data(), y3.data(), y1.size() * sizeof(float)) == 0, "%s matmul", name(w));

        // Experts: 3 experts, every token to two of them (sources 0..69, each used twice).
        const k::ExpertMatrix ex{m.bytes.data(), w, n_in, 8, 3, row_bytes(w, n_in), row_bytes(w, n_in) * 8};
        std::vector<int32_t> src, eid;
        for (int32_t t = 0; t < n_tokens; ++t) {
            src.push_back(t);
            eid.push_back(t % 3);
            src.push_back(t);
            eid.push_back((t + 1) % 3);
        }
        const int64_t n_rows = static_cast<int64_t>(src.size());
        const std::vector<float> xe = gaussian(rng, n_tokens * n_in);
        std::vector<float> e1(static_cast<size_t>(n_rows * 8)), e3(e1.size());
        k::matmul_experts(ex, xe.data(), n_in, src.data(), eid.data(), n_rows, e3.data(), 8, pool3, isa);
        k::matmul_experts(ex, xe.data(), n_in, src.data(), eid.data(), n_rows, e1.data(), 8, pool1, isa);
        CHECK_MSG(std::memcmp(e1.data(), e3.data(), e1.size() * sizeof(float)) == 0, "%s experts", name(w));
        // Row r of expert e equals the dense product of that expert's matrix (token by token: the
        // expert product, like llama.cpp's mul_mat_id, never takes a batched tinyBLAS order).
        std::vector<float> dense(static_cast<size_t>(n_tokens * 8));
        bool same = true;
        for (int32_t e = 0; e < 3; ++e) {
            for (int32_t t = 0; t < n_tokens; ++t) {
                k::matmul(ex.expert(e), xe.data() + t * n_in, n_in, 1, dense.data() + t * 8, 8, pool1, isa);
            }
            for (int64_t r = 0; r < n_rows; ++r) {
                if (eid[r] == e) same = same && std::memcmp(&e1[r * 8], &dense[src[r] * 8], 8 * sizeof(float)) == 0;
            }
        }
        CHECK_MSG(same, "%s experts vs dense", name(w));
    }
}

// 3-D expert tensor of n_expert matrices, contiguous.
struct Experts {
    uint32_t type;
    int64_t n_in, n_out, n_expert;
    std::vector<uint8_t> bytes;
    k::ExpertMatrix view() const {
        const size_t rb = row_bytes(type, n_in);
        return {bytes.data(), type, n_in, n_out, n_expert, rb, rb * static_cast<size_t>(n_out)};
    }
};

Experts make_experts(uint32_t type, int64_t n_in, int64_t n_out, int64_t n_expert, Rng& rng) {
    Experts e{type, n_in, n_out, n_expert, {}};
    for (int64_t i = 0; i < n_expert; ++i) {
        const Matrix m = make_matrix(type, n_in, n_out, rng);
        e.bytes.insert(e.bytes.end(), m.bytes.begin(), m.bytes.end());
    }
    return e;
}

TEST_CASE("matmul_experts equals a loop of single-row matmuls bit for bit") {
    Rng rng(606);
    moe::runtime::ThreadPool pool1(1), pool2(2), pool3(3);
    moe::runtime::ThreadPool* pools[] = {&pool1, &pool2, &pool3};
    for (GgmlType wt : kWeightTypes) {
        const uint32_t w = tid(wt);
        const int64_t n_in = 256, n_out = 19, n_expert = 6, n_src = 7, xs = n_in + 1, ys = n_out + 3;
        const Experts ex = make_experts(w, n_in, n_out, n_expert, rng);
        const std::vector<float> x = gaussian(rng, n_src * xs);
        for (int64_t n_rows : {1, 5, 33}) {
            // Experts 2 and 5 get no rows; sources repeat.
            const int32_t used[] = {0, 1, 3, 4};
            std::vector<int32_t> src(static_cast<size_t>(n_rows)), eid(static_cast<size_t>(n_rows));
            for (int64_t r = 0; r < n_rows; ++r) {
                src[r] = rng.below(n_src);
                eid[r] = used[rng.below(4)];
            }
            for (Isa isa : all_levels()) {
                std::vector<float> want(static_cast<size_t>(n_rows * ys), -3.0f);
                for (int64_t r = 0; r < n_rows; ++r) {
                    k::matmul(ex.view().expert(eid[r]), x.data() + src[r] * xs, xs, 1, want.data() + r * ys, ys, pool1, isa);
                }
                for (auto* pool : pools) {
                    std::vector<float> y(static_cast<size_t>(n_rows * ys), -3.0f);
                    k::matmul_experts(ex.view(), x.data(), xs, src.data(), eid.data(), n_rows, y.data(), ys, *pool, isa);
                    CHECK_MSG(std::memcmp(y.data(), want.data(), y.size() * sizeof(float)) == 0,
                              "%s on %s rows=%lld threads=%d", name(w), moe::cpu::isa_name(isa),
                              static_cast<long long>(n_rows), pool->size());
                }
            }
        }
    }
}

TEST_CASE("matmul_experts: decode shape (one source, k experts of many) and every row to one expert") {
    Rng rng(707);
    moe::runtime::ThreadPool pool1(1), pool3(3);
    const Isa isa = moe::cpu::best_isa();
    for (GgmlType wt : {GgmlType::Q4_K, GgmlType::MXFP4, GgmlType::Q8_0}) {
        const uint32_t w = tid(wt);
        const Experts ex = make_experts(w, 512, 96, 16, rng);
        const std::vector<float> x = gaussian(rng, 4 * 512);
        for (int layout = 0; layout < 2; ++layout) {
            std::vector<int32_t> src, eid;
            if (layout == 0) {
                for (int32_t e : {13, 2, 7, 0, 9, 15}) {
                    src.push_back(0);
                    eid.push_back(e);
                }
            } else {
                for (int r = 0; r < 12; ++r) {
                    src.push_back(r % 4);
                    eid.push_back(11);
                }
            }
            const int64_t n_rows = static_cast<int64_t>(src.size());
            std::vector<float> want(static_cast<size_t>(n_rows * 96)), y(want.size());
            for (int64_t r = 0; r < n_rows; ++r) {
                k::matmul(ex.view().expert(eid[r]), x.data() + src[r] * 512, 512, 1, want.data() + r * 96, 96, pool1, isa);
            }
            k::matmul_experts(ex.view(), x.data(), 512, src.data(), eid.data(), n_rows, y.data(), 96, pool3, isa);
            CHECK_MSG(std::memcmp(y.data(), want.data(), y.size() * sizeof(float)) == 0, "%s layout %d", name(w), layout);
        }
    }
}

TEST_CASE("matmul_experts_swiglu equals gate and up products followed by swiglu, bit for bit") {
    Rng rng(808);
    moe::runtime::ThreadPool pool1(1), pool2(2), pool3(3);
    moe::runtime::ThreadPool* pools[] = {&pool1, &pool2, &pool3};
    for (GgmlType wt : {GgmlType::Q4_K, GgmlType::Q6_K, GgmlType::Q8_0, GgmlType::MXFP4, GgmlType::F32, GgmlType::F16}) {
        const uint32_t w = tid(wt);
        // n_out 200: not a multiple of the fused chunk alignment, so the last chunk has a SIMD tail.
        const int64_t n_in = 256, n_out = 200, n_expert = 5, n_src = 6, ys = n_out + 5;
        const Experts gate = make_experts(w, n_in, n_out, n_expert, rng);
        const Experts up = make_experts(w, n_in, n_out, n_expert, rng);
        const std::vector<float> x = gaussian(rng, n_src * n_in);
        for (int64_t n_rows : {1, 8, 40}) {
            std::vector<int32_t> src(static_cast<size_t>(n_rows)), eid(static_cast<size_t>(n_rows));
            for (int64_t r = 0; r < n_rows; ++r) {
                src[r] = rng.below(n_src);
                eid[r] = rng.below(n_expert);
            }
            for (Isa isa : all_levels()) {
                std::vector<float> g(static_cast<size_t>(n_rows * ys), -3.0f), u(g.size(), -3.0f);
                k::matmul_experts(gate.view(), x.data(), n_in, src.data(), eid.data(), n_rows, g.data(), ys, pool1, isa);
                k::matmul_experts(up.view(), x.data(), n_in, src.data(), eid.data(), n_rows, u.data(), ys, pool1, isa);
                for (int64_t r = 0; r < n_rows; ++r) k::swiglu(g.data() + r * ys, u.data() + r * ys, g.data() + r * ys, n_out, isa);
                for (auto* pool : pools) {
                    std::vector<float> y(g.size(), -3.0f), scratch(g.size(), -3.0f);
                    k::matmul_experts_swiglu(gate.view(), up.view(), x.data(), n_in, src.data(), eid.data(), n_rows, y.data(),
                                             scratch.data(), ys, *pool, isa);
                    bool same = true;
                    for (int64_t r = 0; r < n_rows; ++r) {
                        same = same && std::memcmp(y.data() + r * ys, g.data() + r * ys, n_out * sizeof(float)) == 0;
                    }
                    CHECK_MSG(same, "%s on %s rows=%lld threads=%d", name(w), moe::cpu::isa_name(isa),
                              static_cast<long long>(n_rows), pool->size());
                }
            }
        }
    }
}

// ------------------------------------------------------------------------------------------------
// 5. Errors
// ------------------------------------------------------------------------------------------------

using moe_test::throws_error;

TEST_CASE("dot_type_of / matmul reject weights without a dot product, naming the type") {
    for (GgmlType t : {GgmlType::IQ2_XXS, GgmlType::IQ4_NL, GgmlType::IQ4_XS, GgmlType::IQ1_M, GgmlType::Q8_K,
                       GgmlType::Q8_1, GgmlType::TQ2_0, GgmlType::I32, GgmlType::NVFP4}) {
        CHECK(throws_error([&] { k::dot_type_of(tid(t)); }, ErrorCode::UnsupportedType, {name(tid(t))}));
    }
    CHECK(throws_error([] { k::dot_type_of(4); }, ErrorCode::UnsupportedType, {"type#4"}));
    CHECK(throws_error([] { k::dot_type_of(1000); }, ErrorCode::UnsupportedType, {"type#1000"}));

    moe::runtime::ThreadPool pool(1);
    std::vector<uint8_t> data(4096);
    std::vector<float> x(256), y(4);
    const k::WeightMatrix iq{data.data(), tid(GgmlType::IQ2_XXS), 256, 4, 66};
    CHECK(throws_error([&] { k::matmul(iq, x.data(), 256, 1, y.data(), 4, pool, Isa::Scalar); },
                       ErrorCode::UnsupportedType, {"IQ2_XXS"}));
    CHECK(throws_error([&] { k::matmul_reference(iq, x.data(), 256, 1, y.data(), 4); }, ErrorCode::UnsupportedType,
                       {"IQ2_XXS"}));
    const k::ExpertMatrix q81{data.data(), tid(GgmlType::Q8_1), 32, 4, 2, 36, 144};
    const int32_t zero = 0;
    CHECK(throws_error([&] { k::matmul_experts(q81, x.data(), 32, &zero, &zero, 1, y.data(), 4, pool, Isa::Scalar); },
                       ErrorCode::UnsupportedType, {"Q8_1"}));
}

TEST_CASE("matmul / matmul_experts validate shapes and expert ids") {
    moe::runtime::ThreadPool pool(2);
    std::vector<uint8_t> data(1 << 16);
    std::vector<float> x(1024), y(64);
    const uint32_t q4k = tid(GgmlType::Q4_K), q80 = tid(GgmlType::Q8_0);
    // Row length not a multiple of the block size (of the weight, or of Q8_K for K-quants).
    CHECK(throws_error([&] { k::matmul({data.data(), q4k, 100, 2, 144}, x.data(), 100, 1, y.data(), 2, pool, Isa::Scalar); },
                       ErrorCode::InvalidArgument, {"Q4_K", "256"}));
    CHECK(throws_error([&] { k::matmul({data.data(), q80, 48, 2, 34}, x.data(), 48, 1, y.data(), 2, pool, Isa::Scalar); },
                       ErrorCode::InvalidArgument, {"Q8_0", "32"}));
    // Row stride shorter than a row.
    CHECK(throws_error([&] { k::matmul({data.data(), q4k, 256, 2, 100}, x.data(), 256, 1, y.data(), 2, pool, Isa::Scalar); },
                       ErrorCode::InvalidArgument, {"144"}));
    // Expert id out of range / negative source.
    const k::ExpertMatrix ex{data.data(), q80, 32, 2, 3, 34, 68};
    const int32_t src[2] = {0, 1}, bad_e[2] = {1, 3}, neg_src[2] = {0, -1}, ok_e[2] = {0, 2};
    CHECK(throws_error([&] { k::matmul_experts(ex, x.data(), 32, src, bad_e, 2, y.data(), 2, pool, Isa::Scalar); },
                       ErrorCode::InvalidArgument, {"expert 3"}));
    CHECK(throws_error([&] { k::matmul_experts(ex, x.data(), 32, neg_src, ok_e, 2, y.data(), 2, pool, Isa::Scalar); },
                       ErrorCode::InvalidArgument, {"-1"}));
    // Nothing to do is not an error.
    k::matmul({data.data(), q80, 32, 2, 34}, x.data(), 32, 0, y.data(), 2, pool, Isa::Scalar);
    k::matmul_experts(ex, x.data(), 32, src, ok_e, 0, y.data(), 2, pool, Isa::Scalar);
}

}  // namespace

TEST_MAIN()
