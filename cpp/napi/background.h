// Runs engine work on a thread of our own (never the libuv pool, which user code and fs share)
// and settles a Promise back on the JS thread. The work lambda sees only plain C++ data (the
// "baton"); converting the result to JS values happens in `to_js`, on the JS thread.
#pragma once

#include <napi.h>

#include <exception>
#include <functional>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "../runtime/scheduler.h"
#include "errors.h"

namespace moe::napi {

template <typename Result>
class BackgroundTask {
public:
    using Work = std::function<Result()>;
    // `kept` holds the keep_alive values, in order, so to_js can return one of them.
    using ToJs = std::function<Napi::Value(Napi::Env, Result&, const std::vector<Napi::ObjectReference>& kept)>;

    // Starts `work` on a new thread, or queues it on `engine` when given; the returned Promise
    // resolves with to_js(result) or rejects with the translated engine error. `keep_alive` values
    // (typed arrays whose memory the work reads or writes) are referenced until the Promise settles.
    static Napi::Promise run(Napi::Env env, Work work, ToJs to_js, std::initializer_list<Napi::Value> keep_alive = {},
                             runtime::Scheduler* engine = nullptr) {
        auto* task = new BackgroundTask(env, std::move(work), std::move(to_js));
        for (const Napi::Value& v : keep_alive) {
            if (v.IsObject()) task->refs_.push_back(Napi::Persistent(v.As<Napi::Object>()));
        }
        Napi::Promise promise = task->deferred_.Promise();
        task->tsfn_ = Tsfn::New(env, "node-moe", 0, 1, task, &BackgroundTask::Finalize, static_cast<void*>(nullptr));
        auto body = [task] {
            try {
                task->result_.emplace(task->work_());
            } catch (...) {
                task->error_ = std::current_exception();
            }
            Tsfn tsfn = task->tsfn_;
            // If the environment is shutting down the call fails and CallJs never runs; the
            // finalizer below still deletes the task.
            tsfn.BlockingCall();
            tsfn.Release();
        };
        if (engine) {
            engine->post(std::move(body));
        } else {
            std::thread(std::move(body)).detach();
        }
        return promise;
    }

    // Called exactly once, from any thread, with the result or with an error.
    using Complete = std::function<void(std::optional<Result>, std::exception_ptr)>;

    // Like run, for work that finishes later by other means (a scheduler request): `start` runs
    // now, on the JS thread, and hands `complete` to whoever finishes the work. If start throws,
    // the Promise rejects with that error.
    static Napi::Promise run_deferred(Napi::Env env, const std::function<void(Complete)>& start, ToJs to_js,
                                      std::initializer_list<Napi::Value> keep_alive = {}) {
        auto* task = new BackgroundTask(env, Work(), std::move(to_js));
        for (const Napi::Value& v : keep_alive) {
            if (v.IsObject()) task->refs_.push_back(Napi::Persistent(v.As<Napi::Object>()));
        }
        Napi::Promise promise = task->deferred_.Promise();
        task->tsfn_ = Tsfn::New(env, "node-moe", 0, 1, task, &BackgroundTask::Finalize, static_cast<void*>(nullptr));
        Complete complete = [task](std::optional<Result> result, std::exception_ptr error) {
            if (error) {
                task->error_ = error;
            } else {
                task->result_ = std::move(result);
            }
            Tsfn tsfn = task->tsfn_;
            tsfn.BlockingCall();
            tsfn.Release();
        };
        try {
            start(complete);
        } catch (...) {
            complete(std::nullopt, std::current_exception());
        }
        return promise;
    }

private:
    static void CallJs(Napi::Env env, Napi::Function, BackgroundTask* task, void*) {
        if (env == nullptr || task->settled_) return;
        task->settled_ = true;
        Napi::HandleScope scope(env);
        try {
            if (task->error_) {
                task->deferred_.Reject(engine_error_value(env, task->error_));
            } else {
                task->deferred_.Resolve(task->to_js_(env, *task->result_, task->refs_));
            }
        } catch (const Napi::Error& e) {
            task->deferred_.Reject(e.Value());
        } catch (...) {
            task->deferred_.Reject(engine_error_value(env, std::current_exception()));
        }
    }

    static void Finalize(Napi::Env, void*, BackgroundTask* task) { delete task; }

    using Tsfn = Napi::TypedThreadSafeFunction<BackgroundTask, void, CallJs>;

    BackgroundTask(Napi::Env env, Work work, ToJs to_js)
        : deferred_(Napi::Promise::Deferred::New(env)), work_(std::move(work)), to_js_(std::move(to_js)) {}

    Napi::Promise::Deferred deferred_;
    Work work_;
    ToJs to_js_;
    Tsfn tsfn_;
    std::vector<Napi::ObjectReference> refs_;
    std::optional<Result> result_;
    std::exception_ptr error_;
    bool settled_ = false;
};

}  // namespace moe::napi
