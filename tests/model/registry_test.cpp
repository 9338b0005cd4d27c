// Every family, every time: a tiny random model per registry row runs forward and backward with
// finite gradients everywhere, its parameter names are HF names, and save -> reload gives
// bit-identical logits. Also: load errors name the offending keys; masks and positions behave.
#include "dsft/model/registry.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "dsft/model/commands.h"
#include "dsft/model/load.h"
#include "dsft/util/error.h"
#include "dsft/util/fs.h"

namespace fs = std::filesystem;
using namespace dsft;

namespace {

std::string temp_dir(const std::string& name) {
  auto p = fs::temp_directory_path() / ("dsft_model_test_" + std::to_string(::getpid()) + "_" + name);
  fs::remove_all(p);
  return p.string();
}

model::ModelConfig tiny_config(const std::string& arch) {
  for (const auto& [name, text] : model::builtin_presets())
    if (name == arch + "-tiny") return model::parse_config(nlohmann::json::parse(text));
  throw std::runtime_error("no tiny preset for " + arch);
}

}  // namespace

TEST(Registry, FamiliesMatchSupportedModelTypes) {
  std::vector<std::string> names;
  for (const auto& f : model::families()) names.push_back(f.name);
  EXPECT_EQ(names, model::supported_model_types());
  EXPECT_THROW(model::find_family("gpt2"), dsft::Error);
}

TEST(Registry, EveryFamilyForwardBackwardSaveReload) {
  for (const auto& family : model::families()) {
    SCOPED_TRACE(family.name);
    auto config = tiny_config(family.name);
    auto lm = family.build(config, torch::TensorOptions().dtype(torch::kFloat32));
    model::init_weights(*lm, 7);
    for (const auto& [name, t] : lm->state_tensors())
      EXPECT_TRUE(model::matches_tensor_table(family, name)) << name;

    auto ids = torch::randint(0, config.vocab_size, {2, 9}, torch::kInt64);
    auto logits = lm->forward(ids);
    ASSERT_EQ(logits.sizes(), (std::vector<int64_t>{2, 9, config.vocab_size}));
    EXPECT_EQ(logits.scalar_type(), torch::kFloat32);
    // next-token loss, then gradients on every trainable parameter
    auto loss = torch::nn::functional::cross_entropy(logits.narrow(1, 0, 8).reshape({-1, config.vocab_size}),
                                                     ids.narrow(1, 1, 8).reshape({-1}));
    loss.backward();
    int with_grad = 0;
    for (const auto& p : lm->named_parameters()) {
      if (!p.value().requires_grad()) continue;
      const auto& g = p.value().grad();
      // An expert no token was routed to has no gradient this step; everything else must.
      if (!g.defined()) {
        EXPECT_NE(p.key().find(".experts."), std::string::npos) << p.key() << " got no gradient";
        continue;
      }
      EXPECT_TRUE(torch::isfinite(g).all().item<bool>()) << p.key();
      ++with_grad;
    }
    EXPECT_GT(with_grad, 10);

    const std::string dir = temp_dir(family.name);
    model::save_model(*lm, dir);
    auto again = model::load_model(dir);
    torch::NoGradGuard no_grad;
    EXPECT_TRUE(torch::equal(again->forward(ids), lm->forward(ids)));
    // bf16 round trip loads too (weights cast once)
    model::SaveOptions bf;
    bf.dtype = torch::kBFloat16;
    model::save_model(*lm, dir, bf);
    auto low = model::load_model(dir, {torch::kBFloat16, torch::kCPU});
    auto low_logits = low->forward(ids);
    EXPECT_TRUE(torch::isfinite(low_logits).all().item<bool>());
    fs::remove_all(dir);
  }
}

TEST(Registry, TiedEmbeddingsShareTheMatrix) {
  auto config = tiny_config("llama");
  config.tie_word_embeddings = true;
  auto lm = model::build_model(config);
  model::init_weights(*lm, 1);
  EXPECT_FALSE(lm->lm_head);
  for (const auto& [name, t] : lm->state_tensors()) EXPECT_NE(name, "lm_head.weight");
  auto ids = torch::randint(0, config.vocab_size, {1, 4}, torch::kInt64);
  torch::NoGradGuard no_grad;
  auto h = lm->hidden_states(ids);
  EXPECT_TRUE(torch::allclose(lm->forward(ids), torch::matmul(h, lm->model->embed_tokens->weight.t())));
}

TEST(Load, MismatchedCheckpointNamesKeys) {
  auto config = tiny_config("llama");
  auto lm = model::build_model(config);
  model::init_weights(*lm, 2);
  const std::string dir = temp_dir("mismatch");
  model::save_model(*lm, dir);
  // one layer fewer in the config: layer 1's tensors are unexpected
  auto j = nlohmann::json::parse(util::read_file(dir + "/config.json"));
  j["num_hidden_layers"] = 1;
  util::write_file_atomic(dir + "/config.json", j.dump());
  try {
    model::load_model(dir);
    ADD_FAILURE() << "expected an error";
  } catch (const dsft::Error& e) {
    EXPECT_NE(std::string(e.what()).find("unexpected 9 tensors (model.layers.1."), std::string::npos)
        << e.what();
  }
  // a wider MLP in the config: shape mismatch names the tensor and both shapes
  j["num_hidden_layers"] = 2;
  j["intermediate_size"] = 256;
  util::write_file_atomic(dir + "/config.json", j.dump());
  try {
    model::load_model(dir);
    ADD_FAILURE() << "expected an error";
  } catch (const dsft::Error& e) {
    EXPECT_NE(std::string(e.what()).find("mlp.down_proj.weight has shape [64, 128]"), std::string::npos)
        << e.what();
  }
  // untied config over a tied checkpoint: lm_head.weight is missing
  j["intermediate_size"] = 128;
  util::write_file_atomic(dir + "/config.json", j.dump());
  config.tie_word_embeddings = true;
  auto tied = model::build_model(config);
  model::init_weights(*tied, 2);
  model::save_model(*tied, dir);
  j["tie_word_embeddings"] = false;
  util::write_file_atomic(dir + "/config.json", j.dump());
  try {
    model::load_model(dir);
    ADD_FAILURE() << "expected an error";
  } catch (const dsft::Error& e) {
    EXPECT_NE(std::string(e.what()).find("missing 1 tensors (lm_head.weight)"), std::string::npos)
        << e.what();
  }
  fs::remove_all(dir);
}

TEST(Forward, DocumentMaskEqualsSeparateSequences) {
  auto config = tiny_config("deepseek_v3");
  auto lm = model::build_model(config);
  model::init_weights(*lm, 3);
  torch::NoGradGuard no_grad;
  auto a = torch::randint(0, config.vocab_size, {1, 5}, torch::kInt64);
  auto b = torch::randint(0, config.vocab_size, {1, 4}, torch::kInt64);
  auto packed = torch::cat({a, b}, 1);
  model::ForwardOptions opt;
  opt.attention_mask = model::document_mask(torch::tensor({{0, 0, 0, 0, 0, 1, 1, 1, 1}}));
  opt.position_ids = torch::tensor({{0, 1, 2, 3, 4, 0, 1, 2, 3}});
  auto got = lm->forward(packed, opt);
  auto want = torch::cat({lm->forward(a), lm->forward(b)}, 1);
  EXPECT_TRUE(torch::allclose(got, want, 1e-5, 1e-6)) << (got - want).abs().max().item<float>();
  // without the mask the second document sees the first
  EXPECT_FALSE(torch::allclose(lm->forward(packed).narrow(1, 5, 4), want.narrow(1, 5, 4), 1e-5, 1e-6));
}

TEST(Forward, BadInputsAreErrors) {
  auto config = tiny_config("qwen2");
  auto lm = model::build_model(config);
  model::init_weights(*lm, 4);
  torch::NoGradGuard no_grad;
  EXPECT_THROW(lm->forward(torch::tensor({{int64_t{0}, config.vocab_size}})), dsft::Error);
  EXPECT_THROW(lm->forward(torch::zeros({3}, torch::kInt64)), dsft::Error);
  model::ForwardOptions opt;
  opt.attention_mask = torch::ones({1, 7});
  EXPECT_THROW(lm->forward(torch::zeros({1, 3}, torch::kInt64), opt), dsft::Error);
}

TEST(Init, PresetsSeedsAndOverwriteGuard) {
  const std::string dir = temp_dir("init");
  model::InitRequest r;
  r.arch = "deepseek_v2";
  r.preset = "tiny";
  r.output_dir = dir;
  r.seed = 11;
  r.overrides = {"vocab_size=300"};
  auto c = model::run_init(r);
  EXPECT_EQ(c.vocab_size, 300);
  EXPECT_TRUE(fs::exists(dir + "/generation_config.json"));
  auto a = model::load_model(dir);
  EXPECT_EQ(model::load_config(dir).torch_dtype, "bfloat16");
  EXPECT_THROW(model::run_init(r), dsft::Error);  // not empty
  r.force = true;
  model::run_init(r);
  auto b = model::load_model(dir);
  torch::NoGradGuard no_grad;
  auto ids = torch::randint(0, 300, {1, 6}, torch::kInt64);
  EXPECT_TRUE(torch::equal(a->forward(ids), b->forward(ids)));  // same seed, same model
  r.preset = "huge";
  EXPECT_THROW(model::run_init(r), dsft::Error);
  for (const char* arch : {"llama", "qwen2", "deepseek_v2", "deepseek_v3"})
    for (const auto& p : model::preset_names(arch)) {
      for (const auto& [name, text] : model::builtin_presets())
        if (name == std::string(arch) + "-" + p) {
          EXPECT_NO_THROW(model::parse_config(nlohmann::json::parse(text))) << name;
        }
    }
  fs::remove_all(dir);
}
