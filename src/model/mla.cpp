// Multi-head latent attention (DeepSeek V2/V3) in the naive form used for training: the latent
// c_kv is expanded to per-head K/V by kv_b_proj. The cache keeps the latent (normalised c_kv and
// rotated k_pe), which is what the absorbed decoding form needs as well.
#include "dsft/model/layers.h"

namespace dsft::model {

namespace {
// DeepSeek's code builds q_a_layernorm / kv_a_layernorm with the RMSNorm default, not rms_norm_eps.
constexpr double kLatentNormEps = 1e-6;
}  // namespace

MlaAttentionImpl::MlaAttentionImpl(MlaOptions options_, std::shared_ptr<const Rope> rope_)
    : options(std::move(options_)), rope(std::move(rope_)) {
  reset();
}

void MlaAttentionImpl::reset() {
  const auto& o = options;
  const auto& topt = o.tensor_options();
  auto lin = [&](int64_t in, int64_t out, bool bias) {
    return make_linear(in, out, bias, topt);
  };
  const int64_t qk_head_dim = o.qk_nope_head_dim() + o.qk_rope_head_dim();
  if (o.q_lora_rank()) {
    const int64_t r = *o.q_lora_rank();
    q_a_proj = register_module("q_a_proj", lin(o.hidden_size(), r, o.bias()));
    q_a_layernorm =
        register_module("q_a_layernorm", RMSNorm(RMSNormOptions(r).eps(kLatentNormEps).tensor_options(topt)));
    q_b_proj = register_module("q_b_proj", lin(r, o.n_heads() * qk_head_dim, false));
  } else {
    q_proj = register_module("q_proj", lin(o.hidden_size(), o.n_heads() * qk_head_dim, false));
  }
  kv_a_proj_with_mqa = register_module(
      "kv_a_proj_with_mqa", lin(o.hidden_size(), o.kv_lora_rank() + o.qk_rope_head_dim(), o.bias()));
  kv_a_layernorm = register_module(
      "kv_a_layernorm", RMSNorm(RMSNormOptions(o.kv_lora_rank()).eps(kLatentNormEps).tensor_options(topt)));
  kv_b_proj = register_module(
      "kv_b_proj", lin(o.kv_lora_rank(), o.n_heads() * (o.qk_nope_head_dim() + o.v_head_dim()), false));
  o_proj = register_module("o_proj", lin(o.n_heads() * o.v_head_dim(), o.hidden_size(), o.bias()));
}

torch::Tensor MlaAttentionImpl::forward(const torch::Tensor& x, const AttentionContext& ctx,
                                        LayerCache* cache) {
  const auto& o = options;
  const int64_t B = x.size(0), T = x.size(1), nh = o.n_heads();
  const int64_t nope = o.qk_nope_head_dim(), rd = o.qk_rope_head_dim(), vd = o.v_head_dim();

  auto q =
      o.q_lora_rank() ? q_b_proj->forward(q_a_layernorm->forward(q_a_proj->forward(x))) : q_proj->forward(x);
  q = q.view({B, T, nh, nope + rd}).transpose(1, 2);          // [B, nh, T, nope + rope]
  auto q_nope = q.narrow(-1, 0, nope);                        // [B, nh, T, nope]
  auto q_pe = rope->apply(q.narrow(-1, nope, rd), ctx.rope);  // [B, nh, T, rope]

  auto compressed = kv_a_proj_with_mqa->forward(x);  // [B, T, kv_lora_rank + rope]
  auto c_kv = kv_a_layernorm->forward(compressed.narrow(-1, 0, o.kv_lora_rank()));  // [B, T, kv_lora_rank]
  auto k_pe = compressed.narrow(-1, o.kv_lora_rank(), rd).unsqueeze(1);  // [B, 1, T, rope]: one shared head
  k_pe = rope->apply(k_pe, ctx.rope);
  if (cache) {
    if (cache->k.defined()) {
      c_kv = torch::cat({cache->k, c_kv}, 1);  // [B, S, kv_lora_rank]
      k_pe = torch::cat({cache->v, k_pe}, 2);  // [B, 1, S, rope]
    }
    cache->k = c_kv;
    cache->v = k_pe;
  }
  const int64_t S = c_kv.size(1);
  auto kv = kv_b_proj->forward(c_kv).view({B, S, nh, nope + vd}).transpose(1, 2);  // [B, nh, S, nope + v]
  auto k_nope = kv.narrow(-1, 0, nope);                                            // [B, nh, S, nope]
  auto v = kv.narrow(-1, nope, vd);                                                // [B, nh, S, v]

  auto q_full = torch::cat({q_nope, q_pe}, -1);                         // [B, nh, T, nope + rope]
  auto k_full = torch::cat({k_nope, k_pe.expand({B, nh, S, rd})}, -1);  // [B, nh, S, nope + rope]
  const double scale =
      o.softmax_scale() > 0 ? o.softmax_scale() : 1.0 / std::sqrt(static_cast<double>(nope + rd));
  auto out = attention_core(q_full, k_full, v, ctx, scale);  // [B, nh, T, v]
  return o_proj->forward(out.transpose(1, 2).reshape({B, T, nh * vd}));
}

}  // namespace dsft::model
