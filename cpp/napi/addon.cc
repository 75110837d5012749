// Module entry point of the addon: the only place exports are assembled.
#include <napi.h>

#include "bindings.h"

namespace {

Napi::Object init(Napi::Env env, Napi::Object exports) {
    moe::napi::init_quant_binding(env, exports);
    moe::napi::init_gguf_binding(env, exports);
    moe::napi::init_model_binding(env, exports);
    moe::napi::init_sampler_binding(env, exports);
    moe::napi::init_grammar_binding(env, exports);
    moe::napi::init_gpu_binding(env, exports);
    exports.Set("napiVersion", Napi::Number::New(env, NAPI_VERSION));
    return exports;
}

}  // namespace

NODE_API_MODULE(node_moe, init)
