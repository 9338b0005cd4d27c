// The family table: model_type -> builder, HF architecture, HF tensor names, notes.
#include "dsft/model/registry.h"

#include <regex>

#include "dsft/util/error.h"
#include "dsft/util/strings.h"

namespace dsft::model {

namespace {

std::vector<std::string> llama_tensor_names() {
  return {
      "model.embed_tokens.weight",
      "model.layers.{layer}.input_layernorm.weight",
      "model.layers.{layer}.self_attn.q_proj.weight",
      "model.layers.{layer}.self_attn.q_proj.bias",
      "model.layers.{layer}.self_attn.k_proj.weight",
      "model.layers.{layer}.self_attn.k_proj.bias",
      "model.layers.{layer}.self_attn.v_proj.weight",
      "model.layers.{layer}.self_attn.v_proj.bias",
      "model.layers.{layer}.self_attn.o_proj.weight",
      "model.layers.{layer}.self_attn.o_proj.bias",
      "model.layers.{layer}.post_attention_layernorm.weight",
      "model.layers.{layer}.mlp.gate_proj.weight",
      "model.layers.{layer}.mlp.gate_proj.bias",
      "model.layers.{layer}.mlp.up_proj.weight",
      "model.layers.{layer}.mlp.up_proj.bias",
      "model.layers.{layer}.mlp.down_proj.weight",
      "model.layers.{layer}.mlp.down_proj.bias",
      "model.norm.weight",
      "lm_head.weight",
  };
}

std::vector<std::string> qwen2_tensor_names() {
  return {
      "model.embed_tokens.weight",
      "model.layers.{layer}.input_layernorm.weight",
      "model.layers.{layer}.self_attn.q_proj.weight",
      "model.layers.{layer}.self_attn.q_proj.bias",
      "model.layers.{layer}.self_attn.k_proj.weight",
      "model.layers.{layer}.self_attn.k_proj.bias",
      "model.layers.{layer}.self_attn.v_proj.weight",
      "model.layers.{layer}.self_attn.v_proj.bias",
      "model.layers.{layer}.self_attn.o_proj.weight",
      "model.layers.{layer}.post_attention_layernorm.weight",
      "model.layers.{layer}.mlp.gate_proj.weight",
      "model.layers.{layer}.mlp.up_proj.weight",
      "model.layers.{layer}.mlp.down_proj.weight",
      "model.norm.weight",
      "lm_head.weight",
  };
}

std::vector<std::string> deepseek_tensor_names() {
  return {
      "model.embed_tokens.weight",
      "model.layers.{layer}.input_layernorm.weight",
      "model.layers.{layer}.self_attn.q_proj.weight",
      "model.layers.{layer}.self_attn.q_a_proj.weight",
      "model.layers.{layer}.self_attn.q_a_proj.bias",
      "model.layers.{layer}.self_attn.q_a_layernorm.weight",
      "model.layers.{layer}.self_attn.q_b_proj.weight",
      "model.layers.{layer}.self_attn.kv_a_proj_with_mqa.weight",
      "model.layers.{layer}.self_attn.kv_a_proj_with_mqa.bias",
      "model.layers.{layer}.self_attn.kv_a_layernorm.weight",
      "model.layers.{layer}.self_attn.kv_b_proj.weight",
      "model.layers.{layer}.self_attn.o_proj.weight",
      "model.layers.{layer}.self_attn.o_proj.bias",
      "model.layers.{layer}.post_attention_layernorm.weight",
      "model.layers.{layer}.mlp.gate_proj.weight",
      "model.layers.{layer}.mlp.up_proj.weight",
      "model.layers.{layer}.mlp.down_proj.weight",
      "model.layers.{layer}.mlp.gate.weight",
      "model.layers.{layer}.mlp.gate.e_score_correction_bias",
      "model.layers.{layer}.mlp.experts.{expert}.gate_proj.weight",
      "model.layers.{layer}.mlp.experts.{expert}.up_proj.weight",
      "model.layers.{layer}.mlp.experts.{expert}.down_proj.weight",
      "model.layers.{layer}.mlp.shared_experts.gate_proj.weight",
      "model.layers.{layer}.mlp.shared_experts.up_proj.weight",
      "model.layers.{layer}.mlp.shared_experts.down_proj.weight",
      "model.norm.weight",
      "lm_head.weight",
  };
}

}  // namespace

const std::vector<Family>& families() {
  static const std::vector<Family> table = {
      {"llama", "LlamaForCausalLM", &build_llama, llama_tensor_names(),
       "deepseek-llm 7B/67B, deepseek-coder (linear RoPE scaling), DeepSeek-R1-Distill-Llama (llama3 RoPE "
       "scaling); GQA, rotate-half RoPE, optional attention/MLP biases"},
      {"qwen2", "Qwen2ForCausalLM", &build_qwen2, qwen2_tensor_names(),
       "DeepSeek-R1-Distill-Qwen 1.5B/7B/14B/32B; GQA with q/k/v bias (no o_proj bias), rotate-half RoPE; "
       "sliding-window attention refused"},
      {"deepseek_v2", "DeepseekV2ForCausalLM", &build_deepseek, deepseek_tensor_names(),
       "DeepSeek-V2-Lite, V2, V2.5; MLA (q-LoRA optional), DeepSeekMoE with softmax greedy or "
       "group_limited_greedy routing (routed_scaling_factor only when top-k weights are not normalised), "
       "YaRN with adjacent-pair RoPE"},
      {"deepseek_v3", "DeepseekV3ForCausalLM", &build_deepseek, deepseek_tensor_names(),
       "DeepSeek-V3, R1; MLA with q-LoRA, sigmoid noaux_tc routing with e_score_correction_bias (a buffer) "
       "and "
       "group top-k, FP8 weights dequantised at load, MTP layers skipped"},
  };
  return table;
}

const Family& find_family(const std::string& model_type) {
  std::vector<std::string> names;
  for (const auto& f : families()) {
    if (f.name == model_type) return f;
    names.push_back(f.name);
  }
  throw Error("unsupported model_type \"" + model_type + "\" (supported: " + util::join(names, ", ") + ")");
}

CausalLM build_model(const ModelConfig& config, const BuildOptions& tensor_options) {
  return find_family(config.model_type).build(config, tensor_options);
}

bool matches_tensor_table(const Family& family, const std::string& name) {
  for (const auto& pattern : family.tensor_names) {
    std::string re;
    for (size_t i = 0; i < pattern.size();) {
      if (pattern.compare(i, 7, "{layer}") == 0) {
        re += "[0-9]+";
        i += 7;
      } else if (pattern.compare(i, 8, "{expert}") == 0) {
        re += "[0-9]+";
        i += 8;
      } else {
        if (pattern[i] == '.') re += '\\';
        re += pattern[i++];
      }
    }
    if (std::regex_match(name, std::regex(re))) return true;
  }
  return false;
}

}  // namespace dsft::model
