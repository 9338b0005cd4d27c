// e2e: `dsft export` through the real binary, on a tiny llama (byte-level BPE tokenizer) with a
// LoRA trained for a few steps by `dsft train` (chat_template=chatml):
//  - hf: sharded, and `dsft generate` on the merged checkpoint prints what `dsft generate
//    --adapter` prints; the run's chat template lands in tokenizer_config.json;
//  - peft: the adapter files and a model card with the run's data and metrics;
//  - gguf: model, LoRA adapter and a chatml Modelfile; llama.cpp's greedy decoding of the merged
//    GGUF equals `dsft generate --adapter` (skipped when node-llama-cpp cannot be installed);
//  - exit codes and one-line reasons for bad inputs, with nothing written.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "dsft/text/tokenizer.h"
#include "e2e/run.h"
#include "export/export_util.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const std::string kSource = DSFT_SOURCE_DIR;

std::string q(const std::string& s) {
  return "'" + s + "'";
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), {});
}

// stdout only (the timing summary on stderr differs between runs).
e2e::Result run_stdout(const std::string& args) {
  return e2e::run_shell("{ " + std::string(DSFT_BINARY) + " " + args + " 2>/dev/null; }");
}

// Lines of stderr only.
e2e::Result run_stderr(const std::string& args) {
  return e2e::run_shell("{ " + std::string(DSFT_BINARY) + " " + args + " >/dev/null; }");
}

class ExportE2E : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = (fs::temp_directory_path() / ("dsft_export_e2e_" + std::to_string(::getpid()))).string();
    fs::remove_all(root_);
    fs::create_directories(root_);
    model_ = root_ + "/model";
    auto r = e2e::run_dsft("init --arch llama --preset tiny --dtype float32 --seed 5 -o " + q(model_));
    ASSERT_EQ(r.code, 0) << r.out;
    dsft::exporter::test::write_synthetic_tokenizer(model_, 512, 1, 2);
    run_ = root_ + "/run";
    r = e2e::run_dsft("train --config " + q(kSource + "/configs/tiny.yaml") +
                      " model_name_or_path=" + q(model_) + " output_dir=" + q(run_) +
                      " dataset=" + q("[" + kSource + "/data/sample/faq_alpaca.jsonl]") +
                      " max_steps=6 save_steps=0 eval_steps=3 learning_rate=2.0e-2 chat_template=chatml");
    ASSERT_EQ(r.code, 0) << r.out;
  }
  static void TearDownTestSuite() { fs::remove_all(root_); }

  static std::string root_, model_, run_;
};
std::string ExportE2E::root_, ExportE2E::model_, ExportE2E::run_;

const char* kPrompt = "what is the return policy";

TEST_F(ExportE2E, HfMergedCheckpointGeneratesLikeBasePlusAdapter) {
  const std::string out = root_ + "/hf";
  auto r = e2e::run_dsft("export --model " + q(model_) + " --adapter " + q(run_) + " --format hf -o " +
                         q(out) + " --max-shard-size 200KB");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("adapter merged into 14 layers"), std::string::npos) << r.out;
  ASSERT_TRUE(fs::exists(out + "/model.safetensors.index.json"));
  EXPECT_TRUE(fs::exists(out + "/model-00001-of-00003.safetensors") ||
              fs::exists(out + "/model-00001-of-00004.safetensors"));
  const json tc = json::parse(slurp(out + "/tokenizer_config.json"));
  EXPECT_NE(tc["chat_template"].get<std::string>().find("<|im_start|>"), std::string::npos);

  const std::string gen = " --prompt " + q(kPrompt) + " --max-new-tokens 24";
  const auto merged = run_stdout("generate --model " + q(out) + gen);
  const auto adapted =
      run_stdout("generate --model " + q(model_) + " --adapter " + q(run_ + "/adapter") + gen);
  ASSERT_EQ(merged.code, 0) << merged.out;
  ASSERT_EQ(adapted.code, 0) << adapted.out;
  EXPECT_EQ(merged.out, adapted.out);
  EXPECT_FALSE(merged.out.empty());
}

TEST_F(ExportE2E, PeftAdapterWithModelCard) {
  const std::string out = root_ + "/peft";
  auto r = e2e::run_dsft("export --model " + q(model_) + " --adapter " + q(run_ + "/adapter") +
                         " --format peft -o " + q(out));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(slurp(out + "/adapter_model.safetensors"), slurp(run_ + "/adapter/adapter_model.safetensors"));
  const std::string card = slurp(out + "/README.md");
  EXPECT_NE(card.find("faq_alpaca.jsonl"), std::string::npos) << card;
  EXPECT_NE(card.find("- Steps: 6"), std::string::npos) << card;
  EXPECT_EQ(card.find("loss: unknown"), std::string::npos) << card;
  EXPECT_NE(card.find("Chat template: `chatml`"), std::string::npos) << card;
}

TEST_F(ExportE2E, GgufModelAdapterAndModelfileMatchDsftGenerate) {
  const std::string out = root_ + "/tiny-ft";
  auto r = e2e::run_dsft("export --model " + q(model_) + " --adapter " + q(run_) +
                         " --format gguf --gguf-type f32 -o " + q(out));
  ASSERT_EQ(r.code, 0) << r.out;
  for (const char* f : {"tiny-ft.gguf", "tiny-ft-lora.gguf", "Modelfile"})
    EXPECT_TRUE(fs::exists(out + "/" + f)) << f;
  const std::string modelfile = slurp(out + "/Modelfile");
  EXPECT_NE(modelfile.find("FROM ./tiny-ft.gguf"), std::string::npos) << modelfile;
  EXPECT_NE(modelfile.find("<|im_start|>"), std::string::npos) << modelfile;
  EXPECT_NE(modelfile.find("PARAMETER stop"), std::string::npos) << modelfile;

  DSFT_REQUIRE_LLAMA_CPP(prefix);
  auto tok = dsft::text::load_tokenizer(model_);
  std::vector<int32_t> ids32 = tok->encode(kPrompt, true);
  if (tok->add_bos_for_training && tok->bos_id && (ids32.empty() || ids32.front() != *tok->bos_id))
    ids32.insert(ids32.begin(), *tok->bos_id);
  const std::vector<int64_t> ids(ids32.begin(), ids32.end());
  dsft::exporter::test::TempDir tmp;
  const json res = dsft::exporter::test::run_llama_cpp(
      prefix, tmp,
      {{"model", out + "/tiny-ft.gguf"},
       {"ops", json::array({{{"op", "greedy"}, {"tokens", ids}, {"n", 24}}})}});
  // Compared up to the first near-tie (top-2 logits closer than llama.cpp's kernels can be
  // trusted to order) or eos, which ends dsft's generation too.
  const json& tokens = res.at(0).at("tokens");
  const json& top2 = res.at(0).at("top2");
  std::vector<int32_t> cont;
  bool whole = true;
  for (size_t i = 0; i < tokens.size(); ++i) {
    const double best = top2.at(i).at(0).get<double>(), second = top2.at(i).at(1).get<double>();
    if (best - second < 1e-4 * std::max(1.0, std::abs(best))) {
      whole = false;
      break;
    }
    if (tokens.at(i).get<int64_t>() == 2) break;
    cont.push_back(tokens.at(i).get<int32_t>());
  }
  ASSERT_GE(cont.size(), 4u) << "llama.cpp's first steps were near-ties; nothing to compare";
  const std::string llama_text = tok->decode(cont, true);
  const auto adapted = run_stdout("generate --model " + q(model_) + " --adapter " + q(run_ + "/adapter") +
                                  " --prompt " + q(kPrompt) + " --max-new-tokens 24");
  ASSERT_EQ(adapted.code, 0);
  if (whole) {
    EXPECT_EQ(llama_text + "\n", adapted.out);
  } else {
    EXPECT_EQ(adapted.out.substr(0, llama_text.size()), llama_text);
  }
}

TEST_F(ExportE2E, BadInputsExitWithOneLineAndWriteNothing) {
  const std::string out = root_ + "/bad";
  // Unknown format and peft without an adapter: usage errors.
  auto r = run_stderr("export --model " + q(model_) + " --format onnx -o " + q(out));
  EXPECT_EQ(r.code, 2) << r.out;
  r = run_stderr("export --model " + q(model_) + " --format peft -o " + q(out));
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("--adapter"), std::string::npos) << r.out;

  // An adapter for another base model.
  const std::string other = root_ + "/other";
  ASSERT_EQ(
      e2e::run_dsft("init --arch llama --preset tiny --dtype float32 --set hidden_size=32 -o " + q(other))
          .code,
      0);
  dsft::exporter::test::write_synthetic_tokenizer(other, 512, 1, 2);
  r = run_stderr("export --model " + q(other) + " --adapter " + q(run_) + " --format hf -o " + q(out));
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << r.out;
  EXPECT_NE(r.out.find("another base model"), std::string::npos) << r.out;

  // No tokenizer.
  fs::remove(other + "/tokenizer.json");
  r = run_stderr("export --model " + q(other) + " --format hf -o " + q(out));
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("no tokenizer"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(out));

  // OUT exists.
  fs::create_directories(out);
  r = run_stderr("export --model " + q(model_) + " --format hf -o " + q(out));
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("--force"), std::string::npos) << r.out;
  EXPECT_TRUE(fs::is_empty(out));
  for (const auto& e : fs::directory_iterator(root_))
    EXPECT_EQ(e.path().filename().string().find(".tmp-"), std::string::npos) << e.path();
}

}  // namespace
