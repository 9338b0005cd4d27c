// e2e: `dsft eval` on a tiny llama trained for a few steps on the sample FAQ: --baseline prints
// base and tuned perplexity with a drop of at least 15% on held-out records, writes report.json
// (parsable, 0600) and report.html; gates decide the exit code (0 pass, 1 fail with the gate named,
// 2 for an unknown metric or one the run does not compute); bad input is a one-line error.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "e2e/run.h"

namespace fs = std::filesystem;

namespace {

const std::string kSource = DSFT_SOURCE_DIR;

class EvalE2E : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = (fs::temp_directory_path() / ("dsft_eval_e2e_" + std::to_string(::getpid()))).string();
    fs::remove_all(root_);
    fs::create_directories(root_);
    // Records 1..270 train, 271..300 are held out.
    std::ifstream in(kSource + "/data/sample/faq_alpaca.jsonl");
    std::ofstream train(root_ + "/train.jsonl"), test(root_ + "/test.jsonl");
    std::string line;
    for (int i = 0; std::getline(in, line); ++i) (i < 270 ? train : test) << line << "\n";
    train.close();
    test.close();
    train_ = e2e::run_dsft("train --config '" + kSource + "/configs/tiny.yaml' model_name_or_path=" + root_ +
                           "/model output_dir=" + root_ + "/run dataset=[" + root_ +
                           "/train.jsonl] max_steps=16 val_size=0 save_steps=0 logging_steps=4");
  }
  static void TearDownTestSuite() { fs::remove_all(root_); }

  static std::string base_args(int speed_tokens = 4) {
    return "eval --model " + root_ + "/model --adapter " + root_ + "/run/adapter --data " + root_ +
           "/test.jsonl --limit 2 --max-new-tokens 6 --speed-prompts 1 --speed-tokens " +
           std::to_string(speed_tokens);
  }

  static std::string root_;
  static e2e::Result train_;
};
std::string EvalE2E::root_;
e2e::Result EvalE2E::train_;

int mode_of(const std::string& p) {
  struct stat st {};
  ::stat(p.c_str(), &st);
  return static_cast<int>(st.st_mode & 0777);
}

// The last non-empty line of the output (the one-line reason of a failure).
std::string last_line(const std::string& out) {
  std::string s = out;
  while (!s.empty() && s.back() == '\n') s.pop_back();
  const auto p = s.rfind('\n');
  return p == std::string::npos ? s : s.substr(p + 1);
}

}  // namespace

TEST_F(EvalE2E, BaselineShowsThePerplexityDropAndWritesTheReport) {
  ASSERT_EQ(train_.code, 0) << train_.out;
  const std::string html = root_ + "/out/report.html";
  auto r = e2e::run_dsft(base_args() + " --baseline --report " + html + " --gate 'ppl_drop>=0.15'");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("base   ppl"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("tuned  ppl"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("gate ppl_drop>=0.15: passed"), std::string::npos) << r.out;
  ASSERT_TRUE(fs::exists(html));
  const std::string json = root_ + "/out/report.json";
  ASSERT_TRUE(fs::exists(json));
  EXPECT_EQ(mode_of(html), 0600);
  EXPECT_EQ(mode_of(json), 0600);
  const auto report = nlohmann::json::parse(std::ifstream(json));
  const double base = report["perplexity"]["base"]["ppl"].get<double>();
  const double tuned = report["perplexity"]["tuned"]["ppl"].get<double>();
  EXPECT_GT(base, 1.0);
  EXPECT_LE(tuned, 0.85 * base) << "held-out perplexity " << base << " -> " << tuned;
  EXPECT_NEAR(report["perplexity"]["relative_change"].get<double>(), (tuned - base) / base, 1e-9);
  EXPECT_EQ(report["perplexity"]["base"]["tokens"], report["perplexity"]["tuned"]["tokens"]);
  EXPECT_EQ(report["perplexity"]["window"], 128);  // the run's max_seq_length
  EXPECT_EQ(report["accuracy"]["n"], 2);
  EXPECT_GT(report["speed"]["decode_tokens_per_s"].get<double>(), 0.0);
  EXPECT_GT(report["speed"]["peak_memory_bytes"].get<double>(), 0.0);
  ASSERT_EQ(report["gates"].size(), 1u);
  EXPECT_EQ(report["gates"][0]["passed"], true);
  EXPECT_EQ(report["training"]["metrics_path"],
            fs::absolute(root_ + "/run/metrics.jsonl").lexically_normal().string());
  const std::string page = e2e::run_shell("cat " + html).out;
  EXPECT_NE(page.find("<html"), std::string::npos);
  EXPECT_EQ(page.find("<script"), std::string::npos);
}

TEST_F(EvalE2E, AFailedGateExitsOneNamingTheGate) {
  ASSERT_EQ(train_.code, 0) << train_.out;
  auto r = e2e::run_dsft(base_args(0) + " --baseline --gate 'ppl_drop>=0.99'");
  EXPECT_EQ(r.code, 1) << r.out;
  const std::string why = last_line(r.out);
  EXPECT_NE(why.find("ppl_drop>=0.99"), std::string::npos) << r.out;
  EXPECT_NE(why.find("failed"), std::string::npos) << r.out;
}

TEST_F(EvalE2E, GatesOnUnknownOrUncomputedMetricsAreUsageErrors) {
  ASSERT_EQ(train_.code, 0) << train_.out;
  auto r = e2e::run_dsft(base_args() + " --gate 'ppl_dorp>=0.15'");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("ppl_drop"), std::string::npos) << r.out;  // the closest name
  r = e2e::run_dsft(base_args() + " --gate 'ppl_drop>=0.15'");    // no --baseline
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("--baseline"), std::string::npos) << r.out;
  r = e2e::run_dsft("eval --model " + root_ + "/model --data " + root_ + "/test.jsonl --baseline");
  EXPECT_EQ(r.code, 2) << r.out;
  r = e2e::run_dsft("eval --ratings a.csv b.csv --key k.json");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("three"), std::string::npos) << r.out;
}

TEST_F(EvalE2E, BadInputIsAOneLineError) {
  ASSERT_EQ(train_.code, 0) << train_.out;
  // An invalid record names file and line.
  {
    std::ofstream bad(root_ + "/bad.jsonl");
    bad << R"({"instruction": "Q", "output": "A"})"
        << "\n"
        << R"({"instruction": 5, "output": "A"})"
        << "\n";
  }
  auto r = e2e::run_dsft("eval --model " + root_ + "/model --data " + root_ + "/bad.jsonl");
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(last_line(r.out).find("bad.jsonl:2"), std::string::npos) << r.out;

  // A model directory without a tokenizer.
  fs::create_directories(root_ + "/notok");
  for (const char* f : {"config.json", "model.safetensors"})
    fs::copy_file(root_ + "/model/" + f, root_ + "/notok/" + f);
  r = e2e::run_dsft("eval --model " + root_ + "/notok --data " + root_ + "/test.jsonl");
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(last_line(r.out).find("tokenizer"), std::string::npos) << r.out;

  // An adapter trained for another base (other layer sizes).
  const auto cfg = nlohmann::json::parse(std::ifstream(root_ + "/model/config.json"));
  auto init = e2e::run_dsft(
      "init --arch qwen2 --preset tiny -o " + root_ +
      "/other --set hidden_size=96 --set vocab_size=" + std::to_string(cfg["vocab_size"].get<int64_t>()));
  ASSERT_EQ(init.code, 0) << init.out;
  for (const auto& e : fs::directory_iterator(root_ + "/model"))
    if (e.path().filename().string().rfind("tokenizer", 0) == 0)
      fs::copy_file(e.path(), root_ + "/other/" + e.path().filename().string(),
                    fs::copy_options::overwrite_existing);
  r = e2e::run_dsft("eval --model " + root_ + "/other --adapter " + root_ + "/run/adapter --data " + root_ +
                    "/test.jsonl --speed-tokens 0");
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_EQ(r.out.find("\n", r.out.find("dsft:")), r.out.size() - 1) << r.out;  // one line
}
