// Assertion helper for engine errors, shared by the native tests.
#pragma once

#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "common/error.h"

namespace moe_test {

// Runs f and reports whether it threw moe::Error with `code` and a message containing every needle
// (printing what it got otherwise).
inline bool throws_error(const std::function<void()>& f, moe::ErrorCode code, const std::vector<std::string>& needles = {}) {
    try {
        f();
    } catch (const moe::Error& e) {
        bool ok = e.code() == code;
        for (const std::string& n : needles) ok = ok && std::string(e.what()).find(n) != std::string::npos;
        if (!ok) std::fprintf(stderr, "  unexpected error (code %d): %s\n", static_cast<int>(e.code()), e.what());
        return ok;
    }
    std::fprintf(stderr, "  expected an error, nothing was thrown\n");
    return false;
}

}  // namespace moe_test
