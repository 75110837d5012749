#include "errors.h"

#include <new>

#include "../common/error.h"

namespace moe::napi {

namespace {

const char* code_string(ErrorCode code) {
    switch (code) {
        case ErrorCode::GgufFormat: return "NODE_MOE_GGUF_FORMAT";
        case ErrorCode::UnsupportedType: return "NODE_MOE_UNSUPPORTED_TYPE";
        case ErrorCode::InvalidArgument: return "NODE_MOE_INVALID_ARGUMENT";
        case ErrorCode::CpuUnsupported: return "NODE_MOE_CPU_UNSUPPORTED";
        case ErrorCode::Io: return "NODE_MOE_IO";
        case ErrorCode::StateFormat: return "NODE_MOE_STATE_FORMAT";
        case ErrorCode::OutOfMemory: return "NODE_MOE_OUT_OF_MEMORY";
        case ErrorCode::Aborted: return "NODE_MOE_ABORTED";
        case ErrorCode::ContextOverflow: return "NODE_MOE_CONTEXT_OVERFLOW";
        case ErrorCode::ModelFormat: return "NODE_MOE_MODEL_FORMAT";
        case ErrorCode::GpuUnavailable: return "NODE_MOE_GPU_UNAVAILABLE";
    }
    return "NODE_MOE_INTERNAL";
}

Napi::Value make_error(Napi::Env env, const char* message, const char* code) {
    Napi::Object err = Napi::Error::New(env, message).Value();
    err.Set("code", Napi::String::New(env, code));
    return err;
}

}  // namespace

Napi::Value engine_error_value(Napi::Env env, std::exception_ptr error) {
    try {
        std::rethrow_exception(error);
    } catch (const MemoryError& e) {
        Napi::Object err = make_error(env, e.what(), code_string(e.code())).As<Napi::Object>();
        err.Set("neededBytes", Napi::Number::New(env, static_cast<double>(e.needed_bytes())));
        err.Set("availableBytes", Napi::Number::New(env, static_cast<double>(e.available_bytes())));
        return err;
    } catch (const Error& e) {
        Napi::Object err = make_error(env, e.what(), code_string(e.code())).As<Napi::Object>();
        if (e.has_offset()) err.Set("offset", Napi::Number::New(env, static_cast<double>(e.offset())));
        return err;
    } catch (const std::bad_alloc&) {
        return make_error(env, "out of memory", code_string(ErrorCode::OutOfMemory));
    } catch (const std::exception& e) {
        return make_error(env, e.what(), "NODE_MOE_INTERNAL");
    } catch (...) {
        return make_error(env, "unknown native error", "NODE_MOE_INTERNAL");
    }
}

}  // namespace moe::napi
