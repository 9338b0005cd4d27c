// Attention: the shared softmax(q kᵀ) v core (fp32 scores) and grouped-query attention as used
// by llama and qwen2, with an optional KV cache.
#include <limits>

#include "dsft/model/layers.h"

namespace dsft::model {

torch::Tensor attention_core(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                             const torch::Tensor& mask, double scale) {
  // [B, H, T, D] x [B, H, D, S] -> [B, H, T, S], in the compute dtype, then fp32 for the softmax.
  auto scores = torch::matmul(q, k.transpose(-2, -1)).to(torch::kFloat32) * scale;
  if (mask.defined()) {
    // The lowest finite value, not -inf: a fully masked row (a padding query) then gives a
    // uniform distribution instead of NaN.
    scores = scores.masked_fill(mask.logical_not(), std::numeric_limits<float>::lowest());
  }
  auto probs = torch::softmax(scores, -1).to(v.scalar_type());
  return torch::matmul(probs, v);  // [B, H, T, Dv]
}

GqaAttentionImpl::GqaAttentionImpl(GqaAttentionOptions options_, std::shared_ptr<const Rope> rope_)
    : options(std::move(options_)), rope(std::move(rope_)) {
  reset();
}

void GqaAttentionImpl::reset() {
  const auto& o = options;
  auto lin = [&](int64_t in, int64_t out, bool bias) {
    return make_linear(in, out, bias, o.tensor_options());
  };
  q_proj = register_module("q_proj", lin(o.hidden_size(), o.n_heads() * o.head_dim(), o.qkv_bias()));
  k_proj = register_module("k_proj", lin(o.hidden_size(), o.n_kv_heads() * o.head_dim(), o.qkv_bias()));
  v_proj = register_module("v_proj", lin(o.hidden_size(), o.n_kv_heads() * o.head_dim(), o.qkv_bias()));
  o_proj = register_module("o_proj", lin(o.n_heads() * o.head_dim(), o.hidden_size(), o.o_bias()));
}

torch::Tensor GqaAttentionImpl::forward(const torch::Tensor& x, const AttentionContext& ctx,
                                        LayerCache* cache) {
  const auto& o = options;
  const int64_t B = x.size(0), T = x.size(1), hd = o.head_dim();
  auto q = q_proj->forward(x).view({B, T, o.n_heads(), hd}).transpose(1, 2);     // [B, nh, T, hd]
  auto k = k_proj->forward(x).view({B, T, o.n_kv_heads(), hd}).transpose(1, 2);  // [B, nkv, T, hd]
  auto v = v_proj->forward(x).view({B, T, o.n_kv_heads(), hd}).transpose(1, 2);  // [B, nkv, T, hd]
  q = rope->apply(q, ctx.rope);
  k = rope->apply(k, ctx.rope);
  if (cache) {
    if (cache->k.defined()) {
      k = torch::cat({cache->k, k}, 2);  // [B, nkv, S, hd]
      v = torch::cat({cache->v, v}, 2);
    }
    cache->k = k;
    cache->v = v;
  }
  const int64_t n_rep = o.n_heads() / o.n_kv_heads();
  if (n_rep > 1) {
    // kv head j serves query heads j*n_rep .. j*n_rep + n_rep - 1 (repeat_interleave, not tile).
    k = k.repeat_interleave(n_rep, 1);  // [B, nh, S, hd]
    v = v.repeat_interleave(n_rep, 1);
  }
  auto out = attention_core(q, k, v, ctx.mask, 1.0 / std::sqrt(static_cast<double>(hd)));  // [B, nh, T, hd]
  return o_proj->forward(out.transpose(1, 2).reshape({B, T, o.n_heads() * hd}));
}

}  // namespace dsft::model
