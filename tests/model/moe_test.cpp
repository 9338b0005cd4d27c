// MoE: grouped dispatch equals a naive per-token loop, and the router's selection rules
// (greedy, group_limited_greedy, noaux_tc with bias and top-2 group scores) on hand-made scores.
#include <gtest/gtest.h>

#include "dsft/model/layers.h"

using namespace dsft::model;

namespace {

void fill_random(torch::nn::Module& m) {
  torch::NoGradGuard no_grad;
  for (auto& p : m.parameters()) p.normal_(0, 0.1);
}

// Reference: for each token, for each of its k experts, run that expert on that token alone.
torch::Tensor naive_moe(const torch::Tensor& x, const Routing& r,
                        const std::vector<std::shared_ptr<MlpImpl>>& experts) {
  auto out = torch::zeros_like(x);
  for (int64_t n = 0; n < x.size(0); ++n)
    for (int64_t k = 0; k < r.experts.size(1); ++k) {
      const int64_t e = r.experts[n][k].item<int64_t>();
      out[n] += experts[e]->forward(x[n].unsqueeze(0))[0] * r.weights[n][k].item<float>();
    }
  return out;
}

}  // namespace

TEST(Moe, GroupedDispatchEqualsPerTokenLoop) {
  torch::manual_seed(3);
  for (auto method : {TopkMethod::greedy, TopkMethod::group_limited_greedy, TopkMethod::noaux_tc}) {
    MoeOptions o(16, 8, 8, 3);
    o.topk_method(method).n_group(4).topk_group(2).n_shared_experts(0);
    o.scoring_func(method == TopkMethod::noaux_tc ? ScoringFunc::sigmoid : ScoringFunc::softmax);
    o.norm_topk_prob(method == TopkMethod::noaux_tc).routed_scaling_factor(2.5);
    Moe moe(o);
    fill_random(*moe);
    if (moe->gate->e_score_correction_bias.defined()) moe->gate->e_score_correction_bias.normal_(0, 0.1);
    auto x = torch::randn({37, 16});
    torch::NoGradGuard no_grad;
    auto r = moe->gate->forward(x);
    auto grouped = moe_dispatch(x, r, moe->expert_list);
    auto naive = naive_moe(x, r, moe->expert_list);
    EXPECT_TRUE(torch::allclose(grouped, naive, 1e-5, 1e-6)) << (grouped - naive).abs().max().item<float>();
    // and the whole block (no shared experts here) is exactly the dispatch
    EXPECT_TRUE(torch::allclose(moe->forward(x.view({1, 37, 16})).view({37, 16}), grouped));
  }
}

TEST(Moe, RouterSelectionRules) {
  // 8 experts in 4 groups of 2; logits chosen so each rule picks differently.
  MoeOptions o(4, 4, 8, 2);
  o.n_group(4).topk_group(2);
  torch::NoGradGuard no_grad;
  // x = e0 picks column 0 of the router weight as the logits
  auto x = torch::tensor({{1.0f, 0.0f, 0.0f, 0.0f}});
  auto logits = torch::tensor({3.0f, -5.0f, 2.0f, 1.9f, 2.5f, -5.0f, -1.0f, -1.0f});
  auto set_logits = [&](MoeGateImpl& g) {
    g.weight.zero_();
    g.weight.select(1, 0).copy_(logits);
  };
  // greedy softmax: experts 0 and 4
  {
    MoeGate g(MoeOptions(o).topk_method(TopkMethod::greedy));
    set_logits(*g);
    auto r = g->forward(x);
    auto e = std::get<0>(r.experts.sort(1));
    EXPECT_TRUE(torch::equal(e, torch::tensor({{0, 4}})));
    auto probs = torch::softmax(logits, 0);
    EXPECT_NEAR(r.weights.sum().item<float>(), (probs[0] + probs[4]).item<float>(), 1e-6);  // not normalised
  }
  // group_limited_greedy: group maxima [3, 2, 2.5, -1] -> groups 0 and 2 -> experts 0, 4
  // noaux_tc with bias: sigmoid + bias; group score = sum of top-2
  {
    MoeGate g(MoeOptions(o)
                  .topk_method(TopkMethod::noaux_tc)
                  .scoring_func(ScoringFunc::sigmoid)
                  .norm_topk_prob(true)
                  .routed_scaling_factor(2.5));
    set_logits(*g);
    // bias pushes group 1 (experts 2, 3) up: its top-2 sum beats group 0 (3 and -5)
    g->e_score_correction_bias.copy_(torch::tensor({0.0f, 0.0f, 0.3f, 0.3f, 0.0f, 0.0f, 0.0f, 0.0f}));
    auto r = g->forward(x);
    auto e = std::get<0>(r.experts.sort(1));
    // groups by top-2 biased sums: g0 .95+.0067, g1 1.18+1.17, g2 .92+.0067, g3 .27+.27 -> g1, g0
    // best two among experts 0..3 by biased score: 2 (1.18), 3 (1.17)
    EXPECT_TRUE(torch::equal(e, torch::tensor({{2, 3}}))) << e;
    EXPECT_NEAR(r.weights.sum().item<float>(), 2.5f, 1e-5);  // normalised, times the scale
    // the weights are the unbiased sigmoid scores, normalised
    auto s = torch::sigmoid(logits);
    const float w2 = (s[2] / (s[2] + s[3]) * 2.5).item<float>();
    const int64_t pos2 = r.experts[0][0].item<int64_t>() == 2 ? 0 : 1;
    EXPECT_NEAR(r.weights[0][pos2].item<float>(), w2, 1e-5);
  }
}

TEST(Moe, GradientsReachRouterAndExperts) {
  torch::manual_seed(5);
  MoeOptions o(8, 4, 4, 2);
  o.n_shared_experts(1).norm_topk_prob(true);
  Moe moe(o);
  fill_random(*moe);
  auto x = torch::randn({2, 5, 8});
  moe->forward(x).pow(2).sum().backward();
  EXPECT_TRUE(moe->gate->weight.grad().defined());
  EXPECT_GT(moe->gate->weight.grad().abs().sum().item<float>(), 0);
  EXPECT_GT(moe->shared_experts->down_proj->weight.grad().abs().sum().item<float>(), 0);
}
