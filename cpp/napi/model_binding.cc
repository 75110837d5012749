// Model, Sequence and CancelFlag as seen from JS (better-sqlite3 style: one native class each,
// wrapped by lib/model.ts). Options are parsed into plain structs on the JS thread; loading runs on
// a thread of its own, evaluations on the model's engine thread (runtime::Scheduler), which merges
// the requests of all its sequences into shared forward passes.
#include <cmath>
#include <cstring>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "../common/error.h"
#include "../cpu/cpu_features.h"
#include "../model/model.h"
#include "background.h"
#include "bindings.h"
#include "errors.h"
#include "gpu_binding.h"
#include "grammar_binding.h"
#include "sampler_binding.h"

namespace moe::napi {

namespace {

// What every job on a model shares. Jobs hold it by shared_ptr, so neither the model nor its engine
// thread can go away under a running evaluation.
struct ModelState {
    std::unique_ptr<model::Model> model;
    // Where the model runs, and its CUDA backend if any: destroyed after the engine and before the
    // model whose mapping the backend reads.
    gpu::BackendChoice backend;
    std::unique_ptr<runtime::Scheduler> engine;  // destroyed first: it finishes its queue, then stops
};

// A flag JS sets (AbortSignal → cancel()) and native work polls.
class CancelFlag : public Napi::ObjectWrap<CancelFlag> {
public:
    static Napi::Function define(Napi::Env env) {
        return DefineClass(env, "CancelFlag", {InstanceMethod<&CancelFlag::cancel>("cancel")});
    }
    explicit CancelFlag(const Napi::CallbackInfo& info) : Napi::ObjectWrap<CancelFlag>(info) {}
    std::shared_ptr<std::atomic<bool>> flag() const { return flag_; }

private:
    Napi::Value cancel(const Napi::CallbackInfo& info) {
        flag_->store(true);
        return info.Env().Undefined();
    }
    std::shared_ptr<std::atomic<bool>> flag_ = std::make_shared<std::atomic<bool>>(false);
};

// Constructors per Node environment (the addon is context-aware: worker threads get their own).
struct Constructors {
    Napi::FunctionReference cancel_flag, sequence, model;
};

Constructors& constructors(Napi::Env env) { return *env.GetInstanceData<Constructors>(); }

std::shared_ptr<std::atomic<bool>> cancel_argument(const Napi::Value& v) {
    if (v.IsUndefined() || v.IsNull()) return nullptr;
    if (!v.IsObject() || !v.As<Napi::Object>().InstanceOf(constructors(v.Env()).cancel_flag.Value())) {
        throw Napi::TypeError::New(v.Env(), "expected a CancelFlag");
    }
    return CancelFlag::Unwrap(v.As<Napi::Object>())->flag();
}

double number_option(const Napi::Object& o, const char* key, double fallback) {
    if (!o.Has(key) || o.Get(key).IsUndefined()) return fallback;
    if (!o.Get(key).IsNumber()) throw Napi::TypeError::New(o.Env(), std::string(key) + " must be a number");
    return o.Get(key).As<Napi::Number>().DoubleValue();
}

model::KvCacheType kv_type_option(const Napi::Object& o) {
    if (!o.Has("kvCacheType") || o.Get("kvCacheType").IsUndefined()) return model::KvCacheType::F16;
    const std::string t = o.Get("kvCacheType").ToString().Utf8Value();
    if (t == "F16") return model::KvCacheType::F16;
    if (t == "F32") return model::KvCacheType::F32;
    if (t == "Q8_0") return model::KvCacheType::Q8_0;
    throw Error(ErrorCode::InvalidArgument, "kvCacheType must be 'F16', 'F32' or 'Q8_0', got '" + t + "'");
}

Napi::Object info_to_js(Napi::Env env, const model::ModelInfo& i) {
    Napi::Object o = Napi::Object::New(env);
    const auto num = [&](double v) { return Napi::Number::New(env, v); };
    o.Set("architecture", i.architecture);
    o.Set("name", i.name);
    o.Set("vocabSize", num(i.vocab_size));
    o.Set("contextLength", num(i.context_length));
    o.Set("blockCount", num(i.block_count));
    o.Set("embeddingLength", num(i.embedding_length));
    o.Set("expertCount", num(i.expert_count));
    o.Set("expertUsedCount", num(i.expert_used_count));
    o.Set("sharedExpertCount", num(i.shared_expert_count));
    o.Set("parameterCount", num(static_cast<double>(i.parameter_count)));
    o.Set("activeParameterCount", num(static_cast<double>(i.active_parameter_count)));
    o.Set("kvBytesPerToken", num(static_cast<double>(i.kv_bytes_per_token)));
    o.Set("fileType", num(i.file_type));
    o.Set("sizeBytes", num(static_cast<double>(i.size_bytes)));
    o.Set("defaultContextSize", num(i.default_context_size));
    o.Set("threads", num(i.n_threads));
    return o;
}

class SequenceHandle : public Napi::ObjectWrap<SequenceHandle> {
public:
    static Napi::Function define(Napi::Env env) {
        return DefineClass(env, "Sequence",
                           {InstanceMethod<&SequenceHandle::evaluate>("evaluate"),
                            InstanceMethod<&SequenceHandle::step>("step"),
                            InstanceMethod<&SequenceHandle::truncate>("truncate"),
                            InstanceMethod<&SequenceHandle::take_expert_usage>("takeExpertUsage"),
                            InstanceMethod<&SequenceHandle::restore_prefix>("restorePrefix"),
                            InstanceMethod<&SequenceHandle::store_prefix>("storePrefix"),
                            InstanceMethod<&SequenceHandle::save_state>("saveState"),
                            InstanceMethod<&SequenceHandle::load_state>("loadState"),
                            InstanceMethod<&SequenceHandle::length>("length"),
                            InstanceMethod<&SequenceHandle::context_size>("contextSize"),
                            InstanceMethod<&SequenceHandle::cache_bytes>("cacheBytes"),
                            InstanceMethod<&SequenceHandle::dispose>("dispose")});
    }
    explicit SequenceHandle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<SequenceHandle>(info) {}

    void attach(std::shared_ptr<ModelState> state, std::shared_ptr<model::Sequence> sequence) {
        state_ = std::move(state);
        sequence_ = std::move(sequence);
    }

private:
    std::shared_ptr<model::Sequence> live(Napi::Env env) const {
        if (!sequence_) throw Napi::Error::New(env, "the sequence was disposed");
        return sequence_;
    }

    static std::vector<int32_t> int32_argument(const Napi::CallbackInfo& info, size_t i, const char* usage) {
        if (info.Length() <= i || !info[i].IsTypedArray() ||
            info[i].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) {
            throw Napi::TypeError::New(info.Env(), std::string(usage) + ": tokens must be an Int32Array");
        }
        Napi::Int32Array a = info[i].As<Napi::Int32Array>();
        return std::vector<int32_t>(a.Data(), a.Data() + a.ElementLength());
    }

    // evaluate(tokens: Int32Array, allLogits: boolean, cancel?: CancelFlag) → Promise<{logits, length}>
    Napi::Value evaluate(const Napi::CallbackInfo& info) {
        Napi::Env env = info.Env();
        auto sequence = live(env);
        std::vector<int32_t> tokens = int32_argument(info, 0, "evaluate(tokens, allLogits, cancel?)");
        const bool all_logits = info.Length() > 1 && info[1].ToBoolean().Value();
        auto cancel = info.Length() > 2 ? cancel_argument(info[2]) : nullptr;
        struct Result {
            std::vector<float> logits;
            uint32_t length = 0;
        };
        auto state = state_;
        return BackgroundTask<Result>::run_deferred(
            env,
            [&](BackgroundTask<Result>::Complete complete) {
                runtime::Scheduler::Request request;
                request.sequence = sequence;
                request.tokens = std::move(tokens);
                request.all_logits = all_logits;
                request.cancel = cancel;
                request.done = [state, complete](runtime::Scheduler::Outcome& o) {
                    if (o.error) return complete(std::nullopt, o.error);
                    complete(Result{std::move(o.logits), o.length}, nullptr);
                };
                state->engine->submit(std::move(request));
            },
            [](Napi::Env env, Result& r, const std::vector<Napi::ObjectReference>&) -> Napi::Value {
                auto* heap = new std::vector<float>(std::move(r.logits));
                Napi::ArrayBuffer buffer = Napi::ArrayBuffer::New(
                    env, heap->data(), heap->size() * sizeof(float),
                    [](Napi::Env, void*, std::vector<float>* v) { delete v; }, heap);
                Napi::Object out = Napi::Object::New(env);
                out.Set("logits", Napi::Float32Array::New(env, heap->size(), buffer, 0));
                out.Set("length", Napi::Number::New(env, r.length));
                return out;
            });
    }

    // step(tokens: Int32Array, sampler: Sampler, cancel?: CancelFlag, grammar?: GrammarMatcher)
    //   → Promise<{token, probability, length, grammarComplete?, grammarCanContinue?}>:
    // evaluates the tokens and samples the next one from the last logits on the engine thread, so
    // the logits never cross into JS; the sampler records the token for its penalties. Concurrent
    // steps of different sequences share forward passes.
    Napi::Value step(const Napi::CallbackInfo& info) {
        Napi::Env env = info.Env();
        auto sequence = live(env);
        std::vector<int32_t> tokens = int32_argument(info, 0, "step(tokens, sampler, cancel?, grammar?)");
        if (info.Length() < 2) throw Napi::TypeError::New(env, "step(tokens, sampler, cancel?, grammar?): a Sampler is needed");
        auto sampler = sampler_of(info[1]);
        auto cancel = info.Length() > 2 ? cancel_argument(info[2]) : nullptr;
        std::shared_ptr<grammar::Matcher> matcher;
        if (info.Length() > 3 && !info[3].IsUndefined() && !info[3].IsNull()) matcher = matcher_of(info[3]);
        struct Result {
            int32_t token = 0;
            float probability = 0;
            uint32_t length = 0;
            bool constrained = false;
            bool grammar_complete = false;
            bool grammar_can_continue = false;
        };
        auto state = state_;
        return BackgroundTask<Result>::run_deferred(
            env,
            [&](BackgroundTask<Result>::Complete complete) {
                runtime::Scheduler::Request request;
                request.sequence = sequence;
                request.tokens = std::move(tokens);
                request.sampler = sampler;
                request.cancel = cancel;
                request.grammar = matcher;
                const bool constrained = matcher != nullptr;
                request.done = [state, complete, constrained](runtime::Scheduler::Outcome& o) {
                    if (o.error) return complete(std::nullopt, o.error);
                    complete(Result{o.token, o.probability, o.length, constrained, o.grammar_complete, o.grammar_can_continue},
                             nullptr);
                };
                state->engine->submit(std::move(request));
            },
            [](Napi::Env env, Result& r, const std::vector<Napi::ObjectReference>&) -> Napi::Value {
                Napi::Object out = Napi::Object::New(env);
                out.Set("token", Napi::Number::New(env, r.token));
                out.Set("probability", Napi::Number::New(env, r.probability));
                out.Set("length", Napi::Number::New(env, r.length));
                if (r.constrained) {
                    out.Set("grammarComplete", Napi::Boolean::New(env, r.grammar_complete));
                    out.Set("grammarCanContinue", Napi::Boolean::New(env, r.grammar_can_continue));
                }
                return out;
            });
    }

    // restorePrefix(tokens: Int32Array) → Promise<number>: extends the sequence from the model's
    // prefix cache (tokens[0, length) must be what it holds); resolves with the new length.
    // storePrefix(tokens: Int32Array) → Promise<number>: adds the blocks of tokens it holds.
    // Both run on the engine thread between forward passes.
    Napi::Value restore_prefix(const Napi::CallbackInfo& info) { return prefix_job(info, true); }
    Napi::Value store_prefix(const Napi::CallbackInfo& info) { return prefix_job(info, false); }

    Napi::Value prefix_job(const Napi::CallbackInfo& info, bool restore) {
        Napi::Env env = info.Env();
        auto sequence = live(env);
        std::vector<int32_t> tokens = int32_argument(info, 0, restore ? "restorePrefix(tokens)" : "storePrefix(tokens)");
        auto state = state_;
        return BackgroundTask<double>::run(
            env,
            [state, sequence, tokens = std::move(tokens), restore]() -> double {
                return restore ? sequence->restore_prefix(tokens.data(), tokens.size())
                               : static_cast<double>(sequence->store_prefix(tokens.data(), tokens.size()));
            },
            [](Napi::Env env, double& r, const std::vector<Napi::ObjectReference>&) -> Napi::Value {
                return Napi::Number::New(env, r);
            },
            {}, state->engine.get());
    }

    // saveState(path, tokens: Int32Array, metadata: string) → Promise<void>
    Napi::Value save_state(const Napi::CallbackInfo& info) {
        Napi::Env env = info.Env();
        auto sequence = live(env);
        if (info.Length() < 3 || !info[0].IsString() || !info[2].IsString()) {
            throw Napi::TypeError::New(env, "saveState(path: string, tokens: Int32Array, metadata: string)");
        }
        std::string path = info[0].As<Napi::String>().Utf8Value();
        std::vector<int32_t> tokens = int32_argument(info, 1, "saveState(path, tokens, metadata)");
        std::string metadata = info[2].As<Napi::String>().Utf8Value();
        auto state = state_;
        return BackgroundTask<bool>::run(
            env,
            [state, sequence, path = std::move(path), tokens = std::move(tokens), metadata = std::move(metadata)]() {
                sequence->save_state(path, tokens.data(), tokens.size(), metadata);
                return true;
            },
            [](Napi::Env env, bool&, const std::vector<Napi::ObjectReference>&) -> Napi::Value { return env.Undefined(); },
            {}, state->engine.get());
    }

    // loadState(path) → Promise<{tokens: Int32Array, metadata: string, length: number}>
    Napi::Value load_state(const Napi::CallbackInfo& info) {
        Napi::Env env = info.Env();
        auto sequence = live(env);
        if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(env, "loadState(path: string)");
        std::string path = info[0].As<Napi::String>().Utf8Value();
        auto state = state_;
        return BackgroundTask<model::SavedState>::run(
            env, [state, sequence, path = std::move(path)]() { return sequence->load_state(path); },
            [](Napi::Env env, model::SavedState& s, const std::vector<Napi::ObjectReference>&) -> Napi::Value {
                Napi::Int32Array tokens = Napi::Int32Array::New(env, s.tokens.size());
                std::copy(s.tokens.begin(), s.tokens.end(), tokens.Data());
                Napi::Object out = Napi::Object::New(env);
                out.Set("tokens", tokens);
                out.Set("metadata", Napi::String::New(env, s.metadata));
                out.Set("length", Napi::Number::New(env, static_cast<double>(s.tokens.size())));
                return out;
            },
            {}, state->engine.get());
    }

    // takeExpertUsage() → Uint32Array [n_layer * n_expert] of tokens routed to each expert since the
    // last call, or undefined for a dense model. Only called by lib/ when no step is in flight.
    Napi::Value take_expert_usage(const Napi::CallbackInfo& info) {
        Napi::Env env = info.Env();
        std::vector<uint32_t> usage = live(env)->take_expert_usage();
        if (usage.empty()) return env.Undefined();
        Napi::Uint32Array out = Napi::Uint32Array::New(env, usage.size());
        std::copy(usage.begin(), usage.end(), out.Data());
        return out;
    }

    // Only called by lib/ when no evaluation of this sequence is in flight.
    Napi::Value truncate(const Napi::CallbackInfo& info) {
        Napi::Env env = info.Env();
        auto sequence = live(env);
        const double n = info.Length() > 0 && info[0].IsNumber() ? info[0].As<Napi::Number>().DoubleValue() : -1;
        if (!(n >= 0) || std::floor(n) != n || n > sequence->length()) {
            throw Napi::RangeError::New(env, "truncate(n) needs an integer 0 <= n <= length (" +
                                                 std::to_string(sequence->length()) + ")");
        }
        call_engine(env, [&] { sequence->truncate(static_cast<uint32_t>(n)); });
        return Napi::Number::New(env, sequence->length());
    }

    Napi::Value length(const Napi::CallbackInfo& info) {
        return Napi::Number::New(info.Env(), live(info.Env())->length());
    }

    Napi::Value context_size(const Napi::CallbackInfo& info) {
        return Napi::Number::New(info.Env(), live(info.Env())->context_size());
    }

    Napi::Value cache_bytes(const Napi::CallbackInfo& info) {
        return Napi::Number::New(info.Env(), static_cast<double>(live(info.Env())->cache_bytes()));
    }

    // Drops this handle's references; a job still running keeps the sequence alive until it ends.
    Napi::Value dispose(const Napi::CallbackInfo& info) {
        sequence_.reset();
        state_.reset();
        return info.Env().Undefined();
    }

    std::shared_ptr<ModelState> state_;
    std::shared_ptr<model::Sequence> sequence_;
};

class ModelHandle : public Napi::ObjectWrap<ModelHandle> {
public:
    static Napi::Function define(Napi::Env env) {
        return DefineClass(env, "Model",
                           {InstanceMethod<&ModelHandle::info>("info"),
                            InstanceMethod<&ModelHandle::create_sequence>("createSequence"),
                            InstanceMethod<&ModelHandle::scheduler_stats>("schedulerStats"),
                            InstanceMethod<&ModelHandle::prefix_cache_stats>("prefixCacheStats"),
                            InstanceMethod<&ModelHandle::backend>("backend"),
                            InstanceMethod<&ModelHandle::dispose>("dispose")});
    }
    explicit ModelHandle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ModelHandle>(info) {}
    void attach(std::shared_ptr<ModelState> state) { state_ = std::move(state); }

private:
    std::shared_ptr<ModelState> live(Napi::Env env) const {
        if (!state_) throw Napi::Error::New(env, "the model was disposed");
        return state_;
    }

    Napi::Value info(const Napi::CallbackInfo& info) { return info_to_js(info.Env(), live(info.Env())->model->info()); }

    // backend() → { kind: 'cpu' | 'cuda', reason, placement? }: where the loader put the model.
    Napi::Value backend(const Napi::CallbackInfo& info) { return backend_to_js(info.Env(), live(info.Env())->backend); }

    // prefixCacheStats() → {lookups, hits, restoredTokens, blocks, bytes, evictedBlocks, blockTokens}
    Napi::Value prefix_cache_stats(const Napi::CallbackInfo& info) {
        Napi::Env env = info.Env();
        const model::Model::PrefixCacheStats st = live(env)->model->prefix_cache_stats();
        Napi::Object o = Napi::Object::New(env);
        const auto num = [&](uint64_t v) { return Napi::Number::New(env, static_cast<double>(v)); };
        o.Set("lookups", num(st.lookups));
        o.Set("hits", num(st.hits));
        o.Set("restoredTokens", num(st.restored_tokens));
        o.Set("blocks", num(st.blocks));
        o.Set("bytes", num(st.bytes));
        o.Set("evictedBlocks", num(st.evicted_blocks));
        o.Set("blockTokens", num(st.block_tokens));
        return o;
    }

    // schedulerStats() → {passes, rows, mergedPasses, maxRequests}: how the engine batched so far.
    Napi::Value scheduler_stats(const Napi::CallbackInfo& info) {
        Napi::Env env = info.Env();
        const runtime::Scheduler::Stats st = live(env)->engine->stats();
        Napi::Object o = Napi::Object::New(env);
        o.Set("passes", Napi::Number::New(env, static_cast<double>(st.passes)));
        o.Set("rows", Napi::Number::New(env, static_cast<double>(st.rows)));
        o.Set("mergedPasses", Napi::Number::New(env, static_cast<double>(st.merged_passes)));
        o.Set("maxRequests", Napi::Number::New(env, st.max_requests));
        return o;
    }

    Napi::Value create_sequence(const Napi::CallbackInfo& info) {
        Napi::Env env = info.Env();
        auto state = live(env);
        const double ctx = info.Length() > 0 && info[0].IsNumber() ? info[0].As<Napi::Number>().DoubleValue() : 0;
        if (!(ctx >= 0) || std::floor(ctx) != ctx || ctx > 16777216) {
            throw Napi::RangeError::New(env, "contextSize must be an integer from 1 to 16777216");
        }
        std::shared_ptr<model::Sequence> sequence =
            call_engine(env, [&] { return std::shared_ptr<model::Sequence>(state->model->create_sequence(static_cast<uint32_t>(ctx))); });
        Napi::Object handle = constructors(env).sequence.New({});
        SequenceHandle::Unwrap(handle)->attach(state, std::move(sequence));
        return handle;
    }

    // Drops this handle's reference. Jobs and sequences still holding the state keep it alive; the
    // weights are unmapped when the last of them lets go (lib/ disposes sequences first).
    Napi::Value dispose(const Napi::CallbackInfo& info) {
        state_.reset();
        return info.Env().Undefined();
    }

    std::shared_ptr<ModelState> state_;
};

// loadModel(path, options, onProgress?: (p) => void, cancel?: CancelFlag) → Promise<Model>
// options.gpu (gpu_binding.h): a device lib/ probed, for the loader to plan the model onto.
Napi::Value load_model(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    return call_engine(env, [&]() -> Napi::Value {
        if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(env, "path must be a string");
        const std::string path = info[0].As<Napi::String>().Utf8Value();
        Napi::Object opts = info.Length() > 1 && info[1].IsObject() ? info[1].As<Napi::Object>() : Napi::Object::New(env);
        model::LoadOptions options;
        options.n_threads = static_cast<int>(number_option(opts, "threads", 0));
        options.context_size = static_cast<uint32_t>(number_option(opts, "contextSize", 0));
        options.kv_type = kv_type_option(opts);
        const double prefix_bytes = number_option(opts, "prefixCacheSize", static_cast<double>(options.prefix_cache_bytes));
        if (!(prefix_bytes >= 0) || prefix_bytes > 9007199254740991.0) {
            throw Napi::RangeError::New(env, "prefixCacheSize must be a byte count >= 0");
        }
        options.prefix_cache_bytes = static_cast<size_t>(prefix_bytes);
        options.isa = cpu::active_isa();
        const gpu::GpuRequest gpu_request = gpu_request_option(opts);
        auto cancel = info.Length() > 3 ? cancel_argument(info[3]) : nullptr;

        std::shared_ptr<Napi::ThreadSafeFunction> progress;
        if (info.Length() > 2 && info[2].IsFunction()) {
            progress = std::make_shared<Napi::ThreadSafeFunction>(
                Napi::ThreadSafeFunction::New(env, info[2].As<Napi::Function>(), "node-moe-load-progress", 0, 1));
        }
        // The loader waits for each progress callback to finish, so an abort requested from inside
        // onProgress is seen at the very next check.
        options.on_progress = [progress, cancel](double p) {
            if (progress) {
                struct Call {
                    double value;
                    std::promise<void> done;
                };
                auto* call = new Call{p, {}};
                std::future<void> done = call->done.get_future();
                const napi_status status = progress->NonBlockingCall(call, [](Napi::Env env, Napi::Function fn, Call* c) {
                    if (env != nullptr) {
                        try {
                            fn.Call({Napi::Number::New(env, c->value)});
                        } catch (const Napi::Error&) {
                            // A throwing onProgress must not take the load down with it.
                        }
                    }
                    c->done.set_value();
                    delete c;
                });
                if (status == napi_ok) {
                    done.wait();
                } else {
                    delete call;
                }
            }
            return !(cancel && cancel->load());
        };
        return BackgroundTask<std::shared_ptr<ModelState>>::run(
            env,
            [path, options, progress, gpu_request]() {
                struct ReleaseProgress {
                    std::shared_ptr<Napi::ThreadSafeFunction> p;
                    ~ReleaseProgress() {
                        if (p) p->Release();
                    }
                } release{progress};
                auto state = std::make_shared<ModelState>();
                // The GPU plan comes first, so a model that cannot fit fails before it is mapped.
                state->backend = gpu::plan_backend(path, options, gpu_request);
                state->model = model::Model::load(path, options);
                gpu::start_backend(state->backend, *state->model, gpu_request.mode);
                state->engine = std::make_unique<runtime::Scheduler>(*state->model);
                return state;
            },
            [](Napi::Env env, std::shared_ptr<ModelState>& state, const std::vector<Napi::ObjectReference>&) -> Napi::Value {
                Napi::Object handle = constructors(env).model.New({});
                ModelHandle::Unwrap(handle)->attach(std::move(state));
                return handle;
            });
    });
}

Napi::Value create_cancel_flag(const Napi::CallbackInfo& info) { return constructors(info.Env()).cancel_flag.New({}); }

}  // namespace

void init_model_binding(Napi::Env env, Napi::Object exports) {
    auto* ctors = new Constructors{Napi::Persistent(CancelFlag::define(env)), Napi::Persistent(SequenceHandle::define(env)),
                                   Napi::Persistent(ModelHandle::define(env))};
    env.SetInstanceData(ctors);  // deleted with the environment
    exports.Set("loadModel", Napi::Function::New(env, load_model, "loadModel"));
    exports.Set("createCancelFlag", Napi::Function::New(env, create_cancel_flag, "createCancelFlag"));
}

}  // namespace moe::napi
