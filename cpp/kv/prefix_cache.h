// A model's prefix cache: KV rows of token prefixes that sequences evaluated, kept in blocks so
// that another sequence (another chat with the same system prompt, a repeated request) starting
// with the same tokens copies them instead of evaluating them again.
//
// A block holds the rows of `block_tokens` positions and is keyed by a hash of every token from
// position 0 through its end (the hash of its parent block and its own tokens), so a block only
// ever matches at the same positions after the same prefix, which is what its rotated keys
// encode. Blocks are evicted least recently used first within a byte budget.
//
// Restored rows were computed in whatever chunks their first sequence used, so the logits that
// follow may differ from a fresh evaluation in the last bits (as with llama.cpp's prompt cache);
// they are the same model state, not an approximation.
#pragma once

#include <cstddef>
#include <cstdint>
#include <list>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "kv_cache.h"

namespace moe::kv {

class PrefixCache {
public:
    // budget_bytes: most bytes of rows kept (0 disables the cache).
    explicit PrefixCache(size_t budget_bytes, uint32_t block_tokens = 32);

    uint32_t block_tokens() const noexcept { return block_tokens_; }

    // Stores the full blocks of tokens[0, n) not stored yet, from the rows `cache` holds for them
    // (its first n positions must be these tokens). Blocks whose rows the cache no longer holds (a
    // sliding-window ring moved past them) end the chain there. Returns the blocks added.
    size_t insert(const int32_t* tokens, uint32_t n, const KvCache& cache);

    // Extends `cache`, whose committed rows are tokens[0, cache.length()), with the longest chain of
    // stored blocks that matches tokens[0, limit); commits and returns the new length (the old
    // length when nothing longer matched). Rows from the start of the block holding the old length
    // on are replaced by the stored ones.
    uint32_t restore(const int32_t* tokens, uint32_t limit, KvCache& cache);

    struct Stats {
        uint64_t lookups = 0;       // restore calls
        uint64_t hits = 0;          // restore calls that extended a cache
        uint64_t restored_tokens = 0;
        uint64_t blocks = 0;        // blocks held now
        uint64_t bytes = 0;         // bytes held now
        uint64_t evicted_blocks = 0;
    };
    Stats stats() const;

private:
    struct Block {
        uint64_t parent = 0;              // key of the previous block (0 for the first)
        uint64_t layout = 0;              // KvCache::layout_fingerprint of the rows
        std::vector<int32_t> tokens;      // [block_tokens]
        std::vector<uint8_t> rows;        // KvCache::export_rows of the block's positions
        std::list<uint64_t>::iterator lru;  // position in lru_ (front: most recently used)
    };

    uint64_t key_of(uint64_t parent, const int32_t* tokens) const noexcept;
    // The block stored under key for these tokens after parent, or null.
    Block* find(uint64_t key, uint64_t parent, uint64_t layout, const int32_t* tokens);
    void touch(Block& b, uint64_t key);
    void touch_chain(const std::vector<uint64_t>& keys);
    void evict_to(size_t budget);

    const size_t budget_bytes_;
    const uint32_t block_tokens_;
    mutable std::mutex mutex_;
    std::unordered_map<uint64_t, Block> blocks_;
    std::list<uint64_t> lru_;
    Stats stats_;
};

}  // namespace moe::kv
