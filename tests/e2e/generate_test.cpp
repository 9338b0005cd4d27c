// e2e: `dsft generate` on a tiny random llama with a SentencePiece tokenizer trained on the
// sample data prints a continuation for a plain and a chat prompt, reproducibly for a seed;
// a missing model directory or a bad option is a one-line error.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "dsft/text/sentencepiece.h"
#include "dsft/text/tokenizer.h"
#include "e2e/run.h"

namespace fs = std::filesystem;

namespace {

class GenerateE2E : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = (fs::temp_directory_path() / ("dsft_generate_e2e_" + std::to_string(::getpid()))).string();
    fs::remove_all(root_);
    fs::create_directories(root_);
    const std::string tok_dir = root_ + "/tok";
    dsft::text::SentencePieceTrainOptions so;
    so.input_jsonl = std::string(DSFT_SOURCE_DIR) + "/data/sample/faq_alpaca.jsonl";
    so.output_dir = tok_dir;
    so.vocab_size = 512;
    dsft::text::train_sentencepiece(so);
    auto tok = dsft::text::load_tokenizer(tok_dir);
    model_ = root_ + "/model";
    std::string set = " --set vocab_size=" + std::to_string(tok->vocab_size());
    if (tok->bos_id) set += " --set bos_token_id=" + std::to_string(*tok->bos_id);
    if (tok->eos_id) set += " --set eos_token_id=" + std::to_string(*tok->eos_id);
    init_ = e2e::run_dsft("init --arch llama --preset tiny -o " + model_ + set);
    for (const auto& e : fs::directory_iterator(tok_dir)) fs::copy_file(e.path(), fs::path(model_) / e.path().filename());
  }
  static void TearDownTestSuite() { fs::remove_all(root_); }

  static std::string root_, model_;
  static e2e::Result init_;
};
std::string GenerateE2E::root_, GenerateE2E::model_;
e2e::Result GenerateE2E::init_;

// stdout only (the timing summary goes to stderr).
e2e::Result generate(const std::string& args) {
  return e2e::run_shell("(" + std::string(DSFT_BINARY) + " generate " + args + " 2>/dev/null)");
}

}  // namespace

TEST_F(GenerateE2E, PlainPromptPrintsAContinuation) {
  ASSERT_EQ(init_.code, 0) << init_.out;
  auto r = generate("--model " + model_ + " --prompt 'How do I reset my password?' --max-new-tokens 8");
  ASSERT_EQ(r.code, 0) << r.out;
  ASSERT_FALSE(r.out.empty());
  EXPECT_EQ(r.out.back(), '\n');
  EXPECT_GT(r.out.size(), 1u) << "no text was generated";
  // Greedy decoding is deterministic.
  EXPECT_EQ(generate("--model " + model_ + " --prompt 'How do I reset my password?' --max-new-tokens 8").out, r.out);
}

TEST_F(GenerateE2E, ChatPromptAndSamplingRun) {
  ASSERT_EQ(init_.code, 0) << init_.out;
  const std::string args = "--model " + model_ + " --chat --prompt 'What are your opening hours?' --max-new-tokens 8";
  auto r = generate(args);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_GT(r.out.size(), 1u);
  const std::string sample = args + " --temperature 1.2 --top-k 50 --top-p 0.95 --seed 9";
  auto a = generate(sample);
  ASSERT_EQ(a.code, 0) << a.out;
  EXPECT_EQ(generate(sample).out, a.out);
  // The summary line is logged at info level and silenced by --log-level warn.
  auto with_log = e2e::run_dsft("generate " + args);
  EXPECT_NE(with_log.out.find("new tokens"), std::string::npos) << with_log.out;
  auto quiet = e2e::run_dsft("--log-level warn generate " + args);
  EXPECT_EQ(quiet.out.find("new tokens"), std::string::npos) << quiet.out;
  auto quiet_after = e2e::run_dsft("generate " + args + " --log-level error");  // after the subcommand too
  ASSERT_EQ(quiet_after.code, 0) << quiet_after.out;
  EXPECT_EQ(quiet_after.out, quiet.out);  // the same text, without the summary line
  EXPECT_EQ(e2e::run_dsft("--log-level loud generate " + args).code, 2);
}

TEST_F(GenerateE2E, MissingModelIsAOneLineError) {
  auto r = e2e::run_dsft("generate --model " + root_ + "/nope --prompt hi");
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("nope"), std::string::npos) << r.out;
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << r.out;
  r = e2e::run_dsft("generate --model " + model_ + " --prompt hi --top-p 2");
  EXPECT_EQ(r.code, 2) << r.out;
  r = e2e::run_dsft("generate --model " + model_);
  EXPECT_EQ(r.code, 2) << r.out;
}
