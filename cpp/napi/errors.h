// Translation of engine errors (moe::Error) into JS Error objects. The object carries
// `code` (e.g. "NODE_MOE_GGUF_FORMAT") and, where known, `offset`; lib/errors.ts turns those into
// the typed classes users catch (GgufError, UnsupportedTypeError, ...).
#pragma once

#include <napi.h>

#include <exception>

namespace moe::napi {

Napi::Value engine_error_value(Napi::Env env, std::exception_ptr error);

// Runs `fn` and rethrows any engine exception as a JS exception (for synchronous bindings).
template <typename Fn>
auto call_engine(Napi::Env env, Fn&& fn) -> decltype(fn()) {
    try {
        return fn();
    } catch (const Napi::Error&) {
        throw;
    } catch (...) {
        throw Napi::Error(env, engine_error_value(env, std::current_exception()));
    }
}

}  // namespace moe::napi
