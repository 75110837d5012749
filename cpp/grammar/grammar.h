// Grammar-constrained decoding: a byte-level context-free grammar decides, before every sampling
// step, which tokens may come next (an n_vocab-byte mask for Sampler::sample's `allowed`).
//
// The grammar arrives as an int32 IR compiled elsewhere (from JSON schemas, by the TypeScript side):
//   [n_rules, root, then per rule: n_alts, then per alternative: n_elems, then per element:
//    kind (0 = byte set, 1 = rule reference),
//    byte set: n_ranges, lo0, hi0, lo1, hi1, ...   (inclusive ranges of byte values 0..255)
//    reference: rule index]
// A rule is a list of alternatives, an alternative a sequence of elements, an empty alternative is
// epsilon. Repetitions come expanded into right-recursive rules. Grammar::parse rejects IR that is
// malformed, not fully consumed, out of range, or whose rules reachable from the root recurse
// without consuming a byte (left recursion, also through rules that can derive the empty string):
// such a grammar has no finite pushdown expansion.
//
// Interpretation (see grammar.cc for the details):
//   - A parser configuration is a SET of stacks (the grammar is nondeterministic: anyOf branches,
//     optional parts, ambiguous whitespace). A stack lists grammar positions still to match, top
//     first; stacks are normalized so that every top is a byte set, and the empty stack means "the
//     grammar can end here". Stack nodes are interned (position, parent) pairs, so a push is one
//     hash lookup, equal stacks are equal node ids and stacks share their tails.
//   - A configuration is interned as a state id. Bytes that no byte set of the grammar tells apart
//     share a byte class; transitions (state, class) -> state are computed once and kept in a
//     dense table.
//   - A state's token mask is computed by walking the vocabulary's byte trie depth first, stepping
//     the state through the transition table and skipping a whole subtree as soon as the state
//     dies. Masks of recently used states are kept (least recently used out, ~64 MiB), because
//     the same state recurs constantly (every character inside a JSON string returns to it).
//   - All of this lives in an automaton shared by every Matcher of the same (Grammar, TokenSet)
//     pair, created on first use and kept by the Grammar for as long as the Grammar and the
//     TokenSet both live (an entry whose TokenSet is gone is dropped on the Grammar's next lookup).
//     Its caches only grow (bounded by the distinct parser configurations met, which is finite
//     for a non-recursive schema) except for the masks, which are evicted by budget.
//
// Threads: Grammar and TokenSet are immutable and may be shared freely. The shared automaton is
// guarded by a mutex taken once per public Matcher call, so matchers of the same pair may run on
// different threads. One Matcher is used by one thread at a time.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace moe::grammar {

class TokenSet;
class Matcher;
namespace detail {
class Automaton;
}

class Grammar {
public:
    // Validates and compiles the IR; throws moe::Error(InvalidArgument) naming the offending rule
    // (and IR offset) when it is malformed or recurses without consuming a byte.
    static std::shared_ptr<const Grammar> parse(const int32_t* ir, size_t n);

    ~Grammar();
    Grammar(const Grammar&) = delete;
    Grammar& operator=(const Grammar&) = delete;

    uint32_t n_rules() const { return static_cast<uint32_t>(rule_alts_.size() - 1); }
    uint32_t root() const { return root_; }
    // Bytes no byte set of the grammar distinguishes form one class; transitions are per class.
    uint32_t n_byte_classes() const { return static_cast<uint32_t>(class_representative_.size()); }

private:
    friend class detail::Automaton;
    friend class Matcher;

    enum class ElementKind : uint8_t { ByteSet, RuleRef, End };
    struct Element {
        ElementKind kind;
        uint32_t index;  // ByteSet: index into byte_sets_; RuleRef: rule index; End: unused
    };
    struct ByteSet {
        std::array<uint64_t, 4> bits{};
        bool contains(uint8_t b) const { return (bits[b >> 6] >> (b & 63)) & 1; }
        bool empty() const { return (bits[0] | bits[1] | bits[2] | bits[3]) == 0; }
    };

    Grammar() = default;
    void check_left_recursion() const;
    void compute_byte_classes();

    // The automaton of this grammar over `tokens`: the one already made for it, or a new one.
    std::shared_ptr<detail::Automaton> automaton_for(const std::shared_ptr<const TokenSet>& tokens) const;

    // Every alternative's elements followed by an End element, back to back; a grammar position is
    // an index into elements_ (never an End element: finished alternatives are popped eagerly).
    std::vector<Element> elements_;
    std::vector<uint32_t> alt_starts_;  // index of each alternative's first element (End if empty)
    std::vector<uint32_t> rule_alts_;   // rule r's alternatives: alt_starts_[rule_alts_[r], rule_alts_[r + 1])
    std::vector<ByteSet> byte_sets_;
    uint32_t root_ = 0;
    std::array<uint8_t, 256> byte_class_{};
    std::vector<uint8_t> class_representative_;  // one byte of each class

    mutable std::mutex automata_mutex_;
    mutable std::vector<std::pair<std::weak_ptr<const TokenSet>, std::shared_ptr<detail::Automaton>>> automata_;
};

// A model's vocabulary as bytes, with a byte trie over the tokens a grammar can allow. Built once
// per model.
class TokenSet {
public:
    // token_bytes[id]: the exact bytes the token's text contributes to the output. special[id] != 0
    // marks control / special tokens, which a grammar never allows (their text is not output);
    // `special` may also be empty (no special tokens). eog: the end-of-generation token ids, allowed
    // exactly when the grammar is complete. Tokens with no bytes are never allowed. Throws
    // InvalidArgument on size mismatches or ids out of range.
    TokenSet(std::vector<std::string> token_bytes, std::vector<uint8_t> special, std::vector<int32_t> eog);

    int32_t n_vocab() const { return static_cast<int32_t>(bytes_.size()); }
    std::string_view token_bytes(int32_t id) const { return bytes_[static_cast<size_t>(id)]; }
    bool is_special(int32_t id) const { return special_[static_cast<size_t>(id)] != 0; }
    bool is_eog(int32_t id) const { return eog_flag_[static_cast<size_t>(id)] != 0; }
    const std::vector<int32_t>& eog_tokens() const { return eog_; }
    // Nodes of the byte trie (one per distinct non-empty prefix of an allowable token).
    size_t trie_nodes() const { return trie_.size(); }

private:
    friend class detail::Automaton;

    // Trie nodes in preorder: a node's subtree is [its index, subtree_end), its parent is the
    // closest node before it with depth - 1, so a depth-first walk is a forward scan that can jump
    // over a subtree.
    struct TrieNode {
        uint32_t subtree_end;
        uint32_t depth;  // bytes from the root: 1 for a token's first byte
        uint8_t byte;
    };

    std::vector<std::string> bytes_;
    std::vector<uint8_t> special_;
    std::vector<uint8_t> eog_flag_;
    std::vector<int32_t> eog_;
    std::vector<TrieNode> trie_;
    std::vector<uint32_t> node_tokens_begin_;  // node i's tokens: trie_tokens_[begin[i], begin[i + 1])
    std::vector<int32_t> trie_tokens_;         // ids of the tokens whose bytes end at each node
    uint32_t max_depth_ = 0;
};

// The grammar state of one generation. Copyable (a copy is an independent state sharing the
// caches). Not thread-safe itself: one thread at a time per Matcher.
class Matcher {
public:
    Matcher(std::shared_ptr<const Grammar> grammar, std::shared_ptr<const TokenSet> tokens);

    // mask[n_vocab]: 1 where the whole token's bytes can be accepted from the current state, 0
    // elsewhere. End-of-generation tokens are 1 exactly when is_complete(); when no token at all
    // would be allowed (a state no token of the vocabulary can continue, or after the end of
    // generation), every EOG token is allowed so that sampling can always end the generation.
    void fill_mask(uint8_t* mask);

    // Advances by a token's bytes; false (state unchanged) when fill_mask would not allow it. An
    // EOG token moves the matcher to the finished state (nothing more is accepted, fill_mask
    // allows only EOG tokens). Throws InvalidArgument for an id outside [0, n_vocab).
    bool accept_token(int32_t token);
    // Advances by raw bytes; false (state unchanged) if they cannot all be accepted (n == 0: true).
    bool accept_bytes(const uint8_t* bytes, size_t n);

    bool is_complete() const { return finished_ || complete_; }     // the grammar can end here
    bool can_continue() const { return !finished_ && continuable_; }  // some byte could still be accepted
    bool is_finished() const { return finished_; }                    // an EOG token was accepted
    void reset();

    // The shared automaton's size, for diagnostics and tests.
    struct CacheStats {
        size_t states;        // distinct parser configurations interned (including the dead state)
        size_t stack_nodes;   // interned (position, parent) stack nodes
        size_t transitions;   // (state, byte class) transitions computed
        size_t cached_masks;  // masks currently kept
    };
    CacheStats cache_stats() const;

private:
    std::shared_ptr<const Grammar> grammar_;
    std::shared_ptr<const TokenSet> tokens_;
    std::shared_ptr<detail::Automaton> automaton_;
    uint32_t state_ = 0;
    bool complete_ = false;
    bool continuable_ = false;
    bool finished_ = false;
};

}  // namespace moe::grammar
