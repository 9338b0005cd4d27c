// The qwen2 family (DeepSeek-R1-Distill-Qwen): llama's layer exactly, with biases on q/k/v and
// none on o_proj or the MLP. Those differences live in the config (parse_config sets qkv_bias /
// o_bias / mlp_bias for qwen2), so the builder is llama's; sliding-window attention is refused
// at parse time. The family keeps its own row in the registry for its tensor names.
#include "dsft/model/registry.h"

namespace dsft::model {

CausalLM build_qwen2(const ModelConfig& c, const BuildOptions& topt) {
  return build_llama(c, topt);
}

}  // namespace dsft::model
