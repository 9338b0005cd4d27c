// Parity with the Rust `tokenizers` library: every corpus string of the three reference
// tokenizers (DeepSeek-V3, Qwen2, Llama 3) encodes to the fixture ids, with and without special
// tokens, and decodes to the fixture text.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "dsft/text/tokenizer.h"

namespace {

const std::string kFixtures = std::string(DSFT_FIXTURES_DIR) + "/tokenizers";

struct Case {
  std::string text, decoded;
  std::vector<int32_t> ids, ids_special;
};

std::vector<Case> read_expected(const std::string& name) {
  std::ifstream f(kFixtures + "/" + name + ".expected.jsonl");
  std::vector<Case> out;
  std::string line;
  while (std::getline(f, line)) {
    auto j = nlohmann::json::parse(line);
    out.push_back({j["text"], j["decoded"], j["ids"].get<std::vector<int32_t>>(),
                   j["ids_special"].get<std::vector<int32_t>>()});
  }
  return out;
}

std::vector<std::string> read_categories() {
  std::ifstream f(kFixtures + "/corpus.meta.json");
  auto j = nlohmann::json::parse(f);
  std::vector<std::string> out;
  for (const auto& m : j) out.push_back(m["category"]);
  return out;
}

const dsft::text::Tokenizer& tokenizer(const std::string& name) {
  static std::map<std::string, std::unique_ptr<dsft::text::Tokenizer>> cache;
  auto& t = cache[name];
  if (!t) t = dsft::text::load_tokenizer(kFixtures + "/" + name);
  return *t;
}

class BpeFixture : public ::testing::TestWithParam<std::string> {};

TEST_P(BpeFixture, EncodesAndDecodesCorpusLikeReference) {
  const std::string name = GetParam();
  auto cases = read_expected(name);
  auto categories = read_categories();
  ASSERT_EQ(cases.size(), 335u);
  ASSERT_EQ(categories.size(), cases.size());
  const auto& tok = tokenizer(name);
  size_t ok_ids = 0, ok_special = 0, ok_decoded = 0;
  std::ostringstream bad;
  for (size_t i = 0; i < cases.size(); ++i) {
    const Case& c = cases[i];
    auto ids = tok.encode(c.text, false);
    auto ids_special = tok.encode(c.text, true);
    std::string decoded = tok.decode(c.ids, false);
    ok_ids += ids == c.ids;
    ok_special += ids_special == c.ids_special;
    ok_decoded += decoded == c.decoded;
    if (ids != c.ids || ids_special != c.ids_special || decoded != c.decoded) {
      bad << "  #" << i << " [" << categories[i] << "]" << (ids != c.ids ? " ids" : "")
          << (ids_special != c.ids_special ? " ids_special" : "") << (decoded != c.decoded ? " decoded" : "") << "\n";
    }
  }
  std::printf("%s: ids %zu/%zu, ids_special %zu/%zu, decoded %zu/%zu\n", name.c_str(), ok_ids, cases.size(),
              ok_special, cases.size(), ok_decoded, cases.size());
  EXPECT_EQ(ok_ids, cases.size()) << "mismatches:\n" << bad.str();
  EXPECT_EQ(ok_special, cases.size()) << "mismatches:\n" << bad.str();
  EXPECT_EQ(ok_decoded, cases.size()) << "mismatches:\n" << bad.str();
}

TEST_P(BpeFixture, BatchEqualsSingle) {
  const std::string name = GetParam();
  auto cases = read_expected(name);
  std::vector<std::string> texts;
  for (const auto& c : cases) texts.push_back(c.text);
  auto batch = tokenizer(name).encode_batch(texts, false);
  ASSERT_EQ(batch.size(), cases.size());
  for (size_t i = 0; i < cases.size(); ++i) EXPECT_EQ(batch[i], cases[i].ids) << "corpus string " << i;
}

INSTANTIATE_TEST_SUITE_P(Reference, BpeFixture, ::testing::Values("deepseek-v3", "qwen2", "llama3"),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (char& ch : n) if (ch == '-') ch = '_';
                           return n;
                         });

}  // namespace
