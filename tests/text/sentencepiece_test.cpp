// SentencePiece: training a small model from a generated JSONL corpus (deterministic), loading it
// behind the Tokenizer interface (round trips, special tokens, byte fallback), the files
// load_tokenizer and ChatTemplate read back, span-masked chat tokenisation, and errors.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "dsft/text/chat_template.h"
#include "dsft/text/sentencepiece.h"
#include "dsft/text/tokenizer.h"
#include "dsft/util/error.h"

namespace fs = std::filesystem;
using namespace dsft::text;
using oj = nlohmann::ordered_json;

namespace {

class TempDir {
 public:
  TempDir() {
    path_ = fs::temp_directory_path() / ("dsft_sp_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter_++));
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string operator/(const std::string& name) const { return (path_ / name).string(); }
  std::string str() const { return path_.string(); }

 private:
  fs::path path_;
  static inline int counter_ = 0;
};

// A few thousand lines of mixed English and Chinese in the three record shapes.
void write_corpus(const std::string& path) {
  const std::vector<std::string> en = {"the", "model", "learns", "from", "private", "data", "quickly", "and",
                                       "tokens", "are", "counted", "per", "second", "on", "every", "machine",
                                       "training", "loss", "falls", "steadily", "while", "we", "watch"};
  const std::vector<std::string> zh = {"模型", "数据", "训练", "我们", "学习", "私有", "很快", "每秒",
                                       "中文", "文本", "分词", "测试", "损失", "下降", "机器"};
  std::mt19937 rng(7);
  auto sentence = [&](bool chinese) {
    std::string s;
    int n = 4 + static_cast<int>(rng() % 8);
    for (int i = 0; i < n; ++i) {
      if (chinese) s += zh[rng() % zh.size()];
      else s += (i ? " " : "") + en[rng() % en.size()];
    }
    return s + (chinese ? "。" : ".");
  };
  std::ofstream f(path);
  for (int i = 0; i < 1200; ++i) {
    switch (i % 3) {
      case 0:
        f << oj{{"text", sentence(false) + "\n" + sentence(true) + " " + std::to_string(i)}}.dump() << "\n";
        break;
      case 1:
        f << oj{{"instruction", sentence(true)}, {"input", ""}, {"output", sentence(false)}}.dump() << "\n";
        break;
      default:
        f << oj{{"messages", oj::array({oj{{"role", "user"}, {"content", sentence(false)}},
                                        oj{{"role", "assistant"}, {"content", sentence(true)}}})}}
                 .dump()
          << "\n";
    }
  }
  f << oj{{"id", 9}, {"note", "no text here"}}.dump() << "\n";
}

std::string file_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

// One trained model shared by the tests of this file (training takes about a second).
struct Trained {
  TempDir dir;
  std::string corpus = dir / "corpus.jsonl";
  std::string out = dir / "model";
  Trained() {
    write_corpus(corpus);
    SentencePieceTrainOptions o;
    o.input_jsonl = corpus;
    o.output_dir = out;
    o.vocab_size = 640;
    o.chat_template = "chatml";
    o.user_defined_symbols = {"<tool_call>"};
    train_sentencepiece(o);
  }
};

const Trained& trained() {
  static Trained t;
  return t;
}

void expect_error_containing(const std::function<void()>& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "expected dsft::Error containing '" << needle << "'";
  } catch (const dsft::Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

}  // namespace

TEST(SentencePiece, TrainsAndRoundTripsMixedText) {
  auto tok = load_sentencepiece_tokenizer(trained().out + "/tokenizer.model");
  EXPECT_EQ(tok->vocab_size(), 640);
  const std::vector<std::string> texts = {
      "the model learns from private data.",
      "我们训练模型，损失下降很快。",
      "mixed 中文 and English\n\twith  tabs,   runs of spaces and a trailing space ",
      "unseen: Ωmega ✓ 😀 ñ — byte fallback covers them",
      "",
      "\n\n",
      "digits 12345 split one by one"};
  for (const auto& t : texts) {
    std::vector<int32_t> ids = tok->encode(t);
    EXPECT_EQ(tok->decode(ids), t) << t;
    for (int32_t id : ids) EXPECT_FALSE(tok->is_special(id)) << t;
  }
  // Common text compresses: far fewer tokens than bytes.
  std::string common = "the model learns from private data and tokens are counted per second";
  EXPECT_LT(tok->encode(common).size(), common.size() / 2);
  std::string chinese = "我们训练模型数据";
  EXPECT_LE(tok->encode(chinese).size(), 4u);
}

TEST(SentencePiece, SpecialTokensAreMatchedInText) {
  auto tok = load_sentencepiece_tokenizer(trained().out + "/tokenizer.model");
  ASSERT_TRUE(tok->bos_id && tok->eos_id && tok->pad_id);
  EXPECT_EQ(tok->id_to_token(*tok->bos_id), "<s>");
  EXPECT_EQ(tok->id_to_token(*tok->eos_id), "<|im_end|>");  // ChatML ends turns and documents with it
  EXPECT_EQ(tok->id_to_token(*tok->pad_id), "<pad>");
  auto start = tok->token_to_id("<|im_start|>");
  auto call = tok->token_to_id("<tool_call>");
  ASSERT_TRUE(start && call);
  EXPECT_FALSE(tok->token_to_id("<|im_start"));  // not a piece: no unk stand-in
  EXPECT_TRUE(tok->is_special(*start));
  EXPECT_TRUE(tok->is_special(*tok->eos_id));

  std::string chat = "<|im_start|>user\n你好<|im_end|>\n<tool_call>x<s>";
  std::vector<int32_t> ids = tok->encode(chat);
  EXPECT_EQ(ids.front(), *start);
  EXPECT_NE(std::find(ids.begin(), ids.end(), *tok->eos_id), ids.end());
  EXPECT_NE(std::find(ids.begin(), ids.end(), *call), ids.end());
  EXPECT_EQ(ids.back(), *tok->bos_id);
  EXPECT_EQ(tok->decode(ids), chat);
  EXPECT_EQ(tok->decode(ids, /*skip_special_tokens=*/true), "user\n你好\nx");
  // A near miss stays text.
  std::vector<int32_t> near = tok->encode("<|im_start|");
  EXPECT_EQ(std::find(near.begin(), near.end(), *start), near.end());
  EXPECT_EQ(tok->encode("hi", /*add_special_tokens=*/true).front(), *tok->bos_id);
}

TEST(SentencePiece, WritesConfigThatLoadersRead) {
  const std::string dir = trained().out;
  auto cfg = nlohmann::json::parse(file_bytes(dir + "/tokenizer_config.json"));
  EXPECT_EQ(cfg["bos_token"], "<s>");
  EXPECT_EQ(cfg["eos_token"], "<|im_end|>");
  EXPECT_EQ(cfg["additional_special_tokens"], nlohmann::json({"<|im_start|>", "<tool_call>"}));
  EXPECT_EQ(ChatTemplate::from_tokenizer_config(dir).name(), "chatml");

  // The model directory loads through the generic entry point too.
  auto tok = load_tokenizer(dir);
  EXPECT_EQ(tok->vocab_size(), 640);
  EXPECT_EQ(tok->eos_id, tok->token_to_id("<|im_end|>"));
  EXPECT_EQ(tok->decode(tok->encode("训练 data")), "训练 data");
}

// Chat rendered with the model's own template, tokenised span by span: boundaries fall on special
// tokens, so the ids equal a whole-text encoding, and the masked tokens spell the assistant turns.
TEST(SentencePiece, ChatMaskFollowsAssistantSpans) {
  const std::string dir = trained().out;
  auto tok = load_tokenizer(dir);
  ChatTemplate tmpl = ChatTemplate::from_tokenizer_config(dir);
  oj messages = oj::array({oj{{"role", "system"}, {"content", "be brief"}}, oj{{"role", "user"}, {"content", "你好"}},
                           oj{{"role", "assistant"}, {"content", "the model learns."}},
                           oj{{"role", "user"}, {"content", "再来"}}, oj{{"role", "assistant"}, {"content", "训练数据"}}});
  RenderedChat r = tmpl.render_with_spans(messages);
  TokenizedChat t = tokenize_chat(*tok, r, /*verify=*/true);
  ASSERT_TRUE(t.matches_full_encoding.has_value());
  EXPECT_TRUE(*t.matches_full_encoding);
  ASSERT_EQ(t.ids.size(), t.train_mask.size());
  std::vector<int32_t> trained_ids;
  for (size_t i = 0; i < t.ids.size(); ++i)
    if (t.train_mask[i]) trained_ids.push_back(t.ids[i]);
  EXPECT_EQ(tok->decode(trained_ids), "the model learns.<|im_end|>训练数据<|im_end|>");
  EXPECT_EQ(tok->decode(t.ids), r.text);
}

TEST(SentencePiece, TrainingIsDeterministic) {
  TempDir dir;
  const std::string corpus = dir / "corpus.jsonl";
  write_corpus(corpus);
  for (const char* type : {"bpe", "unigram"}) {
    SentencePieceTrainOptions o;
    o.input_jsonl = corpus;
    o.vocab_size = 400;
    o.model_type = type;
    o.chat_template = "deepseek-v3";
    o.output_dir = dir / (std::string(type) + "_a");
    train_sentencepiece(o);
    o.output_dir = dir / (std::string(type) + "_b");
    train_sentencepiece(o);
    std::string a = file_bytes(dir / (std::string(type) + "_a/tokenizer.model"));
    EXPECT_FALSE(a.empty());
    EXPECT_EQ(a, file_bytes(dir / (std::string(type) + "_b/tokenizer.model"))) << type;
    EXPECT_EQ(file_bytes(dir / (std::string(type) + "_a/tokenizer_config.json")),
              file_bytes(dir / (std::string(type) + "_b/tokenizer_config.json")));
    auto tok = load_sentencepiece_tokenizer(dir / (std::string(type) + "_a/tokenizer.model"));
    EXPECT_EQ(tok->id_to_token(*tok->bos_id), "<｜begin▁of▁sentence｜>");
    EXPECT_TRUE(tok->token_to_id("<｜User｜>").has_value());
    std::string s = "<｜begin▁of▁sentence｜><｜User｜>模型 data<｜Assistant｜>ok<｜end▁of▁sentence｜>";
    EXPECT_EQ(tok->decode(tok->encode(s)), s) << type;
  }
}

TEST(SentencePiece, Errors) {
  TempDir dir;
  SentencePieceTrainOptions o;
  o.output_dir = dir / "out";
  o.input_jsonl = dir / "missing.jsonl";
  expect_error_containing([&] { train_sentencepiece(o); }, "missing.jsonl does not exist");

  o.input_jsonl = dir / "empty.jsonl";
  std::ofstream(o.input_jsonl) << "{\"id\": 1}\n{\"text\": \"   \"}\n\n";
  expect_error_containing([&] { train_sentencepiece(o); }, "has no text");

  o.input_jsonl = dir / "bad.jsonl";
  std::ofstream(o.input_jsonl) << "{\"text\": \"ok\"}\n{not json\n";
  expect_error_containing([&] { train_sentencepiece(o); }, "bad.jsonl line 2 is not valid JSON");

  o.input_jsonl = trained().corpus;
  o.model_type = "wordpiece";
  expect_error_containing([&] { train_sentencepiece(o); }, "\"wordpiece\"");
  o.model_type = "bpe";
  o.vocab_size = 100;
  expect_error_containing([&] { train_sentencepiece(o); }, "vocab_size");
  o.vocab_size = 500;
  o.chat_template = "no-such-template";
  expect_error_containing([&] { train_sentencepiece(o); }, "unknown chat template");
  EXPECT_FALSE(fs::exists(dir / "out/tokenizer.model"));

  expect_error_containing([&] { load_sentencepiece_tokenizer(dir / "nope.model"); }, "nope.model does not exist");
  std::ofstream(dir / "junk.model") << "this is not a protobuf";
  expect_error_containing([&] { load_sentencepiece_tokenizer(dir / "junk.model"); }, "not a SentencePiece model");

  auto tok = load_sentencepiece_tokenizer(trained().out + "/tokenizer.model");
  expect_error_containing([&] { tok->encode(std::string("bad \xff utf8")); }, "not valid UTF-8");
  expect_error_containing([&] { tok->decode({5, 100000}); }, "100000");
  expect_error_containing([&] { tok->id_to_token(-1); }, "outside the vocabulary");
}
