// Dot products of one quantized weight row with one activation row already converted to the weight
// type's dot format (ggml's "vec_dot_type", reference note §5.1):
//
//   weight type                     activation format
//   F32 / F16 / BF16                F32 / F16 / BF16
//   Q4_0, Q5_0, Q8_0, MXFP4         Q8_0
//   Q4_1, Q5_1                      Q8_1
//   Q2_K, Q3_K, Q4_K, Q5_K, Q6_K    Q8_K
//
// The quantized dots are ggml's math: integer sums of code products per (sub-)block, exact, times
// the block scales in float (K-quant mins via the Q8_K bsums, Q4_1/Q5_1 mins via the Q8_1 s field).
// The integer parts are identical on every level; only the order of the float accumulation differs
// (the scalar reference sums block by block as ggml's generic code does, AVX2/AVX-512 keep 8/16
// float lanes as ggml's x86 code does, the NEON quantized kernels repeat the scalar order exactly).
// Float rows (F32/F16/BF16) accumulate exact products in double (scalar) or in float lanes (SIMD).
//
// Activation rows come from quant::quantize / the QuantKernels quantizers. The SIMD kernels rely on
// what those quantizers guarantee: Q8_0/Q8_1/Q8_K codes lie in [-127, 127] (never -128) and the Q8_K
// bsums are the sums of the codes. Weight rows may hold any bytes.
//
// Knows block formats only, nothing about models.
#pragma once

#include <cstddef>
#include <cstdint>

#include "../cpu/cpu_features.h"
#include "ggml_types.h"

namespace moe::quant {

// n elements of the weight row (weight type) dotted with n elements of the activation row (its dot
// format). n must be a multiple of the block sizes of both types; rows need no alignment.
using VecDotFn = float (*)(int64_t n, const void* weight_row, const void* act_row);

// The same dot of one weight row with four activation rows at once: out[r] is bit for bit what the
// matching VecDotFn gives for act_rows[r] (every output keeps its own operation sequence); the
// weight blocks are loaded and unpacked once for the four, which is what makes batched products
// (a prompt's rows routed to one expert) cheaper.
using VecDot4Fn = void (*)(int64_t n, const void* weight_row, const void* const* act_rows, float* out);

// The four-row dot for two weight rows (weight_row and weight_row + row_stride bytes): out[4 w + r]
// is bit for bit the one-row kernel's dot of weight row w and act_rows[r]; each activation block is
// loaded once for both weight rows.
using VecDot2x4Fn = void (*)(int64_t n, const void* weight_row, size_t row_stride, const void* const* act_rows, float* out);

// A four-row kernel and the one-row kernel whose order it reproduces: callers use `four` only where
// they would call exactly `one`, so a level that replaces a one-row kernel can never be paired with
// an inherited four-row kernel of another order.
struct Dot4 {
    VecDot4Fn four = nullptr;
    VecDotFn one = nullptr;
    VecDot2x4Fn two_by_four = nullptr;  // optional: two weight rows at once, same per-output order
};

struct VecDotKernels {
    VecDotFn dot[kGgmlTypeCount] = {};  // indexed by the weight type id
    // The same integer dots with the float accumulation of llama.cpp's other x86 CPU kernels, which
    // it prefers over ggml_vec_dot for some products (nullptr where a level has none; the caller
    // then uses `dot`). Summation order decides the last bit, and a last-bit difference can flip an
    // 8-bit activation code of the next layer, so matching it keeps the two engines in step.
    //   tinyblas: llamafile's tinyBLAS_Q0_AVX (Q8_0 / Q4_0 weights, batched dense products): per
    //     block, the 8 int32 lanes of 4-byte partial sums, converted to float, are fused-multiply-
    //     added with the block scale product into 8 float lanes; the lanes are reduced at the end
    //     by the 128-bit tree ((l0+l4) + (l2+l6)) + ((l1+l5) + (l3+l7)).
    //   repack: ggml's repacked x8 kernels (ggml_gemv_q4_0_8x8_q8_0, ..._mxfp4_8x8_q8_0,
    //     ..._q4_K_8x8_q8_K): one float per output, fused-multiply-added with each block's whole
    //     integer sum times the block scale product, block by block (Q4_K: a second float for the
    //     mins, subtracted at the end).
    //   repack_gemm: the batched ggml_gemm_* variant where its order differs from the gemv's
    //     (Q4_K: one fused multiply-add per pair of 32-element sub-blocks); nullptr where the
    //     gemm has the gemv's order.
    VecDotFn tinyblas[kGgmlTypeCount] = {};
    VecDotFn repack[kGgmlTypeCount] = {};
    VecDotFn repack_gemm[kGgmlTypeCount] = {};
    // Four-row twins of dot / repack / repack_gemm where a level has them.
    Dot4 dot4[kGgmlTypeCount] = {};
    Dot4 repack4[kGgmlTypeCount] = {};
    Dot4 repack_gemm4[kGgmlTypeCount] = {};
};

// Quantizes n (a multiple of 32) floats to Q8_0 blocks as ggml's x86 CPU backend converts
// activations (quantize_row_q8_0, AVX path, also ggml_quantize_mat_q8_0_4x8 for the repacked
// kernels): d = amax / 127, codes = round-half-even(x * (127 / amax)). The weight quantizer
// (quant::quantize, ggml's reference quantize_row_q8_0_ref) instead multiplies by 1 / d and rounds
// half away from zero, which can give a different code for a value near a rounding boundary.
void quantize_row_q8_0_x86(const float* src, void* dst, int64_t n);
// The same for Q8_1 activations (Q4_1 / Q5_1 weights): ggml's AVX quantize_row_q8_1.
void quantize_row_q8_1_x86(const float* src, void* dst, int64_t n);

// The dot format of a weight type, or kNoDotType if no dot product exists for it (IQ*, TQ*, the
// activation-only types Q8_1 / Q8_K, integer types, unknown ids).
constexpr uint32_t kNoDotType = UINT32_MAX;
uint32_t vec_dot_type(uint32_t weight_type) noexcept;

// The table of one level; entries a level does not specialise come from the level below
// (Avx512 -> Avx2 -> Scalar, Neon -> Scalar). Throws moe::Error(CpuUnsupported) if the CPU cannot
// run `isa`.
const VecDotKernels& vec_dot_kernels_for(cpu::Isa isa);

// Fill-ins per ISA (vec_dot_ref.cc, vec_dot_avx2.cc, vec_dot_avx512.cc, vec_dot_neon.cc). Each
// overrides only the entries it specialises; a file compiled for another architecture leaves the
// table untouched.
void fill_scalar_vec_dot(VecDotKernels& k);
void fill_avx2_vec_dot(VecDotKernels& k);
void fill_avx512_vec_dot(VecDotKernels& k);
void fill_neon_vec_dot(VecDotKernels& k);

}  // namespace moe::quant
