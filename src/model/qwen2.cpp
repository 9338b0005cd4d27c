// The qwen2 family (DeepSeek-R1-Distill-Qwen): llama's layer with q/k/v biases and no o_proj bias
// (set by the config parser), rotate-half RoPE. Sliding-window attention is refused at parse time.
#include "dsft/model/registry.h"

namespace dsft::model {

CausalLM build_qwen2(const ModelConfig& c, const BuildOptions& topt) {
  auto rope = std::make_shared<const Rope>(RopeOptions(c.head_dim, c.rope_theta)
                                               .scaling(c.rope_scaling)
                                               .max_position_embeddings(c.max_position_embeddings)
                                               .layout(RopeLayout::rotate_half));
  auto layer = [&](int64_t) {
    auto attn = GqaAttention(
        GqaAttentionOptions(c.hidden_size, c.num_attention_heads, c.num_key_value_heads, c.head_dim)
            .qkv_bias(true)
            .o_bias(false)
            .tensor_options(topt),
        rope);
    auto mlp = Mlp(MlpOptions(c.hidden_size, c.intermediate_size).tensor_options(topt));
    return DecoderLayer(c.hidden_size, c.rms_norm_eps, attn.ptr(), mlp.ptr(), topt);
  };
  return CausalLM(c, rope, layer, topt);
}

}  // namespace dsft::model
