#include "routing.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>

#include "../kernels/ops.h"

namespace moe::model {

namespace {
constexpr int64_t kMaxExperts = 512;  // LLAMA_MAX_EXPERTS; hparams rejects more
}  // namespace

void route_token(const HParams& hp, const float* sel_bias, float* probs, float* scores, int32_t* sel, float* w,
                 cpu::Isa isa) {
    const int64_t X = hp.n_expert, K = hp.n_expert_used;
    if (hp.gating == Gating::Softmax) {
        kernels::softmax(probs, X, isa);
    } else if (hp.gating == Gating::Sigmoid) {
        for (int64_t e = 0; e < X; ++e) probs[e] = 1.0f / (1.0f + std::exp(-probs[e]));
    }
    if (sel_bias) {
        for (int64_t e = 0; e < X; ++e) scores[e] = probs[e] + sel_bias[e];
    } else {
        std::memcpy(scores, probs, sizeof(float) * X);
    }

    const auto better = [&](int32_t a, int32_t b) { return scores[a] > scores[b] || (scores[a] == scores[b] && a < b); };

    if (hp.n_expert_groups > 1) {
        // DeepSeek-V3 style: a group scores the sum of its two best experts; experts outside the
        // n_group_used best groups cannot be selected.
        const int64_t G = hp.n_expert_groups, per = X / G;
        float group_score[kMaxExperts];
        int32_t order[kMaxExperts];
        for (int64_t g = 0; g < G; ++g) {
            float b1 = -std::numeric_limits<float>::infinity(), b2 = b1;
            for (int64_t j = 0; j < per; ++j) {
                const float s = scores[g * per + j];
                if (s > b1) {
                    b2 = b1;
                    b1 = s;
                } else if (s > b2) {
                    b2 = s;
                }
            }
            group_score[g] = per >= 2 ? b1 + b2 : b1;
            order[g] = static_cast<int32_t>(g);
        }
        std::sort(order, order + G, [&](int32_t a, int32_t b) {
            return group_score[a] > group_score[b] || (group_score[a] == group_score[b] && a < b);
        });
        for (int64_t i = hp.n_group_used; i < G; ++i) {
            for (int64_t j = 0; j < per; ++j) scores[order[i] * per + j] = -std::numeric_limits<float>::infinity();
        }
    }

    // Top-k: a partial selection sort over small k keeps the comparator's total order.
    int32_t idx[kMaxExperts];
    std::iota(idx, idx + X, 0);
    std::partial_sort(idx, idx + K, idx + X, better);
    for (int64_t s = 0; s < K; ++s) {
        sel[s] = idx[s];
        w[s] = probs[idx[s]];
    }
    if (hp.gating == Gating::SoftmaxWeight) kernels::softmax(w, K, isa);
    if (hp.norm_topk) {
        double sum = 0.0;  // ggml_sum_rows sums in double and stores fp32
        for (int64_t s = 0; s < K; ++s) sum += static_cast<double>(w[s]);
        float sumf = static_cast<float>(sum);
        sumf = sumf < 6.103515625e-5f ? 6.103515625e-5f : sumf;  // ggml_clamp to the smallest normal half
        for (int64_t s = 0; s < K; ++s) w[s] = w[s] / sumf;
    }
    const float scale = hp.expert_weights_scale;
    if (scale != 0.0f && scale != 1.0f) {
        for (int64_t s = 0; s < K; ++s) w[s] = w[s] * scale;
    }
}

}  // namespace moe::model
