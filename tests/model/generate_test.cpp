// generate(): on a tiny random model of every family, greedy decoding with the KV cache gives the
// tokens that greedy decoding by full forwards over the whole sequence gives; sampling is
// reproducible per seed; top-k 1 and a tiny top-p are greedy; a stop id ends generation.
#include "dsft/model/generate.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "dsft/model/causal_lm.h"
#include "dsft/model/commands.h"
#include "dsft/model/registry.h"
#include "dsft/util/error.h"

using namespace dsft;

namespace {

model::ModelConfig tiny_config(const std::string& arch) {
  for (const auto& [name, text] : model::builtin_presets())
    if (name == arch + "-tiny") return model::parse_config(nlohmann::json::parse(text));
  throw std::runtime_error("no tiny preset for " + arch);
}

model::CausalLM tiny_model(const model::Family& family) {
  auto config = tiny_config(family.name);
  auto lm = family.build(config, torch::TensorOptions().dtype(torch::kFloat32));
  model::init_weights(*lm, 11);
  // Random weights of N(0, 0.02) give nearly flat logits; a larger spread keeps the argmax
  // clear of float rounding and makes the continuation depend on the whole context.
  torch::NoGradGuard no_grad;
  for (auto& p : lm->parameters())
    if (p.dim() == 2) p.mul_(8.0);
  lm->eval();
  return lm;
}

// Greedy decoding the slow way: the whole sequence through the model at every step, no cache.
std::vector<int64_t> greedy_without_cache(model::CausalLMImpl& lm, std::vector<int64_t> seq, int64_t n) {
  torch::NoGradGuard no_grad;
  std::vector<int64_t> out;
  for (int64_t i = 0; i < n; ++i) {
    auto logits = lm.forward(torch::tensor(seq, torch::kInt64).unsqueeze(0));
    const int64_t next = logits[0][-1].argmax().item<int64_t>();
    out.push_back(next);
    seq.push_back(next);
  }
  return out;
}

const std::vector<int64_t> kPrompt = {1, 17, 250, 3, 99, 42, 7};

}  // namespace

TEST(Generate, GreedyWithCacheEqualsFullForwardsForEveryFamily) {
  for (const auto& family : model::families()) {
    SCOPED_TRACE(family.name);
    auto lm = tiny_model(family);
    model::GenerateOptions o;
    o.max_new_tokens = 20;
    std::vector<int64_t> streamed;
    auto got = model::generate(*lm, kPrompt, o, [&](int64_t t) { streamed.push_back(t); });
    auto want = greedy_without_cache(*lm, kPrompt, 20);
    EXPECT_EQ(got, want);
    EXPECT_EQ(streamed, got);
    // A continuation that is one token repeated would not show a cache that loses context.
    EXPECT_GT(std::set<int64_t>(want.begin(), want.end()).size(), 1u);
  }
}

TEST(Generate, SamplingIsReproducibleAndSeedDependent) {
  auto lm = tiny_model(model::families().front());
  model::GenerateOptions o;
  o.max_new_tokens = 24;
  o.temperature = 2.0;
  o.seed = 5;
  auto a = model::generate(*lm, kPrompt, o);
  auto b = model::generate(*lm, kPrompt, o);
  EXPECT_EQ(a, b);
  ASSERT_EQ(a.size(), 24u);
  o.seed = 6;
  EXPECT_NE(model::generate(*lm, kPrompt, o), a);
  // Sampling at a high temperature is not greedy decoding.
  model::GenerateOptions greedy;
  greedy.max_new_tokens = 24;
  EXPECT_NE(model::generate(*lm, kPrompt, greedy), a);
}

TEST(Generate, TopKOneAndTinyTopPAreGreedy) {
  auto lm = tiny_model(model::families().front());
  model::GenerateOptions greedy;
  greedy.max_new_tokens = 16;
  const auto want = model::generate(*lm, kPrompt, greedy);
  model::GenerateOptions k1 = greedy;
  k1.temperature = 1.5;
  k1.top_k = 1;
  k1.seed = 3;
  EXPECT_EQ(model::generate(*lm, kPrompt, k1), want);
  model::GenerateOptions p = greedy;
  p.temperature = 1.5;
  p.top_p = 1e-6;
  p.seed = 4;
  EXPECT_EQ(model::generate(*lm, kPrompt, p), want);
  // A moderate top-k still samples (differs from greedy for some seed) but only among the k best.
  model::GenerateOptions k5 = greedy;
  k5.temperature = 3.0;
  k5.top_k = 5;
  bool differs = false;
  for (uint64_t seed = 0; seed < 4 && !differs; ++seed) {
    k5.seed = seed;
    differs = model::generate(*lm, kPrompt, k5) != want;
  }
  EXPECT_TRUE(differs);
}

TEST(Generate, StopIdEndsGenerationAndIsNotReturned) {
  auto lm = tiny_model(model::families().front());
  model::GenerateOptions o;
  o.max_new_tokens = 16;
  const auto full = model::generate(*lm, kPrompt, o);
  ASSERT_EQ(full.size(), 16u);
  const int64_t stop = full[5];
  o.stop_ids = {stop};
  const auto cut = model::generate(*lm, kPrompt, o);
  const auto first = std::find(full.begin(), full.end(), stop) - full.begin();
  EXPECT_EQ(cut, std::vector<int64_t>(full.begin(), full.begin() + first));
  o.max_new_tokens = 0;
  EXPECT_TRUE(model::generate(*lm, kPrompt, o).empty());
}

TEST(Generate, BadInputsAreErrors) {
  auto lm = tiny_model(model::families().front());
  model::GenerateOptions o;
  EXPECT_THROW(model::generate(*lm, {}, o), dsft::Error);
  EXPECT_THROW(model::generate(*lm, {1, lm->config().vocab_size}, o), dsft::Error);
  o.top_p = 0.0;
  EXPECT_THROW(model::generate(*lm, kPrompt, o), dsft::Error);
  o.top_p = 1.0;
  o.temperature = -1.0;
  EXPECT_THROW(model::generate(*lm, kPrompt, o), dsft::Error);
}
