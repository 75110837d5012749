// Native tests for cpp/quant and cpp/cpu:
//   1. fp16 / bf16 conversions against double-based references (exhaustive where possible);
//   2. dequantization of hand-built blocks against independent bit-level decoders written from the
//      layout description in the reference note §2 (catches layout mistakes);
//   3. quantize -> dequantize round-trip error bounds per type;
//   4. every SIMD kernel of every ISA level this CPU runs equals the scalar reference bit for bit;
//   5. CPU level parsing / requirement errors, the NODE_MOE_CPU override, and the validating entry
//      points' errors.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "check.h"
#include "rng.h"
#include "error_check.h"
#include "common/error.h"
#include "cpu/cpu_features.h"
#include "quant/fp16.h"
#include "quant/ggml_types.h"
#include "quant/quant.h"

using moe::Error;
using moe::ErrorCode;
using moe::cpu::Isa;
namespace q = moe::quant;
using q::GgmlType;

namespace {

// ------------------------------------------------------------------------------------------------
// Small utilities
// ------------------------------------------------------------------------------------------------

using moe_test::Rng;

uint32_t bits_of(float f) { return q::f32_bits(f); }
float float_of(uint32_t u) { return q::f32_from_bits(u); }

uint32_t tid(GgmlType t) { return static_cast<uint32_t>(t); }
const q::TypeTraits& traits(GgmlType t) { return *q::type_traits(tid(t)); }
const char* name(GgmlType t) { return traits(t).name; }

const GgmlType kAllTypes[] = {GgmlType::F32,  GgmlType::F16,  GgmlType::BF16, GgmlType::Q4_0, GgmlType::Q4_1,
                              GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q8_0, GgmlType::Q8_1, GgmlType::Q2_K,
                              GgmlType::Q3_K, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K, GgmlType::Q8_K,
                              GgmlType::MXFP4};

using moe_test::throws_error;

// Same bits, or both NaN (for comparisons where a NaN payload may legitimately differ).
bool same_or_both_nan(float a, float b) { return bits_of(a) == bits_of(b) || (std::isnan(a) && std::isnan(b)); }

// ------------------------------------------------------------------------------------------------
// 1. fp16 / bf16
// ------------------------------------------------------------------------------------------------

// IEEE binary16 value from its fields, in double (exact). NaN for NaN patterns.
double half_value(uint16_t h) {
    const int sign = h >> 15, exp = (h >> 10) & 31, mant = h & 1023;
    double v;
    if (exp == 31) v = mant ? std::numeric_limits<double>::quiet_NaN() : std::numeric_limits<double>::infinity();
    else if (exp == 0) v = std::ldexp(mant, -24);
    else v = std::ldexp(1024 + mant, exp - 25);
    return sign ? -v : v;
}

// Nearest-even binary16 for a finite or infinite float, by search over the (monotonic) positive
// bit patterns; values at or beyond 65520 round to inf as if a next step 65536 existed.
uint16_t ref_fp32_to_fp16(float x) {
    const uint16_t sign = std::signbit(x) ? 0x8000 : 0;
    const double ax = std::fabs(static_cast<double>(x));
    if (ax >= 65520.0) return sign | 0x7c00;
    uint32_t lo = 0, hi = 0x7bff;  // largest pattern with value <= ax
    while (lo < hi) {
        const uint32_t mid = (lo + hi + 1) / 2;
        if (half_value(static_cast<uint16_t>(mid)) <= ax) lo = mid; else hi = mid - 1;
    }
    const double below = half_value(static_cast<uint16_t>(lo));
    const double above = lo == 0x7bff ? 65536.0 : half_value(static_cast<uint16_t>(lo + 1));
    uint32_t r;
    if (ax - below < above - ax) r = lo;
    else if (ax - below > above - ax) r = lo + 1;
    else r = (lo & 1) ? lo + 1 : lo;
    return static_cast<uint16_t>(sign | r);
}

// Nearest-even bf16 (the top 16 bits of an fp32) for a non-NaN float, by comparing the two
// truncation neighbours in double. 0x7f80 (inf) counts as 2^128 for rounding.
uint16_t ref_fp32_to_bf16(float x) {
    const uint32_t u = bits_of(x);
    const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000);
    const uint32_t t = (u >> 16) & 0x7fff;
    if (t == 0x7f80) return sign | 0x7f80;  // inf
    auto value = [](uint32_t b) { return b == 0x7f80 ? std::ldexp(1.0, 128) : static_cast<double>(float_of(b << 16)); };
    const double ax = std::fabs(static_cast<double>(x)), below = value(t), above = value(t + 1);
    uint32_t r;
    if (ax - below < above - ax) r = t;
    else if (ax - below > above - ax) r = t + 1;
    else r = (t & 1) ? t + 1 : t;
    return static_cast<uint16_t>(sign | r);
}

TEST_CASE("fp16 -> fp32 is exact for all 65536 halves; fp32 -> fp16 round-trips them") {
    int bad = 0;
    for (uint32_t h = 0; h < 65536; ++h) {
        const uint16_t hh = static_cast<uint16_t>(h);
        const float f = q::fp16_to_fp32(hh);
        const double ref = half_value(hh);
        if (std::isnan(ref)) {
            // NaN stays NaN with its sign and payload; the quiet bit is set (as F16C does).
            const uint32_t u = bits_of(f);
            const bool ok = std::isnan(f) && (u >> 31) == (h >> 15u) && ((u >> 13) & 0x3ff) == ((h & 0x3ff) | 0x200) &&
                            (u & 0x1fff) == 0;
            if (!ok) ++bad;
            if (q::fp32_to_fp16(f) != (hh | 0x200)) ++bad;
        } else {
            if (static_cast<double>(f) != ref || std::signbit(f) != ((h >> 15) != 0)) ++bad;
            if (q::fp32_to_fp16(f) != hh) ++bad;
        }
    }
    CHECK_MSG(bad == 0, "%d mismatches", bad);
}

TEST_CASE("fp32 -> fp16 rounds to nearest even: midpoints, neighbours, specials, a sweep of all floats") {
    std::vector<float> xs = {0.0f, -0.0f, 1.0f, -1.0f, 65504.0f, 65519.99f, 65520.0f, -65520.0f, 65536.0f,
                             std::numeric_limits<float>::max(), std::numeric_limits<float>::infinity(),
                             -std::numeric_limits<float>::infinity(), std::numeric_limits<float>::denorm_min(),
                             std::numeric_limits<float>::min(), 0x1p-24f, 0x1p-25f, -0x1p-25f, 0x1.000002p-25f,
                             0x1.8p-25f, 0x1.8p-24f, 0x1.ffcp-15f, 0x1.ffep-15f, 0x1p-14f, 1.0f + 0x1p-11f,
                             1.0f + 0x1p-10f + 0x1p-11f};
    // Every midpoint between consecutive finite halves (representable in fp32) and its neighbours.
    for (uint32_t h = 0; h < 0x7bff; ++h) {
        const float mid = static_cast<float>((half_value(static_cast<uint16_t>(h)) + half_value(static_cast<uint16_t>(h + 1))) / 2);
        for (float m : {mid, -mid}) {
            xs.push_back(m);
            xs.push_back(std::nextafter(m, 0.0f));
            xs.push_back(std::nextafter(m, m * 2));
        }
    }
    int bad = 0;
    for (float x : xs) {
        if (q::fp32_to_fp16(x) != ref_fp32_to_fp16(x)) {
            if (bad++ < 5) std::fprintf(stderr, "  %a -> %04x, want %04x\n", x, q::fp32_to_fp16(x), ref_fp32_to_fp16(x));
        }
    }
    // A sweep over the whole fp32 bit space (step coprime to everything interesting).
    for (uint64_t u = 0; u < (1ull << 32); u += 997) {
        const float x = float_of(static_cast<uint32_t>(u));
        if (std::isnan(x)) {
            // NaN: quiet half NaN, sign and top payload bits kept.
            const uint16_t want = static_cast<uint16_t>(((u >> 16) & 0x8000) | 0x7e00 | ((u >> 13) & 0x3ff));
            if (q::fp32_to_fp16(x) != want) ++bad;
        } else if (q::fp32_to_fp16(x) != ref_fp32_to_fp16(x)) {
            ++bad;
        }
    }
    CHECK_MSG(bad == 0, "%d mismatches", bad);
}

TEST_CASE("bf16 conversions: exact widening, nearest-even narrowing, quiet NaNs") {
    int bad = 0;
    for (uint32_t b = 0; b < 65536; ++b) {
        const float f = q::bf16_to_fp32(static_cast<uint16_t>(b));
        if (bits_of(f) != b << 16) ++bad;
        const uint16_t back = q::fp32_to_bf16(f);
        const bool nan = (b & 0x7fff) > 0x7f80;
        if (back != (nan ? (b | 0x40) : b)) ++bad;
    }
    CHECK_MSG(bad == 0, "%d round-trip mismatches", bad);

    bad = 0;
    std::vector<float> xs = {0.0f, -0.0f, 1.0f, std::numeric_limits<float>::max(), -std::numeric_limits<float>::max(),
                             std::numeric_limits<float>::denorm_min(), std::numeric_limits<float>::min(),
                             std::numeric_limits<float>::infinity()};
    for (uint32_t b = 0; b < 0x7f80; b += 7) {  // midpoints between consecutive bf16 values, both signs
        const float mid = float_of((b << 16) | 0x8000);
        for (float m : {mid, -mid}) {
            xs.push_back(m);
            xs.push_back(std::nextafter(m, 0.0f));
            xs.push_back(std::nextafter(m, m * 2));
        }
    }
    for (uint64_t u = 0; u < (1ull << 32); u += 997) xs.push_back(float_of(static_cast<uint32_t>(u)));
    for (float x : xs) {
        const uint16_t got = q::fp32_to_bf16(x);
        const uint16_t want = std::isnan(x) ? static_cast<uint16_t>((bits_of(x) >> 16) | 0x40) : ref_fp32_to_bf16(x);
        if (got != want && bad++ < 5) std::fprintf(stderr, "  %a -> %04x, want %04x\n", x, got, want);
    }
    CHECK_MSG(bad == 0, "%d mismatches", bad);
}

// ------------------------------------------------------------------------------------------------
// 2. Hand-built blocks vs independent decoders
// ------------------------------------------------------------------------------------------------

// `width` bits starting at absolute bit `bit` of the little-endian bit stream `p` (bit 0 = LSB of p[0]).
int get_bits(const uint8_t* p, int bit, int width) {
    int v = 0;
    for (int k = 0; k < width; ++k) v |= ((p[(bit + k) / 8] >> ((bit + k) % 8)) & 1) << k;
    return v;
}
int byte_bits(const uint8_t* p, int byte, int shift, int width) { return get_bits(p, 8 * byte + shift, width); }
int8_t s8(const uint8_t* p, int byte) { return static_cast<int8_t>(p[byte]); }
float f16_field(const uint8_t* p, int byte) { return q::fp16_to_fp32(static_cast<uint16_t>(p[byte] | (p[byte + 1] << 8))); }

// Element e of one block, decoded from the note's per-element description. The float expressions
// are the note's formulas evaluated left to right, i.e. the order ggml uses.
float decode_element(GgmlType t, const uint8_t* b, int e) {
    switch (t) {
        case GgmlType::Q4_0: {  // d@0, qs@2: element j low nibble of qs[j], j+16 high nibble
            const int qv = byte_bits(b, 2 + e % 16, 4 * (e / 16), 4);
            return static_cast<float>(qv - 8) * f16_field(b, 0);
        }
        case GgmlType::Q4_1: {  // d@0, m@2, qs@4
            const int qv = byte_bits(b, 4 + e % 16, 4 * (e / 16), 4);
            return static_cast<float>(qv) * f16_field(b, 0) + f16_field(b, 2);
        }
        case GgmlType::Q5_0: {  // d@0, qh@2 (bit e), qs@6
            const int qv = byte_bits(b, 6 + e % 16, 4 * (e / 16), 4) | (get_bits(b, 16 + e, 1) << 4);
            return static_cast<float>(qv - 16) * f16_field(b, 0);
        }
        case GgmlType::Q5_1: {  // d@0, m@2, qh@4, qs@8
            const int qv = byte_bits(b, 8 + e % 16, 4 * (e / 16), 4) | (get_bits(b, 32 + e, 1) << 4);
            return static_cast<float>(qv) * f16_field(b, 0) + f16_field(b, 2);
        }
        case GgmlType::Q8_0: return static_cast<float>(s8(b, 2 + e)) * f16_field(b, 0);
        case GgmlType::Q8_1: return static_cast<float>(s8(b, 4 + e)) * f16_field(b, 0);
        case GgmlType::Q2_K: {  // scales@0, qs@16, d@80, dmin@82
            const int half = e / 128, j = (e % 128) / 32, l = e % 32, sub = e / 16;
            const int qv = byte_bits(b, 16 + 32 * half + l, 2 * j, 2);
            const int sc = byte_bits(b, sub, 0, 4), m = byte_bits(b, sub, 4, 4);
            return f16_field(b, 80) * static_cast<float>(sc) * static_cast<float>(qv) -
                   f16_field(b, 82) * static_cast<float>(m);
        }
        case GgmlType::Q3_K: {  // hmask@0, qs@32, scales@96, d@108
            const int half = e / 128, j = (e % 128) / 32, l = e % 32, sub = e / 16;
            const int low = byte_bits(b, 32 + 32 * half + l, 2 * j, 2);
            const int high = byte_bits(b, l, 4 * half + j, 1);
            // scale: low 4 bits = nibble (sub / 8) of byte sub % 8, bits 4-5 = pair (sub / 4) of byte 8 + sub % 4
            const int s = byte_bits(b, 96 + sub % 8, 4 * (sub / 8), 4) | (byte_bits(b, 104 + sub % 4, 2 * (sub / 4), 2) << 4);
            return f16_field(b, 108) * static_cast<float>(s - 32) * static_cast<float>(low - (high ? 0 : 4));
        }
        case GgmlType::Q4_K:
        case GgmlType::Q5_K: {  // d@0 dmin@2 scales@4 [qh@16] qs@16|48
            const bool five = t == GgmlType::Q5_K;
            const int sub = e / 32, c = e / 64, l = e % 32;
            int qv = byte_bits(b, (five ? 48 : 16) + 32 * c + l, 4 * (sub % 2), 4);
            if (five) qv |= byte_bits(b, 16 + l, sub, 1) << 4;
            int sc, m;
            if (sub < 4) {
                sc = byte_bits(b, 4 + sub, 0, 6);
                m = byte_bits(b, 8 + sub, 0, 6);
            } else {
                sc = byte_bits(b, 4 + sub + 4, 0, 4) | (byte_bits(b, 4 + sub - 4, 6, 2) << 4);
                m = byte_bits(b, 4 + sub + 4, 4, 4) | (byte_bits(b, 4 + sub, 6, 2) << 4);
            }
            return f16_field(b, 0) * static_cast<float>(sc) * static_cast<float>(qv) -
                   f16_field(b, 2) * static_cast<float>(m);
        }
        case GgmlType::Q6_K: {  // ql@0 qh@128 scales@192 d@208
            const int half = e / 128, g = (e % 128) / 32, l = e % 32;
            const int low = byte_bits(b, 64 * half + 32 * (g % 2) + l, 4 * (g / 2), 4);
            const int high = byte_bits(b, 128 + 32 * half + l, 2 * g, 2);
            return f16_field(b, 208) * static_cast<float>(s8(b, 192 + e / 16)) * static_cast<float>((low | (high << 4)) - 32);
        }
        case GgmlType::Q8_K: {  // d:f32@0 qs@4
            float d;
            std::memcpy(&d, b, 4);
            return d * static_cast<float>(s8(b, 4 + e));
        }
        case GgmlType::MXFP4: {  // e@0 qs@1
            static const int kValues[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};
            const int code = byte_bits(b, 1 + e % 16, 4 * (e / 16), 4);
            return static_cast<float>(kValues[code]) * std::ldexp(1.0f, b[0] - 128);
        }
        default: return NAN;
    }
}

// Byte offsets of the f16 scale fields of a block type (randomised separately so they are finite).
std::vector<int> f16_fields(GgmlType t) {
    switch (t) {
        case GgmlType::Q4_0: case GgmlType::Q5_0: case GgmlType::Q8_0: return {0};
        case GgmlType::Q4_1: case GgmlType::Q5_1: case GgmlType::Q8_1: return {0, 2};
        case GgmlType::Q2_K: return {80, 82};
        case GgmlType::Q3_K: return {108};
        case GgmlType::Q4_K: case GgmlType::Q5_K: return {0, 2};
        case GgmlType::Q6_K: return {208};
        default: return {};
    }
}

// `nblocks` random blocks: random bytes, with every scale field set to a finite value of random sign
// and magnitude (f16: 2^-20 .. 2^4, including half subnormals; Q8_K's f32 d likewise).
std::vector<uint8_t> random_blocks(GgmlType t, int64_t nblocks, Rng& rng) {
    const size_t bs = traits(t).type_size;
    std::vector<uint8_t> data(bs * static_cast<size_t>(nblocks));
    for (auto& v : data) v = rng.byte();
    for (int64_t i = 0; i < nblocks; ++i) {
        uint8_t* b = data.data() + bs * static_cast<size_t>(i);
        auto random_scale = [&rng] {
            const float mag = std::ldexp(static_cast<float>(1.0 + rng.uniform()), static_cast<int>(rng.u32() % 25) - 20);
            return (rng.u32() & 1) ? -mag : mag;
        };
        for (int off : f16_fields(t)) {
            const uint16_t h = q::fp32_to_fp16(random_scale());
            b[off] = static_cast<uint8_t>(h & 0xff);
            b[off + 1] = static_cast<uint8_t>(h >> 8);
        }
        if (t == GgmlType::Q8_K) {
            const float d = random_scale();
            std::memcpy(b, &d, 4);
        }
    }
    return data;
}

TEST_CASE("dequantize hand-built blocks: every block type matches an independent bit-level decoder") {
    Rng rng(1234);
    for (GgmlType t : kAllTypes) {
        const q::TypeTraits& tr = traits(t);
        if (tr.block_size == 1) continue;  // F32/F16/BF16: covered by the conversion tests
        const int64_t nblocks = 40;
        std::vector<uint8_t> data = random_blocks(t, nblocks, rng);
        if (t == GgmlType::MXFP4) {
            for (int i = 0; i < 256 && i < nblocks; ++i) data[static_cast<size_t>(i) * tr.type_size] = static_cast<uint8_t>(i * 7);
            data[0] = 0;   // the two subnormal scales and the largest
            data[17] = 1;
            data[34] = 255;
        }
        const int64_t n = nblocks * tr.block_size;
        std::vector<float> got(static_cast<size_t>(n));
        q::dequantize(tid(t), data.data(), got.data(), n, Isa::Scalar);
        int bad = 0;
        for (int64_t i = 0; i < n; ++i) {
            const uint8_t* blk = data.data() + static_cast<size_t>(i / tr.block_size) * tr.type_size;
            const float want = decode_element(t, blk, static_cast<int>(i % tr.block_size));
            if (!same_or_both_nan(got[static_cast<size_t>(i)], want) && bad++ < 3) {
                std::fprintf(stderr, "  %s element %lld: got %a want %a\n", tr.name, static_cast<long long>(i),
                             got[static_cast<size_t>(i)], want);
            }
        }
        CHECK_MSG(bad == 0, "%s: %d mismatches", tr.name, bad);
    }
}

TEST_CASE("dequantize known blocks: a few hand-computed values") {
    // Q4_0, d = 0.5: qs[0] = 0x1F -> element 0 = (15-8)*0.5 = 3.5, element 16 = (1-8)*0.5 = -3.5.
    uint8_t q40[18] = {};
    q40[0] = 0x00; q40[1] = 0x38;  // f16 0.5
    q40[2] = 0x1F;
    for (int j = 1; j < 16; ++j) q40[2 + j] = 0x88;
    float y[256];
    q::dequantize(tid(GgmlType::Q4_0), q40, y, 32, Isa::Scalar);
    CHECK(y[0] == 3.5f && y[16] == -3.5f && y[1] == 0.0f && y[31] == 0.0f);

    // Q4_K: d = 1, dmin = 0.5; sub-block 5 has sc = 0b100011 (35), m = 0b010010 (18):
    // sc5 = low nibble of byte 9 | (bits 6-7 of byte 1) << 4; m5 = high nibble of byte 9 | (bits 6-7 of byte 5) << 4.
    uint8_t q4k[144] = {};
    q4k[0] = 0x00; q4k[1] = 0x3C;  // d = 1
    q4k[2] = 0x00; q4k[3] = 0x38;  // dmin = 0.5
    q4k[4 + 1] = 0x80;             // top bits of sc5 = 0b10
    q4k[4 + 5] = 0x40;             // top bits of m5  = 0b01
    q4k[4 + 9] = 0x23;             // sc5 low = 3, m5 low = 2
    q4k[16 + 64 + 7] = 0x90;       // chunk 2, l = 7: high nibble 9 -> element 64*2 + 32 + 7 = 167 (sub-block 5)
    q::dequantize(tid(GgmlType::Q4_K), q4k, y, 256, Isa::Scalar);
    CHECK_MSG(y[167] == 35.0f * 9.0f - 0.5f * 18.0f, "y[167] = %g", y[167]);
    CHECK(y[166] == -9.0f && y[0] == 0.0f);

    // MXFP4, e = 128 -> S = 1: code 0x7 = 12, 0xF = -12.
    uint8_t mx[17] = {};
    mx[0] = 128;
    mx[1] = 0xF7;
    q::dequantize(tid(GgmlType::MXFP4), mx, y, 32, Isa::Scalar);
    CHECK(y[0] == 12.0f && y[16] == -12.0f && y[1] == 0.0f);
}

// ------------------------------------------------------------------------------------------------
// 3. Round-trip error bounds
// ------------------------------------------------------------------------------------------------

struct RoundTripBound {
    GgmlType type;
    double gauss;     // relative RMSE bound, gaussian rows (row scales 0.01 .. 100)
    double outlier;   // same with every 61st element ten times larger
    double constant;  // constant rows 0.37, -1.5 and 1000 (worst of the three)
};

// Bounds are about 1.25x what this implementation measured (shown in the comments as
// gaussian / outlier / constant), rounded up: a quantizer regression trips them, noise does not.
// For reference, ggml's simple Q4_0 reference quantizer (d = max/-8) gives 0.086 on such gaussian
// data. Constant rows are limited by the f16 rounding of the block scales (<= 2^-11 relative),
// except MXFP4, whose power-of-two scale e = floor(log2 amax) - 2 (ggml's rule) leaves values in
// [1.5, 2) * 2^k above the largest code: 1000 comes back as 768.
const RoundTripBound kBounds[] = {
    {GgmlType::F32, 0.0, 0.0, 0.0},              // 0 / 0 / 0
    {GgmlType::F16, 2.6e-4, 2.7e-4, 4.0e-4},     // 0.000208 / 0.000209 / 0.000317
    {GgmlType::BF16, 2.1e-3, 2.1e-3, 2.9e-3},    // 0.001675 / 0.001642 / 0.002323
    {GgmlType::Q8_0, 6.6e-3, 1.28e-2, 3.8e-4},   // 0.005267 / 0.010180 / 0.000297
    {GgmlType::Q8_1, 6.6e-3, 1.28e-2, 3.8e-4},   // 0.005267 / 0.010180 / 0.000297
    {GgmlType::Q8_K, 8.5e-3, 2.73e-2, 1.0e-6},   // 0.006768 / 0.021788 / 0 (f32 scale)
    {GgmlType::Q6_K, 2.16e-2, 3.68e-2, 4.0e-4},  // 0.017209 / 0.029418 / 0.000317
    {GgmlType::Q5_0, 5.0e-2, 1.0e-1, 4.0e-4},    // 0.039811 / 0.079659 / 0.000313
    {GgmlType::Q5_1, 4.27e-2, 5.7e-2, 4.0e-4},   // 0.034095 / 0.045561 / 0.000317
    {GgmlType::Q5_K, 4.53e-2, 6.11e-2, 4.3e-4},  // 0.036184 / 0.048860 / 0.000340
    {GgmlType::Q4_0, 1.01e-1, 1.97e-1, 3.1e-4},  // 0.080328 / 0.157496 / 0.000244
    {GgmlType::Q4_1, 8.73e-2, 1.183e-1, 4.0e-4}, // 0.069786 / 0.094626 / 0.000317
    {GgmlType::Q4_K, 8.91e-2, 1.218e-1, 4.7e-4}, // 0.071219 / 0.097377 / 0.000371
    {GgmlType::MXFP4, 1.47e-1, 2.07e-1, 2.9e-1}, // 0.117376 / 0.164876 / 0.232000
    {GgmlType::Q3_K, 1.78e-1, 2.42e-1, 3.2e-4},  // 0.142105 / 0.193519 / 0.000250
    {GgmlType::Q2_K, 3.37e-1, 3.50e-1, 3.5e-4},  // 0.268884 / 0.279453 / 0.000275
};

constexpr int64_t kRowLen = 4096;
constexpr int kRows = 16;

std::vector<float> gaussian_rows(uint64_t seed, bool outliers) {
    Rng rng(seed);
    std::vector<float> x(static_cast<size_t>(kRowLen) * kRows);
    for (int r = 0; r < kRows; ++r) {
        const double scale = std::pow(10.0, (r % 5) - 2);  // 0.01 .. 100
        for (int64_t i = 0; i < kRowLen; ++i) {
            double v = rng.gauss() * scale;
            if (outliers && i % 61 == 17) v *= 10.0;
            x[static_cast<size_t>(r * kRowLen + i)] = static_cast<float>(v);
        }
    }
    return x;
}

// Quantize then dequantize row by row with the scalar kernels.
std::vector<float> round_trip(GgmlType t, const std::vector<float>& x, int64_t row_len) {
    const q::TypeTraits& tr = traits(t);
    std::vector<uint8_t> buf(q::row_size(tr, row_len));
    std::vector<float> y(x.size());
    for (size_t r = 0; r < x.size() / static_cast<size_t>(row_len); ++r) {
        q::quantize(tid(t), x.data() + r * row_len, buf.data(), row_len, Isa::Scalar);
        q::dequantize(tid(t), buf.data(), y.data() + r * row_len, row_len, Isa::Scalar);
    }
    return y;
}

double rel_rmse(const std::vector<float>& x, const std::vector<float>& y) {
    double err = 0.0, ref = 0.0;
    for (size_t i = 0; i < x.size(); ++i) {
        const double d = static_cast<double>(x[i]) - y[i];
        err += d * d;
        ref += static_cast<double>(x[i]) * x[i];
    }
    return ref > 0.0 ? std::sqrt(err / ref) : std::sqrt(err);
}

TEST_CASE("round trip: relative RMSE per type on gaussian rows (with and without outliers)") {
    const std::vector<float> plain = gaussian_rows(42, false), outl = gaussian_rows(43, true);
    for (const RoundTripBound& b : kBounds) {
        const double e1 = rel_rmse(plain, round_trip(b.type, plain, kRowLen));
        const double e2 = rel_rmse(outl, round_trip(b.type, outl, kRowLen));
        std::printf("     %-6s rel-RMSE gaussian %.6f (bound %.6f)  outliers %.6f (bound %.6f)\n", name(b.type), e1,
                    b.gauss, e2, b.outlier);
        CHECK_MSG(e1 <= b.gauss, "%s gaussian rel-RMSE %g > %g", name(b.type), e1, b.gauss);
        CHECK_MSG(e2 <= b.outlier, "%s outlier rel-RMSE %g > %g", name(b.type), e2, b.outlier);
    }
}

TEST_CASE("round trip: all-zero rows give exact zeros, constant rows stay within their bound") {
    const int64_t n = 512;
    for (const RoundTripBound& b : kBounds) {
        const std::vector<float> zeros(n, 0.0f);
        const std::vector<float> y = round_trip(b.type, zeros, n);
        bool all_zero = true;
        for (float v : y) all_zero = all_zero && v == 0.0f;
        CHECK_MSG(all_zero, "%s: all-zero row does not come back as zeros", name(b.type));
        for (float c : {0.37f, -1.5f, 1000.0f}) {
            const std::vector<float> x(n, c);
            const double e = rel_rmse(x, round_trip(b.type, x, n));
            CHECK_MSG(e <= b.constant, "%s: constant %g rel-RMSE %g > %g", name(b.type), c, e, b.constant);
        }
    }
}

TEST_CASE("round trip: per-element max error for F16, BF16, Q8_0, Q8_1, Q8_K") {
    const std::vector<float> x = gaussian_rows(44, true);
    const std::vector<float> yh = round_trip(GgmlType::F16, x, kRowLen), yb = round_trip(GgmlType::BF16, x, kRowLen);
    int bad = 0;
    for (size_t i = 0; i < x.size(); ++i) {
        const double ax = std::fabs(static_cast<double>(x[i]));
        if (ax >= 0x1p-14 && std::fabs(yh[i] - static_cast<double>(x[i])) > ax * 0x1p-11) ++bad;  // half: 11-bit significand
        if (std::fabs(yb[i] - static_cast<double>(x[i])) > ax * 0x1p-8) ++bad;                     // bf16: 8-bit significand
    }
    CHECK_MSG(bad == 0, "F16/BF16: %d elements beyond half an ulp", bad);

    // Q8_0 / Q8_1: q = round(x / d), y = q * f16(d): |y - x| <= d/2 + 127 |f16(d) - d| (+ float rounding).
    for (GgmlType t : {GgmlType::Q8_0, GgmlType::Q8_1, GgmlType::Q8_K}) {
        const int64_t bs = traits(t).block_size;
        const std::vector<float> y = round_trip(t, x, kRowLen);
        bad = 0;
        for (size_t blk = 0; blk < x.size() / static_cast<size_t>(bs); ++blk) {
            double amax = 0.0;
            for (int64_t j = 0; j < bs; ++j) amax = std::max(amax, std::fabs(static_cast<double>(x[blk * bs + j])));
            const double d = amax / 127.0;
            const double d_stored = t == GgmlType::Q8_K ? d : q::fp16_to_fp32(q::fp32_to_fp16(static_cast<float>(d)));
            const double bound = 0.5 * d * (1 + 1e-5) + 127.0 * std::fabs(d_stored - d) + 1e-6 * amax;
            for (int64_t j = 0; j < bs; ++j) {
                if (std::fabs(y[blk * bs + j] - static_cast<double>(x[blk * bs + j])) > bound) ++bad;
            }
        }
        CHECK_MSG(bad == 0, "%s: %d elements beyond the max-error bound", name(t), bad);
    }
}

TEST_CASE("quantize follows ggml's reference semantics for Q8_0, Q8_1, Q8_K and MXFP4") {
    float x[256];
    uint8_t buf[292];
    // Q8_0: amax 127 -> d = 1; roundf rounds halves away from zero.
    for (int j = 0; j < 32; ++j) x[j] = 0.0f;
    x[0] = 127.0f; x[1] = 2.5f; x[2] = -2.5f; x[3] = 0.5f; x[4] = -0.49f; x[5] = 126.5f;
    q::quantize(tid(GgmlType::Q8_0), x, buf, 32, Isa::Scalar);
    const int8_t* qs = reinterpret_cast<const int8_t*>(buf + 2);
    CHECK(buf[0] == 0x00 && buf[1] == 0x3C);  // d = 1.0 in f16
    CHECK(qs[0] == 127 && qs[1] == 3 && qs[2] == -3 && qs[3] == 1 && qs[4] == 0 && qs[5] == 127);

    // Q8_1: s = d * sum(qs) = 127 + 3 - 3 + 1 + 127 = 255.
    q::quantize(tid(GgmlType::Q8_1), x, buf, 32, Isa::Scalar);
    CHECK(q::fp16_to_fp32(static_cast<uint16_t>(buf[2] | buf[3] << 8)) == 255.0f);

    // Q8_K: the first element of largest magnitude is -127 -> iscale = -127 / -127 = 1 exactly (the
    // later +127 of equal magnitude does not change that); halves round to even.
    for (int j = 0; j < 256; ++j) x[j] = 0.0f;
    x[3] = -127.0f; x[4] = 2.5f; x[5] = 3.5f; x[6] = -0.5f; x[7] = 127.0f; x[20] = 5.0f;
    q::quantize(tid(GgmlType::Q8_K), x, buf, 256, Isa::Scalar);
    float d;
    std::memcpy(&d, buf, 4);
    const int8_t* k = reinterpret_cast<const int8_t*>(buf + 4);
    CHECK(d == 1.0f);
    CHECK(k[3] == -127 && k[4] == 2 && k[5] == 4 && k[6] == 0 && k[7] == 127 && k[20] == 5);
    int16_t bsums[16];
    std::memcpy(bsums, buf + 260, sizeof bsums);
    CHECK(bsums[0] == -127 + 2 + 4 + 127 && bsums[1] == 5 && bsums[15] == 0);
    // With the sign flipped the largest magnitude is +127 -> iscale = -1, d = -1.
    for (int j = 0; j < 256; ++j) x[j] = -x[j];
    q::quantize(tid(GgmlType::Q8_K), x, buf, 256, Isa::Scalar);
    std::memcpy(&d, buf, 4);
    CHECK(d == -1.0f && k[3] == -127 && k[4] == 2 && k[5] == 4 && k[20] == 5);

    // MXFP4: amax 6 -> e = floor(log2 6) - 2 + 127 = 127, S = 2^-1; 6 -> code 7 (12 * 0.5),
    // 0.25 is a tie between 0 and 0.5 -> 0; -0.75 is a tie between -0.5 and -1 -> -0.5 (code 9);
    // -0.1 -> +0 (code 0).
    for (int j = 0; j < 32; ++j) x[j] = 0.0f;
    x[0] = 6.0f; x[1] = 0.25f; x[2] = -0.75f; x[3] = -0.1f; x[16] = -5.0f;
    q::quantize(tid(GgmlType::MXFP4), x, buf, 32, Isa::Scalar);
    CHECK(buf[0] == 127);
    CHECK((buf[1] & 0xF) == 7 && (buf[2] & 0xF) == 0 && (buf[3] & 0xF) == 9 && (buf[4] & 0xF) == 0);
    CHECK((buf[1] >> 4) == 14);  // -5 is halfway between -4 (code 14) and -6 (code 15): the smaller magnitude wins
}

// ------------------------------------------------------------------------------------------------
// 4. SIMD kernels equal the scalar reference bit for bit
// ------------------------------------------------------------------------------------------------

const Isa kSimdLevels[] = {Isa::Avx2, Isa::Avx512, Isa::Neon};

std::vector<int64_t> test_lengths(const q::TypeTraits& tr) {
    if (tr.block_size == 1) return {1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 100, 1000};
    return {tr.block_size, 3 * tr.block_size, 9 * tr.block_size};
}

bool bits_equal(const std::vector<float>& a, const std::vector<float>& b, bool nan_equiv) {
    for (size_t i = 0; i < a.size(); ++i) {
        if (bits_of(a[i]) != bits_of(b[i]) && !(nan_equiv && std::isnan(a[i]) && std::isnan(b[i]))) return false;
    }
    return true;
}

TEST_CASE("SIMD dequantize kernels equal the scalar reference bit for bit") {
    const q::QuantKernels& ref = q::kernels_for(Isa::Scalar);
    for (Isa isa : kSimdLevels) {
        if (!moe::cpu::isa_supported(isa)) {
            std::printf("     skipped %s: not supported by this CPU\n", moe::cpu::isa_name(isa));
            continue;
        }
        const q::QuantKernels& k = q::kernels_for(isa);
        Rng rng(77);
        for (GgmlType t : kAllTypes) {
            const q::TypeTraits& tr = traits(t);
            for (int64_t n : test_lengths(tr)) {
                const int64_t nblocks = n / tr.block_size;
                // Pass 1: finite scale fields, exact bit comparison. Pass 2: fully random bytes (any
                // NaN/inf scales), where two NaNs count as equal.
                for (int pass = 0; pass < 2; ++pass) {
                    std::vector<uint8_t> src = random_blocks(t, nblocks, rng);
                    if (pass == 1) for (auto& v : src) v = rng.byte();
                    std::vector<float> want(static_cast<size_t>(n)), got(static_cast<size_t>(n), -1.0f);
                    ref.dequantize[tid(t)](src.data(), want.data(), n);
                    k.dequantize[tid(t)](src.data(), got.data(), n);
                    CHECK_MSG(bits_equal(want, got, pass == 1), "%s dequantize %s n=%lld pass %d differs from scalar",
                              moe::cpu::isa_name(isa), tr.name, static_cast<long long>(n), pass);
                }
            }
        }
        // F16 over every bit pattern (NaN payloads included: hardware and software both quiet them).
        std::vector<uint8_t> all(2 * 65536);
        for (uint32_t h = 0; h < 65536; ++h) {
            all[2 * h] = static_cast<uint8_t>(h & 0xff);
            all[2 * h + 1] = static_cast<uint8_t>(h >> 8);
        }
        std::vector<float> want(65536), got(65536);
        ref.dequantize[tid(GgmlType::F16)](all.data(), want.data(), 65536);
        k.dequantize[tid(GgmlType::F16)](all.data(), got.data(), 65536);
        CHECK_MSG(bits_equal(want, got, false), "%s F16 dequantize of all halves differs", moe::cpu::isa_name(isa));
        ref.dequantize[tid(GgmlType::BF16)](all.data(), want.data(), 65536);
        k.dequantize[tid(GgmlType::BF16)](all.data(), got.data(), 65536);
        CHECK_MSG(bits_equal(want, got, false), "%s BF16 dequantize of all values differs", moe::cpu::isa_name(isa));
    }
}

// Input rows for the quantize comparison: gaussian data at several scales, plus rows crafted to
// hit ties and special values.
std::vector<std::vector<float>> quantize_inputs(int64_t n, bool specials, Rng& rng) {
    std::vector<std::vector<float>> rows;
    for (double scale : {1e-3, 1.0, 300.0}) {
        std::vector<float> x(static_cast<size_t>(n));
        for (auto& v : x) v = static_cast<float>(rng.gauss() * scale);
        rows.push_back(x);
    }
    rows.emplace_back(static_cast<size_t>(n), 0.0f);
    // Ties: amax 127 makes the Q8_0 scale 1 and the Q8_K scale -1, so halves stay halves.
    std::vector<float> ties(static_cast<size_t>(n));
    for (size_t i = 0; i < ties.size(); ++i) ties[i] = static_cast<float>(static_cast<int>(i % 200) - 100) + 0.5f;
    for (size_t i = 0; i < ties.size(); i += 32) ties[i] = (i / 32) % 2 ? 127.0f : -127.0f;
    rows.push_back(ties);
    if (specials) {
        std::vector<float> s(static_cast<size_t>(n));
        const float pool[] = {0.0f, -0.0f, NAN, -NAN, INFINITY, -INFINITY, 65504.0f, 65520.0f, 1e30f, -1e-30f,
                              0x1p-25f, 0x1.8p-24f, 0x1p-149f, 1.00048828125f, 3.0e38f};
        for (size_t i = 0; i < s.size(); ++i) s[i] = pool[i % (sizeof pool / sizeof pool[0])];
        rows.push_back(s);
    }
    return rows;
}

TEST_CASE("SIMD quantize kernels equal the scalar reference bit for bit") {
    const q::QuantKernels& ref = q::kernels_for(Isa::Scalar);
    for (Isa isa : kSimdLevels) {
        if (!moe::cpu::isa_supported(isa)) {
            std::printf("     skipped %s: not supported by this CPU\n", moe::cpu::isa_name(isa));
            continue;
        }
        const q::QuantKernels& k = q::kernels_for(isa);
        Rng rng(99);
        for (GgmlType t : kAllTypes) {
            const q::TypeTraits& tr = traits(t);
            const bool elementwise = tr.block_size == 1;  // specials are only meaningful there
            for (int64_t n : test_lengths(tr)) {
                for (const std::vector<float>& x : quantize_inputs(n, elementwise, rng)) {
                    const size_t bytes = q::row_size(tr, n);
                    std::vector<uint8_t> want(bytes, 0xAA), got(bytes, 0x55);
                    ref.quantize[tid(t)](x.data(), want.data(), n);
                    k.quantize[tid(t)](x.data(), got.data(), n);
                    CHECK_MSG(want == got, "%s quantize %s n=%lld differs from scalar", moe::cpu::isa_name(isa),
                              tr.name, static_cast<long long>(n));
                }
            }
        }
    }
}

// ------------------------------------------------------------------------------------------------
// 5. CPU levels, kernel tables, validation errors
// ------------------------------------------------------------------------------------------------

void set_env(const char* key, const char* value) {
#if defined(_WIN32)
    _putenv_s(key, value);  // an empty value removes the variable
#else
    if (*value) setenv(key, value, 1); else unsetenv(key);
#endif
}

TEST_CASE("NODE_MOE_CPU: invalid and unsupported values throw, a valid one is used and then fixed") {
    // active_isa() resolves once; this is the only test that calls it, so it sees the first call.
    set_env("NODE_MOE_CPU", "bogus");
    CHECK(throws_error([] { moe::cpu::active_isa(); }, ErrorCode::InvalidArgument, {"NODE_MOE_CPU", "bogus"}));
    for (Isa isa : {Isa::Avx2, Isa::Avx512, Isa::Neon}) {
        if (moe::cpu::isa_supported(isa)) continue;
        set_env("NODE_MOE_CPU", moe::cpu::isa_name(isa));
        CHECK(throws_error([] { moe::cpu::active_isa(); }, ErrorCode::CpuUnsupported, {"this CPU lacks"}));
    }
    set_env("NODE_MOE_CPU", "Scalar");
    CHECK(moe::cpu::active_isa() == Isa::Scalar);
    set_env("NODE_MOE_CPU", "");
    CHECK(moe::cpu::active_isa() == Isa::Scalar);  // resolved once, not re-read
}

TEST_CASE("parse_isa / require_isa / isa_supported") {
    using namespace moe::cpu;
    CHECK(parse_isa("scalar") == Isa::Scalar && parse_isa("avx2") == Isa::Avx2 && parse_isa("AVX512") == Isa::Avx512 &&
          parse_isa("neon") == Isa::Neon);
    CHECK(throws_error([] { parse_isa("sse4"); }, ErrorCode::InvalidArgument, {"sse4"}));
    CHECK(throws_error([] { parse_isa(""); }, ErrorCode::InvalidArgument));
    CHECK(isa_supported(Isa::Scalar));
    CHECK(isa_supported(best_isa()));
    require_isa(Isa::Scalar);
    require_isa(best_isa());
    std::printf("     build %s, best level %s\n", build_arch(), isa_name(best_isa()));
#if defined(__x86_64__) || defined(_M_X64)
    CHECK(!isa_supported(Isa::Neon));
    CHECK(throws_error([] { require_isa(Isa::Neon); }, ErrorCode::CpuUnsupported, {"this CPU lacks NEON"}));
    CHECK(throws_error([] { q::kernels_for(Isa::Neon); }, ErrorCode::CpuUnsupported, {"NEON"}));
    const Features& f = features();
    if (!isa_supported(Isa::Avx512)) {
        // The message names each missing AVX-512 subset.
        std::vector<std::string> want;
        if (!f.avx512f) want.push_back("AVX-512F");
        if (!f.avx512bw) want.push_back("AVX-512BW");
        if (!f.avx512vl) want.push_back("AVX-512VL");
        if (!f.avx512dq) want.push_back("AVX-512DQ");
        if (!want.empty()) want.push_back("this CPU lacks ");
        CHECK(throws_error([] { require_isa(Isa::Avx512); }, ErrorCode::CpuUnsupported, want));
    }
    CHECK(isa_supported(Isa::Avx2) == (f.avx && f.avx2 && f.fma && f.f16c && f.os_avx));
    CHECK(isa_supported(Isa::Avx512) ==
          (isa_supported(Isa::Avx2) && f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq && f.os_avx512));
#elif defined(__aarch64__)
    CHECK(isa_supported(Isa::Neon));
    CHECK(throws_error([] { require_isa(Isa::Avx2); }, ErrorCode::CpuUnsupported, {"this CPU lacks AVX", "AVX2", "FMA", "F16C"}));
#endif
}

TEST_CASE("kernel tables are complete and agree with the traits flags") {
    for (Isa isa : {Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Neon}) {
        if (!moe::cpu::isa_supported(isa)) continue;
        const q::QuantKernels& k = q::kernels_for(isa);
        for (uint32_t id = 0; id < q::kGgmlTypeCount; ++id) {
            const q::TypeTraits* tr = q::type_traits(id);
            const bool deq = tr && tr->can_dequantize, qnt = tr && tr->can_quantize;
            CHECK_MSG((k.dequantize[id] != nullptr) == deq, "%s: dequantize entry of %s", moe::cpu::isa_name(isa), q::type_name(id));
            CHECK_MSG((k.quantize[id] != nullptr) == qnt, "%s: quantize entry of %s", moe::cpu::isa_name(isa), q::type_name(id));
        }
    }
}

TEST_CASE("dequantize/quantize validation errors") {
    std::vector<uint8_t> buf(4096);
    std::vector<float> f(1024);
    const Isa isa = Isa::Scalar;
    CHECK(throws_error([&] { q::dequantize(tid(GgmlType::IQ2_XXS), buf.data(), f.data(), 256, isa); },
                       ErrorCode::UnsupportedType, {"IQ2_XXS"}));
    CHECK(throws_error([&] { q::dequantize(tid(GgmlType::IQ2_XXS), buf.data(), f.data(), 256, isa, "blk.3.ffn_down_exps.weight"); },
                       ErrorCode::UnsupportedType, {"IQ2_XXS", "blk.3.ffn_down_exps.weight"}));
    CHECK(throws_error([&] { q::quantize(tid(GgmlType::IQ4_XS), f.data(), buf.data(), 256, isa); },
                       ErrorCode::UnsupportedType, {"IQ4_XS"}));
    CHECK(throws_error([&] { q::dequantize(4, buf.data(), f.data(), 32, isa); }, ErrorCode::UnsupportedType, {"type#4"}));
    CHECK(throws_error([&] { q::dequantize(1000, buf.data(), f.data(), 32, isa); }, ErrorCode::UnsupportedType, {"type#1000"}));
    CHECK(throws_error([&] { q::dequantize(tid(GgmlType::Q4_0), buf.data(), f.data(), 33, isa, "w"); },
                       ErrorCode::InvalidArgument, {"Q4_0", "33", "32", "w"}));
    CHECK(throws_error([&] { q::quantize(tid(GgmlType::Q4_K), f.data(), buf.data(), 128, isa); },
                       ErrorCode::InvalidArgument, {"Q4_K", "256"}));
    CHECK(throws_error([&] { q::dequantize(tid(GgmlType::Q8_0), buf.data(), f.data(), -32, isa); }, ErrorCode::InvalidArgument));
    CHECK(throws_error([&] { q::dequantize(tid(GgmlType::Q8_0), nullptr, f.data(), 32, isa); }, ErrorCode::InvalidArgument));
    q::dequantize(tid(GgmlType::Q8_0), nullptr, nullptr, 0, isa);  // nothing to do, no error
#if defined(__x86_64__) || defined(_M_X64)
    CHECK(throws_error([&] { q::dequantize(tid(GgmlType::F32), buf.data(), f.data(), 4, Isa::Neon); }, ErrorCode::CpuUnsupported));
#endif
}

}  // namespace

TEST_MAIN()
