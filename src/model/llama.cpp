// The llama family (deepseek-llm, deepseek-coder, R1-Distill-Llama): GQA attention with
// rotate-half RoPE (any scaling type) and a SwiGLU MLP in every layer.
#include "dsft/model/registry.h"

namespace dsft::model {

CausalLM build_llama(const ModelConfig& c, const BuildOptions& topt) {
  auto rope = std::make_shared<const Rope>(RopeOptions(c.head_dim, c.rope_theta)
                                               .scaling(c.rope_scaling)
                                               .max_position_embeddings(c.max_position_embeddings)
                                               .layout(RopeLayout::rotate_half));
  auto layer = [&](int64_t) {
    auto attn = GqaAttention(
        GqaAttentionOptions(c.hidden_size, c.num_attention_heads, c.num_key_value_heads, c.head_dim)
            .qkv_bias(c.qkv_bias)
            .o_bias(c.o_bias)
            .tensor_options(topt),
        rope);
    auto mlp = Mlp(MlpOptions(c.hidden_size, c.intermediate_size).bias(c.mlp_bias).tensor_options(topt));
    return DecoderLayer(c.hidden_size, c.rms_norm_eps, attn.ptr(), mlp.ptr(), topt);
  };
  return CausalLM(c, rope, layer, topt);
}

}  // namespace dsft::model
