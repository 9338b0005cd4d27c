// Bad input and bad files give dsft::Error with a message that names the problem, never a crash;
// tokenizer_config.json supplies the special-token ids; the regex translation keeps Oniguruma's
// meaning of \s and the Unicode 16 letter and digit classes.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>

#include "dsft/text/tokenizer.h"
#include "dsft/util/error.h"
#include "text/regex.h"

namespace fs = std::filesystem;

namespace {

const std::string kFixtures = std::string(DSFT_FIXTURES_DIR) + "/tokenizers";

std::string read(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// A scratch model directory holding one tokenizer.json.
struct ScratchDir {
  fs::path path;
  explicit ScratchDir(const std::string& name, const std::string& tokenizer_json) {
    path = fs::temp_directory_path() / ("dsft_tokenizer_errors_" + name);
    fs::create_directories(path);
    std::ofstream(path / "tokenizer.json", std::ios::binary) << tokenizer_json;
  }
  ~ScratchDir() { fs::remove_all(path); }
};

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const dsft::Error& e) {
    return e.what();
  }
  return "";
}

const std::string kMinimal = R"({"version":"1.0","added_tokens":[],"normalizer":null,"pre_tokenizer":null,
  "post_processor":null,"decoder":null,
  "model":{"type":"BPE","dropout":null,"unk_token":null,"vocab":{"a":0,"b":1,"ab":2},"merges":["a b"]}})";

std::string with(const std::string& from, const std::string& to) {
  std::string s = kMinimal;
  s.replace(s.find(from), from.size(), to);
  return s;
}

TEST(TokenizerErrors, MinimalTokenizerWorks) {
  ScratchDir d("minimal", kMinimal);
  auto tok = dsft::text::load_tokenizer(d.path.string());
  EXPECT_EQ(tok->encode("abba"), (std::vector<int32_t>{2, 1, 0}));
  EXPECT_EQ(tok->decode({2, 1}), "ab b");  // no decoder: tokens joined with spaces
}

TEST(TokenizerErrors, InvalidUtf8IsAnError) {
  ScratchDir d("utf8", kMinimal);
  auto tok = dsft::text::load_tokenizer(d.path.string());
  for (std::string bad : {std::string("ab\xFF"), std::string("a\xC3"), std::string("\xED\xA0\x80"),
                          std::string("\xC0\xAF"), std::string("\xF4\x90\x80\x80")}) {
    std::string msg = error_of([&] { tok->encode(bad); });
    EXPECT_NE(msg.find("not valid UTF-8"), std::string::npos) << msg;
  }
  std::vector<std::string> batch = {"ab", "b\x80"};
  EXPECT_THROW(tok->encode_batch(batch), dsft::Error);
}

TEST(TokenizerErrors, TruncatedFileIsAnError) {
  std::string full = read(kFixtures + "/qwen2/tokenizer.json");
  ScratchDir d("truncated", full.substr(0, full.size() / 2));
  std::string msg = error_of([&] { dsft::text::load_tokenizer(d.path.string()); });
  EXPECT_NE(msg.find("tokenizer.json is not valid JSON"), std::string::npos) << msg;
}

TEST(TokenizerErrors, UnsupportedKindsNameTheKindAndFile) {
  struct Case {
    std::string json, kind;
  };
  std::vector<Case> cases = {
      {R"({"model":{"type":"WordPiece","unk_token":"[UNK]","vocab":{"[UNK]":0}}})", "\"WordPiece\""},
      {R"({"model":{"type":"Unigram","unk_id":0,"vocab":[["<unk>",0.0]]}})", "\"Unigram\""},
      {with("\"normalizer\":null", R"("normalizer":{"type":"BertNormalizer"})"), "\"BertNormalizer\""},
      {with("\"pre_tokenizer\":null", R"("pre_tokenizer":{"type":"UnicodeScripts"})"), "\"UnicodeScripts\""},
      {with("\"decoder\":null", R"("decoder":{"type":"CTC"})"), "\"CTC\""},
      {with("\"post_processor\":null", R"("post_processor":{"type":"Wordpiece"})"), "\"Wordpiece\""},
      {with("\"dropout\":null", R"("dropout":0.1)"), "dropout"},
      {with("[\"a b\"]", R"(["a c"])"), "\"c\""},
      {with("\"pre_tokenizer\":null", R"("pre_tokenizer":{"type":"Split","pattern":{"Regex":"(a"},"behavior":"Isolated","invert":false})"),
       "cannot compile regex"},
  };
  for (const auto& c : cases) {
    ScratchDir d("kind", c.json);
    std::string msg = error_of([&] { dsft::text::load_tokenizer(d.path.string()); });
    EXPECT_NE(msg.find(c.kind), std::string::npos) << msg;
    EXPECT_NE(msg.find("tokenizer.json"), std::string::npos) << msg;
  }
}

TEST(TokenizerErrors, MissingFilesAndBadIds) {
  fs::path empty = fs::temp_directory_path() / ("dsft_tokenizer_errors_empty-" + std::to_string(::getpid()));
  fs::create_directories(empty);
  EXPECT_NE(error_of([&] { dsft::text::load_tokenizer(empty.string()); }).find("no tokenizer.json"), std::string::npos);
  fs::remove_all(empty);
  EXPECT_THROW(dsft::text::load_tokenizer("/nonexistent/dsft"), dsft::Error);
  ScratchDir d("ids", kMinimal);
  auto tok = dsft::text::load_tokenizer(d.path.string());
  EXPECT_NE(error_of([&] { tok->decode({0, 99}); }).find("99"), std::string::npos);
}

TEST(TokenizerConfig, SpecialTokensAndBos) {
  auto ds = dsft::text::load_tokenizer(kFixtures + "/deepseek-v3");
  EXPECT_EQ(ds->bos_id, 0);
  EXPECT_EQ(ds->eos_id, 1);
  EXPECT_EQ(ds->pad_id, 1);
  EXPECT_TRUE(ds->add_bos_for_training);  // add_bos_token: true, post-processor adds nothing
  EXPECT_EQ(ds->vocab_size(), 128815);
  EXPECT_EQ(ds->encode("<｜begin▁of▁sentence｜>hi<｜User｜>x"), (std::vector<int32_t>{0, 6366, 128803, 90}));

  auto qw = dsft::text::load_tokenizer(kFixtures + "/qwen2");
  EXPECT_FALSE(qw->bos_id.has_value());
  EXPECT_EQ(qw->eos_id, 151645);
  EXPECT_EQ(qw->pad_id, 151643);
  EXPECT_FALSE(qw->add_bos_for_training);
  EXPECT_FALSE(qw->is_special(151667));  // <think> is an added token, not a special one
  EXPECT_TRUE(qw->is_special(151645));
  EXPECT_EQ(qw->encode(" <|im_end|> "), (std::vector<int32_t>{220, 151645, 220}));

  auto ll = dsft::text::load_tokenizer(kFixtures + "/llama3");
  EXPECT_EQ(ll->bos_id, 128000);
  EXPECT_EQ(ll->eos_id, 128001);
  EXPECT_FALSE(ll->add_bos_for_training);
  EXPECT_EQ(ll->vocab_size(), 128256);
}

TEST(TokenizerDecode, LossyBytesBecomeReplacementCharacters) {
  auto qw = dsft::text::load_tokenizer(kFixtures + "/qwen2");
  auto ids = qw->encode("é");  // one token of two bytes
  ASSERT_EQ(ids.size(), 1u);
  auto bytes = qw->encode("\xF0\x9F\x98\x80");  // 😀
  // A lone lead byte (the first byte-level token of the emoji) decodes to U+FFFD.
  std::vector<int32_t> partial = {*qw->token_to_id("\xC3\xB0")};  // byte 0xF0 in the GPT-2 table
  EXPECT_EQ(qw->decode(partial), "\xEF\xBF\xBD");
  EXPECT_EQ(qw->decode(bytes), "\xF0\x9F\x98\x80");
  EXPECT_EQ(qw->decode({}), "");
}

TEST(OnigRegex, ClassesFollowOniguruma) {
  auto matches = [](const char* pattern, const std::string& text) {
    dsft::text::Regex re(pattern, "test");
    std::vector<std::pair<size_t, size_t>> m;
    re.find_all(text, m);
    return m;
  };
  // \s: U+0085 yes (Oniguruma), U+180E no (PCRE2 alone would say yes).
  EXPECT_EQ(matches("\\s", "\xC2\x85").size(), 1u);
  EXPECT_EQ(matches("\\s", "\xE1\xA0\x8E").size(), 0u);
  EXPECT_EQ(matches("[^\\s]", "\xE1\xA0\x8E").size(), 1u);
  // \p{L}: Garay U+10D50 (Unicode 16) is a letter; CJK Ext J U+323B0 (Unicode 17) is not.
  EXPECT_EQ(matches("\\p{L}+", "\xF0\x90\xB5\x90").size(), 1u);
  EXPECT_EQ(matches("\\p{L}", "\xF0\xB2\x8E\xB0").size(), 0u);
  EXPECT_EQ(matches("[^\\p{L}\\p{N}]", "\xF0\x90\xB5\x90").size(), 0u);
  // \p{N}: outlined digits U+1CCF0 (Unicode 16).
  EXPECT_EQ(matches("\\p{N}", "\xF0\x9C\xB3\xB0").size(), 1u);
  // Oniguruma's \h is a hex digit; empty matches step one character.
  EXPECT_EQ(matches("\\h+", "xAf9z").size(), 1u);
  EXPECT_EQ(matches("a*", "ba").size(), 2u);  // (0,0) and (1,2)
  EXPECT_NE(dsft::text::onig_to_pcre2("(?m:.)", "test").find("(?s:"), std::string::npos);
  EXPECT_THROW(dsft::text::onig_to_pcre2("[a-z&&[^aeiou]]", "test"), dsft::Error);
}

}  // namespace
