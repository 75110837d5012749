// Grammar IR parsing and validation, the vocabulary trie, and the shared pushdown automaton that
// turns parser states into token masks. The design is summarized in grammar.h.
#include "grammar.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <list>
#include <string>
#include <unordered_map>

#include "../common/error.h"

namespace moe::grammar {

namespace {

[[noreturn]] void fail(const std::string& message) {
    throw Error(ErrorCode::InvalidArgument, "grammar: " + message);
}

// Where an IR value belongs, for error messages ("rule 3, alternative 1, element 2").
std::string location(int64_t rule, int64_t alt = -1, int64_t elem = -1) {
    std::string s = "rule " + std::to_string(rule);
    if (alt >= 0) s += ", alternative " + std::to_string(alt);
    if (elem >= 0) s += ", element " + std::to_string(elem);
    return s;
}

// Bounds-checked cursor over the IR. Counts are checked against what the remaining values could
// hold, so a corrupt count fails here instead of driving a huge allocation.
class IrReader {
public:
    IrReader(const int32_t* ir, size_t n) : ir_(ir), n_(n) {}

    size_t offset() const { return pos_; }
    size_t remaining() const { return n_ - pos_; }

    int32_t next(const std::string& where, const char* what) {
        if (pos_ >= n_) fail("IR ends early: " + where + " needs " + what + " at offset " + std::to_string(pos_));
        return ir_[pos_++];
    }

    // A count whose items each take at least `min_values_each` IR values.
    uint32_t count(const std::string& where, const char* what, size_t min_values_each) {
        const size_t at = pos_;
        const int32_t v = next(where, what);
        if (v < 0) {
            fail(where + ": " + what + " " + std::to_string(v) + " is negative (IR offset " + std::to_string(at) + ")");
        }
        if (static_cast<uint64_t>(v) * min_values_each > remaining()) {
            fail(where + ": " + what + " " + std::to_string(v) + " at IR offset " + std::to_string(at) +
                 " does not fit in the " + std::to_string(remaining()) + " values left");
        }
        return static_cast<uint32_t>(v);
    }

private:
    const int32_t* ir_;
    size_t n_;
    size_t pos_ = 0;
};

constexpr uint32_t kNone = std::numeric_limits<uint32_t>::max();

}  // namespace

// ---------------------------------------------------------------------------------------------
// Grammar

std::shared_ptr<const Grammar> Grammar::parse(const int32_t* ir, size_t n) {
    if (ir == nullptr && n != 0) fail("IR pointer is null");
    if (n < 2) fail("IR has " + std::to_string(n) + " values; it needs at least [n_rules, root]");
    if (n > static_cast<size_t>(std::numeric_limits<int32_t>::max())) fail("IR is longer than 2^31 values");

    std::shared_ptr<Grammar> g(new Grammar());
    IrReader in(ir, n);
    const uint32_t n_rules = in.count("header", "rule count", 1);
    if (n_rules == 0) fail("the grammar has no rules");
    const size_t root_at = in.offset();
    const int32_t root = in.next("header", "root rule");
    if (root < 0 || static_cast<uint32_t>(root) >= n_rules) {
        fail("root rule " + std::to_string(root) + " (IR offset " + std::to_string(root_at) + ") is out of range [0, " +
             std::to_string(n_rules) + ")");
    }
    g->root_ = static_cast<uint32_t>(root);

    g->rule_alts_.reserve(static_cast<size_t>(n_rules) + 1);
    for (uint32_t r = 0; r < n_rules; ++r) {
        g->rule_alts_.push_back(static_cast<uint32_t>(g->alt_starts_.size()));
        const uint32_t n_alts = in.count(location(r), "alternative count", 1);
        for (uint32_t a = 0; a < n_alts; ++a) {
            g->alt_starts_.push_back(static_cast<uint32_t>(g->elements_.size()));
            const uint32_t n_elems = in.count(location(r, a), "element count", 2);
            for (uint32_t e = 0; e < n_elems; ++e) {
                const size_t kind_at = in.offset();
                const int32_t kind = in.next(location(r, a, e), "an element kind");
                if (kind == 0) {
                    const uint32_t n_ranges = in.count(location(r, a, e), "byte range count", 2);
                    ByteSet set;
                    for (uint32_t k = 0; k < n_ranges; ++k) {
                        const size_t range_at = in.offset();
                        const int32_t lo = in.next(location(r, a, e), "a range start");
                        const int32_t hi = in.next(location(r, a, e), "a range end");
                        if (lo < 0 || hi > 255 || lo > hi) {
                            fail(location(r, a, e) + ": byte range " + std::to_string(lo) + ".." +
                                 std::to_string(hi) + " (IR offset " + std::to_string(range_at) +
                                 ") is not within 0..255 with start <= end");
                        }
                        for (int32_t b = lo; b <= hi; ++b) set.bits[b >> 6] |= uint64_t{1} << (b & 63);
                    }
                    g->elements_.push_back({ElementKind::ByteSet, static_cast<uint32_t>(g->byte_sets_.size())});
                    g->byte_sets_.push_back(set);
                } else if (kind == 1) {
                    const size_t ref_at = in.offset();
                    const int32_t target = in.next(location(r, a, e), "a rule index");
                    if (target < 0 || static_cast<uint32_t>(target) >= n_rules) {
                        fail(location(r, a, e) + ": reference to rule " + std::to_string(target) + " (IR offset " +
                             std::to_string(ref_at) + ") is out of range [0, " + std::to_string(n_rules) + ")");
                    }
                    g->elements_.push_back({ElementKind::RuleRef, static_cast<uint32_t>(target)});
                } else {
                    fail(location(r, a, e) + ": element kind " + std::to_string(kind) + " (IR offset " +
                         std::to_string(kind_at) + ") is neither 0 (byte set) nor 1 (rule reference)");
                }
            }
            g->elements_.push_back({ElementKind::End, 0});
        }
    }
    g->rule_alts_.push_back(static_cast<uint32_t>(g->alt_starts_.size()));
    if (in.remaining() != 0) {
        fail("IR has " + std::to_string(in.remaining()) + " values left over after the last rule (from offset " +
             std::to_string(in.offset()) + ")");
    }

    g->check_left_recursion();
    g->compute_byte_classes();
    return g;
}

Grammar::~Grammar() = default;

// The pushdown expansion descends into the first element of every alternative, and past it when
// that element can match the empty string; if such a descent can return to a rule it already
// entered, the expansion never ends. So: find the rules that can match the empty string
// ("nullable"), draw an edge A -> B for every B referenced at the start of an alternative of A
// (after nullable elements only), and reject a cycle among the rules reachable from the root.
void Grammar::check_left_recursion() const {
    const uint32_t n_rules = this->n_rules();
    const uint32_t n_alts = static_cast<uint32_t>(alt_starts_.size());
    std::vector<uint32_t> alt_rule(n_alts);
    for (uint32_t r = 0; r < n_rules; ++r) {
        for (uint32_t a = rule_alts_[r]; a < rule_alts_[r + 1]; ++a) alt_rule[a] = r;
    }

    // Nullable rules, by a worklist: an alternative becomes nullable when every element is a
    // reference to a nullable rule; `pending` counts its references not yet known to be nullable.
    std::vector<uint8_t> nullable(n_rules, 0);
    std::vector<uint32_t> pending(n_alts, 0);
    std::vector<std::vector<uint32_t>> alts_referencing(n_rules);  // one entry per occurrence
    std::vector<uint32_t> work;
    for (uint32_t a = 0; a < n_alts; ++a) {
        bool has_byte_set = false;
        for (uint32_t p = alt_starts_[a]; elements_[p].kind != ElementKind::End; ++p) {
            if (elements_[p].kind == ElementKind::ByteSet) {
                has_byte_set = true;
            } else {
                ++pending[a];
                alts_referencing[elements_[p].index].push_back(a);
            }
        }
        if (has_byte_set) {
            pending[a] = kNone;  // never nullable
        } else if (pending[a] == 0 && !nullable[alt_rule[a]]) {
            nullable[alt_rule[a]] = 1;
            work.push_back(alt_rule[a]);
        }
    }
    while (!work.empty()) {
        const uint32_t r = work.back();
        work.pop_back();
        for (uint32_t a : alts_referencing[r]) {
            if (pending[a] == kNone || pending[a] == 0) continue;
            if (--pending[a] == 0 && !nullable[alt_rule[a]]) {
                nullable[alt_rule[a]] = 1;
                work.push_back(alt_rule[a]);
            }
        }
    }

    // Left edges, and the rules reachable from the root through any reference.
    std::vector<std::vector<uint32_t>> left_edges(n_rules);
    for (uint32_t a = 0; a < n_alts; ++a) {
        for (uint32_t p = alt_starts_[a]; elements_[p].kind == ElementKind::RuleRef; ++p) {
            left_edges[alt_rule[a]].push_back(elements_[p].index);
            if (!nullable[elements_[p].index]) break;
        }
    }
    std::vector<uint8_t> reachable(n_rules, 0);
    reachable[root_] = 1;
    work.assign(1, root_);
    while (!work.empty()) {
        const uint32_t r = work.back();
        work.pop_back();
        for (uint32_t a = rule_alts_[r]; a < rule_alts_[r + 1]; ++a) {
            for (uint32_t p = alt_starts_[a]; elements_[p].kind != ElementKind::End; ++p) {
                if (elements_[p].kind == ElementKind::RuleRef && !reachable[elements_[p].index]) {
                    reachable[elements_[p].index] = 1;
                    work.push_back(elements_[p].index);
                }
            }
        }
    }

    // Iterative depth-first search for a cycle of left edges (white / on the path / done).
    enum : uint8_t { kWhite, kOnPath, kDone };
    std::vector<uint8_t> color(n_rules, kWhite);
    struct Frame {
        uint32_t rule;
        size_t next_edge;
    };
    std::vector<Frame> path;
    for (uint32_t start = 0; start < n_rules; ++start) {
        if (!reachable[start] || color[start] != kWhite) continue;
        path.push_back({start, 0});
        color[start] = kOnPath;
        while (!path.empty()) {
            Frame& top = path.back();
            if (top.next_edge == left_edges[top.rule].size()) {
                color[top.rule] = kDone;
                path.pop_back();
                continue;
            }
            const uint32_t next = left_edges[top.rule][top.next_edge++];
            if (color[next] == kOnPath) {
                if (next == top.rule) {
                    fail("rule " + std::to_string(next) +
                         " is left-recursive: it can reach itself without consuming a byte");
                }
                std::string cycle;
                size_t i = path.size();
                while (path[i - 1].rule != next) --i;
                for (size_t k = i - 1; k < path.size(); ++k) cycle += std::to_string(path[k].rule) + " -> ";
                cycle += std::to_string(next);
                fail("rule " + std::to_string(next) + " is left-recursive through rules " + cycle +
                     ", a cycle that consumes no byte (rules on it can match the empty string)");
            }
            if (color[next] == kWhite) {
                color[next] = kOnPath;
                path.push_back({next, 0});
            }
        }
    }
}

// Partition refinement: two bytes share a class when every byte set of the grammar contains both
// or neither, so the automaton's transitions only need one column per class.
void Grammar::compute_byte_classes() {
    std::vector<std::array<uint64_t, 4>> distinct;
    distinct.reserve(byte_sets_.size());
    for (const ByteSet& s : byte_sets_) distinct.push_back(s.bits);
    std::sort(distinct.begin(), distinct.end());
    distinct.erase(std::unique(distinct.begin(), distinct.end()), distinct.end());

    byte_class_.fill(0);
    uint32_t n_classes = 1;
    for (const auto& bits : distinct) {
        if (n_classes == 256) break;
        std::array<int16_t, 512> renumber;
        renumber.fill(-1);
        uint32_t next = 0;
        for (uint32_t b = 0; b < 256; ++b) {
            const uint32_t in_set = (bits[b >> 6] >> (b & 63)) & 1;
            int16_t& id = renumber[byte_class_[b] * 2 + in_set];
            if (id < 0) id = static_cast<int16_t>(next++);
            byte_class_[b] = static_cast<uint8_t>(id);
        }
        n_classes = next;
    }
    class_representative_.assign(n_classes, 0);
    std::vector<uint8_t> seen(n_classes, 0);
    for (uint32_t b = 0; b < 256; ++b) {
        if (!seen[byte_class_[b]]) {
            seen[byte_class_[b]] = 1;
            class_representative_[byte_class_[b]] = static_cast<uint8_t>(b);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// TokenSet

TokenSet::TokenSet(std::vector<std::string> token_bytes, std::vector<uint8_t> special, std::vector<int32_t> eog)
    : bytes_(std::move(token_bytes)), special_(std::move(special)), eog_(std::move(eog)) {
    const size_t n = bytes_.size();
    if (n > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
        throw Error(ErrorCode::InvalidArgument, "grammar token set: more than 2^31 tokens");
    }
    if (special_.empty()) special_.assign(n, 0);
    if (special_.size() != n) {
        throw Error(ErrorCode::InvalidArgument, "grammar token set: " + std::to_string(special_.size()) +
                                                    " special flags for " + std::to_string(n) + " tokens");
    }
    eog_flag_.assign(n, 0);
    for (int32_t id : eog_) {
        if (id < 0 || static_cast<size_t>(id) >= n) {
            throw Error(ErrorCode::InvalidArgument, "grammar token set: end-of-generation token " + std::to_string(id) +
                                                        " is out of range [0, " + std::to_string(n) + ")");
        }
        eog_flag_[static_cast<size_t>(id)] = 1;
    }
    std::sort(eog_.begin(), eog_.end());
    eog_.erase(std::unique(eog_.begin(), eog_.end()), eog_.end());

    // Only tokens a grammar can allow go into the trie: EOG tokens follow is_complete() instead,
    // special tokens and tokens without bytes are never allowed.
    std::vector<int32_t> ids;
    ids.reserve(n);
    for (size_t id = 0; id < n; ++id) {
        if (!special_[id] && !eog_flag_[id] && !bytes_[id].empty()) ids.push_back(static_cast<int32_t>(id));
    }
    // Sorted, a token comes right before its extensions and identical tokens sit together, so the
    // trie comes out in preorder by appending the bytes past each token's common prefix with the
    // previous one.
    std::sort(ids.begin(), ids.end(), [&](int32_t a, int32_t b) {
        const std::string& x = bytes_[static_cast<size_t>(a)];
        const std::string& y = bytes_[static_cast<size_t>(b)];
        const int c = x.compare(y);
        return c != 0 ? c < 0 : a < b;
    });

    std::vector<uint32_t> path;  // path[d]: the node of depth d + 1 on the current branch
    std::vector<uint32_t> token_node;
    token_node.reserve(ids.size());
    const std::string* previous = nullptr;
    for (int32_t id : ids) {
        const std::string& s = bytes_[static_cast<size_t>(id)];
        size_t common = 0;
        if (previous != nullptr) {
            const size_t limit = std::min(previous->size(), s.size());
            while (common < limit && (*previous)[common] == s[common]) ++common;
        }
        while (path.size() > common) {
            trie_[path.back()].subtree_end = static_cast<uint32_t>(trie_.size());
            path.pop_back();
        }
        for (size_t d = common; d < s.size(); ++d) {
            path.push_back(static_cast<uint32_t>(trie_.size()));
            trie_.push_back({0, static_cast<uint32_t>(d + 1), static_cast<uint8_t>(s[d])});
        }
        token_node.push_back(path.back());
        max_depth_ = std::max(max_depth_, static_cast<uint32_t>(s.size()));
        previous = &s;
    }
    while (!path.empty()) {
        trie_[path.back()].subtree_end = static_cast<uint32_t>(trie_.size());
        path.pop_back();
    }
    // token_node is non-decreasing (preorder), so counting gives each node's slice of the ids.
    node_tokens_begin_.assign(trie_.size() + 1, 0);
    for (uint32_t node : token_node) ++node_tokens_begin_[node + 1];
    for (size_t i = 0; i < trie_.size(); ++i) node_tokens_begin_[i + 1] += node_tokens_begin_[i];
    trie_tokens_ = std::move(ids);
}

// ---------------------------------------------------------------------------------------------
// The automaton shared by the matchers of one (Grammar, TokenSet) pair.

namespace detail {

class Automaton {
public:
    struct StateFlags {
        bool complete;     // holds the empty stack
        bool continuable;  // holds a non-empty stack
    };

    static constexpr uint32_t kDead = 0;              // the state with no stack: nothing matches
    static constexpr size_t kMaskCacheBytes = 64u << 20;

    Automaton(const Grammar& grammar, const TokenSet& tokens);

    const TokenSet* tokens() const { return &tokens_; }
    uint32_t initial_state() const { return initial_; }
    StateFlags initial_flags() const { return initial_flags_; }

    // Steps `state` over the bytes; false (state and flags untouched) if some byte kills it.
    bool advance(uint32_t& state, StateFlags& flags, const uint8_t* bytes, size_t n) {
        std::lock_guard<std::mutex> lock(mutex_);
        uint32_t s = state;
        for (size_t i = 0; i < n && s != kDead; ++i) s = step(s, grammar_.byte_class_[bytes[i]]);
        if (s == kDead) return false;
        state = s;
        flags = {states_[s].complete, states_[s].continuable};
        return true;
    }

    void fill_mask(uint32_t state, uint8_t* mask) {
        std::lock_guard<std::mutex> lock(mutex_);
        fill_mask_locked(state, mask);
    }

    // Whether any non-EOG token is allowed in `state` (computes and caches its mask if needed).
    bool allows_some_token(uint32_t state) {
        std::lock_guard<std::mutex> lock(mutex_);
        if (states_[state].some_token < 0) {
            mask_scratch_.resize(static_cast<size_t>(tokens_.n_vocab()));
            fill_mask_locked(state, mask_scratch_.data());
        }
        return states_[state].some_token > 0;
    }

    Matcher::CacheStats stats() {
        std::lock_guard<std::mutex> lock(mutex_);
        return {states_.size(), nodes_.size(), transitions_computed_, masks_.size()};
    }

private:
    struct StackNode {
        uint32_t position;  // index into Grammar::elements_ (unused for the empty stack, node 0)
        uint32_t parent;    // the rest of the stack
    };
    struct StateInfo {
        uint32_t stacks_begin;  // the state's stack tops: stack_tops_[stacks_begin, stacks_end)
        uint32_t stacks_end;
        uint32_t hash_next;     // next state with the same hash, or kNone
        bool complete;
        bool continuable;
        int8_t some_token;      // any non-EOG token allowed: -1 unknown until the mask is computed
    };
    struct CachedMask {
        uint32_t state;
        std::vector<uint8_t> mask;
    };
    static constexpr uint32_t kEmptyStack = 0;
    static constexpr uint32_t kUnknown = kNone;

    uint32_t step(uint32_t state, uint32_t byte_class) {
        const uint32_t to = transitions_[static_cast<size_t>(state) * n_classes_ + byte_class];
        return to != kUnknown ? to : compute_transition(state, byte_class);
    }

    // Starts a new expansion: clears tops_ and invalidates every visit stamp.
    void new_expansion() {
        tops_.clear();
        if (++stamp_ == 0) {  // wrapped: old stamps could collide with new ones
            std::fill(node_stamp_.begin(), node_stamp_.end(), 0);
            stamp_ = 1;
        }
    }
    uint32_t intern_node(uint32_t position, uint32_t parent);
    uint32_t continuation(uint32_t position, uint32_t parent);
    uint32_t push_alternative(uint32_t alt, uint32_t parent);
    void expand(uint32_t node);
    uint32_t intern_state();
    uint32_t compute_transition(uint32_t state, uint32_t byte_class);
    bool walk_trie(uint32_t state, uint8_t* mask);
    void fill_mask_locked(uint32_t state, uint8_t* mask);

    const Grammar& grammar_;   // outlives this: it owns the automaton, and every matcher holds both
    const TokenSet& tokens_;   // every matcher using this automaton holds its TokenSet
    const uint32_t n_classes_;
    std::mutex mutex_;

    std::vector<StackNode> nodes_;
    std::unordered_map<uint64_t, uint32_t> node_ids_;  // (position << 32 | parent) -> node
    std::vector<uint32_t> stack_tops_;                   // states' sorted node ids, back to back
    std::vector<StateInfo> states_;
    std::unordered_map<uint64_t, uint32_t> state_by_hash_;  // first state of each hash chain
    std::vector<uint32_t> transitions_;                     // [state * n_classes + class] -> state or kUnknown
    size_t transitions_computed_ = 0;
    uint32_t initial_ = kDead;
    StateFlags initial_flags_{false, false};

    // Scratch of one expansion: the work list, the normalized tops found, and visit stamps so that
    // a node reached along several paths is expanded once.
    std::vector<uint32_t> work_;
    std::vector<uint32_t> tops_;
    std::vector<uint32_t> node_stamp_;
    uint32_t stamp_ = 0;

    std::vector<uint32_t> trie_states_;  // state at each trie depth during a walk
    std::vector<uint8_t> mask_scratch_;

    // Masks of recently used states, most recent first.
    std::list<CachedMask> masks_;
    std::unordered_map<uint32_t, std::list<CachedMask>::iterator> mask_of_state_;
    size_t max_masks_;
};

Automaton::Automaton(const Grammar& grammar, const TokenSet& tokens)
    : grammar_(grammar), tokens_(tokens), n_classes_(grammar.n_byte_classes()) {
    nodes_.push_back({kNone, kNone});  // node 0: the empty stack
    node_stamp_.push_back(0);
    // State 0, the dead state: no stack, every transition back to itself.
    states_.push_back({0, 0, kNone, false, false, 0});
    transitions_.assign(n_classes_, kDead);
    trie_states_.resize(static_cast<size_t>(tokens_.max_depth_) + 1);
    const size_t mask_bytes = std::max<size_t>(1, static_cast<size_t>(tokens_.n_vocab()));
    max_masks_ = std::max<size_t>(4, kMaskCacheBytes / mask_bytes);

    // The initial state: every alternative of the root on the empty stack.
    new_expansion();
    const uint32_t root = grammar_.root_;
    for (uint32_t a = grammar_.rule_alts_[root]; a < grammar_.rule_alts_[root + 1]; ++a) {
        expand(push_alternative(a, kEmptyStack));
    }
    initial_ = intern_state();
    initial_flags_ = {states_[initial_].complete, states_[initial_].continuable};
}

uint32_t Automaton::intern_node(uint32_t position, uint32_t parent) {
    const uint64_t key = (static_cast<uint64_t>(position) << 32) | parent;
    auto [it, inserted] = node_ids_.try_emplace(key, static_cast<uint32_t>(nodes_.size()));
    if (inserted) {
        nodes_.push_back({position, parent});
        node_stamp_.push_back(0);
    }
    return it->second;
}

// The stack that remains once the element at `position` has been matched on top of `parent`: the
// next element of the same alternative, or, at the end of the alternative, the parent itself.
// Popping finished alternatives here (instead of keeping an "end" position) is what keeps
// right-recursive repetitions at a constant stack depth.
uint32_t Automaton::continuation(uint32_t position, uint32_t parent) {
    const uint32_t next = position + 1;
    return grammar_.elements_[next].kind == Grammar::ElementKind::End ? parent : intern_node(next, parent);
}

// The stack with alternative `alt` about to start on top of `parent` (just `parent` for epsilon).
uint32_t Automaton::push_alternative(uint32_t alt, uint32_t parent) {
    const uint32_t first = grammar_.alt_starts_[alt];
    return grammar_.elements_[first].kind == Grammar::ElementKind::End ? parent : intern_node(first, parent);
}

// Normalizes `node` into tops_: rule references on top are replaced by each of the rule's
// alternatives (over the reference's continuation), until every top is a byte set or the empty
// stack. Tops whose byte set is empty can never advance and are dropped. Grammar::parse rejected
// the grammars for which this would not terminate.
void Automaton::expand(uint32_t start) {
    work_.push_back(start);
    while (!work_.empty()) {
        const uint32_t node = work_.back();
        work_.pop_back();
        if (node_stamp_[node] == stamp_) continue;
        node_stamp_[node] = stamp_;
        if (node == kEmptyStack) {
            tops_.push_back(kEmptyStack);
            continue;
        }
        const StackNode n = nodes_[node];
        const Grammar::Element e = grammar_.elements_[n.position];
        if (e.kind == Grammar::ElementKind::ByteSet) {
            if (!grammar_.byte_sets_[e.index].empty()) tops_.push_back(node);
            continue;
        }
        const uint32_t cont = continuation(n.position, n.parent);
        for (uint32_t a = grammar_.rule_alts_[e.index]; a < grammar_.rule_alts_[e.index + 1]; ++a) {
            work_.push_back(push_alternative(a, cont));
        }
    }
}

// The state whose stack tops are tops_ (sorted here), made if new.
uint32_t Automaton::intern_state() {
    if (tops_.empty()) return kDead;
    std::sort(tops_.begin(), tops_.end());
    uint64_t h = 0x9e3779b97f4a7c15ull ^ tops_.size();
    for (uint32_t t : tops_) {
        h ^= t;
        h *= 0xff51afd7ed558ccdull;
        h ^= h >> 32;
    }
    auto [head, inserted] = state_by_hash_.try_emplace(h, kNone);
    for (uint32_t s = head->second; s != kNone; s = states_[s].hash_next) {
        const StateInfo& info = states_[s];
        if (info.stacks_end - info.stacks_begin == tops_.size() &&
            std::equal(tops_.begin(), tops_.end(), stack_tops_.begin() + info.stacks_begin)) {
            return s;
        }
    }
    const uint32_t id = static_cast<uint32_t>(states_.size());
    StateInfo info;
    info.stacks_begin = static_cast<uint32_t>(stack_tops_.size());
    stack_tops_.insert(stack_tops_.end(), tops_.begin(), tops_.end());
    info.stacks_end = static_cast<uint32_t>(stack_tops_.size());
    info.hash_next = head->second;
    info.complete = tops_.front() == kEmptyStack;  // node 0 sorts first
    info.continuable = tops_.size() > (info.complete ? 1u : 0u);
    info.some_token = -1;
    head->second = id;
    states_.push_back(info);
    transitions_.resize(transitions_.size() + n_classes_, kUnknown);
    return id;
}

uint32_t Automaton::compute_transition(uint32_t state, uint32_t byte_class) {
    const uint8_t byte = grammar_.class_representative_[byte_class];
    new_expansion();
    const uint32_t begin = states_[state].stacks_begin, end = states_[state].stacks_end;
    for (uint32_t i = begin; i < end; ++i) {
        const uint32_t node = stack_tops_[i];
        if (node == kEmptyStack) continue;
        const StackNode n = nodes_[node];
        if (!grammar_.byte_sets_[grammar_.elements_[n.position].index].contains(byte)) continue;
        expand(continuation(n.position, n.parent));
    }
    const uint32_t to = intern_state();
    transitions_[static_cast<size_t>(state) * n_classes_ + byte_class] = to;
    ++transitions_computed_;
    return to;
}

// Depth-first walk of the vocabulary trie from `state`, a forward scan over its preorder nodes:
// each node's state is its parent's (the last one stored at depth - 1) stepped by its byte, and a
// dead state skips the node's whole subtree. Marks every token ending at a live node; returns
// whether it marked any.
bool Automaton::walk_trie(uint32_t state, uint8_t* mask) {
    const TokenSet::TrieNode* nodes = tokens_.trie_.data();
    const uint32_t* tokens_begin = tokens_.node_tokens_begin_.data();
    const int32_t* token_ids = tokens_.trie_tokens_.data();
    const size_t n_nodes = tokens_.trie_.size();
    const uint8_t* byte_class = grammar_.byte_class_.data();
    const size_t n_classes = n_classes_;
    uint32_t* depth_state = trie_states_.data();
    const uint32_t* transitions = transitions_.data();  // refreshed after each new transition

    depth_state[0] = state;
    bool any = false;
    size_t i = 0;
    while (i < n_nodes) {
        const TokenSet::TrieNode node = nodes[i];
        const uint32_t from = depth_state[node.depth - 1];
        const uint32_t byte_cls = byte_class[node.byte];
        uint32_t to = transitions[from * n_classes + byte_cls];
        if (to == kUnknown) {
            to = compute_transition(from, byte_cls);
            transitions = transitions_.data();
        }
        if (to == kDead) {
            i = node.subtree_end;
            continue;
        }
        depth_state[node.depth] = to;
        const uint32_t t_end = tokens_begin[i + 1];
        for (uint32_t t = tokens_begin[i]; t < t_end; ++t) mask[token_ids[t]] = 1;
        any |= t_end != tokens_begin[i];
        ++i;
    }
    return any;
}

void Automaton::fill_mask_locked(uint32_t state, uint8_t* mask) {
    const size_t n_vocab = static_cast<size_t>(tokens_.n_vocab());
    auto cached = mask_of_state_.find(state);
    if (cached != mask_of_state_.end()) {
        masks_.splice(masks_.begin(), masks_, cached->second);
        std::memcpy(mask, cached->second->mask.data(), n_vocab);
        return;
    }

    std::memset(mask, 0, n_vocab);
    const bool any = walk_trie(state, mask);
    states_[state].some_token = any ? 1 : 0;
    // EOG tokens when the grammar may end here, and also when nothing else is allowed, so that the
    // sampler always has a way out.
    if (states_[state].complete || !any) {
        for (int32_t id : tokens_.eog_) mask[id] = 1;
    }

    // Keep a copy, recycling the least recently used buffer when the budget is reached.
    std::vector<uint8_t> buffer;
    if (masks_.size() >= max_masks_) {
        mask_of_state_.erase(masks_.back().state);
        buffer = std::move(masks_.back().mask);
        masks_.pop_back();
    }
    buffer.assign(mask, mask + n_vocab);
    masks_.push_front({state, std::move(buffer)});
    mask_of_state_[state] = masks_.begin();
}

}  // namespace detail

// ---------------------------------------------------------------------------------------------
// Grammar's automata and the Matcher

std::shared_ptr<detail::Automaton> Grammar::automaton_for(const std::shared_ptr<const TokenSet>& tokens) const {
    std::lock_guard<std::mutex> lock(automata_mutex_);
    // Forget automata of vocabularies that are gone (their masks can be large).
    const auto gone = [](const auto& entry) { return entry.first.expired(); };
    automata_.erase(std::remove_if(automata_.begin(), automata_.end(), gone), automata_.end());
    for (const auto& [owner, automaton] : automata_) {
        if (!owner.owner_before(tokens) && !tokens.owner_before(owner) && automaton->tokens() == tokens.get()) {
            return automaton;
        }
    }
    auto automaton = std::make_shared<detail::Automaton>(*this, *tokens);
    automata_.emplace_back(tokens, automaton);
    return automaton;
}

Matcher::Matcher(std::shared_ptr<const Grammar> grammar, std::shared_ptr<const TokenSet> tokens)
    : grammar_(std::move(grammar)), tokens_(std::move(tokens)) {
    if (!grammar_) throw Error(ErrorCode::InvalidArgument, "grammar matcher: grammar is null");
    if (!tokens_) throw Error(ErrorCode::InvalidArgument, "grammar matcher: token set is null");
    automaton_ = grammar_->automaton_for(tokens_);
    reset();
}

void Matcher::reset() {
    state_ = automaton_->initial_state();
    const auto flags = automaton_->initial_flags();
    complete_ = flags.complete;
    continuable_ = flags.continuable;
    finished_ = false;
}

Matcher::CacheStats Matcher::cache_stats() const { return automaton_->stats(); }

void Matcher::fill_mask(uint8_t* mask) {
    if (mask == nullptr) throw Error(ErrorCode::InvalidArgument, "grammar matcher: mask is null");
    if (finished_) {
        std::memset(mask, 0, static_cast<size_t>(tokens_->n_vocab()));
        for (int32_t id : tokens_->eog_tokens()) mask[id] = 1;
        return;
    }
    automaton_->fill_mask(state_, mask);
}

bool Matcher::accept_bytes(const uint8_t* bytes, size_t n) {
    if (n == 0) return true;
    if (bytes == nullptr) throw Error(ErrorCode::InvalidArgument, "grammar matcher: bytes is null");
    if (finished_) return false;
    detail::Automaton::StateFlags flags{complete_, continuable_};
    if (!automaton_->advance(state_, flags, bytes, n)) return false;
    complete_ = flags.complete;
    continuable_ = flags.continuable;
    return true;
}

bool Matcher::accept_token(int32_t token) {
    if (token < 0 || token >= tokens_->n_vocab()) {
        throw Error(ErrorCode::InvalidArgument, "grammar matcher: token " + std::to_string(token) +
                                                    " is out of range [0, " + std::to_string(tokens_->n_vocab()) + ")");
    }
    if (tokens_->is_eog(token)) {
        // Allowed exactly when fill_mask allows it: complete, finished, or nothing else possible.
        if (!finished_ && !complete_ && automaton_->allows_some_token(state_)) return false;
        finished_ = true;
        return true;
    }
    if (finished_ || tokens_->is_special(token)) return false;
    const std::string_view bytes = tokens_->token_bytes(token);
    if (bytes.empty()) return false;
    return accept_bytes(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
}

}  // namespace moe::grammar
