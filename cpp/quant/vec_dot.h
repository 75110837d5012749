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

struct VecDotKernels {
    VecDotFn dot[kGgmlTypeCount] = {};  // indexed by the weight type id
};

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
