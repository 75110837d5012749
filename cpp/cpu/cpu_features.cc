#include "cpu_features.h"

#include <cctype>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "../common/error.h"

#if defined(__x86_64__) || defined(_M_X64)
#define MOE_CPU_X86 1
#if defined(_MSC_VER) && !defined(__clang__)
#include <intrin.h>
#else
#include <cpuid.h>
#endif
#endif

namespace moe::cpu {

namespace {

#if defined(MOE_CPU_X86)

struct CpuidRegs {
    uint32_t eax = 0, ebx = 0, ecx = 0, edx = 0;
};

// cpuid(leaf, subleaf); all zero when the leaf is beyond the CPU's maximum.
CpuidRegs cpuid(uint32_t leaf, uint32_t subleaf) {
    CpuidRegs r;
#if defined(_MSC_VER) && !defined(__clang__)
    int max_info[4];
    __cpuid(max_info, static_cast<int>(leaf & 0x80000000u));
    if (static_cast<uint32_t>(max_info[0]) < leaf) return r;
    int info[4];
    __cpuidex(info, static_cast<int>(leaf), static_cast<int>(subleaf));
    r.eax = static_cast<uint32_t>(info[0]);
    r.ebx = static_cast<uint32_t>(info[1]);
    r.ecx = static_cast<uint32_t>(info[2]);
    r.edx = static_cast<uint32_t>(info[3]);
#else
    unsigned a, b, c, d;
    if (__get_cpuid_count(leaf, subleaf, &a, &b, &c, &d)) {
        r.eax = a;
        r.ebx = b;
        r.ecx = c;
        r.edx = d;
    }
#endif
    return r;
}

// XCR0: which register states the OS saves on context switches. Only valid when cpuid reports
// OSXSAVE. Inline asm rather than _xgetbv so this file needs no -mxsave.
uint64_t xgetbv0() {
#if defined(_MSC_VER) && !defined(__clang__)
    return _xgetbv(0);
#else
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (static_cast<uint64_t>(hi) << 32) | lo;
#endif
}

Features detect() {
    Features f;
    const CpuidRegs l1 = cpuid(1, 0);
    const CpuidRegs l7 = cpuid(7, 0);
    auto bit = [](uint32_t reg, int b) { return ((reg >> b) & 1u) != 0; };

    f.sse42 = bit(l1.ecx, 20);
    f.fma = bit(l1.ecx, 12);
    f.avx = bit(l1.ecx, 28);
    f.f16c = bit(l1.ecx, 29);
    f.avx2 = bit(l7.ebx, 5);
    f.avx512f = bit(l7.ebx, 16);
    f.avx512dq = bit(l7.ebx, 17);
    f.avx512bw = bit(l7.ebx, 30);
    f.avx512vl = bit(l7.ebx, 31);
    if (cpuid(0, 0).eax >= 7 && l7.eax >= 1) f.avx512_bf16 = bit(cpuid(7, 1).eax, 5);

    const bool osxsave = bit(l1.ecx, 27);
    if (osxsave) {
        const uint64_t xcr0 = xgetbv0();
        f.os_avx = (xcr0 & 0x6) == 0x6;                   // XMM (bit 1) and YMM upper halves (bit 2)
        f.os_avx512 = f.os_avx && (xcr0 & 0xe0) == 0xe0;  // opmask (5), ZMM0-15 upper (6), ZMM16-31 (7)
    }
    return f;
}

#else  // not x86-64

Features detect() {
    Features f;
#if defined(__aarch64__) || defined(_M_ARM64)
    f.neon = true;  // Advanced SIMD is mandatory in ARMv8-A
#endif
    return f;
}

#endif

// Names of the features an ISA level needs that this CPU lacks (fixed storage: isa_supported is
// noexcept and must not allocate).
struct Missing {
    const char* names[8] = {};
    int count = 0;
};

Missing missing_features(Isa isa) {
    const Features& f = features();
    Missing missing;
    auto need = [&missing](bool have, const char* name) {
        if (!have) missing.names[missing.count++] = name;
    };
    switch (isa) {
        case Isa::Scalar:
            break;
        case Isa::Avx512:
            need(f.avx512f, "AVX-512F");
            need(f.avx512bw, "AVX-512BW");
            need(f.avx512vl, "AVX-512VL");
            need(f.avx512dq, "AVX-512DQ");
            [[fallthrough]];
        case Isa::Avx2:
            need(f.avx, "AVX");
            need(f.avx2, "AVX2");
            need(f.fma, "FMA");
            need(f.f16c, "F16C");
            break;
        case Isa::Neon:
            need(f.neon, "NEON");
            break;
    }
    return missing;
}

// The OS side of support: the CPU may have the instructions while the OS does not save the
// register state (XCR0), in which case using them is still unsafe.
bool os_supports(Isa isa) {
    const Features& f = features();
    switch (isa) {
        case Isa::Avx2: return f.os_avx;
        case Isa::Avx512: return f.os_avx && f.os_avx512;
        default: return true;
    }
}

std::string lowercase(const std::string& s) {
    std::string out = s;
    for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return out;
}

Isa resolve_active_isa() {
    const char* env = std::getenv("NODE_MOE_CPU");
    if (!env || !*env) return best_isa();
    Isa isa;
    try {
        isa = parse_isa(env);
    } catch (const Error& e) {
        throw Error(ErrorCode::InvalidArgument, std::string("NODE_MOE_CPU: ") + e.what());
    }
    require_isa(isa);
    return isa;
}

}  // namespace

const Features& features() noexcept {
    static const Features f = detect();
    return f;
}

bool isa_supported(Isa isa) noexcept {
    switch (isa) {
        case Isa::Scalar:
        case Isa::Avx2:
        case Isa::Avx512:
        case Isa::Neon:
            return missing_features(isa).count == 0 && os_supports(isa);
    }
    return false;
}

Isa best_isa() noexcept {
    if (isa_supported(Isa::Avx512)) return Isa::Avx512;
    if (isa_supported(Isa::Avx2)) return Isa::Avx2;
    if (isa_supported(Isa::Neon)) return Isa::Neon;
    return Isa::Scalar;
}

Isa active_isa() {
    // Resolved once. If resolving throws (bad NODE_MOE_CPU), the static stays uninitialised and
    // the next call tries again, so every caller sees the error rather than a silent fallback.
    static const Isa isa = resolve_active_isa();
    return isa;
}

Isa parse_isa(const std::string& name) {
    const std::string n = lowercase(name);
    if (n == "scalar") return Isa::Scalar;
    if (n == "avx2") return Isa::Avx2;
    if (n == "avx512") return Isa::Avx512;
    if (n == "neon") return Isa::Neon;
    throw Error(ErrorCode::InvalidArgument,
                "unknown CPU level '" + name + "' (expected scalar, avx2, avx512 or neon)");
}

const char* isa_name(Isa isa) noexcept {
    switch (isa) {
        case Isa::Scalar: return "scalar";
        case Isa::Avx2: return "avx2";
        case Isa::Avx512: return "avx512";
        case Isa::Neon: return "neon";
    }
    return "unknown";
}

void require_isa(Isa isa) {
    if (isa_supported(isa)) return;
    std::string msg = std::string("cannot use the ") + isa_name(isa) + " kernels: ";
    const Missing missing = missing_features(isa);
    if (missing.count > 0) {
        msg += "this CPU lacks ";
        for (int i = 0; i < missing.count; ++i) {
            if (i) msg += ", ";
            msg += missing.names[i];
        }
    } else {
        msg += "the operating system does not enable the register state they need (XCR0)";
    }
    msg += std::string("; the best level on this CPU is ") + isa_name(best_isa()) + " (" + build_arch() + " build)";
    throw Error(ErrorCode::CpuUnsupported, msg);
}

const char* build_arch() noexcept {
#if defined(__x86_64__) || defined(_M_X64)
    return "x64";
#elif defined(__aarch64__) || defined(_M_ARM64)
    return "arm64";
#elif defined(__i386__) || defined(_M_IX86)
    return "ia32";
#elif defined(__arm__) || defined(_M_ARM)
    return "arm";
#elif defined(__riscv) && __riscv_xlen == 64
    return "riscv64";
#elif defined(__powerpc64__)
    return "ppc64";
#elif defined(__s390x__)
    return "s390x";
#else
    return "unknown";
#endif
}

}  // namespace moe::cpu
