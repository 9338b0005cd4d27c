// e2e: `dsft tokenize` on corpus lines (ids equal the Rust library's), chat mode against the
// chat fixtures, and a bad input line reported with its number.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "e2e/run.h"

namespace fs = std::filesystem;

namespace {

const std::string kFixtures = std::string(DSFT_FIXTURES_DIR) + "/tokenizers";

std::vector<nlohmann::json> read_jsonl(const std::string& path) {
  std::ifstream f(path);
  std::vector<nlohmann::json> out;
  std::string line;
  while (std::getline(f, line)) out.push_back(nlohmann::json::parse(line));
  return out;
}

// A folder of its own per test: ctest runs the tests of this program in parallel processes.
struct Scratch {
  fs::path dir;
  Scratch() {
    std::string t = (fs::temp_directory_path() / "dsft-e2e-tokenize-XXXXXX").string();
    dir = ::mkdtemp(t.data());
  }
  ~Scratch() { fs::remove_all(dir); }
  std::string write(const std::string& name, const std::string& content) {
    std::ofstream(dir / name, std::ios::binary) << content;
    return (dir / name).string();
  }
};

TEST(TokenizeCommand, CorpusLinesMatchReference) {
  auto expected = read_jsonl(kFixtures + "/deepseek-v3.expected.jsonl");
  // A spread of categories: Chinese poetry, code, numbers, special tokens written in the text.
  std::vector<size_t> picks = {0, 40, 120, 200, 270, 300, 318};
  std::string in;
  for (size_t i : picks) in += nlohmann::json({{"text", expected[i]["text"]}}).dump() + "\n";
  Scratch s;
  std::string input = s.write("in.jsonl", in);
  auto r = e2e::run_shell(std::string(DSFT_BINARY) + " tokenize --tokenizer " + kFixtures + "/deepseek-v3 < " +
                          input + " 2>/dev/null");
  ASSERT_EQ(r.code, 0) << r.out;
  std::istringstream lines(r.out);
  std::string line;
  size_t n = 0;
  while (std::getline(lines, line)) {
    ASSERT_LT(n, picks.size());
    EXPECT_EQ(nlohmann::json::parse(line)["ids"], expected[picks[n]]["ids"]) << "corpus string " << picks[n];
    ++n;
  }
  EXPECT_EQ(n, picks.size());
}

TEST(TokenizeCommand, ChatModeMatchesFixture) {
  auto cases = read_jsonl(kFixtures + "/qwen2.chat.jsonl");
  Scratch s;
  int checked = 0;
  for (const auto& c : cases) {
    if (c.contains("template_kwargs") || checked >= 3) continue;
    if (c.contains("tools")) continue;
    std::string input = s.write("chat.jsonl", nlohmann::json({{"messages", c["messages"]}}).dump() + "\n");
    std::string flag = c["add_generation_prompt"].get<bool>() ? " --add-generation-prompt" : "";
    auto r = e2e::run_shell(std::string(DSFT_BINARY) + " tokenize --chat" + flag + " --tokenizer " + kFixtures +
                            "/qwen2 < " + input + " 2>/dev/null");
    ASSERT_EQ(r.code, 0) << r.out;
    auto out = nlohmann::json::parse(r.out);
    EXPECT_EQ(out["rendered"], c["rendered"]);
    EXPECT_EQ(out["ids"], c["ids"]);
    ++checked;
  }
  EXPECT_EQ(checked, 3);
}

TEST(TokenizeCommand, BadLineIsReportedWithItsNumber) {
  Scratch s;
  std::string input = s.write("bad.jsonl", "{\"text\": \"hello\"}\n{\"txt\": 1}\n{\"text\": \"never\"}\n");
  auto r = e2e::run_shell(std::string(DSFT_BINARY) + " tokenize --tokenizer " + kFixtures + "/llama3 < " + input);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("line 2"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("{\"ids\": [15339]}"), std::string::npos) << r.out;  // line 1 still written
  EXPECT_EQ(r.out.find("never"), std::string::npos);

  std::string bad_utf8 = s.write("utf8.jsonl", "{\"text\": \"ok\"}\n{\"text\": \"\xFF\"}\n");
  r = e2e::run_shell(std::string(DSFT_BINARY) + " tokenize --tokenizer " + kFixtures + "/llama3 < " + bad_utf8);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("line 2"), std::string::npos) << r.out;

  r = e2e::run_dsft("tokenize --tokenizer /nonexistent/dir < /dev/null");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("/nonexistent/dir"), std::string::npos) << r.out;
  r = e2e::run_dsft("tokenize --add-generation-prompt --tokenizer " + kFixtures + "/llama3 < /dev/null");
  EXPECT_EQ(r.code, 2);  // --add-generation-prompt needs --chat
}

}  // namespace
