// Minimal native test harness: CHECK-style assertions that count failures, and a registry of
// test cases run by main(). No third-party test framework, so the native tests build offline.
#pragma once

#include <cmath>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

namespace moe_test {

struct Case {
    const char* name;
    std::function<void()> fn;
};

inline std::vector<Case>& registry() {
    static std::vector<Case> cases;
    return cases;
}

inline int& failures() {
    static int n = 0;
    return n;
}

struct Register {
    Register(const char* name, std::function<void()> fn) { registry().push_back({name, std::move(fn)}); }
};

// Runs every registered case (or those whose name contains argv[1]); prints
// "N passed, N failed" and returns non-zero on any failure.
inline int run_all(int argc, char** argv) {
    int passed = 0, failed = 0;
    for (auto& c : registry()) {
        if (argc > 1 && std::string(c.name).find(argv[1]) == std::string::npos) continue;
        int before = failures();
        try {
            c.fn();
        } catch (const std::exception& e) {
            std::fprintf(stderr, "  unexpected exception: %s\n", e.what());
            ++failures();
        }
        if (failures() == before) {
            ++passed;
            std::printf("ok   %s\n", c.name);
        } else {
            ++failed;
            std::printf("FAIL %s\n", c.name);
        }
    }
    std::printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}

}  // namespace moe_test

#define MOE_CONCAT2(a, b) a##b
#define MOE_CONCAT(a, b) MOE_CONCAT2(a, b)
#define TEST_CASE(name)                                                              \
    static void MOE_CONCAT(test_fn_, __LINE__)();                                    \
    static moe_test::Register MOE_CONCAT(test_reg_, __LINE__)(name, MOE_CONCAT(test_fn_, __LINE__)); \
    static void MOE_CONCAT(test_fn_, __LINE__)()

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) {                                                               \
            std::fprintf(stderr, "  %s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond); \
            ++moe_test::failures();                                                  \
        }                                                                            \
    } while (0)

#define CHECK_MSG(cond, ...)                                                         \
    do {                                                                             \
        if (!(cond)) {                                                               \
            std::fprintf(stderr, "  %s:%d: CHECK(%s) failed: ", __FILE__, __LINE__, #cond); \
            std::fprintf(stderr, __VA_ARGS__);                                       \
            std::fprintf(stderr, "\n");                                              \
            ++moe_test::failures();                                                  \
        }                                                                            \
    } while (0)

#define TEST_MAIN() \
    int main(int argc, char** argv) { return moe_test::run_all(argc, argv); }
