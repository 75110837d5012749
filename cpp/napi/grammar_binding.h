// Grammar, TokenSet and GrammarMatcher as seen from JS: a grammar compiled by lib/grammar (its IR
// as an Int32Array), a model's token bytes, and the state of one constrained generation, which
// Sequence.step hands to the scheduler so the mask is applied natively before sampling.
#pragma once

#include <napi.h>

#include <memory>

#include "../grammar/grammar.h"

namespace moe::napi {

// The matcher inside a JS GrammarMatcher object; throws a TypeError for any other value.
std::shared_ptr<grammar::Matcher> matcher_of(const Napi::Value& value);

}  // namespace moe::napi
