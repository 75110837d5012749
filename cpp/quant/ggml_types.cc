#include "ggml_types.h"

#include <cstdio>

namespace moe::quant {

namespace {

// Block geometry from ggml-common.h's static_asserts (see the reference note §2). The two flags say
// what this build computes with; IQ*/TQ*/NVFP4/Q1_0/Q2_0 and the integer types are recognised so
// errors can name them, but no kernel handles them yet.
constexpr TypeTraits kTraits[kGgmlTypeCount] = {
    /*  0 */ {"F32", 1, 4, true, true},
    /*  1 */ {"F16", 1, 2, true, true},
    /*  2 */ {"Q4_0", 32, 18, true, true},
    /*  3 */ {"Q4_1", 32, 20, true, true},
    /*  4 */ {nullptr, 0, 0, false, false},
    /*  5 */ {nullptr, 0, 0, false, false},
    /*  6 */ {"Q5_0", 32, 22, true, true},
    /*  7 */ {"Q5_1", 32, 24, true, true},
    /*  8 */ {"Q8_0", 32, 34, true, true},
    /*  9 */ {"Q8_1", 32, 36, true, true},
    /* 10 */ {"Q2_K", 256, 84, true, true},
    /* 11 */ {"Q3_K", 256, 110, true, true},
    /* 12 */ {"Q4_K", 256, 144, true, true},
    /* 13 */ {"Q5_K", 256, 176, true, true},
    /* 14 */ {"Q6_K", 256, 210, true, true},
    /* 15 */ {"Q8_K", 256, 292, true, true},
    /* 16 */ {"IQ2_XXS", 256, 66, false, false},
    /* 17 */ {"IQ2_XS", 256, 74, false, false},
    /* 18 */ {"IQ3_XXS", 256, 98, false, false},
    /* 19 */ {"IQ1_S", 256, 50, false, false},
    /* 20 */ {"IQ4_NL", 32, 18, false, false},
    /* 21 */ {"IQ3_S", 256, 110, false, false},
    /* 22 */ {"IQ2_S", 256, 82, false, false},
    /* 23 */ {"IQ4_XS", 256, 136, false, false},
    /* 24 */ {"I8", 1, 1, false, false},
    /* 25 */ {"I16", 1, 2, false, false},
    /* 26 */ {"I32", 1, 4, false, false},
    /* 27 */ {"I64", 1, 8, false, false},
    /* 28 */ {"F64", 1, 8, false, false},
    /* 29 */ {"IQ1_M", 256, 56, false, false},
    /* 30 */ {"BF16", 1, 2, true, true},
    /* 31 */ {nullptr, 0, 0, false, false},
    /* 32 */ {nullptr, 0, 0, false, false},
    /* 33 */ {nullptr, 0, 0, false, false},
    /* 34 */ {"TQ1_0", 256, 54, false, false},
    /* 35 */ {"TQ2_0", 256, 66, false, false},
    /* 36 */ {nullptr, 0, 0, false, false},
    /* 37 */ {nullptr, 0, 0, false, false},
    /* 38 */ {nullptr, 0, 0, false, false},
    /* 39 */ {"MXFP4", 32, 17, true, true},
    /* 40 */ {"NVFP4", 64, 36, false, false},
    /* 41 */ {"Q1_0", 128, 18, false, false},
    /* 42 */ {"Q2_0", 64, 18, false, false},
};

}  // namespace

const TypeTraits* type_traits(uint32_t type_id) noexcept {
    if (type_id >= kGgmlTypeCount || kTraits[type_id].name == nullptr) return nullptr;
    return &kTraits[type_id];
}

const char* type_name(uint32_t type_id) noexcept {
    const TypeTraits* t = type_traits(type_id);
    if (t) return t->name;
    static thread_local char buf[32];
    std::snprintf(buf, sizeof buf, "type#%u", type_id);
    return buf;
}

}  // namespace moe::quant
