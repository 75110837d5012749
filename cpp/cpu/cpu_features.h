// Run-time CPU feature detection and kernel-level selection. One binary carries scalar, AVX2+FMA,
// AVX-512 and NEON kernels; the level is picked once from cpuid (and the OS's xgetbv state save
// support), so no instruction the CPU lacks is ever executed.
#pragma once

#include <string>

namespace moe::cpu {

enum class Isa : int {
    Scalar = 0,  // portable C++; the reference every SIMD kernel is tested against
    Avx2 = 1,    // x86-64: AVX2 + FMA + F16C
    Avx512 = 2,  // x86-64: AVX-512 F/BW/VL/DQ + AVX2 + FMA + F16C
    Neon = 3,    // aarch64: Advanced SIMD (always present on ARMv8-A)
};

struct Features {
    bool sse42 = false, avx = false, avx2 = false, fma = false, f16c = false;
    bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false;
    bool avx512_bf16 = false;  // VDPBF16PS: llama.cpp's BF16 matmuls change order with it
    bool os_avx = false, os_avx512 = false;  // OS saves YMM / ZMM state (XGETBV)
    bool neon = false;
};

const Features& features() noexcept;

bool isa_supported(Isa isa) noexcept;

// Best level this CPU runs.
Isa best_isa() noexcept;

// Level kernels use by default: best_isa(), unless the environment variable NODE_MOE_CPU
// (scalar | avx2 | avx512 | neon) asks for another. Asking for a level the CPU lacks throws
// moe::Error(CpuUnsupported) with a message naming the missing features, never SIGILL.
Isa active_isa();

// Parse "scalar" / "avx2" / "avx512" / "neon"; throws moe::Error(InvalidArgument) otherwise.
Isa parse_isa(const std::string& name);
const char* isa_name(Isa isa) noexcept;

// Throws moe::Error(CpuUnsupported) if isa is not supported, naming what is missing.
void require_isa(Isa isa);

// Name of the CPU architecture this binary was built for ("x64", "arm64", ...).
const char* build_arch() noexcept;

}  // namespace moe::cpu
