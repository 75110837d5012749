// Row-wise quantize / dequantize for every ggml type this build supports, with a scalar reference
// and SIMD versions selected at run time. Knows block formats only, nothing about models.
#pragma once

#include <cstddef>
#include <cstdint>

#include "../cpu/cpu_features.h"
#include "ggml_types.h"

namespace moe::quant {

// src: n elements encoded as `type`; dst: [n] floats. n must be a multiple of the block size.
using DequantizeRowFn = void (*)(const void* src, float* dst, int64_t n);
// src: [n] floats; dst: row_size(type, n) bytes. n must be a multiple of the block size.
using QuantizeRowFn = void (*)(const float* src, void* dst, int64_t n);

struct QuantKernels {
    DequantizeRowFn dequantize[kGgmlTypeCount] = {};
    QuantizeRowFn quantize[kGgmlTypeCount] = {};
};

// The kernel table of one level. Entries a level does not specialise come from the level below
// (Avx512 -> Avx2 -> Scalar, Neon -> Scalar), so every table is complete. Throws
// moe::Error(CpuUnsupported) if the CPU cannot run `isa`.
const QuantKernels& kernels_for(cpu::Isa isa);

// Fill-ins implemented per ISA (quant_ref.cc, quant_avx2.cc, quant_avx512.cc, quant_neon.cc).
// Each overrides only the entries it specialises; a file compiled for another architecture
// leaves the table untouched.
void fill_scalar_kernels(QuantKernels& k);
void fill_avx2_kernels(QuantKernels& k);
void fill_avx512_kernels(QuantKernels& k);
void fill_neon_kernels(QuantKernels& k);

// Convenience entry points with validation: they throw moe::Error(UnsupportedType) naming the type
// when no kernel exists and moe::Error(InvalidArgument) when n is not a multiple of the block size.
// `what` (e.g. a tensor name) is added to the message when given.
void dequantize(uint32_t type_id, const void* src, float* dst, int64_t n, cpu::Isa isa, const char* what = nullptr);
void quantize(uint32_t type_id, const float* src, void* dst, int64_t n, cpu::Isa isa, const char* what = nullptr);

}  // namespace moe::quant
