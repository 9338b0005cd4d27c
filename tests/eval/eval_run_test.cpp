// run_eval(): inconsistent options are usage errors before anything loads; an adapter inside a
// training run evaluates with that run's window and masking; the base perplexity of the report
// equals perplexity() over the training data path; multiple-choice records are kept out of
// perplexity; gates are recorded in the report and a failed one is the outcome's reason.
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "dsft/eval/ab_sheet.h"
#include "dsft/eval/eval.h"
#include "dsft/eval/perplexity.h"
#include "dsft/model/commands.h"
#include "dsft/model/load.h"
#include "dsft/peft/adapter_io.h"
#include "dsft/peft/inject.h"
#include "dsft/text/chat_template.h"
#include "dsft/text/sentencepiece.h"
#include "dsft/text/tokenizer.h"
#include "dsft/train/config.h"
#include "dsft/train/dataset.h"
#include "dsft/util/error.h"

using namespace dsft;
namespace fs = std::filesystem;

namespace {

class EvalRunTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = (fs::temp_directory_path() / ("dsft_eval_run_" + std::to_string(::getpid()))).string();
    fs::create_directories(dir_);
    const std::string faq = std::string(DSFT_SOURCE_DIR) + "/data/sample/faq_alpaca.jsonl";
    text::SentencePieceTrainOptions so;
    so.input_jsonl = faq;
    so.output_dir = dir_ + "/tok";
    so.vocab_size = 400;
    text::train_sentencepiece(so);
    auto tok = text::load_tokenizer(dir_ + "/tok");
    model::InitRequest r;
    r.arch = "llama";
    r.output_dir = dir_ + "/model";
    r.dtype = "float32";
    r.seed = 3;
    r.overrides = {"vocab_size=" + std::to_string(tok->vocab_size())};
    r.write_tokenizer = [&](const std::string& d, const model::ModelConfig&) {
      for (const auto& e : fs::directory_iterator(dir_ + "/tok"))
        fs::copy_file(e.path(), fs::path(d) / e.path().filename());
    };
    model::run_init(r);

    // A training run directory: config.yaml (window 24, train_on_inputs) and an adapter.
    auto lm = model::load_model(dir_ + "/model");
    peft::LoraConfig lc;
    lc.r = 2;
    lc.target_modules = {"q_proj", "v_proj"};
    peft::inject_lora(*lm, lc);
    {
      torch::NoGradGuard no_grad;
      for (auto& p : lm->named_parameters())
        if (p.key().find("lora_B") != std::string::npos) p.value().normal_(0.0, 0.5);
    }
    fs::create_directories(dir_ + "/run");
    peft::save_adapter(*lm, lc, dir_ + "/run/adapter", dir_ + "/model");
    train::TrainConfig cfg =
        train::parse_train_config("model_name_or_path: " + dir_ + "/model\ndataset: [" + faq +
                                  "]\nmax_seq_length: 24\ntrain_on_inputs: true\n");
    train::write_config(cfg, dir_ + "/run/config.yaml");

    // Held-out data: 6 FAQ records and one multiple-choice record.
    std::ifstream in(faq);
    std::ofstream out(dir_ + "/test.jsonl");
    std::string line;
    for (int i = 0; i < 6 && std::getline(in, line); ++i) out << line << "\n";
    out << R"({"id": "mc", "question": "LX-107多少钱？", "choices": ["199元", "299元"], "answer": 0})"
        << "\n";
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }

  static eval::EvalOptions base_options() {
    eval::EvalOptions o;
    o.model_dir = dir_ + "/model";
    o.data_path = dir_ + "/test.jsonl";
    o.device = "cpu";
    o.speed_tokens = 0;
    o.max_new_tokens = 4;
    o.limit = 2;
    return o;
  }
  static std::string dir_;
};
std::string EvalRunTest::dir_;

}  // namespace

TEST(EvalRun, InconsistentOptionsAreUsageErrors) {
  eval::EvalOptions o;
  EXPECT_THROW(eval::run_eval(o), UsageError);  // nothing to do
  o.model_dir = "/nonexistent";
  EXPECT_THROW(eval::run_eval(o), UsageError);  // no --data
  o.data_path = "/nonexistent.jsonl";
  o.baseline = true;
  EXPECT_THROW(eval::run_eval(o), UsageError);  // --baseline without --adapter
  o.baseline = false;
  o.ab_prompts = "p.txt";
  EXPECT_THROW(eval::run_eval(o), UsageError);  // A/B without --adapter
  o.ab_prompts.clear();
  o.gates = {"exact_mach>=1"};
  EXPECT_THROW(eval::run_eval(o), UsageError);  // unknown metric, before any file is read
  eval::EvalOptions r;
  r.ratings = {"a.csv", "b.csv"};
  r.key_path = "key.json";
  EXPECT_THROW(eval::run_eval(r), UsageError);  // fewer than three raters
  r.ratings.push_back("c.csv");
  r.key_path.clear();
  EXPECT_THROW(eval::run_eval(r), UsageError);  // no key
  EXPECT_EQ(eval::json_path_beside("out/report.html"), "out/report.json");
}

TEST_F(EvalRunTest, BasePerplexityEqualsTheTrainingDataPath) {
  auto o = base_options();
  o.max_seq_length = 4096;
  const auto out = eval::run_eval(o);
  const auto& ppl = out.report["perplexity"];
  ASSERT_TRUE(ppl.contains("base")) << out.report.dump(2);
  EXPECT_FALSE(ppl.contains("tuned"));
  EXPECT_EQ(ppl["base"]["records"], 6);  // the multiple-choice record does not count

  auto tok = text::load_tokenizer(o.model_dir);
  const auto tmpl = text::ChatTemplate::resolve("", o.model_dir);
  train::DatasetOptions dopt;
  dopt.max_seq_length = 4096;
  dopt.cache_dir = "";
  std::ifstream in(o.data_path);
  std::ofstream lm_only(dir_ + "/lm_only.jsonl");
  std::string line;
  for (int i = 0; i < 6 && std::getline(in, line); ++i) lm_only << line << "\n";
  lm_only.close();
  const auto data = train::TokenizedDataset::build({dir_ + "/lm_only.jsonl"}, *tok, tmpl, dopt);
  auto lm = model::load_model(o.model_dir);
  eval::WindowOptions wo;
  wo.window = 4096;
  const auto expected = eval::perplexity(*lm, data.records(), wo, 1, 0, torch::kCPU);
  EXPECT_EQ(ppl["base"]["tokens"].get<int64_t>(), expected.tokens);
  EXPECT_NEAR(ppl["base"]["ppl"].get<double>(), expected.ppl(), 1e-6 * expected.ppl());
  EXPECT_EQ(out.report["accuracy"]["n"], 2);
  EXPECT_EQ(out.report["accuracy"]["multiple_choice"]["n"], 1);
}

TEST_F(EvalRunTest, AnAdapterInARunUsesTheRunsWindowAndMaskingAndGatesDecide) {
  auto o = base_options();
  o.adapter_dir = dir_ + "/run/adapter";
  o.baseline = true;
  o.gates = {"ppl_drop>=0.99", "ppl>0"};
  o.report_html = dir_ + "/out/report.html";
  const auto out = eval::run_eval(o);
  const auto& ppl = out.report["perplexity"];
  EXPECT_EQ(ppl["window"], 24);
  EXPECT_EQ(ppl["stride"], 12);
  EXPECT_EQ(ppl["train_on_inputs"], true);
  ASSERT_TRUE(ppl.contains("base") && ppl.contains("tuned"));
  // The adapter changes the model, and the windows cover records longer than 24 tokens.
  EXPECT_NE(ppl["base"]["ppl"], ppl["tuned"]["ppl"]);
  EXPECT_GT(ppl["base"]["windows"].get<int64_t>(), ppl["base"]["records"].get<int64_t>());
  ASSERT_EQ(out.report["gates"].size(), 2u);
  EXPECT_EQ(out.report["gates"][1]["passed"], true);
  EXPECT_NE(out.gate_failure.find("ppl_drop>=0.99"), std::string::npos) << out.gate_failure;
  EXPECT_TRUE(out.report.contains("baseline_accuracy"));
  EXPECT_TRUE(fs::exists(dir_ + "/out/report.html"));
  const auto written = nlohmann::json::parse(std::ifstream(dir_ + "/out/report.json"));
  EXPECT_EQ(written["perplexity"]["window"], 24);
  EXPECT_EQ(fs::status(dir_ + "/out/report.json").permissions() & fs::perms::all,
            fs::perms::owner_read | fs::perms::owner_write);

  // A gate on a metric this run cannot compute is refused before the model loads.
  o.gates = {"win_rate>0.5"};
  EXPECT_THROW(eval::run_eval(o), UsageError);
  // So is a stride that leaves a window no context (the run's window is 24 tokens).
  o.gates.clear();
  o.stride = 24;
  EXPECT_THROW(eval::run_eval(o), UsageError);
}

namespace dsft {
namespace {

// `dsft eval --ratings`: the summary line gives pooled rates and kappa, and says "n/a" (not 0%)
// for rates no rated item supports.
TEST(EvalRatings, SummaryGivesRatesAndNotApplicableWhenNothingWasRated) {
  const std::string dir =
      (std::filesystem::temp_directory_path() / ("dsft_eval_ratings_" + std::to_string(::getpid()))).string();
  std::filesystem::create_directories(dir);
  eval::write_ab_sheet({{"q1", "p1", "base 1", "tuned 1", ""}, {"q2", "p2", "base 2", "tuned 2", ""}}, 7,
                       dir + "/ab", false);
  const auto key = nlohmann::json::parse(std::ifstream(dir + "/ab/key.json"));
  // Every rater prefers the tuned answer of q1 and calls q2 a tie.
  const std::string tuned_side_q1 = key["items"]["q1"]["a"] == "tuned" ? "A" : "B";
  eval::EvalOptions o;
  o.key_path = dir + "/ab/key.json";
  for (int i = 0; i < 3; ++i) {
    const std::string path = dir + "/r" + std::to_string(i) + ".csv";
    std::ofstream(path) << "item,rating\nq1," << tuned_side_q1 << "\nq2,tie\n";
    o.ratings.push_back(path);
  }
  const auto rated = eval::run_eval(o);
  EXPECT_NE(rated.summary.find("tuned better 50.0%, tie 50.0%, base better 0.0%"), std::string::npos)
      << rated.summary;

  eval::EvalOptions blank = o;
  blank.ratings.clear();
  for (int i = 0; i < 3; ++i) {
    const std::string path = dir + "/blank" + std::to_string(i) + ".csv";
    std::ofstream(path) << "item,rating\nq1,\nq2,\n";
    blank.ratings.push_back(path);
  }
  const auto unrated = eval::run_eval(blank);
  EXPECT_NE(unrated.summary.find("tuned better n/a, tie n/a, base better n/a"), std::string::npos)
      << unrated.summary;
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace dsft
