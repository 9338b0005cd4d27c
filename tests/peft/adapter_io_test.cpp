// PEFT adapter directories: key names, config fields, file modes, round trip, and the checks that
// refuse an adapter made for another base model without touching the model.
#include "dsft/peft/adapter_io.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "dsft/io/safetensors.h"
#include "dsft/peft/inject.h"
#include "dsft/util/error.h"
#include "dsft/util/fs.h"
#include "tiny_model.h"

namespace dsft::peft {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using testing::TinyLm;

class AdapterIo : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("dsft_peft_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string dir() const { return dir_.string(); }
  fs::path dir_;
};

LoraConfig qv_config() {
  LoraConfig c;
  c.r = 4;
  c.lora_alpha = 8;
  c.lora_dropout = 0.05;
  c.target_modules = {"q_proj", "v_proj"};
  return c;
}

// A trained-looking adapter: both factors random.
void randomise(torch::nn::Module& root) {
  torch::NoGradGuard no_grad;
  for_each_linear(root, [](const std::string&, LinearImpl& lin) {
    if (!lin.has_lora()) return;
    lin.lora_A->weight.normal_(0, 0.3);
    lin.lora_B->weight.normal_(0, 0.3);
  });
}

bool any_adapter(torch::nn::Module& root) {
  bool any = false;
  for_each_linear(root, [&](const std::string&, LinearImpl& lin) { any |= lin.has_lora(); });
  return any;
}

json read_json(const std::string& path) {
  return json::parse(util::read_file(path));
}

void write_json(const std::string& path, const json& j) {
  std::ofstream(path) << j.dump(2);
}

TEST_F(AdapterIo, KeysShapesAndConfigAreThoseOfPeft) {
  torch::manual_seed(30);
  TinyLm lm;
  inject_lora(*lm, qv_config());
  save_adapter(*lm, qv_config(), dir(), "deepseek-ai/deepseek-coder-1.3b-base");

  auto file = io::SafetensorsFile::open(dir() + "/adapter_model.safetensors");
  std::set<std::string> keys;
  for (const auto& [name, view] : file->tensors()) keys.insert(name);
  std::set<std::string> expected;
  for (int layer = 0; layer < 2; ++layer) {
    for (const char* proj : {"q_proj", "v_proj"}) {
      const std::string base =
          "base_model.model.model.layers." + std::to_string(layer) + ".self_attn." + proj;
      expected.insert(base + ".lora_A.weight");
      expected.insert(base + ".lora_B.weight");
    }
  }
  EXPECT_EQ(keys, expected);
  const auto& a = file->at("base_model.model.model.layers.1.self_attn.v_proj.lora_A.weight");
  const auto& b = file->at("base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight");
  EXPECT_EQ(a.shape, (std::vector<int64_t>{4, 16}));
  EXPECT_EQ(b.shape, (std::vector<int64_t>{8, 4}));
  EXPECT_EQ(a.dtype, io::DType::F32);
  EXPECT_EQ(file->metadata().at("format"), "pt");

  json cfg = read_json(dir() + "/adapter_config.json");
  EXPECT_EQ(cfg["peft_type"], "LORA");
  EXPECT_EQ(cfg["task_type"], "CAUSAL_LM");
  EXPECT_EQ(cfg["base_model_name_or_path"], "deepseek-ai/deepseek-coder-1.3b-base");
  EXPECT_EQ(cfg["r"], 4);
  EXPECT_TRUE(cfg["lora_alpha"].is_number_integer());
  EXPECT_EQ(cfg["lora_alpha"], 8);
  EXPECT_DOUBLE_EQ(cfg["lora_dropout"].get<double>(), 0.05);
  EXPECT_EQ(cfg["target_modules"], json({"q_proj", "v_proj"}));
  EXPECT_EQ(cfg["bias"], "none");
  EXPECT_EQ(cfg["use_rslora"], false);
  EXPECT_TRUE(cfg["modules_to_save"].is_null());
  EXPECT_EQ(cfg["fan_in_fan_out"], false);
  EXPECT_EQ(cfg["init_lora_weights"], true);
  EXPECT_EQ(cfg["inference_mode"], true);
  EXPECT_TRUE(cfg["revision"].is_null());
  EXPECT_TRUE(cfg["layers_to_transform"].is_null());
  EXPECT_EQ(cfg["rank_pattern"], json::object());
  EXPECT_EQ(cfg["alpha_pattern"], json::object());
  EXPECT_TRUE(cfg["peft_version"].is_string());

  for (const char* name : {"adapter_model.safetensors", "adapter_config.json"}) {
    struct stat st;
    ASSERT_EQ(::stat((dir() + "/" + name).c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600) << name;
  }
}

TEST_F(AdapterIo, RoundTripReproducesTheTunedModel) {
  torch::manual_seed(31);
  TinyLm tuned;
  LoraConfig c = qv_config();
  c.use_rslora = true;
  c.modules_to_save = {"lm_head"};
  c.rank_pattern = {{"v_proj", 2}};
  inject_lora(*tuned, c);
  randomise(*tuned);
  {
    torch::NoGradGuard no_grad;
    tuned->lm_head->weight.add_(0.5);  // a trained modules_to_save layer
  }
  tuned->eval();
  torch::Tensor ids = torch::randint(0, 11, {3, 6});
  torch::Tensor expected = tuned(ids);
  save_adapter(*tuned, c, dir(), "tiny");
  auto file = io::SafetensorsFile::open(dir() + "/adapter_model.safetensors");
  EXPECT_TRUE(file->contains("base_model.model.lm_head.weight"));
  EXPECT_EQ(file->at("base_model.model.model.layers.0.self_attn.v_proj.lora_A.weight").shape[0], 2);

  // The same base weights (same seed), no adapter yet.
  torch::manual_seed(31);
  TinyLm fresh;
  fresh->eval();
  EXPECT_FALSE(torch::allclose(fresh(ids), expected));
  AdapterInfo info = load_adapter(*fresh, dir());
  EXPECT_EQ(info.base_model_name_or_path, "tiny");
  EXPECT_EQ(info.modules.size(), 4u);
  EXPECT_TRUE(info.config.use_rslora);
  EXPECT_EQ(info.config.rank_pattern.at("v_proj"), 2);
  EXPECT_TRUE(torch::equal(fresh(ids), expected));
  EXPECT_TRUE(fresh->lm_head->weight.requires_grad());
  EXPECT_FALSE(fresh->model->embed_tokens->weight.requires_grad());
}

TEST_F(AdapterIo, Bf16AdaptersKeepTheirDtypeOnDisk) {
  torch::manual_seed(32);
  TinyLm lm;
  inject_lora(*lm, qv_config());
  randomise(*lm);
  for_each_linear(*lm, [](const std::string&, LinearImpl& lin) {
    if (lin.has_lora()) {
      lin.lora_A->to(torch::kBFloat16);
      lin.lora_B->to(torch::kBFloat16);
    }
  });
  save_adapter(*lm, qv_config(), dir(), "");
  auto file = io::SafetensorsFile::open(dir() + "/adapter_model.safetensors");
  EXPECT_EQ(file->at("base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight").dtype,
            io::DType::BF16);
  EXPECT_TRUE(read_adapter_config(dir()).base_model_name_or_path.empty());
  torch::manual_seed(32);
  TinyLm fresh;
  load_adapter(*fresh, dir());
  // Loaded into float32 adapters (PEFT's default): the bf16 values exactly.
  auto* q = fresh->model->layers[0]->as<testing::TinyLayerImpl>()->self_attn->q_proj.get();
  auto* q_src = lm->model->layers[0]->as<testing::TinyLayerImpl>()->self_attn->q_proj.get();
  EXPECT_EQ(q->lora_B->weight.scalar_type(), torch::kFloat32);
  EXPECT_TRUE(torch::equal(q->lora_B->weight, q_src->lora_B->weight.to(torch::kFloat32)));
}

TEST_F(AdapterIo, AnotherBaseModelIsRefusedBeforeAnyChange) {
  torch::manual_seed(33);
  TinyLm lm(/*d=*/16, /*n_layer=*/2);
  inject_lora(*lm, qv_config());
  save_adapter(*lm, qv_config(), dir(), "tiny-16");

  TinyLm wider(/*d=*/32, /*n_layer=*/2);
  try {
    load_adapter(*wider, dir());
    FAIL() << "expected an error";
  } catch (const dsft::Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("another base model"), std::string::npos) << msg;
    EXPECT_NE(msg.find("tiny-16"), std::string::npos) << msg;
  }
  EXPECT_FALSE(any_adapter(*wider));

  TinyLm shallower(/*d=*/16, /*n_layer=*/1);
  try {
    load_adapter(*shallower, dir());
    FAIL() << "expected an error";
  } catch (const dsft::Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.layers.1.self_attn"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("no such module"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(any_adapter(*shallower));

  // A deeper model has targeted layers the file lacks.
  TinyLm deeper(/*d=*/16, /*n_layer=*/3);
  EXPECT_THROW(load_adapter(*deeper, dir()), dsft::Error);
  EXPECT_FALSE(any_adapter(*deeper));
}

TEST_F(AdapterIo, ConfigAndWeightsMustAgree) {
  torch::manual_seed(34);
  TinyLm lm;
  inject_lora(*lm, qv_config());
  save_adapter(*lm, qv_config(), dir(), "");
  const std::string cfg_path = dir() + "/adapter_config.json";
  const json good = read_json(cfg_path);

  json wrong_rank = good;
  wrong_rank["r"] = 8;
  write_json(cfg_path, wrong_rank);
  TinyLm a;
  EXPECT_THROW(load_adapter(*a, dir()), dsft::Error);
  EXPECT_FALSE(any_adapter(*a));

  json more_targets = good;
  more_targets["target_modules"] = json({"q_proj", "v_proj", "k_proj"});
  write_json(cfg_path, more_targets);
  try {
    TinyLm b;
    load_adapter(*b, dir());
    FAIL() << "expected an error";
  } catch (const dsft::Error& e) {
    EXPECT_NE(std::string(e.what()).find("k_proj"), std::string::npos) << e.what();
  }

  for (const auto& [key, value] :
       std::vector<std::pair<std::string, json>>{{"peft_type", "PREFIX_TUNING"},
                                                 {"use_dora", true},
                                                 {"fan_in_fan_out", true},
                                                 {"layers_to_transform", json({0})},
                                                 {"r", "four"},
                                                 {"bias", "some"}}) {
    json bad = good;
    bad[key] = value;
    write_json(cfg_path, bad);
    TinyLm c;
    EXPECT_THROW(load_adapter(*c, dir()), dsft::Error) << key;
    EXPECT_FALSE(any_adapter(*c)) << key;
  }
  std::ofstream(cfg_path) << "{not json";
  TinyLm d;
  EXPECT_THROW(load_adapter(*d, dir()), dsft::Error);
  fs::remove(cfg_path);
  EXPECT_THROW(load_adapter(*d, dir()), dsft::Error);
}

TEST_F(AdapterIo, ReadsAConfigAsPeftWritesIt) {
  // The shape of adapter_config.json from PEFT 0.13 (extra keys dsft does not use are ignored).
  const json peft = json::parse(R"({
    "alpha_pattern": {}, "auto_mapping": null,
    "base_model_name_or_path": "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", "bias": "none",
    "fan_in_fan_out": false, "inference_mode": true, "init_lora_weights": true,
    "layer_replication": null, "layers_pattern": null, "layers_to_transform": null,
    "loftq_config": {}, "lora_alpha": 32, "lora_dropout": 0.1, "megatron_config": null,
    "megatron_core": "megatron.core", "modules_to_save": null, "peft_type": "LORA", "r": 16,
    "rank_pattern": {}, "revision": null, "target_modules": ["v_proj", "q_proj"],
    "task_type": "CAUSAL_LM", "use_dora": false, "use_rslora": false})");
  LoraConfig c = adapter_config_from_json(peft, "adapter_config.json");
  EXPECT_EQ(c.r, 16);
  EXPECT_DOUBLE_EQ(c.lora_alpha, 32.0);
  EXPECT_DOUBLE_EQ(c.scale_for("model.layers.0.self_attn.q_proj"), 2.0);
  EXPECT_EQ(c.target_modules, (std::vector<std::string>{"v_proj", "q_proj"}));
  EXPECT_TRUE(c.modules_to_save.empty());
  // And what dsft writes reads back the same.
  LoraConfig back = adapter_config_from_json(adapter_config_to_json(c, "x"), "x");
  EXPECT_EQ(back.r, c.r);
  EXPECT_EQ(back.target_modules, c.target_modules);
  EXPECT_DOUBLE_EQ(back.lora_dropout, c.lora_dropout);
}

TEST_F(AdapterIo, SavingWithoutAdaptersOrWithAnotherConfigFails) {
  TinyLm lm;
  EXPECT_THROW(save_adapter(*lm, qv_config(), dir(), ""), dsft::Error);
  inject_lora(*lm, qv_config());
  LoraConfig other = qv_config();
  other.r = 8;
  EXPECT_THROW(save_adapter(*lm, other, dir(), ""), dsft::Error);
  other = qv_config();
  other.target_modules = {"q_proj"};
  EXPECT_THROW(save_adapter(*lm, other, dir(), ""), dsft::Error);
  EXPECT_FALSE(fs::exists(dir() + "/adapter_config.json"));
}

}  // namespace
}  // namespace dsft::peft
