// Registration functions, one per native area (better-sqlite3 style: one concern per file).
#pragma once

#include <napi.h>

namespace moe::napi {

void init_quant_binding(Napi::Env env, Napi::Object exports);
void init_gguf_binding(Napi::Env env, Napi::Object exports);
void init_model_binding(Napi::Env env, Napi::Object exports);
void init_sampler_binding(Napi::Env env, Napi::Object exports);
void init_grammar_binding(Napi::Env env, Napi::Object exports);
void init_gpu_binding(Napi::Env env, Napi::Object exports);

}  // namespace moe::napi
