// Injection by PEFT's target rules on a nested module tree; freezing; quantising a whole model.
#include "dsft/peft/inject.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <set>
#include <string>
#include <vector>

#include "dsft/util/error.h"
#include "tiny_model.h"

namespace dsft::peft {
namespace {

using testing::TinyLm;

std::vector<std::string> adapted_paths(torch::nn::Module& root) {
  std::vector<std::string> out;
  for_each_linear(root, [&](const std::string& path, LinearImpl& lin) {
    if (lin.has_lora()) out.push_back(path);
  });
  return out;
}

std::set<std::string> trainable(torch::nn::Module& root) {
  std::set<std::string> out;
  for (const auto& p : root.named_parameters()) {
    if (p.value().requires_grad()) out.insert(p.key());
  }
  return out;
}

LoraConfig config_for(std::vector<std::string> targets) {
  LoraConfig c;
  c.r = 2;
  c.lora_alpha = 4;
  c.target_modules = std::move(targets);
  return c;
}

TEST(ModulePaths, PeftMatchingRules) {
  EXPECT_TRUE(module_path_matches("model.layers.0.self_attn.q_proj", "q_proj"));
  EXPECT_TRUE(module_path_matches("q_proj", "q_proj"));
  EXPECT_TRUE(module_path_matches("model.layers.0.self_attn.q_proj", "self_attn.q_proj"));
  EXPECT_FALSE(module_path_matches("model.layers.0.self_attn.q_proj", "proj"));
  EXPECT_FALSE(module_path_matches("model.layers.0.self_attn.xq_proj", "q_proj"));
  EXPECT_EQ(module_leaf_name("model.layers.0.mlp.up_proj"), "up_proj");
  EXPECT_EQ(module_leaf_name("lm_head"), "lm_head");
}

TEST(ForEachLinear, FindsNestedPathsInOrder) {
  TinyLm lm;
  std::vector<std::string> paths;
  for_each_linear(*lm, [&](const std::string& path, LinearImpl&) { paths.push_back(path); });
  ASSERT_EQ(paths.size(), 2u * 7 + 1);
  EXPECT_EQ(paths[0], "model.layers.0.self_attn.q_proj");
  EXPECT_EQ(paths[6], "model.layers.0.mlp.down_proj");
  EXPECT_EQ(paths[7], "model.layers.1.self_attn.q_proj");
  EXPECT_EQ(paths.back(), "lm_head");
  // The module itself, if a Linear, is visited with the empty path.
  Linear lone(3, 3);
  int seen = 0;
  for_each_linear(*lone, [&](const std::string& path, LinearImpl&) { seen += path.empty(); });
  EXPECT_EQ(seen, 1);
}

TEST(Inject, ByLeafNames) {
  torch::manual_seed(20);
  TinyLm lm;
  InjectionResult res = inject_lora(*lm, config_for({"q_proj", "v_proj"}));
  const std::vector<std::string> expected = {
      "model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj", "model.layers.1.self_attn.q_proj",
      "model.layers.1.self_attn.v_proj"};
  EXPECT_EQ(res.adapted, expected);
  EXPECT_EQ(adapted_paths(*lm), expected);
  std::set<std::string> want;
  for (const auto& p : expected) {
    want.insert(p + ".lora_A.weight");
    want.insert(p + ".lora_B.weight");
  }
  EXPECT_EQ(trainable(*lm), want);
  EXPECT_TRUE(lm->named_parameters().contains("model.layers.1.self_attn.v_proj.lora_B.weight"));
  EXPECT_TRUE(lm->named_parameters().contains("model.layers.1.self_attn.v_proj.weight"));
}

TEST(Inject, ByFullPathAndRegex) {
  TinyLm a;
  inject_lora(*a, config_for({"model.layers.1.self_attn.q_proj"}));
  EXPECT_EQ(adapted_paths(*a), std::vector<std::string>{"model.layers.1.self_attn.q_proj"});

  TinyLm b;
  LoraConfig c = config_for({});
  c.target_modules_regex = R"(model\.layers\.1\..*(q|up)_proj)";
  inject_lora(*b, c);
  EXPECT_EQ(adapted_paths(*b),
            (std::vector<std::string>{"model.layers.1.self_attn.q_proj", "model.layers.1.mlp.up_proj"}));
}

TEST(Inject, AllLinearSkipsLmHead) {
  TinyLm lm;
  InjectionResult res = inject_lora(*lm, config_for({"all-linear"}));
  EXPECT_EQ(res.adapted.size(), 14u);
  EXPECT_FALSE(lm->lm_head->has_lora());
  EXPECT_EQ(res.config.target_modules, (std::vector<std::string>{"down_proj", "gate_proj", "k_proj", "o_proj",
                                                                 "q_proj", "up_proj", "v_proj"}));
}

TEST(Inject, NothingMatchingIsAnErrorThatNamesTheLayers) {
  TinyLm lm;
  try {
    inject_lora(*lm, config_for({"proj", "query_key_value"}));
    FAIL() << "expected an error";
  } catch (const dsft::Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("matched no linear layer"), std::string::npos) << msg;
    EXPECT_NE(msg.find("q_proj"), std::string::npos) << msg;
  }
  EXPECT_TRUE(adapted_paths(*lm).empty());
}

TEST(Inject, NonLinearTargetsAreRejectedBeforeAnyChange) {
  TinyLm lm;
  EXPECT_THROW(inject_lora(*lm, config_for({"q_proj", "self_attn"})), dsft::Error);
  EXPECT_THROW(inject_lora(*lm, config_for({"q_proj", "embed_tokens"})), dsft::Error);
  EXPECT_TRUE(adapted_paths(*lm).empty());
  // A torch::nn::Linear cannot take an adapter: the error says which module and what it is.
  struct Holder : torch::nn::Module {
    Holder() { register_module("q_proj", torch::nn::Linear(4, 4)); }
  } holder;
  try {
    inject_lora(holder, config_for({"q_proj"}));
    FAIL() << "expected an error";
  } catch (const dsft::Error& e) {
    EXPECT_NE(std::string(e.what()).find("torch::nn::LinearImpl"), std::string::npos) << e.what();
  }
}

TEST(Inject, BiasModes) {
  TinyLm none;
  inject_lora(*none, config_for({"q_proj"}));
  for (const auto& name : trainable(*none)) EXPECT_EQ(name.find("bias"), std::string::npos) << name;

  TinyLm lora_only;
  LoraConfig c = config_for({"q_proj"});
  c.bias = "lora_only";
  inject_lora(*lora_only, c);
  std::set<std::string> biases;
  for (const auto& name : trainable(*lora_only)) {
    if (name.find("bias") != std::string::npos) biases.insert(name);
  }
  EXPECT_EQ(biases, (std::set<std::string>{"model.layers.0.self_attn.q_proj.bias",
                                           "model.layers.1.self_attn.q_proj.bias"}));

  TinyLm all;
  c.bias = "all";
  inject_lora(*all, c);
  int n_bias = 0;
  for (const auto& p : all->named_parameters()) {
    if (module_leaf_name(p.key()) == "bias") {
      EXPECT_TRUE(p.value().requires_grad()) << p.key();
      ++n_bias;
    }
  }
  EXPECT_EQ(n_bias, 2 * 4);  // q, k, v and up_proj in each layer

  c.bias = "some";
  TinyLm bad;
  EXPECT_THROW(inject_lora(*bad, c), dsft::Error);
}

TEST(Inject, ModulesToSaveAndRankPattern) {
  TinyLm lm;
  LoraConfig c = config_for({"q_proj", "v_proj"});
  c.modules_to_save = {"lm_head"};
  c.rank_pattern = {{"v_proj", 4}};
  c.alpha_pattern = {{"layers\\.1\\.self_attn\\.q_proj", 10.0}};
  inject_lora(*lm, c);
  EXPECT_TRUE(lm->lm_head->weight.requires_grad());
  EXPECT_FALSE(lm->model->embed_tokens->weight.requires_grad());
  auto* v = lm->model->layers[0]->as<testing::TinyLayerImpl>()->self_attn->v_proj.get();
  auto* q0 = lm->model->layers[0]->as<testing::TinyLayerImpl>()->self_attn->q_proj.get();
  auto* q1 = lm->model->layers[1]->as<testing::TinyLayerImpl>()->self_attn->q_proj.get();
  EXPECT_EQ(v->lora_A->weight.size(0), 4);
  EXPECT_EQ(q0->lora_A->weight.size(0), 2);
  EXPECT_DOUBLE_EQ(v->lora_scale(), 1.0);   // 4 / 4
  EXPECT_DOUBLE_EQ(q0->lora_scale(), 2.0);  // 4 / 2
  EXPECT_DOUBLE_EQ(q1->lora_scale(), 5.0);  // 10 / 2
}

TEST(Inject, FreshAdaptersKeepTheModelFunctionAndTheSwitchRestoresIt) {
  torch::manual_seed(21);
  TinyLm lm;
  torch::Tensor ids = torch::randint(0, 11, {2, 5});
  torch::Tensor before = lm(ids);
  inject_lora(*lm, config_for({"all-linear"}));
  EXPECT_TRUE(torch::equal(lm(ids), before));
  for_each_linear(*lm, [](const std::string&, LinearImpl& lin) {
    if (!lin.has_lora()) return;
    torch::NoGradGuard no_grad;
    lin.lora_B->weight.normal_(0, 0.2);
  });
  EXPECT_FALSE(torch::allclose(lm(ids), before));
  set_adapters_enabled(*lm, false);
  EXPECT_TRUE(torch::equal(lm(ids), before));
  set_adapters_enabled(*lm, true);
  // Training reaches every adapter.
  lm(ids).pow(2).mean().backward();
  for_each_linear(*lm, [](const std::string& path, LinearImpl& lin) {
    if (!lin.has_lora()) return;
    ASSERT_TRUE(lin.lora_A->weight.grad().defined()) << path;
    EXPECT_GT(lin.lora_A->weight.grad().abs().sum().item<double>(), 0.0) << path;
  });
  // Merging folds the adapters into the weights: same function, no adapters left.
  torch::Tensor tuned = lm(ids);
  merge_adapters(*lm);
  EXPECT_TRUE(adapted_paths(*lm).empty());
  EXPECT_TRUE(torch::allclose(lm(ids), tuned, 1e-5, 1e-5));
}

TEST(Inject, QuantisedModelTrainsAdaptersOnly) {
  torch::manual_seed(22);
  TinyLm lm(/*d=*/64, /*n_layer=*/1, /*bias=*/false);
  torch::Tensor ids = torch::randint(0, 11, {2, 4});
  std::vector<std::string> q = quantize_linears(*lm, BaseFormat::nf4, {64, true});
  EXPECT_EQ(q.size(), 7u);
  EXPECT_FALSE(lm->lm_head->is_quantized());
  torch::Tensor before = lm(ids);
  inject_lora(*lm, config_for({"q_proj", "down_proj"}));
  EXPECT_TRUE(torch::equal(lm(ids), before));
  ParameterCount count = count_parameters(*lm);
  // Trainable: q_proj 2*(64+64), down_proj 2*(24+64).
  EXPECT_EQ(count.trainable, 2 * 128 + 2 * 88);
  const int64_t base = 64 * 64 * 2 + 64 * 32 * 2 + 64 * 24 * 3 + 24 /* up_proj bias */ + 11 * 64 * 2;
  EXPECT_EQ(count.total, base + count.trainable);
}

}  // namespace
}  // namespace dsft::peft
