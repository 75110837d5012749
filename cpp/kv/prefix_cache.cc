// The prefix cache (see prefix_cache.h).
#include "prefix_cache.h"

#include <algorithm>
#include <cstring>

#include "../common/error.h"

namespace moe::kv {

PrefixCache::PrefixCache(size_t budget_bytes, uint32_t block_tokens)
    : budget_bytes_(budget_bytes), block_tokens_(block_tokens) {
    if (block_tokens == 0) throw Error(ErrorCode::InvalidArgument, "prefix cache blocks need at least one token");
}

uint64_t PrefixCache::key_of(uint64_t parent, const int32_t* tokens) const noexcept {
    // splitmix64-style mixing of the parent key and each token: a chain key depends on every token
    // from position 0 and on their order.
    uint64_t h = parent ^ 0x9e3779b97f4a7c15ULL;
    for (uint32_t i = 0; i < block_tokens_; ++i) {
        h += static_cast<uint32_t>(tokens[i]) + 0x9e3779b97f4a7c15ULL;
        h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ULL;
        h = (h ^ (h >> 27)) * 0x94d049bb133111ebULL;
        h ^= h >> 31;
    }
    return h == 0 ? 1 : h;  // 0 means "no parent"
}

PrefixCache::Block* PrefixCache::find(uint64_t key, uint64_t parent, uint64_t layout, const int32_t* tokens) {
    auto it = blocks_.find(key);
    if (it == blocks_.end()) return nullptr;
    Block& b = it->second;
    // A hash collision must never hand out another prefix's rows.
    if (b.parent != parent || b.layout != layout ||
        std::memcmp(b.tokens.data(), tokens, sizeof(int32_t) * block_tokens_) != 0) {
        return nullptr;
    }
    return &b;
}

void PrefixCache::touch(Block& b, uint64_t key) {
    lru_.erase(b.lru);
    lru_.push_front(key);
    b.lru = lru_.begin();
}

// Marks a chain used with its first block the most recent, so eviction shortens chains from their
// ends rather than cutting them at the root.
void PrefixCache::touch_chain(const std::vector<uint64_t>& keys) {
    for (auto k = keys.rbegin(); k != keys.rend(); ++k) {
        auto it = blocks_.find(*k);
        if (it != blocks_.end()) touch(it->second, *k);
    }
}

void PrefixCache::evict_to(size_t budget) {
    while (stats_.bytes > budget && !lru_.empty()) {
        const uint64_t key = lru_.back();
        lru_.pop_back();
        auto it = blocks_.find(key);
        stats_.bytes -= it->second.rows.size();
        blocks_.erase(it);
        --stats_.blocks;
        ++stats_.evicted_blocks;
    }
}

size_t PrefixCache::insert(const int32_t* tokens, uint32_t n, const KvCache& cache) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (budget_bytes_ == 0) return 0;
    const uint32_t B = block_tokens_;
    const size_t bytes = cache.row_bytes(B);
    if (bytes == 0 || bytes > budget_bytes_) return 0;
    n = std::min(n, cache.length());
    const uint64_t layout = cache.layout_fingerprint();
    uint64_t parent = 0;
    size_t added = 0;
    std::vector<uint64_t> chain;
    for (uint32_t b = 0; (b + 1) * static_cast<uint64_t>(B) <= n; ++b) {
        const int32_t* t = tokens + static_cast<size_t>(b) * B;
        const uint64_t key = key_of(parent, t);
        if (find(key, parent, layout, t)) {
            chain.push_back(key);
            parent = key;
            continue;
        }
        if (blocks_.count(key)) break;  // a colliding block of another prefix keeps its place
        bool held = true;
        for (uint32_t p = b * B; p < (b + 1) * B && held; ++p) held = cache.holds(p);
        if (!held) break;
        Block blk;
        blk.parent = parent;
        blk.layout = layout;
        blk.tokens.assign(t, t + B);
        blk.rows.resize(bytes);
        cache.export_rows(b * B, B, blk.rows.data());
        lru_.push_front(key);
        blk.lru = lru_.begin();
        blocks_.emplace(key, std::move(blk));
        stats_.bytes += bytes;
        ++stats_.blocks;
        ++added;
        chain.push_back(key);
        evict_to(budget_bytes_);
        parent = key;
    }
    touch_chain(chain);
    return added;
}

uint32_t PrefixCache::restore(const int32_t* tokens, uint32_t limit, KvCache& cache) {
    std::lock_guard<std::mutex> lock(mutex_);
    ++stats_.lookups;
    const uint32_t from = cache.length();
    if (budget_bytes_ == 0) return from;
    const uint32_t B = block_tokens_;
    limit = std::min(limit, cache.capacity());
    const uint64_t layout = cache.layout_fingerprint();
    std::vector<std::pair<uint64_t, Block*>> chain;
    uint64_t parent = 0;
    for (uint32_t b = 0; (b + 1) * static_cast<uint64_t>(B) <= limit; ++b) {
        const int32_t* t = tokens + static_cast<size_t>(b) * B;
        const uint64_t key = key_of(parent, t);
        Block* found = find(key, parent, layout, t);
        if (!found) break;
        chain.emplace_back(key, found);
        parent = key;
    }
    const uint32_t matched = static_cast<uint32_t>(chain.size()) * B;
    if (matched <= from) return from;
    // Rows from the block holding `from` on come from the store; import_rows may only extend or
    // overwrite the committed tail, so each block is committed before the next.
    for (uint32_t b = from / B; b < chain.size(); ++b) {
        cache.import_rows(b * B, B, chain[b].second->rows.data());
        cache.commit((b + 1) * B);
    }
    std::vector<uint64_t> keys;
    for (auto& entry : chain) keys.push_back(entry.first);
    touch_chain(keys);
    ++stats_.hits;
    stats_.restored_tokens += matched - from;
    return matched;
}

PrefixCache::Stats PrefixCache::stats() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return stats_;
}

}  // namespace moe::kv
