// Speed: every figure is positive and consistent with the work done (prompts x new tokens), and
// peak memory is the process's resident peak on the CPU.
#include "dsft/eval/speed.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include "dsft/model/causal_lm.h"
#include "dsft/model/commands.h"
#include "dsft/model/config.h"
#include "dsft/model/registry.h"
#include "dsft/util/error.h"

using namespace dsft;

TEST(Speed, FiguresAreSaneForATinyModel) {
  model::CausalLM lm{nullptr};
  for (const auto& [name, text] : model::builtin_presets())
    if (name == "llama-tiny") {
      lm = model::build_model(model::parse_config(nlohmann::json::parse(text)),
                              torch::TensorOptions().dtype(torch::kFloat32));
      model::init_weights(*lm, 5);
    }
  ASSERT_TRUE(lm);
  lm->eval();
  const std::vector<std::vector<int64_t>> prompts = {{1, 5, 9, 13, 17, 21, 25, 29}, {1, 7, 3}};
  const auto s = eval::measure_speed(*lm, prompts, 6, torch::kCPU);
  EXPECT_EQ(s.prompts, 2);
  EXPECT_EQ(s.prompt_tokens, 11);
  EXPECT_EQ(s.new_tokens, 12);  // no stop token: exactly 6 per prompt
  EXPECT_GT(s.prefill_tokens_per_s, 0.0);
  EXPECT_GT(s.decode_tokens_per_s, 0.0);
  EXPECT_GT(s.time_to_first_token_ms, 0.0);
  EXPECT_LT(s.time_to_first_token_ms, 60'000.0);
  EXPECT_EQ(s.peak_memory_source, "VmHWM");
  EXPECT_GT(s.peak_memory_bytes, 1 << 20);
  EXPECT_EQ(s.device, "cpu");
  EXPECT_FALSE(lm->is_training());
  lm->train();  // the model's mode is restored after measuring
  eval::measure_speed(*lm, {{1, 2, 3}}, 2, torch::kCPU);
  EXPECT_TRUE(lm->is_training());

  const auto j = eval::to_json(s);
  for (const char* key :
       {"prefill_tokens_per_s", "decode_tokens_per_s", "time_to_first_token_ms", "peak_memory_bytes"})
    EXPECT_TRUE(j.contains(key) && j[key].is_number()) << key;

  EXPECT_THROW(eval::measure_speed(*lm, prompts, 0, torch::kCPU), UsageError);
  EXPECT_THROW(eval::measure_speed(*lm, {}, 4, torch::kCPU), Error);
}
