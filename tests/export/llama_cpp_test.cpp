// llama.cpp itself on dsft's GGUF exports (node-llama-cpp's prebuilt CPU build, installed on first
// use by scripts/llama_cpp/ensure.sh; the tests skip when npm cannot install it):
//  - f32 exports of the llama, qwen2 and deepseek2 (V3-shaped, with q-LoRA) fixtures give the
//    fixtures' reference logits within 1e-3 of max |logit|, and greedy decoding of 32 tokens
//    agrees with dsft's own forward;
//  - a GGUF with a real tokenizer's metadata tokenises a mixed Chinese/English prompt exactly as
//    dsft's tokenizer does;
//  - models of each family made by `dsft init` (llama, qwen2, deepseek_v2 with MLA, MoE and YaRN)
//    decode 32 greedy tokens in llama.cpp as in dsft;
//  - a LoRA adapter exported to GGUF and applied by llama.cpp matches dsft's merged model.
// The fixture checkpoints ship no tokenizer: their exports carry a synthetic byte-level BPE
// vocabulary of the model's size (export_util.h); the tests feed token ids directly.
#include <gtest/gtest.h>

#include <cmath>

#include "dsft/export/gguf_export.h"
#include "dsft/io/gguf.h"
#include "dsft/io/safetensors.h"
#include "dsft/model/load.h"
#include "dsft/text/tokenizer.h"
#include "export/export_fixture.h"
#include "export/export_util.h"

namespace dsft::exporter {
namespace {

using test::json;
using test::TempDir;

constexpr double kTolerance = 1e-3;  // relative to max |logit| (llama.cpp's kernels, MODEL-FACTS)

std::vector<int64_t> row_of(const torch::Tensor& ids, int64_t b) {
  auto r = ids[b].contiguous();
  return std::vector<int64_t>(r.data_ptr<int64_t>(), r.data_ptr<int64_t>() + r.numel());
}

torch::Tensor logits_tensor(const json& rows) {
  std::vector<float> flat;
  for (const auto& r : rows)
    for (const auto& v : r) flat.push_back(v.get<float>());
  return torch::tensor(flat).view({static_cast<int64_t>(rows.size()), -1});
}

// dsft's greedy continuation by repeated full forwards; also the top-2 gap at every step.
std::vector<int64_t> dsft_greedy(model::CausalLMImpl& lm, std::vector<int64_t> ids, int n, std::vector<torch::Tensor>* rows) {
  std::vector<int64_t> out;
  torch::NoGradGuard g;
  for (int i = 0; i < n; ++i) {
    auto logits = lm.forward(torch::tensor(ids).view({1, -1}))[0][-1];
    const int64_t next = logits.argmax().item<int64_t>();
    if (rows) rows->push_back(logits);
    out.push_back(next);
    ids.push_back(next);
  }
  return out;
}

// llama.cpp's greedy tokens against dsft's: equal, except that a near tie in dsft's own logits
// (top-2 gap within the tolerance) may go either way; after such a step the sequences may part.
// Returns how many leading tokens agree.
size_t expect_greedy_agrees(const std::string& name, const std::vector<int64_t>& ours,
                            const std::vector<torch::Tensor>& rows, const std::vector<int64_t>& theirs) {
  size_t agreed = 0;
  for (; agreed < ours.size() && agreed < theirs.size(); ++agreed) {
    if (ours[agreed] == theirs[agreed]) continue;
    const auto& l = rows[agreed];
    const double gap = (l[ours[agreed]] - l[theirs[agreed]]).item<double>();
    EXPECT_LE(gap, kTolerance * l.abs().max().item<double>())
        << name << ": step " << agreed << " dsft chose " << ours[agreed] << ", llama.cpp " << theirs[agreed];
    break;
  }
  std::printf("[llama.cpp] %-28s greedy: %zu/%zu tokens identical\n", name.c_str(), agreed, ours.size());
  return agreed;
}

class LlamaCppParity : public ::testing::TestWithParam<std::string> {};

TEST_P(LlamaCppParity, LogitsAndGreedyDecodeMatch) {
  DSFT_REQUIRE_LLAMA_CPP(prefix);
  TempDir tmp;
  const std::string name = GetParam();
  const std::string dir = test::fixture_model_dir(tmp, name);
  const std::string gguf = tmp.path("model.gguf");
  test::export_f32(dir, gguf);

  auto expected = io::SafetensorsFile::open(test::fixture_model(name) + "/expected.safetensors");
  auto ids = model::tensor_from_view(expected->at("input_ids")).clone();
  auto want = model::tensor_from_view(expected->at("logits")).clone();
  auto lm = model::load_model(dir);
  lm->eval();

  json ops = json::array();
  for (int64_t b = 0; b < ids.size(0); ++b) ops.push_back({{"op", "logits"}, {"tokens", row_of(ids, b)}});
  const std::vector<int64_t> prompt = row_of(ids, 0);
  ops.push_back({{"op", "greedy"}, {"tokens", prompt}, {"n", 32}});
  const json res = test::run_llama_cpp(prefix, tmp, {{"model", gguf}, {"context", 128}, {"ops", ops}});

  for (int64_t b = 0; b < ids.size(0); ++b) {
    const auto got = logits_tensor(res[b]["logits"]);
    ASSERT_EQ(got.sizes(), want[b].sizes());
    const double scale = want[b].abs().max().item<double>();
    const double ratio = (got - want[b]).abs().max().item<double>() / scale;
    std::printf("[llama.cpp] %-28s row %lld max|diff|/max|logit| %.3e\n", name.c_str(), static_cast<long long>(b), ratio);
    EXPECT_LE(ratio, kTolerance) << name << " row " << b;
    EXPECT_TRUE(torch::equal(got.argmax(-1), want[b].argmax(-1))) << name << " row " << b;
  }

  std::vector<torch::Tensor> rows;
  const auto ours = dsft_greedy(*lm, prompt, 32, &rows);
  const auto theirs = res[ids.size(0)]["tokens"].get<std::vector<int64_t>>();
  ASSERT_EQ(theirs.size(), 32u);
  expect_greedy_agrees(name, ours, rows, theirs);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, LlamaCppParity,
                         ::testing::Values("llama-gqa", "llama3-rope", "llama3-rope-sharp", "llama-coder-linear-rope",
                                           "qwen2-bias", "deepseek-v3-tiny", "deepseek-v3-tiny-sharp-rope"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           std::string n = info.param;
                           std::replace(n.begin(), n.end(), '-', '_');
                           return n;
                         });

// A tiny random llama model of a real tokenizer's vocabulary size (hidden 16 keeps the file small),
// with that tokenizer's files beside it.
std::string tiny_model_with_tokenizer(const TempDir& tmp, const std::string& tokenizer, int64_t vocab) {
  const std::string dir = tmp.path("tiny-" + tokenizer);
  test::fs::create_directories(dir);
  for (const char* f : {"tokenizer.json", "tokenizer_config.json"})
    test::fs::create_symlink(test::fixture_tokenizer(tokenizer) + "/" + f, dir + "/" + f);
  const json cfg = {{"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"}, {"vocab_size", vocab},
                    {"hidden_size", 16}, {"intermediate_size", 32}, {"num_hidden_layers", 1},
                    {"num_attention_heads", 2}, {"num_key_value_heads", 1}, {"max_position_embeddings", 512},
                    {"rms_norm_eps", 1e-6}, {"rope_theta", 10000.0}, {"tie_word_embeddings", true}};
  test::write_text(dir + "/config.json", cfg.dump());
  torch::manual_seed(3);
  std::vector<std::pair<std::string, torch::Tensor>> ts = {
      {"model.embed_tokens.weight", torch::randn({vocab, 16}) * 0.02},
      {"model.norm.weight", torch::ones({16})},
      {"model.layers.0.input_layernorm.weight", torch::ones({16})},
      {"model.layers.0.post_attention_layernorm.weight", torch::ones({16})},
      {"model.layers.0.self_attn.q_proj.weight", torch::randn({16, 16}) * 0.02},
      {"model.layers.0.self_attn.k_proj.weight", torch::randn({8, 16}) * 0.02},
      {"model.layers.0.self_attn.v_proj.weight", torch::randn({8, 16}) * 0.02},
      {"model.layers.0.self_attn.o_proj.weight", torch::randn({16, 16}) * 0.02},
      {"model.layers.0.mlp.gate_proj.weight", torch::randn({32, 16}) * 0.02},
      {"model.layers.0.mlp.up_proj.weight", torch::randn({32, 16}) * 0.02},
      {"model.layers.0.mlp.down_proj.weight", torch::randn({16, 32}) * 0.02},
  };
  std::vector<io::TensorToWrite> out;
  for (auto& [n, t] : ts) {
    t = t.to(torch::kBFloat16).contiguous();
    out.push_back({n, io::DType::BF16, t.sizes().vec(), t.data_ptr(), static_cast<size_t>(t.nbytes())});
  }
  io::write_safetensors(dir + "/model.safetensors", out);
  return dir;
}

// `dsft init` models of every family llama.cpp loads, f32: llama.cpp's 32 greedy tokens equal
// dsft's, up to a near tie in dsft's own logits (after which the sequences may part).
class LlamaCppInitModels : public ::testing::TestWithParam<std::string> {};

TEST_P(LlamaCppInitModels, GreedyDecodeMatches) {
  DSFT_REQUIRE_LLAMA_CPP(prefix);
  TempDir tmp;
  const std::string arch = GetParam();
  // Wide initial weights give peaked logits, so that ties are rare and the comparison bites.
  // llama.cpp reads q-LoRA from a deepseek2 model's depth (docs/gguf.md): give V2 its q_lora_rank.
  std::vector<std::string> overrides = {"initializer_range=0.3"};
  if (arch == "deepseek_v2") overrides.push_back("q_lora_rank=24");
  const std::string dir = test::make_model(tmp, "m", arch, "float32", overrides, 7);
  const std::string gguf = tmp.path("model.gguf");
  test::export_f32(dir, gguf);
  auto lm = model::load_model(dir);
  lm->eval();

  const std::vector<int64_t> prompt = {5, 17, 42, 99, 3, 250, 7, 64};
  json ops = json::array({json{{"op", "greedy"}, {"tokens", prompt}, {"n", 32}}});
  const json res = test::run_llama_cpp(prefix, tmp, {{"model", gguf}, {"context", 128}, {"ops", ops}});
  std::vector<torch::Tensor> rows;
  const auto ours = dsft_greedy(*lm, prompt, 32, &rows);
  const auto theirs = res[0]["tokens"].get<std::vector<int64_t>>();
  ASSERT_EQ(theirs.size(), 32u);
  EXPECT_GE(expect_greedy_agrees("dsft init " + arch, ours, rows, theirs), 8u) << "too early a tie to say anything";
}

INSTANTIATE_TEST_SUITE_P(Families, LlamaCppInitModels, ::testing::Values("llama", "qwen2", "deepseek_v2"));

TEST(LlamaCppTokenizer, MixedChineseEnglishPromptTokenisesLikeDsft) {
  DSFT_REQUIRE_LLAMA_CPP(prefix);
  TempDir tmp;
  const std::vector<std::string> prompts = {
      "DeepSeek 模型在 2025 年发布了 R1：它会先思考（<think>），再回答 the user's question!\n  代码: x = 12345;",
      "Hello, 世界! 今天的天气很好 — temperature 23.5°C, humidity 60%.\t\tTabs  and   spaces.",
  };
  for (const auto& [tok, vocab] : {std::pair<std::string, int64_t>{"qwen2", 151669}, {"deepseek-v3", 128815}}) {
    const std::string dir = tiny_model_with_tokenizer(tmp, tok, vocab);
    GgufExportOptions o;
    o.model_dir = dir;
    o.output_path = tmp.path(tok + ".gguf");
    o.out_type = GgufOutType::f16;
    export_gguf(o);
    auto dsft_tok = text::load_tokenizer(dir);
    json ops = json::array();
    for (const auto& p : prompts) ops.push_back({{"op", "tokenize"}, {"text", p}, {"special", false}});
    const json res = test::run_llama_cpp(prefix, tmp, {{"model", o.output_path}, {"context", 64}, {"ops", ops}});
    for (size_t i = 0; i < prompts.size(); ++i) {
      const auto theirs = res[i]["tokens"].get<std::vector<int32_t>>();
      const auto ours = dsft_tok->encode(prompts[i], /*add_special_tokens=*/false);
      EXPECT_EQ(theirs, ours) << tok << " prompt " << i;
      EXPECT_GT(ours.size(), 20u);
    }
  }
}

TEST(LlamaCppLora, AdapterMatchesMergedModel) {
  DSFT_REQUIRE_LLAMA_CPP(prefix);
  TempDir tmp;
  const std::string base = test::fixture_model_dir(tmp, "llama-gqa");
  const auto cfg = test::read_json_file(base + "/config.json");
  // A PEFT adapter with non-zero B on q (permuted in GGUF), v and down_proj of both layers.
  const int64_t r = 4;
  const double alpha = 8;
  torch::manual_seed(5);
  auto ck = io::Checkpoint::open(base);
  std::map<std::string, torch::Tensor> merged;
  for (const auto& n : ck.names()) merged[n] = model::tensor_from_view(ck.at(n)).to(torch::kFloat32).clone();
  std::vector<std::pair<std::string, torch::Tensor>> lora;
  for (int l = 0; l < 2; ++l)
    for (const std::string m : {"self_attn.q_proj", "self_attn.v_proj", "mlp.down_proj"}) {
      const std::string key = "model.layers." + std::to_string(l) + "." + m;
      auto& w = merged[key + ".weight"];
      auto a = torch::randn({r, w.size(1)}) * 0.1, b = torch::randn({w.size(0), r}) * 0.1;
      w += (alpha / r) * b.matmul(a);
      lora.push_back({"base_model.model." + key + ".lora_A.weight", a.contiguous()});
      lora.push_back({"base_model.model." + key + ".lora_B.weight", b.contiguous()});
    }
  const std::string adapter = tmp.path("adapter");
  test::fs::create_directories(adapter);
  std::vector<io::TensorToWrite> out;
  for (auto& [n, t] : lora) out.push_back({n, io::DType::F32, t.sizes().vec(), t.data_ptr(), static_cast<size_t>(t.nbytes())});
  io::write_safetensors(adapter + "/adapter_model.safetensors", out);
  test::write_text(adapter + "/adapter_config.json",
                   json{{"peft_type", "LORA"}, {"task_type", "CAUSAL_LM"}, {"r", r}, {"lora_alpha", alpha},
                        {"lora_dropout", 0.0}, {"bias", "none"}, {"use_rslora", false},
                        {"target_modules", {"q_proj", "v_proj", "down_proj"}}}.dump());
  // The merged model, for dsft's reference forward.
  const std::string merged_dir = tmp.path("merged");
  test::fs::create_directories(merged_dir);
  test::fs::copy_file(base + "/config.json", merged_dir + "/config.json");
  out.clear();
  for (auto& [n, t] : merged) out.push_back({n, io::DType::F32, t.sizes().vec(), t.data_ptr(), static_cast<size_t>(t.nbytes())});
  io::write_safetensors(merged_dir + "/model.safetensors", out);

  const std::string base_gguf = tmp.path("base.gguf");
  test::export_f32(base, base_gguf);
  GgufLoraExportOptions lo;
  lo.adapter_dir = adapter;
  lo.base_model_dir = base;
  lo.output_path = tmp.path("adapter.gguf");
  lo.out_type = GgufOutType::f32;
  const auto rep = export_gguf_lora(lo);
  EXPECT_EQ(rep.n_tensors, 12u);
  auto f = io::GgufFile::open(lo.output_path);
  EXPECT_EQ(f->at("general.type").as_string(), "adapter");
  EXPECT_EQ(f->at("adapter.type").as_string(), "lora");
  EXPECT_FLOAT_EQ(f->at("adapter.lora.alpha").as_f64(), 8.0);
  EXPECT_EQ(f->tensor("blk.1.attn_q.weight.lora_a").ne, (std::vector<int64_t>{64, 4}));
  EXPECT_EQ(f->tensor("blk.1.attn_q.weight.lora_b").ne, (std::vector<int64_t>{4, 64}));

  auto expected = io::SafetensorsFile::open(test::fixture_model("llama-gqa") + "/expected.safetensors");
  const auto ids = row_of(model::tensor_from_view(expected->at("input_ids")), 1);
  auto lm = model::load_model(merged_dir);
  torch::NoGradGuard g;
  auto want = lm->forward(torch::tensor(ids).view({1, -1}))[0];
  auto base_lm = model::load_model(base);
  auto base_logits = base_lm->forward(torch::tensor(ids).view({1, -1}))[0];
  const json res = test::run_llama_cpp(prefix, tmp,
                                       {{"model", base_gguf}, {"lora", lo.output_path}, {"context", 64},
                                        {"ops", {{{"op", "logits"}, {"tokens", ids}}}}});
  const auto got = logits_tensor(res[0]["logits"]);
  const double scale = want.abs().max().item<double>();
  const double ratio = (got - want).abs().max().item<double>() / scale;
  const double moved = (base_logits - want).abs().max().item<double>() / scale;
  std::printf("[llama.cpp] lora: max|diff|/max|logit| %.3e (the adapter moves the logits by %.3e)\n", ratio, moved);
  EXPECT_LE(ratio, kTolerance);
  EXPECT_GT(moved, 20 * kTolerance);  // the adapter matters: a test that ignores it would fail
}

}  // namespace
}  // namespace dsft::exporter
