// Kernel tables per ISA level and the validating quantize/dequantize entry points.
#include "quant.h"

#include <cstdint>
#include <string>

#include "../common/error.h"

namespace moe::quant {

namespace {

struct AllTables {
    QuantKernels scalar, avx2, avx512, neon;
};

// Every table is built at once on first use (a function-local static, so thread-safe). Building
// only stores function pointers; nothing of a level runs until kernels_for() has checked that the
// CPU supports it.
const AllTables& all_tables() {
    static const AllTables tables = [] {
        AllTables t;
        fill_scalar_kernels(t.scalar);
        t.avx2 = t.scalar;
        fill_avx2_kernels(t.avx2);
        t.avx512 = t.avx2;
        fill_avx512_kernels(t.avx512);
        t.neon = t.scalar;
        fill_neon_kernels(t.neon);
        return t;
    }();
    return tables;
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

const QuantKernels& kernels_for(cpu::Isa isa) {
    cpu::require_isa(isa);
    const AllTables& t = all_tables();
    switch (isa) {
        case cpu::Isa::Avx2: return t.avx2;
        case cpu::Isa::Avx512: return t.avx512;
        case cpu::Isa::Neon: return t.neon;
        case cpu::Isa::Scalar: break;
    }
    return t.scalar;
}

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
