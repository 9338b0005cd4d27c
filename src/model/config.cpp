// config.json <-> ModelConfig: HF's per-model_type defaults, validation with the numbers in the
// message, and serialisation back (unmodelled keys kept verbatim).
#include "dsft/model/config.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <sstream>

#include "dsft/util/error.h"
#include "dsft/util/fs.h"
#include "dsft/util/strings.h"

namespace dsft::model {
namespace {

using json = nlohmann::json;

// Reads typed keys out of a config object and remembers which ones it consumed, so that the
// remaining keys can be kept in ModelConfig::extra.
class KeyReader {
 public:
  KeyReader(const json& j, std::string source) : j_(j), source_(std::move(source)) {}

  bool has(const std::string& key) const { return j_.contains(key) && !j_.at(key).is_null(); }
  bool present(const std::string& key) const { return j_.contains(key); }

  int64_t get_int(const std::string& key, int64_t fallback) {
    used_.insert(key);
    if (!has(key)) return fallback;
    return as_int(j_.at(key), key);
  }
  std::optional<int64_t> get_opt_int(const std::string& key, std::optional<int64_t> fallback) {
    used_.insert(key);
    if (!present(key)) return fallback;
    if (j_.at(key).is_null()) return std::nullopt;
    return as_int(j_.at(key), key);
  }
  double get_double(const std::string& key, double fallback) {
    used_.insert(key);
    if (!has(key)) return fallback;
    return as_double(j_.at(key), key);
  }
  bool get_bool(const std::string& key, bool fallback) {
    used_.insert(key);
    if (!has(key)) return fallback;
    const json& v = j_.at(key);
    if (!v.is_boolean()) fail(key, v, "a boolean");
    return v.get<bool>();
  }
  std::string get_string(const std::string& key, const std::string& fallback) {
    used_.insert(key);
    if (!has(key)) return fallback;
    const json& v = j_.at(key);
    if (!v.is_string()) fail(key, v, "a string");
    return v.get<std::string>();
  }
  const json* get_raw(const std::string& key) {
    used_.insert(key);
    return present(key) ? &j_.at(key) : nullptr;
  }

  json unused() const {
    json out = json::object();
    for (auto it = j_.begin(); it != j_.end(); ++it)
      if (!used_.count(it.key())) out[it.key()] = it.value();
    return out;
  }

  int64_t as_int(const json& v, const std::string& key) const {
    if (v.is_number_integer()) return v.get<int64_t>();
    if (v.is_number_float()) {
      double d = v.get<double>();
      if (std::floor(d) == d) return static_cast<int64_t>(d);
    }
    fail(key, v, "an integer");
  }
  double as_double(const json& v, const std::string& key) const {
    if (!v.is_number()) fail(key, v, "a number");
    return v.get<double>();
  }
  [[noreturn]] void fail(const std::string& key, const json& v, const char* expected) const {
    throw Error(source_ + ": expected " + key + " to be " + expected + " (got " + v.dump() + ")");
  }
  const std::string& source() const { return source_; }

 private:
  const json& j_;
  std::string source_;
  std::set<std::string> used_;
};

// HF's defaults per model_type (transformers' LlamaConfig / Qwen2Config and DeepSeek's remote
// configuration_deepseek.py for V2 and V3).
struct Defaults {
  int64_t vocab_size, hidden_size, intermediate_size, num_hidden_layers, num_attention_heads;
  int64_t max_position_embeddings;
  double rms_norm_eps;
  std::optional<int64_t> bos, eos;
};

Defaults defaults_for(const std::string& model_type) {
  if (model_type == "llama") return {32000, 4096, 11008, 32, 32, 2048, 1e-6, 1, 2};
  if (model_type == "qwen2") return {151936, 4096, 22016, 32, 32, 32768, 1e-6, std::nullopt, std::nullopt};
  if (model_type == "deepseek_v2") return {102400, 4096, 11008, 30, 32, 2048, 1e-6, 100000, 100001};
  return {129280, 7168, 18432, 61, 128, 4096, 1e-6, 0, 1};  // deepseek_v3
}

RopeType parse_rope_type(const std::string& name, const std::string& source) {
  if (name == "default" || name == "none") return RopeType::none;
  if (name == "linear") return RopeType::linear;
  if (name == "dynamic") return RopeType::dynamic;
  if (name == "llama3") return RopeType::llama3;
  if (name == "yarn") return RopeType::yarn;
  throw Error(source + ": unsupported rope_scaling type \"" + name +
              "\" (supported: default, linear, dynamic, llama3, yarn)");
}

RopeScaling parse_rope_scaling(const json& j, const ModelConfig& c, const std::string& source) {
  RopeScaling r;
  if (j.is_null()) return r;
  if (!j.is_object())
    throw Error(source + ": expected rope_scaling to be an object or null (got " + j.dump() + ")");
  KeyReader k(j, source + " rope_scaling");
  std::string type = k.get_string("rope_type", k.get_string("type", "default"));
  r.type = parse_rope_type(type, source);
  if (r.type == RopeType::none) return r;
  if (!k.has("factor")) throw Error(source + ": rope_scaling of type " + type + " needs a factor");
  r.factor = k.get_double("factor", 1.0);
  if (r.type == RopeType::llama3) {
    for (const char* key : {"low_freq_factor", "high_freq_factor", "original_max_position_embeddings"})
      if (!k.has(key)) throw Error(source + ": rope_scaling of type llama3 needs " + key);
    r.low_freq_factor = k.get_double("low_freq_factor", 1.0);
    r.high_freq_factor = k.get_double("high_freq_factor", 4.0);
  }
  // DeepSeek's remote code defaults the original length to 4096; HF's generic YaRN to the model's
  // max_position_embeddings.
  int64_t original_default = c.is_deepseek() ? 4096 : c.max_position_embeddings;
  r.original_max_position_embeddings = k.get_int("original_max_position_embeddings", original_default);
  r.beta_fast = k.get_double("beta_fast", 32.0);
  r.beta_slow = k.get_double("beta_slow", 1.0);
  r.mscale = k.get_double("mscale", 1.0);
  r.mscale_all_dim = k.get_double("mscale_all_dim", 0.0);
  if (k.has("attention_factor")) r.attention_factor = k.get_double("attention_factor", 1.0);
  return r;
}

TopkMethod parse_topk_method(const std::string& name, const std::string& source) {
  if (name == "greedy") return TopkMethod::greedy;
  if (name == "group_limited_greedy") return TopkMethod::group_limited_greedy;
  if (name == "noaux_tc") return TopkMethod::noaux_tc;
  throw Error(source + ": unsupported topk_method \"" + name +
              "\" (supported: greedy, group_limited_greedy, noaux_tc)");
}

ScoringFunc parse_scoring_func(const std::string& name, const std::string& source) {
  if (name == "softmax") return ScoringFunc::softmax;
  if (name == "sigmoid") return ScoringFunc::sigmoid;
  throw Error(source + ": unsupported scoring_func \"" + name + "\" (supported: softmax, sigmoid)");
}

std::string num(double v) {
  std::ostringstream s;
  s << v;
  return s.str();
}

void require(bool ok, const std::string& source, const std::string& message) {
  if (!ok) throw Error(source + ": " + message);
}

}  // namespace

const std::vector<std::string>& supported_model_types() {
  static const std::vector<std::string> types = {"llama", "qwen2", "deepseek_v2", "deepseek_v3"};
  return types;
}

bool ModelConfig::is_moe_layer(int64_t layer) const {
  return n_routed_experts > 0 && layer >= first_k_dense_replace && moe_layer_freq > 0 &&
         layer % moe_layer_freq == 0;
}

const char* rope_type_name(RopeType type) {
  switch (type) {
    case RopeType::none:
      return "default";
    case RopeType::linear:
      return "linear";
    case RopeType::dynamic:
      return "dynamic";
    case RopeType::llama3:
      return "llama3";
    case RopeType::yarn:
      return "yarn";
  }
  return "default";
}
const char* topk_method_name(TopkMethod method) {
  switch (method) {
    case TopkMethod::greedy:
      return "greedy";
    case TopkMethod::group_limited_greedy:
      return "group_limited_greedy";
    case TopkMethod::noaux_tc:
      return "noaux_tc";
  }
  return "greedy";
}
const char* scoring_func_name(ScoringFunc func) {
  return func == ScoringFunc::sigmoid ? "sigmoid" : "softmax";
}

ModelConfig parse_config(const nlohmann::json& j, const std::string& source) {
  if (!j.is_object()) throw Error(source + ": expected a JSON object");
  KeyReader k(j, source);
  ModelConfig c;
  if (!k.has("model_type"))
    throw Error(source + ": missing model_type (supported: " + util::join(supported_model_types(), ", ") +
                ")");
  c.model_type = k.get_string("model_type", "");
  const auto& types = supported_model_types();
  if (std::find(types.begin(), types.end(), c.model_type) == types.end())
    throw Error(source + ": unsupported model_type \"" + c.model_type +
                "\" (supported: " + util::join(types, ", ") + ")");
  const Defaults d = defaults_for(c.model_type);
  const bool deepseek = c.is_deepseek();

  c.vocab_size = k.get_int("vocab_size", d.vocab_size);
  c.hidden_size = k.get_int("hidden_size", d.hidden_size);
  c.intermediate_size = k.get_int("intermediate_size", d.intermediate_size);
  c.num_hidden_layers = k.get_int("num_hidden_layers", d.num_hidden_layers);
  c.num_attention_heads = k.get_int("num_attention_heads", d.num_attention_heads);
  c.num_key_value_heads = k.get_int("num_key_value_heads", c.num_attention_heads);
  require(c.num_attention_heads > 0, source,
          "expected num_attention_heads > 0 (got " + std::to_string(c.num_attention_heads) + ")");
  c.head_dim = k.get_int("head_dim", c.hidden_size / c.num_attention_heads);
  c.max_position_embeddings = k.get_int("max_position_embeddings", d.max_position_embeddings);
  c.rms_norm_eps = k.get_double("rms_norm_eps", d.rms_norm_eps);
  c.rope_theta = k.get_double("rope_theta", 10000.0);
  c.tie_word_embeddings = k.get_bool("tie_word_embeddings", false);
  c.attention_bias = k.get_bool("attention_bias", false);
  c.mlp_bias = k.get_bool("mlp_bias", false);
  if (c.model_type == "qwen2") {  // Qwen2's layers: fixed biases, whatever the config says
    c.qkv_bias = true;
    c.o_bias = false;
    c.mlp_bias = false;
  } else {
    c.qkv_bias = c.attention_bias;
    c.o_bias = c.attention_bias;
  }
  c.use_sliding_window = k.get_bool("use_sliding_window", false);
  c.sliding_window = k.get_int("sliding_window", c.model_type == "qwen2" ? 4096 : 0);
  c.max_window_layers = k.get_int("max_window_layers", c.model_type == "qwen2" ? 28 : 0);
  c.hidden_act = k.get_string("hidden_act", "silu");
  c.initializer_range = k.get_double("initializer_range", 0.02);
  c.bos_token_id = k.get_opt_int("bos_token_id", d.bos);
  c.pad_token_id = k.get_opt_int("pad_token_id", std::nullopt);
  if (const json* eos = k.get_raw("eos_token_id")) {
    if (eos->is_array()) {
      for (const auto& e : *eos) c.eos_token_ids.push_back(k.as_int(e, "eos_token_id"));
    } else if (!eos->is_null()) {
      c.eos_token_ids.push_back(k.as_int(*eos, "eos_token_id"));
    }
  } else if (d.eos) {
    c.eos_token_ids.push_back(*d.eos);
  }
  c.torch_dtype = k.get_string("torch_dtype", "");

  if (deepseek) {
    const bool v3 = c.model_type == "deepseek_v3";
    c.q_lora_rank = k.get_opt_int("q_lora_rank", 1536);
    c.kv_lora_rank = k.get_int("kv_lora_rank", 512);
    c.qk_nope_head_dim = k.get_int("qk_nope_head_dim", 128);
    c.qk_rope_head_dim = k.get_int("qk_rope_head_dim", 64);
    c.v_head_dim = k.get_int("v_head_dim", 128);
    c.n_routed_experts =
        k.get_opt_int("n_routed_experts", v3 ? std::optional<int64_t>(256) : std::nullopt).value_or(0);
    c.n_shared_experts =
        k.get_opt_int("n_shared_experts", v3 ? std::optional<int64_t>(1) : std::nullopt).value_or(0);
    c.moe_intermediate_size = k.get_int("moe_intermediate_size", v3 ? 2048 : 1407);
    c.num_experts_per_tok =
        k.get_opt_int("num_experts_per_tok", v3 ? std::optional<int64_t>(8) : std::nullopt).value_or(0);
    c.first_k_dense_replace = k.get_int("first_k_dense_replace", v3 ? 3 : 0);
    c.moe_layer_freq = k.get_int("moe_layer_freq", 1);
    c.topk_method = parse_topk_method(k.get_string("topk_method", v3 ? "noaux_tc" : "greedy"), source);
    c.scoring_func = parse_scoring_func(k.get_string("scoring_func", v3 ? "sigmoid" : "softmax"), source);
    c.n_group = k.get_opt_int("n_group", v3 ? std::optional<int64_t>(8) : std::nullopt).value_or(1);
    c.topk_group = k.get_opt_int("topk_group", v3 ? std::optional<int64_t>(4) : std::nullopt).value_or(1);
    c.norm_topk_prob = k.get_bool("norm_topk_prob", v3);
    c.routed_scaling_factor = k.get_double("routed_scaling_factor", v3 ? 2.5 : 1.0);
    c.num_nextn_predict_layers = k.get_int("num_nextn_predict_layers", 0);
  }

  // Read after max_position_embeddings and model_type: the defaults of YaRN depend on them.
  if (const json* rs = k.get_raw("rope_scaling")) c.rope_scaling = parse_rope_scaling(*rs, c, source);

  c.extra = k.unused();
  validate(c, source);
  return c;
}

ModelConfig load_config(const std::string& path) {
  std::string file = path;
  if (!util::ends_with(path, ".json")) file = path + "/config.json";
  if (!util::path_exists(file))
    throw Error("no config.json in " + path + " (expected a Hugging Face model directory)");
  json j;
  try {
    j = json::parse(util::read_file(file));
  } catch (const json::parse_error& e) {
    throw Error(file + ": not valid JSON (" + e.what() + ")");
  }
  return parse_config(j, file);
}

void validate(const ModelConfig& c, const std::string& source) {
  auto positive = [&](const char* key, int64_t v) {
    require(v > 0, source, std::string("expected ") + key + " > 0 (got " + std::to_string(v) + ")");
  };
  positive("vocab_size", c.vocab_size);
  positive("hidden_size", c.hidden_size);
  positive("intermediate_size", c.intermediate_size);
  positive("num_hidden_layers", c.num_hidden_layers);
  positive("num_attention_heads", c.num_attention_heads);
  positive("max_position_embeddings", c.max_position_embeddings);
  require(c.rms_norm_eps > 0, source, "expected rms_norm_eps > 0 (got " + num(c.rms_norm_eps) + ")");
  require(c.rope_theta > 1, source, "expected rope_theta > 1 (got " + num(c.rope_theta) + ")");
  require(c.hidden_act == "silu", source,
          "unsupported hidden_act \"" + c.hidden_act + "\" (supported: silu)");

  if (!c.is_deepseek()) {
    positive("num_key_value_heads", c.num_key_value_heads);
    positive("head_dim", c.head_dim);
    // Only an implied head_dim (hidden_size / heads) needs the division to be exact.
    if (c.hidden_size % c.num_attention_heads != 0 && c.head_dim == c.hidden_size / c.num_attention_heads)
      throw Error(source + ": expected hidden_size divisible by num_attention_heads (got " +
                  std::to_string(c.hidden_size) + " / " + std::to_string(c.num_attention_heads) + ")");
    require(c.num_attention_heads % c.num_key_value_heads == 0, source,
            "expected num_attention_heads divisible by num_key_value_heads (got " +
                std::to_string(c.num_attention_heads) + " / " + std::to_string(c.num_key_value_heads) + ")");
    require(c.head_dim % 2 == 0, source,
            "expected an even head_dim for rotary embeddings (got " + std::to_string(c.head_dim) + ")");
  }
  if (c.use_sliding_window)
    throw Error(source +
                ": use_sliding_window is true, and sliding-window attention is not supported "
                "(the DeepSeek-R1 distills set it to false; set it to false if the model was trained "
                "without it)");

  const RopeScaling& r = c.rope_scaling;
  if (r.type != RopeType::none)
    require(r.factor > 0, source, "expected rope_scaling.factor > 0 (got " + num(r.factor) + ")");
  if (r.type == RopeType::llama3)
    require(r.high_freq_factor > r.low_freq_factor && r.low_freq_factor > 0, source,
            "expected 0 < rope_scaling.low_freq_factor < high_freq_factor (got " + num(r.low_freq_factor) +
                ", " + num(r.high_freq_factor) + ")");
  if (r.type == RopeType::llama3 || r.type == RopeType::yarn)
    positive("rope_scaling.original_max_position_embeddings", r.original_max_position_embeddings);

  if (c.is_deepseek()) {
    if (c.q_lora_rank) positive("q_lora_rank", *c.q_lora_rank);
    positive("kv_lora_rank", c.kv_lora_rank);
    positive("qk_nope_head_dim", c.qk_nope_head_dim);
    positive("qk_rope_head_dim", c.qk_rope_head_dim);
    positive("v_head_dim", c.v_head_dim);
    require(c.qk_rope_head_dim % 2 == 0, source,
            "expected an even qk_rope_head_dim (got " + std::to_string(c.qk_rope_head_dim) + ")");
    require(c.num_nextn_predict_layers >= 0, source, "expected num_nextn_predict_layers >= 0");
    if (c.n_routed_experts > 0) {
      positive("moe_intermediate_size", c.moe_intermediate_size);
      positive("num_experts_per_tok", c.num_experts_per_tok);
      positive("moe_layer_freq", c.moe_layer_freq);
      positive("n_group", c.n_group);
      require(c.num_experts_per_tok <= c.n_routed_experts, source,
              "expected num_experts_per_tok <= n_routed_experts (got " +
                  std::to_string(c.num_experts_per_tok) + " > " + std::to_string(c.n_routed_experts) + ")");
      require(c.n_shared_experts >= 0, source, "expected n_shared_experts >= 0");
      if (c.topk_method != TopkMethod::greedy) {
        require(c.n_routed_experts % c.n_group == 0, source,
                "expected n_routed_experts divisible by n_group (got " + std::to_string(c.n_routed_experts) +
                    " / " + std::to_string(c.n_group) + ")");
        require(c.topk_group >= 1 && c.topk_group <= c.n_group, source,
                "expected 1 <= topk_group <= n_group (got topk_group " + std::to_string(c.topk_group) +
                    ", n_group " + std::to_string(c.n_group) + ")");
        const int64_t per_group = c.n_routed_experts / c.n_group;
        require(c.num_experts_per_tok <= c.topk_group * per_group, source,
                "expected num_experts_per_tok <= topk_group * experts per group (got " +
                    std::to_string(c.num_experts_per_tok) + " > " + std::to_string(c.topk_group) + " * " +
                    std::to_string(per_group) + ")");
        if (c.topk_method == TopkMethod::noaux_tc)
          require(
              per_group >= 2, source,
              "noaux_tc scores a group by its two best experts, so it needs >= 2 experts per group (got " +
                  std::to_string(c.n_routed_experts) + " experts in " + std::to_string(c.n_group) +
                  " groups)");
      }
    }
  }
}

nlohmann::json to_json(const ModelConfig& c) {
  json j = json::object();
  if (!c.extra.contains("architectures")) {
    static const std::map<std::string, std::string> arch = {{"llama", "LlamaForCausalLM"},
                                                            {"qwen2", "Qwen2ForCausalLM"},
                                                            {"deepseek_v2", "DeepseekV2ForCausalLM"},
                                                            {"deepseek_v3", "DeepseekV3ForCausalLM"}};
    j["architectures"] = json::array({arch.at(c.model_type)});
  }
  j["model_type"] = c.model_type;
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["num_hidden_layers"] = c.num_hidden_layers;
  j["num_attention_heads"] = c.num_attention_heads;
  j["num_key_value_heads"] = c.num_key_value_heads;
  if (!c.is_deepseek()) j["head_dim"] = c.head_dim;
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["rms_norm_eps"] = c.rms_norm_eps;
  j["rope_theta"] = c.rope_theta;
  const RopeScaling& r = c.rope_scaling;
  if (r.type == RopeType::none) {
    j["rope_scaling"] = nullptr;
  } else {
    json rs = {{r.type == RopeType::llama3 ? "rope_type" : "type", rope_type_name(r.type)},
               {"factor", r.factor}};
    if (r.type == RopeType::llama3) {
      rs["low_freq_factor"] = r.low_freq_factor;
      rs["high_freq_factor"] = r.high_freq_factor;
      rs["original_max_position_embeddings"] = r.original_max_position_embeddings;
    }
    if (r.type == RopeType::yarn) {
      rs["original_max_position_embeddings"] = r.original_max_position_embeddings;
      rs["beta_fast"] = r.beta_fast;
      rs["beta_slow"] = r.beta_slow;
      rs["mscale"] = r.mscale;
      rs["mscale_all_dim"] = r.mscale_all_dim;
      if (r.attention_factor) rs["attention_factor"] = *r.attention_factor;
    }
    j["rope_scaling"] = rs;
  }
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  if (c.model_type != "qwen2") j["attention_bias"] = c.attention_bias;
  if (c.model_type == "llama") j["mlp_bias"] = c.mlp_bias;
  if (c.model_type == "qwen2") {
    j["use_sliding_window"] = c.use_sliding_window;
    j["sliding_window"] = c.sliding_window;
    j["max_window_layers"] = c.max_window_layers;
  }
  j["hidden_act"] = c.hidden_act;
  j["initializer_range"] = c.initializer_range;
  j["bos_token_id"] = c.bos_token_id ? json(*c.bos_token_id) : json(nullptr);
  if (c.eos_token_ids.size() == 1) {
    j["eos_token_id"] = c.eos_token_ids[0];
  } else if (c.eos_token_ids.empty()) {
    j["eos_token_id"] = nullptr;
  } else {
    j["eos_token_id"] = c.eos_token_ids;
  }
  if (c.pad_token_id) j["pad_token_id"] = *c.pad_token_id;
  if (!c.torch_dtype.empty()) j["torch_dtype"] = c.torch_dtype;
  if (c.is_deepseek()) {
    j["q_lora_rank"] = c.q_lora_rank ? json(*c.q_lora_rank) : json(nullptr);
    j["kv_lora_rank"] = c.kv_lora_rank;
    j["qk_nope_head_dim"] = c.qk_nope_head_dim;
    j["qk_rope_head_dim"] = c.qk_rope_head_dim;
    j["v_head_dim"] = c.v_head_dim;
    auto opt = [](int64_t v) { return v > 0 ? json(v) : json(nullptr); };
    j["n_routed_experts"] = opt(c.n_routed_experts);
    j["n_shared_experts"] = opt(c.n_shared_experts);
    j["moe_intermediate_size"] = c.moe_intermediate_size;
    j["num_experts_per_tok"] = opt(c.num_experts_per_tok);
    j["first_k_dense_replace"] = c.first_k_dense_replace;
    j["moe_layer_freq"] = c.moe_layer_freq;
    j["topk_method"] = topk_method_name(c.topk_method);
    j["scoring_func"] = scoring_func_name(c.scoring_func);
    j["n_group"] = c.n_group;
    j["topk_group"] = c.topk_group;
    j["norm_topk_prob"] = c.norm_topk_prob;
    j["routed_scaling_factor"] = c.routed_scaling_factor;
    j["num_nextn_predict_layers"] = c.num_nextn_predict_layers;
  }
  for (auto it = c.extra.begin(); it != c.extra.end(); ++it) j[it.key()] = it.value();
  return j;
}

void save_config(const ModelConfig& config, const std::string& dir) {
  util::write_file_atomic(dir + "/config.json", to_json(config).dump(2) + "\n");
}

void apply_override(nlohmann::json& j, const std::string& assignment) {
  const size_t eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0)
    throw UsageError("expected key=value in --set (got \"" + assignment + "\")");
  const std::string key = util::trim(assignment.substr(0, eq));
  const std::string text = util::trim(assignment.substr(eq + 1));
  json value;
  try {
    value = json::parse(text);  // numbers, true/false, null, arrays, objects, quoted strings
  } catch (const json::parse_error&) {
    value = text;  // a bare word: a string
  }
  json* target = &j;
  const auto parts = util::split(key, '.');
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    json& next = (*target)[parts[i]];
    if (next.is_null()) next = json::object();
    if (!next.is_object())
      throw UsageError("cannot set " + key + ": " + parts[i] + " is not an object (it is " + next.dump() +
                       ")");
    target = &next;
  }
  (*target)[parts.back()] = value;
}

}  // namespace dsft::model
