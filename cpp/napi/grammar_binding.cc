// new Grammar(ir), new TokenSet() + build(...), new GrammarMatcher(grammar, tokenSet). The token
// set's trie is built on a thread of its own (large vocabularies take tens of ms).
#include "grammar_binding.h"

#include <string>
#include <utility>
#include <vector>

#include "background.h"
#include "bindings.h"
#include "errors.h"

namespace moe::napi {

namespace {

// Type tags so the unwrap functions can tell our objects from look-alikes.
constexpr napi_type_tag kGrammarTag = {0x6d6f652d6772616dULL, 0x6d61722d74616731ULL};
constexpr napi_type_tag kTokenSetTag = {0x6d6f652d746f6b65ULL, 0x6e7365742d746731ULL};
constexpr napi_type_tag kMatcherTag = {0x6d6f652d6d617463ULL, 0x6865722d74616731ULL};

template <typename T>
T typed_array(const Napi::CallbackInfo& info, size_t i, napi_typedarray_type type, const char* usage) {
    if (info.Length() <= i || !info[i].IsTypedArray() || info[i].As<Napi::TypedArray>().TypedArrayType() != type) {
        throw Napi::TypeError::New(info.Env(), usage);
    }
    return info[i].As<T>();
}

class GrammarHandle : public Napi::ObjectWrap<GrammarHandle> {
public:
    static Napi::Function define(Napi::Env env) { return DefineClass(env, "Grammar", {}); }

    // new Grammar(ir: Int32Array): validates and parses the IR (moe::Error InvalidArgument → RangeError).
    explicit GrammarHandle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<GrammarHandle>(info) {
        const auto ir = typed_array<Napi::Int32Array>(info, 0, napi_int32_array, "new Grammar(ir: Int32Array)");
        call_engine(info.Env(), [&] { grammar_ = grammar::Grammar::parse(ir.Data(), ir.ElementLength()); });
        info.This().As<Napi::Object>().TypeTag(&kGrammarTag);
    }
    std::shared_ptr<const grammar::Grammar> grammar() const { return grammar_; }

private:
    std::shared_ptr<const grammar::Grammar> grammar_;
};

// const set = new TokenSet(); await set.build(bytes, offsets, special, eog): the trie is built off
// the JS thread, then attached to the object the promise was made for.
class TokenSetHandle : public Napi::ObjectWrap<TokenSetHandle> {
public:
    static Napi::Function define(Napi::Env env) {
        return DefineClass(env, "TokenSet",
                           {InstanceMethod<&TokenSetHandle::build>("build"), InstanceMethod<&TokenSetHandle::size>("size")});
    }
    explicit TokenSetHandle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<TokenSetHandle>(info) {}
    std::shared_ptr<const grammar::TokenSet> tokens() const { return tokens_; }

private:
    // build(bytes: Uint8Array, offsets: Uint32Array, special: Uint8Array, eog: Int32Array) → Promise<void>:
    // token i's bytes are bytes[offsets[i], offsets[i + 1]).
    Napi::Value build(const Napi::CallbackInfo& info) {
        Napi::Env env = info.Env();
        const char* usage = "build(bytes: Uint8Array, offsets: Uint32Array, special: Uint8Array, eog: Int32Array)";
        const auto bytes = typed_array<Napi::Uint8Array>(info, 0, napi_uint8_array, usage);
        const auto offsets = typed_array<Napi::Uint32Array>(info, 1, napi_uint32_array, usage);
        const auto special = typed_array<Napi::Uint8Array>(info, 2, napi_uint8_array, usage);
        const auto eog = typed_array<Napi::Int32Array>(info, 3, napi_int32_array, usage);
        const size_t n = special.ElementLength();
        if (offsets.ElementLength() != n + 1 || n == 0) {
            throw Napi::RangeError::New(env, "offsets must have one entry per token plus one");
        }
        std::vector<std::string> token_bytes(n);
        for (size_t i = 0; i < n; ++i) {
            const uint32_t b = offsets[i], e = offsets[i + 1];
            if (b > e || e > bytes.ElementLength()) throw Napi::RangeError::New(env, "token byte offsets out of range");
            token_bytes[i].assign(reinterpret_cast<const char*>(bytes.Data()) + b, e - b);
        }
        std::vector<uint8_t> special_flags(special.Data(), special.Data() + n);
        std::vector<int32_t> eog_ids(eog.Data(), eog.Data() + eog.ElementLength());
        using Built = std::shared_ptr<const grammar::TokenSet>;
        return BackgroundTask<Built>::run(
            env,
            [token_bytes = std::move(token_bytes), special_flags = std::move(special_flags),
             eog_ids = std::move(eog_ids)]() mutable -> Built {
                return std::make_shared<const grammar::TokenSet>(std::move(token_bytes), std::move(special_flags),
                                                                 std::move(eog_ids));
            },
            [](Napi::Env env, Built& built, const std::vector<Napi::ObjectReference>& kept) -> Napi::Value {
                Napi::Object self = kept[0].Value();
                TokenSetHandle::Unwrap(self)->tokens_ = std::move(built);
                self.TypeTag(&kTokenSetTag);
                return env.Undefined();
            },
            {info.This()});
    }

    Napi::Value size(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), tokens_ ? tokens_->n_vocab() : 0); }
    std::shared_ptr<const grammar::TokenSet> tokens_;
};

class MatcherHandle : public Napi::ObjectWrap<MatcherHandle> {
public:
    static Napi::Function define(Napi::Env env) {
        return DefineClass(env, "GrammarMatcher",
                           {InstanceMethod<&MatcherHandle::is_complete>("isComplete"),
                            InstanceMethod<&MatcherHandle::can_continue>("canContinue"),
                            InstanceMethod<&MatcherHandle::accept_token>("acceptToken"),
                            InstanceMethod<&MatcherHandle::accept_bytes>("acceptBytes"),
                            InstanceMethod<&MatcherHandle::reset>("reset")});
    }

    // new GrammarMatcher(grammar: Grammar, tokens: TokenSet)
    explicit MatcherHandle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<MatcherHandle>(info) {
        Napi::Env env = info.Env();
        if (info.Length() < 2 || !info[0].IsObject() || !info[0].As<Napi::Object>().CheckTypeTag(&kGrammarTag) ||
            !info[1].IsObject() || !info[1].As<Napi::Object>().CheckTypeTag(&kTokenSetTag)) {
            throw Napi::TypeError::New(env, "new GrammarMatcher(grammar: Grammar, tokens: TokenSet)");
        }
        auto g = GrammarHandle::Unwrap(info[0].As<Napi::Object>())->grammar();
        auto t = TokenSetHandle::Unwrap(info[1].As<Napi::Object>())->tokens();
        call_engine(env, [&] { matcher_ = std::make_shared<grammar::Matcher>(std::move(g), std::move(t)); });
        info.This().As<Napi::Object>().TypeTag(&kMatcherTag);
    }
    std::shared_ptr<grammar::Matcher> matcher() const { return matcher_; }

private:
    // The state queries and edits below are only made while no step of this matcher runs.
    Napi::Value is_complete(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), matcher_->is_complete()); }
    Napi::Value can_continue(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), matcher_->can_continue()); }
    Napi::Value accept_token(const Napi::CallbackInfo& info) {
        if (info.Length() < 1 || !info[0].IsNumber()) throw Napi::TypeError::New(info.Env(), "acceptToken(token: number)");
        const int32_t token = info[0].As<Napi::Number>().Int32Value();
        return Napi::Boolean::New(info.Env(), call_engine(info.Env(), [&] { return matcher_->accept_token(token); }));
    }
    // acceptBytes(bytes: Uint8Array) → boolean: advances over text generated before the grammar took
    // over (false, state unchanged, when the grammar cannot take it).
    Napi::Value accept_bytes(const Napi::CallbackInfo& info) {
        const auto bytes = typed_array<Napi::Uint8Array>(info, 0, napi_uint8_array, "acceptBytes(bytes: Uint8Array)");
        return Napi::Boolean::New(info.Env(),
                                  call_engine(info.Env(), [&] { return matcher_->accept_bytes(bytes.Data(), bytes.ElementLength()); }));
    }
    Napi::Value reset(const Napi::CallbackInfo& info) {
        matcher_->reset();
        return info.Env().Undefined();
    }
    std::shared_ptr<grammar::Matcher> matcher_;
};

}  // namespace

std::shared_ptr<grammar::Matcher> matcher_of(const Napi::Value& value) {
    if (!value.IsObject() || !value.As<Napi::Object>().CheckTypeTag(&kMatcherTag)) {
        throw Napi::TypeError::New(value.Env(), "expected a GrammarMatcher");
    }
    return MatcherHandle::Unwrap(value.As<Napi::Object>())->matcher();
}

void init_grammar_binding(Napi::Env env, Napi::Object exports) {
    exports.Set("Grammar", GrammarHandle::define(env));
    exports.Set("TokenSet", TokenSetHandle::define(env));
    exports.Set("GrammarMatcher", MatcherHandle::define(env));
}

}  // namespace moe::napi
