// The deepseek_v2 / deepseek_v3 family: MLA with adjacent-pair RoPE (YaRN), dense SwiGLU in the
// first first_k_dense_replace layers, DeepSeekMoE (routed + shared experts) after.
#include "dsft/model/registry.h"

namespace dsft::model {

CausalLM build_deepseek(const ModelConfig& c, const BuildOptions& topt) {
  auto rope = std::make_shared<const Rope>(RopeOptions(c.qk_rope_head_dim, c.rope_theta)
                                               .scaling(c.rope_scaling)
                                               .max_position_embeddings(c.max_position_embeddings)
                                               .layout(RopeLayout::interleaved)
                                               .deepseek_yarn(true));
  // YaRN sharpens attention by m(f, mscale_all_dim)² on top of 1/sqrt(qk_head_dim).
  double softmax_scale = 1.0 / std::sqrt(static_cast<double>(c.qk_nope_head_dim + c.qk_rope_head_dim));
  if (c.rope_scaling.type == RopeType::yarn && c.rope_scaling.mscale_all_dim != 0) {
    const double m = yarn_mscale(c.rope_scaling.factor, c.rope_scaling.mscale_all_dim);
    softmax_scale *= m * m;
  }
  const bool v3 = c.model_type == "deepseek_v3";
  auto layer = [&](int64_t l) {
    auto attn = MlaAttention(MlaOptions(c.hidden_size, c.num_attention_heads)
                                 .q_lora_rank(c.q_lora_rank)
                                 .kv_lora_rank(c.kv_lora_rank)
                                 .qk_nope_head_dim(c.qk_nope_head_dim)
                                 .qk_rope_head_dim(c.qk_rope_head_dim)
                                 .v_head_dim(c.v_head_dim)
                                 .bias(c.attention_bias)
                                 .softmax_scale(softmax_scale)
                                 .tensor_options(topt),
                             rope);
    std::shared_ptr<FeedForwardBlock> ffn;
    if (c.is_moe_layer(l)) {
      ffn = Moe(MoeOptions(c.hidden_size, c.moe_intermediate_size, c.n_routed_experts, c.num_experts_per_tok)
                    .n_shared_experts(c.n_shared_experts)
                    .topk_method(c.topk_method)
                    .scoring_func(c.scoring_func)
                    .n_group(c.n_group)
                    .topk_group(c.topk_group)
                    .norm_topk_prob(c.norm_topk_prob)
                    .routed_scaling_factor(c.routed_scaling_factor)
                    .scale_only_unnormalised(!v3)
                    .tensor_options(topt))
                .ptr();
    } else {
      ffn = Mlp(MlpOptions(c.hidden_size, c.intermediate_size).tensor_options(topt)).ptr();
    }
    return DecoderLayer(c.hidden_size, c.rms_norm_eps, attn.ptr(), ffn, topt);
  };
  return CausalLM(c, rope, layer, topt);
}

}  // namespace dsft::model
