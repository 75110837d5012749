// NEON (AArch64 Advanced SIMD) kernels: dequantize for F16, Q8_0 and Q4_0; everything else is
// inherited from the scalar table. Advanced SIMD is part of ARMv8-A, so this file needs no extra
// compiler flags; on other architectures it only provides an empty fill_neon_kernels.
//
// Numerics as in quant_avx2.cc: one multiply per element by the per-block factor, never a fused
// multiply-add (the build uses -ffp-contract=off, which also keeps the compiler from turning
// vmulq + vaddq into vfmaq), so results match the scalar reference bit for bit. The F16 widening
// (FCVTL) is exact, like the scalar fp16_to_fp32.
#include "quant.h"

#if defined(__aarch64__)

#include <arm_neon.h>

#include "block_layout.h"

namespace moe::quant {

namespace {

// y[k] = float(q[k]) * d for 8 signed bytes.
inline void store_mul8(int8x8_t q, float32x4_t d, float* y) {
    const int16x8_t w = vmovl_s8(q);
    vst1q_f32(y, vmulq_f32(vcvtq_f32_s32(vmovl_s16(vget_low_s16(w))), d));
    vst1q_f32(y + 4, vmulq_f32(vcvtq_f32_s32(vmovl_s16(vget_high_s16(w))), d));
}

inline void store_mul16(int8x16_t q, float32x4_t d, float* y) {
    store_mul8(vget_low_s8(q), d, y);
    store_mul8(vget_high_s8(q), d, y + 8);
}

void dequant_f16(const void* src, float* dst, int64_t n) {
    const uint8_t* p = static_cast<const uint8_t*>(src);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const float16x8_t h = vreinterpretq_f16_u8(vld1q_u8(p + 2 * i));
        vst1q_f32(dst + i, vcvt_f32_f16(vget_low_f16(h)));
        vst1q_f32(dst + i + 4, vcvt_high_f32_f16(h));
    }
    for (; i < n; ++i) dst[i] = fp16_to_fp32(load_u16(p + 2 * i));
}

void dequant_q8_0(const void* src, float* dst, int64_t n) {
    const uint8_t* b = static_cast<const uint8_t*>(src);
    for (int64_t i = 0; i < n / kQK; ++i, b += q8_0::kBytes, dst += kQK) {
        const float32x4_t d = vdupq_n_f32(load_f16(b + q8_0::kD));
        store_mul16(vreinterpretq_s8_u8(vld1q_u8(b + q8_0::kQs)), d, dst);
        store_mul16(vreinterpretq_s8_u8(vld1q_u8(b + q8_0::kQs + 16)), d, dst + 16);
    }
}

void dequant_q4_0(const void* src, float* dst, int64_t n) {
    const uint8_t* b = static_cast<const uint8_t*>(src);
    const uint8x16_t mask = vdupq_n_u8(0x0F);
    const int8x16_t eight = vdupq_n_s8(8);
    for (int64_t i = 0; i < n / kQK; ++i, b += q4_0::kBytes, dst += kQK) {
        const float32x4_t d = vdupq_n_f32(load_f16(b + q4_0::kD));
        const uint8x16_t qs = vld1q_u8(b + q4_0::kQs);
        const int8x16_t lo = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(qs, mask)), eight);
        const int8x16_t hi = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(qs, 4)), eight);
        store_mul16(lo, d, dst);
        store_mul16(hi, d, dst + 16);
    }
}

}  // namespace

void fill_neon_kernels(QuantKernels& k) {
    k.dequantize[static_cast<uint32_t>(GgmlType::F16)] = dequant_f16;
    k.dequantize[static_cast<uint32_t>(GgmlType::Q8_0)] = dequant_q8_0;
    k.dequantize[static_cast<uint32_t>(GgmlType::Q4_0)] = dequant_q4_0;
}

}  // namespace moe::quant

#else  // not AArch64: nothing to add

namespace moe::quant {
void fill_neon_kernels(QuantKernels&) {}
}  // namespace moe::quant

#endif
