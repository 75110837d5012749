// AVX-512 (F/BW/VL/DQ) kernels, compiled with the AVX-512 flags and only entered after
// cpu::require_isa(Avx512). Specialises dequantize for F32, F16, BF16, Q8_0 and Q4_0 and quantize
// for F16; every other entry is inherited from the AVX2 table (see kernels_for).
//
// Same numerics contract as quant_avx2.cc: one multiply per element by a per-block factor formed
// exactly as the scalar reference forms it, so results match the reference bit for bit.
// Row tails of the element-wise types use AVX-512 masked loads/stores instead of scalar loops.
// Everything has internal linkage (see quant_avx2.cc for why).
#include "quant.h"

#if defined(__x86_64__) || defined(_M_X64)

#if (defined(__GNUC__) || defined(__clang__)) && \
    !(defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512DQ__) && \
      defined(__AVX2__) && defined(__F16C__))
#error "quant_avx512.cc must be compiled with -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx2 -mfma -mf16c"
#endif

// GCC 12's AVX-512 intrinsics initialise their "undefined" pass-through operands as `__Y = __Y`,
// which -Wmaybe-uninitialized reports at every inlined use (GCC bug 105593, fixed in GCC 13).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include "block_layout.h"

namespace moe::quant {

namespace {

// Lanes [0, r) of a 16-lane vector, for a row tail of r < 16 elements.
inline __mmask16 tail_mask(int64_t r) { return static_cast<__mmask16>((1u << r) - 1u); }

inline __m512 i8x16_to_ps(__m128i v) { return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(v)); }

inline __m128i load128(const uint8_t* p) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)); }

void dequant_f32(const void* src, float* dst, int64_t n) {
    const float* x = static_cast<const float*>(src);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(dst + i, _mm512_loadu_ps(x + i));
    if (i < n) {
        const __mmask16 m = tail_mask(n - i);
        _mm512_mask_storeu_ps(dst + i, m, _mm512_maskz_loadu_ps(m, x + i));
    }
}

void dequant_f16(const void* src, float* dst, int64_t n) {
    const uint16_t* h = static_cast<const uint16_t*>(src);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(h + i))));
    }
    if (i < n) {
        const __mmask16 m = tail_mask(n - i);
        _mm512_mask_storeu_ps(dst + i, m, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, h + i)));
    }
}

void dequant_bf16(const void* src, float* dst, int64_t n) {
    const uint16_t* h = static_cast<const uint16_t*>(src);
    auto widen = [](__m256i v) { return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(v), 16)); };
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        _mm512_storeu_ps(dst + i, widen(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(h + i))));
    }
    if (i < n) {
        const __mmask16 m = tail_mask(n - i);
        _mm512_mask_storeu_ps(dst + i, m, widen(_mm256_maskz_loadu_epi16(m, h + i)));
    }
}

void dequant_q8_0(const void* src, float* dst, int64_t n) {
    const uint8_t* b = static_cast<const uint8_t*>(src);
    for (int64_t i = 0; i < n / kQK; ++i, b += q8_0::kBytes, dst += kQK) {
        const __m512 d = _mm512_set1_ps(_cvtsh_ss(load_u16(b + q8_0::kD)));
        _mm512_storeu_ps(dst, _mm512_mul_ps(i8x16_to_ps(load128(b + q8_0::kQs)), d));
        _mm512_storeu_ps(dst + 16, _mm512_mul_ps(i8x16_to_ps(load128(b + q8_0::kQs + 16)), d));
    }
}

// Element j (0..15) = low nibble of qs[j] - 8, element j+16 = high nibble - 8.
void dequant_q4_0(const void* src, float* dst, int64_t n) {
    const uint8_t* b = static_cast<const uint8_t*>(src);
    const __m128i mask = _mm_set1_epi8(0x0F);
    const __m128i eight = _mm_set1_epi8(8);
    for (int64_t i = 0; i < n / kQK; ++i, b += q4_0::kBytes, dst += kQK) {
        const __m512 d = _mm512_set1_ps(_cvtsh_ss(load_u16(b + q4_0::kD)));
        const __m128i qs = load128(b + q4_0::kQs);
        const __m128i lo = _mm_sub_epi8(_mm_and_si128(qs, mask), eight);
        const __m128i hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(qs, 4), mask), eight);
        _mm512_storeu_ps(dst, _mm512_mul_ps(i8x16_to_ps(lo), d));
        _mm512_storeu_ps(dst + 16, _mm512_mul_ps(i8x16_to_ps(hi), d));
    }
}

void quant_f16(const float* src, void* dst, int64_t n) {
    uint16_t* h = static_cast<uint16_t*>(dst);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m256i v = _mm512_cvtps_ph(_mm512_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(h + i), v);
    }
    if (i < n) {
        const __mmask16 m = tail_mask(n - i);
        const __m256i v = _mm512_cvtps_ph(_mm512_maskz_loadu_ps(m, src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        _mm256_mask_storeu_epi16(h + i, m, v);
    }
}

}  // namespace

void fill_avx512_kernels(QuantKernels& k) {
    k.dequantize[static_cast<uint32_t>(GgmlType::F32)] = dequant_f32;
    k.dequantize[static_cast<uint32_t>(GgmlType::F16)] = dequant_f16;
    k.dequantize[static_cast<uint32_t>(GgmlType::BF16)] = dequant_bf16;
    k.dequantize[static_cast<uint32_t>(GgmlType::Q8_0)] = dequant_q8_0;
    k.dequantize[static_cast<uint32_t>(GgmlType::Q4_0)] = dequant_q4_0;
    k.quantize[static_cast<uint32_t>(GgmlType::F16)] = quant_f16;
}

}  // namespace moe::quant

#else  // not x86-64: nothing to add

namespace moe::quant {
void fill_avx512_kernels(QuantKernels&) {}
}  // namespace moe::quant

#endif
