// new Sampler(params, vocabSize): parses the sampling options into sampling::SamplerParams on the
// JS thread (the baton), then only native jobs touch the sampler.
#include "sampler_binding.h"

#include <cmath>
#include <string>
#include <utility>

#include "bindings.h"
#include "errors.h"

namespace moe::napi {

namespace {

// Marks Sampler objects so sampler_of can tell them from look-alikes (napi_type_tag).
constexpr napi_type_tag kSamplerTag = {0x6d6f652d73616d70ULL, 0x6c65722d74616731ULL};

double number_field(const Napi::Object& o, const char* name) {
    const Napi::Value v = o.Get(name);
    if (!v.IsNumber()) throw Napi::TypeError::New(o.Env(), std::string("sampler option ") + name + " must be a number");
    return v.As<Napi::Number>().DoubleValue();
}

class SamplerHandle : public Napi::ObjectWrap<SamplerHandle> {
public:
    static Napi::Function define(Napi::Env env) {
        return DefineClass(env, "Sampler",
                           {InstanceMethod<&SamplerHandle::accept>("accept"), InstanceMethod<&SamplerHandle::reset>("reset")});
    }

    explicit SamplerHandle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<SamplerHandle>(info) {
        Napi::Env env = info.Env();
        if (info.Length() < 2 || !info[0].IsObject() || !info[1].IsNumber()) {
            throw Napi::TypeError::New(env, "new Sampler(params, vocabSize)");
        }
        const Napi::Object o = info[0].As<Napi::Object>();
        sampling::SamplerParams p;
        p.temperature = static_cast<float>(number_field(o, "temperature"));
        p.top_k = static_cast<int32_t>(number_field(o, "topK"));
        p.top_p = static_cast<float>(number_field(o, "topP"));
        p.min_p = static_cast<float>(number_field(o, "minP"));
        p.repeat_penalty = static_cast<float>(number_field(o, "repeatPenalty"));
        p.frequency_penalty = static_cast<float>(number_field(o, "frequencyPenalty"));
        p.presence_penalty = static_cast<float>(number_field(o, "presencePenalty"));
        p.penalty_last_n = static_cast<int32_t>(number_field(o, "penaltyLastN"));
        p.seed = static_cast<uint64_t>(number_field(o, "seed"));
        const Napi::Value bias = o.Get("logitBias");
        if (bias.IsArray()) {
            const Napi::Array pairs = bias.As<Napi::Array>();
            for (uint32_t i = 0; i < pairs.Length(); ++i) {
                const Napi::Value pair = pairs.Get(i);
                if (!pair.IsArray() || pair.As<Napi::Array>().Length() != 2) {
                    throw Napi::TypeError::New(env, "logitBias entries must be [token, bias] pairs");
                }
                const Napi::Array a = pair.As<Napi::Array>();
                p.logit_bias.emplace_back(a.Get(0u).As<Napi::Number>().Int32Value(),
                                          static_cast<float>(a.Get(1u).As<Napi::Number>().DoubleValue()));
            }
        }
        const double vocab = info[1].As<Napi::Number>().DoubleValue();
        if (!(vocab >= 1) || vocab > 1e9 || std::floor(vocab) != vocab) {
            throw Napi::RangeError::New(env, "vocabSize must be a positive integer");
        }
        call_engine(env, [&] { sampler_ = std::make_shared<sampling::Sampler>(p, static_cast<int32_t>(vocab)); });
        info.This().As<Napi::Object>().TypeTag(&kSamplerTag);
    }

    std::shared_ptr<sampling::Sampler> sampler() const { return sampler_; }

private:
    // accept(tokens: Int32Array): records prompt tokens for the penalties. Only called while no job
    // of this sampler runs (lib/generate.ts calls it before the first step).
    Napi::Value accept(const Napi::CallbackInfo& info) {
        Napi::Env env = info.Env();
        if (info.Length() < 1 || !info[0].IsTypedArray() ||
            info[0].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) {
            throw Napi::TypeError::New(env, "tokens must be an Int32Array");
        }
        const Napi::Int32Array t = info[0].As<Napi::Int32Array>();
        call_engine(env, [&] { sampler_->accept(t.Data(), t.ElementLength()); });
        return env.Undefined();
    }

    Napi::Value reset(const Napi::CallbackInfo& info) {
        sampler_->reset();
        return info.Env().Undefined();
    }

    std::shared_ptr<sampling::Sampler> sampler_;
};

}  // namespace

std::shared_ptr<sampling::Sampler> sampler_of(const Napi::Value& value) {
    if (!value.IsObject() || !value.As<Napi::Object>().CheckTypeTag(&kSamplerTag)) {
        throw Napi::TypeError::New(value.Env(), "expected a Sampler");
    }
    return SamplerHandle::Unwrap(value.As<Napi::Object>())->sampler();
}

void init_sampler_binding(Napi::Env env, Napi::Object exports) { exports.Set("Sampler", SamplerHandle::define(env)); }

}  // namespace moe::napi
