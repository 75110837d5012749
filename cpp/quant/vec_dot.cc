// Dot-product tables per ISA level and the weight type -> dot format map.
#include "vec_dot.h"

namespace moe::quant {

namespace {

struct AllTables {
    VecDotKernels scalar, avx2, avx512, neon;
};

// Built once on first use (function-local static: thread-safe). Building only stores pointers;
// nothing of a level runs before vec_dot_kernels_for() has checked the CPU.
const AllTables& all_tables() {
    static const AllTables tables = [] {
        AllTables t;
        fill_scalar_vec_dot(t.scalar);
        t.avx2 = t.scalar;
        fill_avx2_vec_dot(t.avx2);
        t.avx512 = t.avx2;
        fill_avx512_vec_dot(t.avx512);
        t.neon = t.scalar;
        fill_neon_vec_dot(t.neon);
        return t;
    }();
    return tables;
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

const VecDotKernels& vec_dot_kernels_for(cpu::Isa isa) {
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

}  // namespace moe::quant
