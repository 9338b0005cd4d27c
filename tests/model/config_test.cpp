// ModelConfig: HF defaults, every fixture config parses, errors name the field and the numbers,
// and config.json round-trips.
#include "dsft/model/config.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "dsft/util/error.h"

using namespace dsft;
using json = nlohmann::json;

namespace {

std::string error_of(const json& j) {
  try {
    model::parse_config(j);
  } catch (const dsft::Error& e) {
    return e.what();
  }
  return "";
}

json llama() {
  return {{"model_type", "llama"},  {"hidden_size", 64},        {"intermediate_size", 128},
          {"num_hidden_layers", 2}, {"num_attention_heads", 4}, {"vocab_size", 320}};
}

}  // namespace

TEST(Config, UnsupportedModelTypeListsSupported) {
  auto j = llama();
  j["model_type"] = "mistral";
  const std::string e = error_of(j);
  EXPECT_NE(e.find("mistral"), std::string::npos) << e;
  for (const char* t : {"llama", "qwen2", "deepseek_v2", "deepseek_v3"})
    EXPECT_NE(e.find(t), std::string::npos) << e;
}

TEST(Config, HiddenNotDivisibleByHeads) {
  auto j = llama();
  j["hidden_size"] = 100;
  j["num_attention_heads"] = 3;
  const std::string e = error_of(j);
  EXPECT_NE(e.find("100 / 3"), std::string::npos) << e;
}

TEST(Config, HeadsNotDivisibleByKvHeads) {
  auto j = llama();
  j["num_key_value_heads"] = 3;
  const std::string e = error_of(j);
  EXPECT_NE(e.find("num_key_value_heads"), std::string::npos) << e;
  EXPECT_NE(e.find("4 / 3"), std::string::npos) << e;
}

TEST(Config, BadValuesAreErrors) {
  auto j = llama();
  j["hidden_act"] = "gelu";
  EXPECT_NE(error_of(j).find("gelu"), std::string::npos);
  j = llama();
  j["rope_scaling"] = {{"type", "su"}, {"factor", 2.0}};
  EXPECT_NE(error_of(j).find("su"), std::string::npos);
  j = llama();
  j["num_attention_heads"] = "four";
  EXPECT_NE(error_of(j).find("num_attention_heads"), std::string::npos);
  j = {{"model_type", "qwen2"}, {"use_sliding_window", true}};
  EXPECT_NE(error_of(j).find("use_sliding_window"), std::string::npos);
  j = {{"model_type", "deepseek_v3"}, {"n_routed_experts", 10}, {"n_group", 4}};
  EXPECT_NE(error_of(j).find("10 / 4"), std::string::npos) << error_of(j);
  j = {{"model_type", "deepseek_v3"}, {"topk_method", "random"}};
  EXPECT_NE(error_of(j).find("noaux_tc"), std::string::npos);
}

TEST(Config, HfDefaults) {
  auto c = model::parse_config(llama());
  EXPECT_EQ(c.num_key_value_heads, 4);
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_EQ(c.rope_theta, 10000.0);
  EXPECT_EQ(c.rope_scaling.type, model::RopeType::none);
  EXPECT_FALSE(c.qkv_bias);
  auto q = model::parse_config({{"model_type", "qwen2"}});
  EXPECT_TRUE(q.qkv_bias);
  EXPECT_FALSE(q.o_bias);
  auto v3 = model::parse_config({{"model_type", "deepseek_v3"}});
  EXPECT_EQ(v3.n_routed_experts, 256);
  EXPECT_EQ(v3.topk_method, model::TopkMethod::noaux_tc);
  EXPECT_EQ(v3.q_lora_rank.value_or(0), 1536);
  EXPECT_TRUE(v3.is_moe_layer(3));
  EXPECT_FALSE(v3.is_moe_layer(2));
  auto v2 = model::parse_config({{"model_type", "deepseek_v2"}, {"q_lora_rank", nullptr}});
  EXPECT_FALSE(v2.q_lora_rank.has_value());
  EXPECT_EQ(v2.n_routed_experts, 0);  // null in HF's defaults: dense
  auto eos = llama();
  eos["eos_token_id"] = {128001, 128008, 128009};
  EXPECT_EQ(model::parse_config(eos).eos_token_ids.size(), 3u);
}

TEST(Config, EveryFixtureParsesAndRoundTrips) {
  namespace fs = std::filesystem;
  int n = 0;
  for (const auto& e : fs::directory_iterator(fs::path(DSFT_FIXTURES_DIR) / "models")) {
    auto c = model::load_config(e.path().string());
    auto again = model::parse_config(model::to_json(c));
    EXPECT_EQ(model::to_json(again), model::to_json(c)) << e.path();
    EXPECT_EQ(again.rope_scaling.type, c.rope_scaling.type);
    EXPECT_EQ(again.extra, c.extra);
    ++n;
  }
  EXPECT_GE(n, 8);
  auto ll3 = model::load_config(std::string(DSFT_FIXTURES_DIR) + "/models/llama3-rope");
  EXPECT_EQ(ll3.rope_scaling.type, model::RopeType::llama3);
  EXPECT_EQ(ll3.rope_scaling.original_max_position_embeddings, 8192);
  auto v2 = model::load_config(std::string(DSFT_FIXTURES_DIR) + "/models/deepseek-v2-lite-tiny");
  EXPECT_EQ(v2.rope_scaling.type, model::RopeType::yarn);
  EXPECT_DOUBLE_EQ(v2.rope_scaling.mscale_all_dim, 0.707);
  EXPECT_EQ(v2.extra["architectures"][0], "DeepseekV2ForCausalLM");
}

TEST(Config, Overrides) {
  auto j = llama();
  model::apply_override(j, "vocab_size=1000");
  model::apply_override(j, "rope_scaling.factor=8");
  model::apply_override(j, "rope_scaling.type=linear");
  model::apply_override(j, "tie_word_embeddings=true");
  auto c = model::parse_config(j);
  EXPECT_EQ(c.vocab_size, 1000);
  EXPECT_EQ(c.rope_scaling.type, model::RopeType::linear);
  EXPECT_EQ(c.rope_scaling.factor, 8.0);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_THROW(model::apply_override(j, "novalue"), dsft::Error);
}
