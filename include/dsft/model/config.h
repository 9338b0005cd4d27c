// ModelConfig: a Hugging Face config.json read into a typed struct (every key that changes the
// math, with HF's defaults per model_type where a key is absent), validated, and written back.
// Torch-free on purpose: init, export and the CLI read configs without building a model.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace dsft::model {

// RoPE frequency scaling, as `rope_scaling` {type | rope_type, ...} in config.json.
enum class RopeType { none, linear, dynamic, llama3, yarn };

struct RopeScaling {
  RopeType type = RopeType::none;
  double factor = 1.0;
  // llama3 and yarn: the context length the base model was trained with.
  int64_t original_max_position_embeddings = 0;
  // llama3
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  // yarn
  double beta_fast = 32.0;
  double beta_slow = 1.0;
  double mscale = 1.0;
  double mscale_all_dim = 0.0;             // 0: absent (DeepSeek then keeps the plain softmax scale)
  std::optional<double> attention_factor;  // yarn on llama/qwen2: explicit cos/sin scale
};

// Expert selection of DeepSeekMoE routers.
enum class TopkMethod { greedy, group_limited_greedy, noaux_tc };
enum class ScoringFunc { softmax, sigmoid };

struct ModelConfig {
  std::string model_type;  // llama, qwen2, deepseek_v2, deepseek_v3

  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;
  int64_t head_dim = 0;  // llama/qwen2 (defaults to hidden_size / num_attention_heads)
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // llama: bias on q/k/v/o; deepseek: on the MLA projections
  bool mlp_bias = false;
  // qwen2 always has q/k/v biases and no o_proj bias; llama follows attention_bias for all four.
  bool qkv_bias = false;
  bool o_bias = false;
  bool use_sliding_window = false;  // qwen2: refused when true (see validate())
  int64_t sliding_window = 0;
  int64_t max_window_layers = 0;
  std::string hidden_act = "silu";
  double initializer_range = 0.02;
  std::optional<int64_t> bos_token_id;
  std::vector<int64_t> eos_token_ids;  // config.json may hold one id or a list
  std::optional<int64_t> pad_token_id;
  std::string torch_dtype;  // as written in config.json ("bfloat16", ...); informational

  // DeepSeek V2/V3: MLA
  std::optional<int64_t> q_lora_rank;  // null: q_proj; a number: q_a_proj -> norm -> q_b_proj
  int64_t kv_lora_rank = 0;
  int64_t qk_nope_head_dim = 0;
  int64_t qk_rope_head_dim = 0;
  int64_t v_head_dim = 0;
  // DeepSeek V2/V3: MoE (n_routed_experts 0: every layer dense)
  int64_t n_routed_experts = 0;
  int64_t n_shared_experts = 0;
  int64_t moe_intermediate_size = 0;
  int64_t num_experts_per_tok = 0;
  int64_t first_k_dense_replace = 0;
  int64_t moe_layer_freq = 1;
  TopkMethod topk_method = TopkMethod::greedy;
  ScoringFunc scoring_func = ScoringFunc::softmax;
  int64_t n_group = 1;
  int64_t topk_group = 1;
  bool norm_topk_prob = false;
  double routed_scaling_factor = 1.0;
  int64_t num_nextn_predict_layers = 0;  // V3's MTP layers, skipped at load

  // Keys of config.json this struct does not model (architectures, use_cache, ...): kept so that
  // a model written back carries them unchanged.
  nlohmann::json extra = nlohmann::json::object();

  bool is_deepseek() const { return model_type == "deepseek_v2" || model_type == "deepseek_v3"; }
  // Layer l uses the routed MoE block iff this holds (DeepSeek's rule).
  bool is_moe_layer(int64_t layer) const;
  // Attention head sizes as the blocks see them.
  int64_t qk_head_dim() const { return is_deepseek() ? qk_nope_head_dim + qk_rope_head_dim : head_dim; }
};

// The model_type values a config may name.
const std::vector<std::string>& supported_model_types();

// Parses a config.json object; `source` names the file in error messages. Validates (below).
ModelConfig parse_config(const nlohmann::json& j, const std::string& source = "config.json");
// Reads DIR/config.json (or the file itself when `path` names a file).
ModelConfig load_config(const std::string& path);

// Throws dsft::Error naming the field and the numbers when values are inconsistent
// (hidden_size not divisible by num_attention_heads, unsupported features, ...).
void validate(const ModelConfig& config, const std::string& source = "config.json");

// The HF config.json for `config` (typed fields, then the kept extra keys).
nlohmann::json to_json(const ModelConfig& config);
// Writes DIR/config.json atomically.
void save_config(const ModelConfig& config, const std::string& dir);

// Applies `key=value` overrides (numbers, booleans, null, strings, or JSON) to a config.json
// object before parsing; used by `dsft init --set`. Dotted keys reach into objects
// (rope_scaling.factor=8).
void apply_override(nlohmann::json& j, const std::string& assignment);

const char* rope_type_name(RopeType type);
const char* topk_method_name(TopkMethod method);
const char* scoring_func_name(ScoringFunc func);

}  // namespace dsft::model
