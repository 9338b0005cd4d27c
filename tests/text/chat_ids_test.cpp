// Chat templates through the byte-level BPE tokenizers of the fixtures: the rendered text encodes
// to the reference ids (what apply_chat_template(tokenize=True) gives), and span-by-span
// tokenisation for training gives those same ids with the mask on the assistant turns.
#include <gtest/gtest.h>

#include <fstream>
#include <string>
#include <vector>

#include "dsft/text/chat_template.h"
#include "dsft/text/tokenizer.h"

using namespace dsft::text;
using oj = nlohmann::ordered_json;

namespace {

const std::string kFixtures = std::string(DSFT_FIXTURES_DIR) + "/tokenizers";

std::vector<oj> read_jsonl(const std::string& path) {
  std::ifstream f(path);
  EXPECT_TRUE(f) << "missing fixture " << path;
  std::vector<oj> rows;
  std::string line;
  while (std::getline(f, line))
    if (!line.empty()) rows.push_back(oj::parse(line));
  return rows;
}

}  // namespace

class ChatIds : public ::testing::TestWithParam<std::string> {};

TEST_P(ChatIds, RenderedChatsEncodeToReferenceIds) {
  const std::string name = GetParam();
  auto tok = load_tokenizer(kFixtures + "/" + name);
  ChatTemplate tmpl = ChatTemplate::from_tokenizer_config(kFixtures + "/" + name);
  size_t n = 0;
  for (const oj& c : read_jsonl(kFixtures + "/" + name + ".chat.jsonl")) {
    oj extra = c.value("template_kwargs", oj::object());
    if (c.contains("tools")) extra["tools"] = c["tools"];
    RenderedChat r = tmpl.render_with_spans(c["messages"], c["add_generation_prompt"].get<bool>(), extra);
    const std::vector<int32_t> want = c["ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(tok->encode(r.text), want) << name << " case " << n;

    TokenizedChat t = tokenize_chat(*tok, r, /*verify=*/true);
    EXPECT_EQ(t.ids, want) << name << " case " << n << ": span-wise tokenisation differs";
    EXPECT_TRUE(t.matches_full_encoding.value_or(false));
    // The masked tokens decode to exactly the span text.
    std::string spans;
    for (auto [b, e] : r.assistant_spans) spans += r.text.substr(b, e - b);
    std::vector<int32_t> masked;
    for (size_t i = 0; i < t.ids.size(); ++i)
      if (t.train_mask[i]) masked.push_back(t.ids[i]);
    EXPECT_EQ(tok->decode(masked), spans) << name << " case " << n;
    ++n;
  }
  EXPECT_EQ(n, 15u);
}

INSTANTIATE_TEST_SUITE_P(Tokenizers, ChatIds, ::testing::Values("deepseek-v3", "qwen2", "llama3"));
