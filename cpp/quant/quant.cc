// Kernel tables per ISA level and the validating quantize/dequantize entry points.
#include "quant.h"

#include <cstdint>
#include <string>

#include "../common/error.h"
#include "level_tables.h"

namespace moe::quant {

namespace {

// Built once on first use (function-local static: thread-safe).
const LevelTables<QuantKernels>& tables() {
    static const LevelTables<QuantKernels> t(fill_scalar_kernels, fill_avx2_kernels, fill_avx512_kernels, fill_neon_kernels);
    return t;
}

std::string describe(const char* verb, uint32_t type_id, const char* what) {
    std::string msg = std::string("cannot ") + verb + " " + type_name(type_id);
    if (what && *what) msg += std::string(" (") + what + ")";
    return msg;
}

// Returns the traits after checking that the type is known, has a kernel in `table`, that n is a
// whole number of blocks and that the pointers are usable.
const TypeTraits& validate(const char* verb, uint32_t type_id, bool has_kernel, const void* src,
                           const void* dst, int64_t n, const char* what) {
    const TypeTraits* t = type_traits(type_id);
    if (!t) {
        throw Error(ErrorCode::UnsupportedType, describe(verb, type_id, what) + ": unknown ggml type id");
    }
    if (!has_kernel) {
        throw Error(ErrorCode::UnsupportedType, describe(verb, type_id, what) + ": type not supported by this build");
    }
    if (n < 0 || n % t->block_size != 0) {
        throw Error(ErrorCode::InvalidArgument, describe(verb, type_id, what) + ": element count " +
                                                    std::to_string(n) + " is not a multiple of the block size " +
                                                    std::to_string(t->block_size));
    }
    if (n > 0 && (!src || !dst)) {
        throw Error(ErrorCode::InvalidArgument, describe(verb, type_id, what) + ": null buffer");
    }
    return *t;
}

}  // namespace

const QuantKernels& kernels_for(cpu::Isa isa) { return tables().for_isa(isa); }

void dequantize(uint32_t type_id, const void* src, float* dst, int64_t n, cpu::Isa isa, const char* what) {
    const QuantKernels& k = kernels_for(isa);
    const DequantizeRowFn fn = type_id < kGgmlTypeCount ? k.dequantize[type_id] : nullptr;
    validate("dequantize", type_id, fn != nullptr, src, dst, n, what);
    if (n > 0) fn(src, dst, n);
}

void quantize(uint32_t type_id, const float* src, void* dst, int64_t n, cpu::Isa isa, const char* what) {
    const QuantKernels& k = kernels_for(isa);
    const QuantizeRowFn fn = type_id < kGgmlTypeCount ? k.quantize[type_id] : nullptr;
    validate("quantize to", type_id, fn != nullptr, src, dst, n, what);
    if (n > 0) fn(src, dst, n);
}

}  // namespace moe::quant
