// The native tests' random numbers: splitmix64, identical on every platform, so every seeded test
// sees the same values everywhere.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace moe_test {

struct Rng {
    uint64_t s;
    explicit Rng(uint64_t seed) : s(seed) {}
    uint64_t next() {
        uint64_t z = (s += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
    }
    uint32_t u32() { return static_cast<uint32_t>(next() >> 32); }
    uint8_t byte() { return static_cast<uint8_t>(next() >> 56); }
    int below(int n) { return static_cast<int>(next() % static_cast<uint64_t>(n)); }
    double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }  // [0, 1)
    double gauss() {                                                            // Box-Muller
        const double u1 = 1.0 - uniform(), u2 = uniform();
        return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
    }
    std::vector<float> gauss_vec(size_t n, double scale) {
        std::vector<float> v(n);
        for (auto& x : v) x = static_cast<float>(gauss() * scale);
        return v;
    }
};

}  // namespace moe_test
