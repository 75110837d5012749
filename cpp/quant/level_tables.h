// The per-ISA kernel tables and their inheritance rule, shared by every dispatched kernel family
// (QuantKernels, VecDotKernels): a level starts from the table below it (Avx512 <- Avx2 <- Scalar,
// Neon <- Scalar) and overrides what it specialises, so every table is complete.
#pragma once

#include "../cpu/cpu_features.h"

namespace moe::quant {

template <typename Table>
class LevelTables {
public:
    using Fill = void (*)(Table&);

    LevelTables(Fill scalar, Fill avx2, Fill avx512, Fill neon) {
        scalar(scalar_);
        avx2_ = scalar_;
        avx2(avx2_);
        avx512_ = avx2_;
        avx512(avx512_);
        neon_ = scalar_;
        neon(neon_);
    }

    // Building the tables only stores pointers; a level's table is handed out only after the CPU
    // was checked (throws moe::Error(CpuUnsupported) otherwise).
    const Table& for_isa(cpu::Isa isa) const {
        cpu::require_isa(isa);
        switch (isa) {
            case cpu::Isa::Avx2: return avx2_;
            case cpu::Isa::Avx512: return avx512_;
            case cpu::Isa::Neon: return neon_;
            case cpu::Isa::Scalar: break;
        }
        return scalar_;
    }

private:
    Table scalar_, avx2_, avx512_, neon_;
};

}  // namespace moe::quant
