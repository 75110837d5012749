// Dot-product tables per ISA level and the weight type -> dot format map.
#include "vec_dot.h"

#include <cmath>

#include "block_layout.h"
#include "level_tables.h"

namespace moe::quant {

namespace {

// Built once on first use (function-local static: thread-safe).
const LevelTables<VecDotKernels>& tables() {
    static const LevelTables<VecDotKernels> t(fill_scalar_vec_dot, fill_avx2_vec_dot, fill_avx512_vec_dot, fill_neon_vec_dot);
    return t;
}

}  // namespace

uint32_t vec_dot_type(uint32_t weight_type) noexcept {
    if (weight_type >= kGgmlTypeCount) return kNoDotType;
    switch (static_cast<GgmlType>(weight_type)) {
        case GgmlType::F32: return static_cast<uint32_t>(GgmlType::F32);
        case GgmlType::F16: return static_cast<uint32_t>(GgmlType::F16);
        case GgmlType::BF16: return static_cast<uint32_t>(GgmlType::BF16);
        case GgmlType::Q4_0:
        case GgmlType::Q5_0:
        case GgmlType::Q8_0:
        case GgmlType::MXFP4: return static_cast<uint32_t>(GgmlType::Q8_0);
        case GgmlType::Q4_1:
        case GgmlType::Q5_1: return static_cast<uint32_t>(GgmlType::Q8_1);
        case GgmlType::Q2_K:
        case GgmlType::Q3_K:
        case GgmlType::Q4_K:
        case GgmlType::Q5_K:
        case GgmlType::Q6_K: return static_cast<uint32_t>(GgmlType::Q8_K);
        default: return kNoDotType;
    }
}

const VecDotKernels& vec_dot_kernels_for(cpu::Isa isa) { return tables().for_isa(isa); }

namespace {

// One 32-value block as ggml's AVX quantize_row_q8_0 / _q8_1 code it. Portable, yet bit for bit
// the AVX code: every step is one IEEE operation (max of |x|, one division each for d and the
// multiplier, one multiply per value, round to nearest even as _mm256_round_ps(_MM_ROUND_NEAREST)
// does in the default rounding mode). Returns d; writes the codes to qs.
float quantize_block_x86(const float* src, int8_t* qs) {
    float amax = 0.0f;
    for (int k = 0; k < 32; ++k) amax = std::fmax(amax, std::fabs(src[k]));
    const float d = amax / 127.0f;
    const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
    for (int k = 0; k < 32; ++k) qs[k] = static_cast<int8_t>(std::nearbyint(src[k] * id));
    return d;
}

}  // namespace

void quantize_row_q8_0_x86(const float* src, void* dst, int64_t n) {
    uint8_t* b = static_cast<uint8_t*>(dst);
    for (int64_t i = 0; i < n / 32; ++i, b += q8_0::kBytes, src += 32) {
        const float d = quantize_block_x86(src, reinterpret_cast<int8_t*>(b + q8_0::kQs));
        store_u16(b + q8_0::kD, fp32_to_fp16(d));
    }
}

void quantize_row_q8_1_x86(const float* src, void* dst, int64_t n) {
    // The Q8_0 block, and s = d times the integer sum of the codes (one rounding to fp32, then F16).
    uint8_t* b = static_cast<uint8_t*>(dst);
    for (int64_t i = 0; i < n / 32; ++i, b += q8_1::kBytes, src += 32) {
        int8_t* qs = reinterpret_cast<int8_t*>(b + q8_1::kQs);
        const float d = quantize_block_x86(src, qs);
        int32_t sum = 0;
        for (int k = 0; k < 32; ++k) sum += qs[k];
        store_u16(b + q8_1::kD, fp32_to_fp16(d));
        store_u16(b + q8_1::kS, fp32_to_fp16(d * static_cast<float>(sum)));
    }
}

}  // namespace moe::quant
