// The Sampler class seen from JS: wraps a moe::sampling::Sampler that generation jobs use on the
// engine thread (lib/generate.ts creates one per generation).
#pragma once

#include <napi.h>

#include <memory>

#include "../sampling/sampler.h"

namespace moe::napi {

// The sampler inside a JS Sampler object; throws a TypeError for any other value.
std::shared_ptr<sampling::Sampler> sampler_of(const Napi::Value& value);

}  // namespace moe::napi
