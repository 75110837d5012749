// Native tests for cpp/kv (the per-sequence KV cache), its row export / import:
//   1. round trips: rows stored through store_k / store_v, exported, imported into a fresh cache of
//      the same shapes (another capacity), read back through k_rows / v_rows (the attention's view)
//      byte for byte, for F16 / F32 / Q8_0, transposed and row-major V, MLA layers (no V plane) and
//      sliding-window rings; also between a ring and a cache whose capacity collapsed the ring;
//   2. a ring given more positions than it holds keeps the last ones, as chunked stores do;
//   3. errors: positions a ring no longer holds, past length(), import past length() or capacity;
//   4. the slots decide what a ring holds: an aborted chunk's stores and an earlier truncate
//      overwrite positions that length() - ring would count as held;
//   5. whole-sequence states with unheld positions as zero rows (unheld_as_zero) restore exactly
//      what was held, also after a rewind and into a cache too small for a ring;
//   6. row_bytes is linear and capacity-independent; layout_fingerprint separates layouts.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <initializer_list>
#include <set>
#include <string>
#include <vector>

#include "check.h"
#include "common/error.h"
#include "cpu/cpu_features.h"
#include "error_check.h"
#include "kernels/ops.h"
#include "kv/kv_cache.h"
#include "quant/ggml_types.h"
#include "rng.h"

using moe::ErrorCode;
using moe::kv::KvCache;
using moe::kv::LayerShape;
using moe_test::Rng;
using moe_test::throws_error;

namespace {

constexpr uint32_t kF32 = static_cast<uint32_t>(moe::quant::GgmlType::F32);
constexpr uint32_t kF16 = static_cast<uint32_t>(moe::quant::GgmlType::F16);
constexpr uint32_t kQ8_0 = static_cast<uint32_t>(moe::quant::GgmlType::Q8_0);

// The rows a real model's sliding-window layer keeps: window + ggml's 64-cell alignment + one chunk.
constexpr uint32_t kWindow = 16;
constexpr uint32_t kRing = kWindow + 64 + 512;

// Bytes of `width` elements of a cache type, worked out here rather than asked of the cache.
size_t type_row_bytes(uint32_t type, uint32_t width) {
    if (type == kF32) return 4 * static_cast<size_t>(width);
    if (type == kF16) return 2 * static_cast<size_t>(width);
    return static_cast<size_t>(width) / 32 * 34;  // Q8_0: an fp16 scale + 32 int8 per block
}

// One position's stored bytes, read the way kernels::attention reads a KvRows: a row of a
// row-major plane (row p, or p % ring in a ring), or element i of a transposed plane at row i,
// column p. Always position-major, whatever the plane's layout.
std::vector<uint8_t> stored_bytes(const moe::kernels::KvRows& rows, uint32_t pos, uint32_t width) {
    const size_t bytes = type_row_bytes(rows.type, width);
    std::vector<uint8_t> out(bytes);
    if (rows.transposed) {
        const size_t elem = rows.type == kF32 ? 4 : 2;
        for (uint32_t i = 0; i < width; ++i) {
            std::memcpy(out.data() + i * elem, rows.data + i * rows.row_bytes + pos * elem, elem);
        }
    } else {
        const size_t row = rows.ring ? pos % rows.ring : pos;
        std::memcpy(out.data(), rows.data + row * rows.row_bytes, bytes);
    }
    return out;
}

// Random K / V activations of every layer at positions [0, n_pos), stored into caches in chunks.
struct Activations {
    std::vector<LayerShape> shapes;
    std::vector<std::vector<float>> k, v;  // [layer][pos * width + i]

    Activations(std::vector<LayerShape> layer_shapes, uint32_t n_pos, uint64_t seed) : shapes(std::move(layer_shapes)) {
        Rng rng(seed);
        for (const LayerShape& l : shapes) {
            k.push_back(rng.gauss_vec(static_cast<size_t>(n_pos) * l.k_width, 2.0));
            v.push_back(rng.gauss_vec(static_cast<size_t>(n_pos) * l.v_width, 2.0));
        }
    }

    // Stores positions [from, to) in chunks of at most `chunk` rows (a forward pass's chunks).
    void store(KvCache& cache, uint32_t from, uint32_t to, uint32_t chunk) const {
        const moe::cpu::Isa isa = moe::cpu::best_isa();
        for (uint32_t pos = from; pos < to; pos += chunk) {
            const uint32_t n = std::min(chunk, to - pos);
            for (uint32_t il = 0; il < shapes.size(); ++il) {
                const LayerShape& l = shapes[il];
                cache.store_k(il, pos, k[il].data() + static_cast<size_t>(pos) * l.k_width, l.k_width, n, isa);
                if (l.v_width) {
                    cache.store_v(il, pos, v[il].data() + static_cast<size_t>(pos) * l.v_width, l.v_width, n, isa);
                }
            }
        }
    }
};

// Whether two caches of the same shapes agree on what they hold at each position in [0, n_pos) and
// hold the same bytes there (K and, where a layer has one, V). Reports the first difference.
bool same_rows(const KvCache& a, const KvCache& b, const std::vector<LayerShape>& shapes, uint32_t n_pos) {
    for (uint32_t p = 0; p < n_pos; ++p) {
        if (a.holds(p) != b.holds(p)) {
            std::fprintf(stderr, "  position %u: held by one cache only\n", p);
            return false;
        }
        if (!a.holds(p)) continue;
        for (uint32_t il = 0; il < shapes.size(); ++il) {
            if (stored_bytes(a.k_rows(il), p, shapes[il].k_width) != stored_bytes(b.k_rows(il), p, shapes[il].k_width)) {
                std::fprintf(stderr, "  position %u layer %u: K rows differ\n", p, il);
                return false;
            }
            if (shapes[il].v_width &&
                stored_bytes(a.v_rows(il), p, shapes[il].v_width) != stored_bytes(b.v_rows(il), p, shapes[il].v_width)) {
                std::fprintf(stderr, "  position %u layer %u: V rows differ\n", p, il);
                return false;
            }
        }
    }
    return true;
}

std::vector<uint8_t> exported(const KvCache& cache, uint32_t pos, uint32_t n) {
    std::vector<uint8_t> bytes(cache.row_bytes(n));
    cache.export_rows(pos, n, bytes.data());
    return bytes;
}

// Stores `length` positions into a cache of src_capacity, exports [split, length), and rebuilds the
// sequence in a cache of dst_capacity: positions [0, split) stored, the rest imported. Both must
// then hold the same bytes, and export the same bytes again. Where the source still holds position
// 0, the whole sequence is also imported into an empty cache (a prefix copied between sequences).
void check_round_trip(const std::vector<LayerShape>& shapes, uint32_t type, uint32_t length, uint32_t split,
                      uint32_t src_capacity, uint32_t dst_capacity) {
    const Activations act(shapes, length, 0x5eed0000u + type * 131 + length);
    KvCache src(src_capacity, shapes, type);
    act.store(src, 0, length, 100);
    src.commit(length);

    const std::vector<uint8_t> tail = exported(src, split, length - split);
    CHECK(tail.size() == src.row_bytes(length - split));

    KvCache dst(dst_capacity, shapes, type);
    CHECK(dst.layout_fingerprint() == src.layout_fingerprint());
    act.store(dst, 0, split, 128);
    dst.commit(split);
    dst.import_rows(split, length - split, tail.data());
    CHECK(dst.length() == split);  // importing does not commit
    dst.commit(length);
    CHECK(same_rows(src, dst, shapes, length));
    CHECK(exported(dst, split, length - split) == tail);

    if (src.holds(0)) {
        const std::vector<uint8_t> all = exported(src, 0, length);
        KvCache fresh(dst_capacity, shapes, type);
        fresh.import_rows(0, length, all.data());
        fresh.commit(length);
        CHECK(same_rows(src, fresh, shapes, length));
        CHECK(exported(fresh, 0, length) == all);
    }
}

std::vector<LayerShape> uniform(uint32_t n_layer, uint32_t k_width, uint32_t v_width, uint32_t head_dim) {
    return std::vector<LayerShape>(n_layer, LayerShape{k_width, v_width, head_dim, head_dim, 0, 0});
}

// deepseek2-like: K rows of [latent 64 | rope 32], no V plane (V is the latent part of K).
std::vector<LayerShape> mla_layers() { return std::vector<LayerShape>(3, LayerShape{96, 0, 96, 64, 0, 0}); }

// gpt-oss-like: full-attention layers between sliding-window ring layers.
std::vector<LayerShape> mixed_layers() {
    const LayerShape full{64, 64, 32, 32, 0, 0};
    const LayerShape swa{64, 64, 32, 32, kWindow, kRing};
    return {swa, full, swa, full};
}

// Runs check(type) for each cache type, naming the type after any failure it caused.
template <typename Check>
void for_types(std::initializer_list<uint32_t> types, Check check) {
    for (uint32_t type : types) {
        const int before = moe_test::failures();
        check(type);
        if (moe_test::failures() != before) {
            std::fprintf(stderr, "  (with a %s cache)\n", type == kF32 ? "F32" : type == kF16 ? "F16" : "Q8_0");
        }
    }
}

}  // namespace

TEST_CASE("round trip: uniform layers (F16 / F32 transposed V, Q8_0 row-major V)") {
    for_types({kF16, kF32, kQ8_0}, [&](uint32_t type) {
        KvCache probe(2, 16, 64, 64, 32, type);
        CHECK(probe.v_transposed() == (type != kQ8_0));
        check_round_trip(uniform(3, 64, 64, 32), type, 300, 170, 512, 320);
        check_round_trip(uniform(2, 64, 32, 32), type, 40, 0, 64, 40);  // K wider than V; the whole range
    });
}

TEST_CASE("round trip: MLA layers without a V plane") {
    for_types({kF16, kF32, kQ8_0}, [&](uint32_t type) {
        check_round_trip(mla_layers(), type, 260, 100, 300, 1000);
    });
}

TEST_CASE("round trip: sliding-window rings next to full layers") {
    for_types({kF16, kF32, kQ8_0}, [&](uint32_t type) {
        // 700 tokens wrap the 592-row ring: positions [108, 700) are held, the tail [400, 700) moves.
        check_round_trip(mixed_layers(), type, 700, 400, 1024, 800);
        // Shorter than the ring: everything is held, including position 0.
        check_round_trip(mixed_layers(), type, 300, 120, 1024, 2048);
    });
}

TEST_CASE("a ring and a ring collapsed by a small capacity exchange rows") {
    // Capacity 500 < 592 rows: the window layers of `small` are plain rows (F16/F32: transposed V),
    // yet the exported form and the fingerprint are those of the ring cache.
    for_types({kF16, kQ8_0}, [&](uint32_t type) {
        const std::vector<LayerShape> shapes = mixed_layers();
        const Activations act(shapes, 500, 77);
        KvCache small(500, shapes, type), ringed(1024, shapes, type);
        CHECK(small.layout_fingerprint() == ringed.layout_fingerprint());
        CHECK(small.row_bytes(1) == ringed.row_bytes(1));
        if (type == kF16) {
            CHECK(small.v_rows(0).transposed && !ringed.v_rows(0).transposed && ringed.v_rows(0).ring == kRing);
        }

        act.store(small, 0, 500, 128);
        small.commit(500);
        const std::vector<uint8_t> all = exported(small, 0, 500);
        ringed.import_rows(0, 500, all.data());
        ringed.commit(500);
        CHECK(same_rows(small, ringed, shapes, 500));

        // And back: the last 200 positions of the ring into the collapsed layout.
        KvCache back(500, shapes, type);
        act.store(back, 0, 300, 100);
        back.commit(300);
        const std::vector<uint8_t> tail = exported(ringed, 300, 200);
        back.import_rows(300, 200, tail.data());
        back.commit(500);
        CHECK(same_rows(small, back, shapes, 500));
    });
}

TEST_CASE("a ring given more positions than it holds keeps the last ones") {
    // Rows of 200 positions from plain full-context layers, into layers with a 48-row ring (the
    // row bytes agree; the fingerprints differ, which is the caller's check, not import's).
    const uint32_t ring = 48;
    const std::vector<LayerShape> plain(2, LayerShape{64, 64, 32, 32, kWindow, 0});
    const std::vector<LayerShape> ringed(2, LayerShape{64, 64, 32, 32, kWindow, ring});
    for_types({kF16, kF32, kQ8_0}, [&](uint32_t type) {
        const Activations act(plain, 200, 5);
        KvCache src(200, plain, type);
        act.store(src, 0, 200, 64);
        src.commit(200);
        const std::vector<uint8_t> all = exported(src, 0, 200);

        KvCache imported(400, ringed, type);
        CHECK(imported.row_bytes(200) == all.size());
        imported.import_rows(0, 200, all.data());
        imported.commit(200);
        KvCache stored(400, ringed, type);
        act.store(stored, 0, 200, ring);
        stored.commit(200);

        for (uint32_t p = 0; p < 200; ++p) CHECK_MSG(imported.holds(p) == (p >= 200 - ring), "position %u", p);
        CHECK(same_rows(imported, stored, ringed, 200));
        // The rings are byte for byte what chunked stores leave.
        for (uint32_t il = 0; il < 2; ++il) {
            for (bool v : {false, true}) {
                const moe::kernels::KvRows a = v ? imported.v_rows(il) : imported.k_rows(il);
                const moe::kernels::KvRows b = v ? stored.v_rows(il) : stored.k_rows(il);
                CHECK(a.ring == ring && b.ring == ring);
                CHECK(std::memcmp(a.data, b.data, ring * a.row_bytes) == 0);
            }
        }
        // The held positions are the source's.
        std::vector<uint8_t> last(imported.row_bytes(ring));
        imported.export_rows(200 - ring, ring, last.data());
        CHECK(last == exported(src, 200 - ring, ring));
    });
}

TEST_CASE("errors: positions not held, past the length, past the capacity") {
    const std::vector<LayerShape> shapes = mixed_layers();
    const Activations act(shapes, 700, 11);
    KvCache cache(1024, shapes, kF16);
    act.store(cache, 0, 700, 100);
    cache.commit(700);
    std::vector<uint8_t> buf(cache.row_bytes(700));

    // The ring holds [700 - 592, 700) = [108, 700).
    CHECK(!cache.holds(107) && cache.holds(108) && cache.holds(699) && !cache.holds(700));
    CHECK(throws_error([&] { cache.export_rows(100, 10, buf.data()); }, ErrorCode::InvalidArgument,
                       {"[100, 110)", "no longer held"}));
    CHECK(throws_error([&] { cache.export_rows(0, 700, buf.data()); }, ErrorCode::InvalidArgument, {"no longer held"}));
    CHECK(throws_error([&] { cache.export_rows(107, 1, buf.data()); }, ErrorCode::InvalidArgument, {"position 107"}));
    cache.export_rows(108, 592, buf.data());
    CHECK(throws_error([&] { cache.export_rows(690, 11, buf.data()); }, ErrorCode::InvalidArgument,
                       {"[690, 701)", "700 tokens"}));
    CHECK(throws_error([&] { cache.export_rows(UINT32_MAX, 2, buf.data()); }, ErrorCode::InvalidArgument));
    cache.export_rows(700, 0, buf.data());  // an empty range at the end is fine

    KvCache dst(800, shapes, kF16);
    act.store(dst, 0, 100, 100);
    dst.commit(100);
    CHECK(throws_error([&] { dst.import_rows(101, 1, buf.data()); }, ErrorCode::InvalidArgument,
                       {"position 101", "100 tokens"}));
    CHECK(throws_error([&] { dst.import_rows(100, 701, buf.data()); }, ErrorCode::InvalidArgument,
                       {"[100, 801)", "800 tokens"}));
    CHECK(throws_error([&] { dst.import_rows(100, UINT32_MAX, buf.data()); }, ErrorCode::InvalidArgument));
    CHECK(dst.length() == 100);
    dst.import_rows(100, 700, buf.data());  // up to the capacity exactly
    // Overwriting the tail (pos < length) is allowed, as a forward pass after truncate would.
    dst.import_rows(50, 10, buf.data());
}

TEST_CASE("a ring's slots, not length - ring, say what it holds") {
    const std::vector<LayerShape> shapes = mixed_layers();
    const Activations act(shapes, 1212, 13);

    // An aborted chunk: positions [700, 1212) stored, never committed. They overwrote the slots of
    // [108, 620), so position 630 (which reads keys from 615) can no longer be the end.
    KvCache aborted(2048, shapes, kF16);
    act.store(aborted, 0, 700, 100);
    aborted.commit(700);
    act.store(aborted, 700, 1212, 512);
    CHECK(aborted.length() == 700);
    CHECK(!aborted.holds(619) && aborted.holds(620) && aborted.holds(699));
    std::vector<uint8_t> buf(aborted.row_bytes(100));
    CHECK(throws_error([&] { aborted.export_rows(619, 81, buf.data()); }, ErrorCode::InvalidArgument, {"position 619"}));
    aborted.export_rows(620, 80, buf.data());
    CHECK(throws_error([&] { aborted.truncate(630); }, ErrorCode::InvalidArgument, {"sliding-window"}));
    CHECK(aborted.length() == 700);
    aborted.truncate(650);  // reads keys from 635 on: still there
    CHECK(aborted.length() == 650);

    // Two truncates: after 700 -> 650 the slots of [58, 108) hold positions [650, 700), so 100
    // (reading keys from 85) is gone even though 650 - 592 = 58 would suggest otherwise.
    KvCache twice(2048, shapes, kF16);
    act.store(twice, 0, 700, 100);
    twice.commit(700);
    twice.truncate(650);
    CHECK(!twice.holds(107) && twice.holds(108) && twice.holds(649) && !twice.holds(650));
    CHECK(throws_error([&] { twice.truncate(100); }, ErrorCode::InvalidArgument, {"sliding-window"}));
    twice.truncate(124);  // reads keys from 109 on
    CHECK(twice.length() == 124);
}

TEST_CASE("a whole-sequence state with unheld positions as zero rows restores what was held") {
    const std::vector<LayerShape> shapes = mixed_layers();
    for_types({kF16, kF32, kQ8_0}, [&](uint32_t type) {
        const Activations act(shapes, 700, 17);
        KvCache src(1024, shapes, type);
        act.store(src, 0, 700, 100);
        src.commit(700);

        // The ring layers' rows of [0, 108) are zeros, the full layers' rows are real.
        const std::vector<uint8_t> state = [&] {
            std::vector<uint8_t> bytes(src.row_bytes(700));
            src.export_rows(0, 700, bytes.data(), /*unheld_as_zero=*/true);
            return bytes;
        }();
        const size_t k_row = type_row_bytes(type, 64);
        const auto all_zero = [](const uint8_t* p, size_t n) {
            return std::all_of(p, p + n, [](uint8_t b) { return b == 0; });
        };
        // Sections: layer 0 (ring) K, V; layer 1 (full) K, V; ...; each [700][k_row].
        CHECK(all_zero(state.data(), 108 * k_row) && !all_zero(state.data() + 108 * k_row, k_row));
        CHECK(all_zero(state.data() + 700 * k_row, 108 * k_row));
        CHECK(!all_zero(state.data() + 2 * 700 * k_row, k_row));  // layer 1's position 0
        CHECK(std::equal(state.begin() + 108 * k_row, state.begin() + 700 * k_row, exported(src, 108, 592).begin()));

        KvCache restored(1024, shapes, type);
        restored.import_rows(0, 700, state.data());
        restored.commit(700);
        CHECK(same_rows(src, restored, shapes, 700));
        CHECK(!restored.holds(107) && restored.holds(108));

        // After a rewind, positions [0, 108) are gone while 200 < 592 would not wrap a ring: the
        // placeholders must not count as held, neither in a ring nor in a cache too small for one.
        src.truncate(200);
        std::vector<uint8_t> rewound(src.row_bytes(200));
        src.export_rows(0, 200, rewound.data(), true);
        for (uint32_t capacity : {1024u, 300u}) {
            KvCache back(capacity, shapes, type);
            CHECK((back.v_rows(0).ring != 0) == (capacity > kRing));
            back.import_rows(0, 200, rewound.data());
            back.commit(200);
            CHECK(same_rows(src, back, shapes, 200));
            CHECK(!back.holds(0) && !back.holds(107) && back.holds(108) && back.holds(199));
            std::vector<uint8_t> buf(back.row_bytes(10));
            CHECK(throws_error([&] { back.export_rows(100, 10, buf.data()); }, ErrorCode::InvalidArgument,
                               {"position 100"}));
            // Rewinding to where the window would read placeholders fails as it does in the source.
            CHECK(throws_error([&] { back.truncate(110); }, ErrorCode::InvalidArgument, {"sliding-window"}));
            back.truncate(150);
        }
        CHECK(throws_error([&] { src.truncate(110); }, ErrorCode::InvalidArgument, {"sliding-window"}));
    });
}

TEST_CASE("an imported all-zero row of a window layer counts as not held") {
    // A consequence of the placeholder rule, pinned down: conservative (never a wrong row).
    const std::vector<LayerShape> shapes = mixed_layers();
    const Activations act(shapes, 41, 19);
    KvCache src(1024, shapes, kF16);
    act.store(src, 0, 41, 41);
    const std::vector<float> zeros(64, 0.0f);  // layer 0's rows of position 40
    src.store_k(0, 40, zeros.data(), 64, 1, moe::cpu::best_isa());
    src.store_v(0, 40, zeros.data(), 64, 1, moe::cpu::best_isa());
    src.commit(41);
    CHECK(src.holds(40));  // stored rows are held, whatever their values
    const std::vector<uint8_t> all = exported(src, 0, 41);
    KvCache dst(1024, shapes, kF16);
    dst.import_rows(0, 41, all.data());
    dst.commit(41);
    CHECK(dst.holds(39) && !dst.holds(40));
}

TEST_CASE("row_bytes is linear; the fingerprint separates layouts, not capacities") {
    const std::vector<LayerShape> shapes = mixed_layers();
    for (uint32_t type : {kF16, kF32, kQ8_0}) {
        const KvCache cache(1024, shapes, type);
        size_t per_position = 0;
        for (const LayerShape& l : shapes) {
            per_position += type_row_bytes(type, l.k_width) + type_row_bytes(type, l.v_width);
        }
        CHECK(cache.row_bytes(0) == 0);
        CHECK(cache.row_bytes(1) == per_position);
        CHECK(cache.row_bytes(777) == 777 * per_position);
        CHECK(KvCache(100, shapes, type).row_bytes(5) == cache.row_bytes(5));
    }
    CHECK(KvCache(64, mla_layers(), kF16).row_bytes(3) == 3 * 3 * type_row_bytes(kF16, 96));

    // Every variant differs from the base and from each other; capacity changes nothing.
    const uint64_t base = KvCache(1024, shapes, kF16).layout_fingerprint();
    CHECK(KvCache(1024, shapes, kF16).layout_fingerprint() == base);
    CHECK(KvCache(4096, shapes, kF16).layout_fingerprint() == base);
    CHECK(KvCache(100, shapes, kF16).layout_fingerprint() == base);  // ring collapsed into rows
    std::vector<std::vector<LayerShape>> variants;
    const auto vary = [&](auto edit) {
        std::vector<LayerShape> s = shapes;
        edit(s);
        variants.push_back(s);
    };
    vary([](std::vector<LayerShape>& s) { s[1].k_width = 96; });
    vary([](std::vector<LayerShape>& s) { s[1].v_width = 32; });
    vary([](std::vector<LayerShape>& s) { s[1].k_head_dim = 64; s[1].v_head_dim = 64; });
    vary([](std::vector<LayerShape>& s) { s[1].v_head_dim = 64; });
    vary([](std::vector<LayerShape>& s) { s[0].window = 32; });
    vary([](std::vector<LayerShape>& s) { s[0].ring = kRing + 1; });
    vary([](std::vector<LayerShape>& s) { s[0].ring = 0; });  // a window layer over full rows
    vary([](std::vector<LayerShape>& s) { std::swap(s[0], s[1]); });
    vary([](std::vector<LayerShape>& s) { s.pop_back(); });
    vary([](std::vector<LayerShape>& s) { s.push_back(s.back()); });
    vary([](std::vector<LayerShape>& s) { s[1].v_width = 0; });
    std::set<uint64_t> seen{base};
    for (const auto& s : variants) CHECK(seen.insert(KvCache(1024, s, kF16).layout_fingerprint()).second);
    for (uint32_t type : {kF32, kQ8_0}) CHECK(seen.insert(KvCache(1024, shapes, type).layout_fingerprint()).second);
    // A ring on a layer without a window is no ring at all.
    std::vector<LayerShape> no_window = uniform(2, 64, 64, 32), ignored_ring = no_window;
    ignored_ring[0].ring = 100;
    CHECK(KvCache(1024, no_window, kF16).layout_fingerprint() == KvCache(1024, ignored_ring, kF16).layout_fingerprint());
    // The uniform constructor builds the same layout as its shapes spelled out.
    CHECK(KvCache(3, 100, 64, 64, 32, kF16).layout_fingerprint() ==
          KvCache(100, uniform(3, 64, 64, 32), kF16).layout_fingerprint());
}

TEST_MAIN()
