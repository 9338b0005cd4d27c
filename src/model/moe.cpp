// DeepSeekMoE: the fp32 router (greedy / group_limited_greedy / noaux_tc selection over softmax or
// sigmoid scores) and grouped expert dispatch: tokens are bucketed by expert so every expert runs
// once on all of its tokens (index_select in, index_add_ out).
#include <limits>

#include "dsft/model/layers.h"

namespace dsft::model {

namespace F = torch::nn::functional;

MoeGateImpl::MoeGateImpl(MoeOptions options_) : options(std::move(options_)) {
  reset();
}

void MoeGateImpl::reset() {
  const auto& o = options;
  weight =
      register_parameter("weight", torch::empty({o.n_routed_experts(), o.hidden_size()}, o.tensor_options()));
  if (o.topk_method() == TopkMethod::noaux_tc) {
    // A buffer, not a parameter: the load-balancing bias is adjusted outside gradient descent.
    e_score_correction_bias =
        register_buffer("e_score_correction_bias",
                        torch::zeros({o.n_routed_experts()}, o.tensor_options().dtype(torch::kFloat32)));
  }
}

Routing MoeGateImpl::forward(const torch::Tensor& x) {
  const auto& o = options;
  const int64_t N = x.size(0), E = o.n_routed_experts(), K = o.top_k();
  const auto acc = accumulation_dtype(x.scalar_type());
  auto logits = F::linear(x.to(acc), weight.to(acc));  // [N, E]
  auto scores =
      o.scoring_func() == ScoringFunc::softmax ? torch::softmax(logits, -1) : torch::sigmoid(logits);

  torch::Tensor chosen;  // int64 [N, K]
  {
    torch::NoGradGuard no_grad;  // the choice itself is not differentiable
    auto choice = scores.detach();
    if (o.topk_method() == TopkMethod::noaux_tc) choice = choice + e_score_correction_bias.to(acc);
    if (o.topk_method() != TopkMethod::greedy && o.n_group() > 1) {
      auto grouped = choice.view({N, o.n_group(), E / o.n_group()});  // [N, G, E/G]
      // group score: the best expert (V2) or the sum of the two best biased scores (V3)
      auto group_scores = o.topk_method() == TopkMethod::noaux_tc ? std::get<0>(grouped.topk(2, -1)).sum(-1)
                                                                  : std::get<0>(grouped.max(-1));  // [N, G]
      auto keep_groups = std::get<1>(group_scores.topk(o.topk_group(), -1));  // [N, topk_group]
      auto group_mask =
          torch::zeros_like(group_scores, torch::kBool).scatter_(1, keep_groups, true);  // [N, G]
      auto expert_mask = group_mask.unsqueeze(-1).expand({N, o.n_group(), E / o.n_group()}).reshape({N, E});
      choice = choice.masked_fill(expert_mask.logical_not(), -std::numeric_limits<float>::infinity());
    }
    chosen = std::get<1>(choice.topk(K, -1));  // [N, K]
  }
  auto weights = scores.gather(1, chosen);  // [N, K], the unbiased scores
  const bool normalise = K > 1 && o.norm_topk_prob();
  if (normalise) weights = weights / (weights.sum(-1, /*keepdim=*/true) + 1e-20);
  if (!(normalise && o.scale_only_unnormalised())) weights = weights * o.routed_scaling_factor();
  return {chosen, weights};
}

MoeImpl::MoeImpl(MoeOptions options_) : options(std::move(options_)) {
  reset();
}

void MoeImpl::reset() {
  const auto& o = options;
  experts = register_module("experts", torch::nn::ModuleList());
  for (int64_t e = 0; e < o.n_routed_experts(); ++e)
    experts->push_back(
        Mlp(MlpOptions(o.hidden_size(), o.moe_intermediate_size()).tensor_options(o.tensor_options())));
  gate = register_module("gate", MoeGate(o));
  if (o.n_shared_experts() > 0) {
    shared_experts = register_module(
        "shared_experts", Mlp(MlpOptions(o.hidden_size(), o.moe_intermediate_size() * o.n_shared_experts())
                                  .tensor_options(o.tensor_options())));
  }
  expert_list.clear();
  for (const auto& m : *experts) expert_list.push_back(std::dynamic_pointer_cast<MlpImpl>(m));
}

torch::Tensor moe_dispatch(const torch::Tensor& x, const Routing& routing,
                           const std::vector<std::shared_ptr<MlpImpl>>& experts) {
  const int64_t N = x.size(0), K = routing.experts.size(1), E = static_cast<int64_t>(experts.size());
  auto flat = routing.experts.reshape({-1});   // [N*K], slot s belongs to token s / K
  auto order = flat.argsort();                 // slots grouped by expert
  auto token_of_slot = order.div(K, "floor");  // [N*K]
  auto weight_of_slot = routing.weights.reshape({-1}).index_select(0, order);  // [N*K] fp32
  // One host sync for the bucket sizes; each expert then runs once on a contiguous slice.
  auto counts_t = torch::bincount(flat, /*weights=*/{}, E).to(torch::kCPU);
  const int64_t* counts = counts_t.data_ptr<int64_t>();
  const auto acc = accumulation_dtype(x.scalar_type());
  auto out = torch::zeros({N, x.size(1)}, x.options().dtype(acc));
  int64_t start = 0;
  for (int64_t e = 0; e < E; ++e) {
    const int64_t n = counts[e];
    if (n == 0) continue;
    auto tokens = token_of_slot.narrow(0, start, n);          // [n]
    auto y = experts[e]->forward(x.index_select(0, tokens));  // [n, H]
    out.index_add_(0, tokens, y.to(acc) * weight_of_slot.narrow(0, start, n).unsqueeze(1));
    start += n;
  }
  return out.to(x.scalar_type());
}

torch::Tensor MoeImpl::forward(const torch::Tensor& x) {
  const auto shape = x.sizes().vec();
  auto flat = x.reshape({-1, options.hidden_size()});  // [N, H]
  auto routing = gate->forward(flat);
  auto y = moe_dispatch(flat, routing, expert_list);
  if (shared_experts) y = y + shared_experts->forward(flat);
  return y.view(shape);
}

}  // namespace dsft::model
