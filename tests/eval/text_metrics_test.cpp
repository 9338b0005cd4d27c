// Answer scoring against hand-computed values: normalisation (full-width forms, CJK punctuation,
// whitespace), exact / normalised / contains matching and ROUGE-L F1 at word level (English) and
// character level (Chinese).
#include "dsft/eval/text_metrics.h"

#include <gtest/gtest.h>

namespace dsft::eval {
namespace {

using Tokens = std::vector<std::string>;

TEST(NormalizeAnswer, FoldsWidthCaseWhitespaceAndPunctuation) {
  EXPECT_EQ(normalize_answer("  Ｈｅｌｌｏ，  World！"), "hello world");
  EXPECT_EQ(normalize_answer("a\t\n  b\r\n"), "a b");
  EXPECT_EQ(normalize_answer("「你好」。"), "你好");
  EXPECT_EQ(normalize_answer("１,０００ 元"), "1000 元");
  EXPECT_EQ(normalize_answer("$5.00"), "500");
  EXPECT_EQ(normalize_answer("ﬁne\u3000ＴＵＮＩＮＧ"), "fine tuning");  // ligature, ideographic space
  EXPECT_EQ(normalize_answer("a\u200Bb"), "ab");                        // zero-width space is dropped
  EXPECT_EQ(normalize_answer(""), "");
  EXPECT_EQ(normalize_answer(" ，。！ "), "");
}

TEST(NormalizeAnswer, RepairsInvalidUtf8InsteadOfFailing) {
  std::string bad = "ok\xff\xfe end";
  EXPECT_EQ(normalize_answer(bad), "ok\uFFFD\uFFFD end");
}

TEST(RougeTokens, CjkCharactersStandAloneAndWordsStayWhole) {
  EXPECT_EQ(rouge_tokens("The cat, the HAT."), (Tokens{"the", "cat", "the", "hat"}));
  EXPECT_EQ(rouge_tokens("患者发热"), (Tokens{"患", "者", "发", "热"}));
  EXPECT_EQ(rouge_tokens("服用Aspirin 100mg，每日"), (Tokens{"服", "用", "aspirin", "100mg", "每", "日"}));
  EXPECT_EQ(rouge_tokens("１,０００"), (Tokens{"1", "000"}));
  EXPECT_EQ(rouge_tokens("カタカナとひらがな"),
            (Tokens{"カ", "タ", "カ", "ナ", "と", "ひ", "ら", "が", "な"}));
  EXPECT_EQ(rouge_tokens("café naïve"), (Tokens{"café", "naïve"}));
  EXPECT_TRUE(rouge_tokens("").empty());
  EXPECT_TRUE(rouge_tokens("!!! ...").empty());
}

TEST(ScoreAnswer, ExactMatchTrimsOnlySurroundingWhitespace) {
  AnswerScores s = score_answer(" Paris\n", "Paris");
  EXPECT_TRUE(s.exact);
  EXPECT_TRUE(s.normalized);
  EXPECT_TRUE(s.contains);
  EXPECT_DOUBLE_EQ(s.rouge_l, 1.0);

  s = score_answer("paris.", "Paris");
  EXPECT_FALSE(s.exact);
  EXPECT_TRUE(s.normalized);
}

TEST(ScoreAnswer, EnglishRougeIsWordLevel) {
  // LCS of "the cat sat on the mat" / "the cat is on the mat" is "the cat on the mat": 5 of 6
  // tokens on both sides, so P = R = F1 = 5/6.
  AnswerScores s = score_answer("The cat sat on the mat.", "the cat is on the mat");
  EXPECT_FALSE(s.exact);
  EXPECT_FALSE(s.normalized);
  EXPECT_FALSE(s.contains);
  EXPECT_NEAR(s.rouge_l, 5.0 / 6.0, 1e-12);

  // Order matters: "b c" against "c b" has an LCS of one token, so P = R = 1/2.
  EXPECT_NEAR(score_answer("b c", "c b").rouge_l, 0.5, 1e-12);
}

TEST(ScoreAnswer, ChineseRougeIsCharacterLevel) {
  // prediction 患者有发热和咳嗽 (8 characters), reference 患者发热咳嗽 (6): the whole reference is
  // a subsequence, LCS = 6, P = 6/8, R = 1, F1 = 2 * 0.75 / 1.75 = 6/7.
  AnswerScores s = score_answer("患者有发热和咳嗽", "患者发热咳嗽");
  EXPECT_NEAR(s.rouge_l, 6.0 / 7.0, 1e-12);
  EXPECT_FALSE(s.contains);  // not contiguous
  EXPECT_FALSE(s.normalized);

  s = score_answer("诊断：急性支气管炎。", "急性支气管炎");
  EXPECT_TRUE(s.contains);
  EXPECT_NEAR(s.rouge_l, 2.0 * (6.0 / 8.0) * 1.0 / (6.0 / 8.0 + 1.0), 1e-12);  // 6 of 8 characters
}

TEST(ScoreAnswer, MixedChineseAndLatin) {
  // prediction tokens: 服 用 aspirin 100mg 每 日 (6); reference: 每 日 服 用 aspirin 100 mg (7).
  // LCS = 服 用 aspirin (3): P = 1/2, R = 3/7, F1 = (3/7) / (13/14) = 6/13.
  AnswerScores s = score_answer("服用 Aspirin 100mg 每日", "每日服用aspirin 100 mg");
  EXPECT_NEAR(s.rouge_l, 6.0 / 13.0, 1e-12);
  EXPECT_FALSE(s.normalized);
}

TEST(ScoreAnswer, FullWidthDigitsAndPunctuationMatchHalfWidth) {
  AnswerScores s = score_answer("答案：１２３。", "答案:123");
  EXPECT_FALSE(s.exact);
  EXPECT_TRUE(s.normalized);
  EXPECT_TRUE(s.contains);
  EXPECT_DOUBLE_EQ(s.rouge_l, 1.0);

  s = score_answer("ＡＢＣ－１２３", "abc-123");
  EXPECT_TRUE(s.normalized);
}

TEST(ScoreAnswer, ContainsRespectsWordBoundariesButNotCjk) {
  EXPECT_TRUE(score_answer("The answer is 42.", "42").contains);
  EXPECT_FALSE(score_answer("The answer is 142.", "42").contains);
  EXPECT_FALSE(score_answer("catalog", "cat").contains);
  EXPECT_TRUE(score_answer("答案是42个", "42").contains);
  EXPECT_TRUE(score_answer("一只cat在这里", "cat").contains);
  // A later occurrence at a boundary still counts after an earlier one inside a word.
  EXPECT_TRUE(score_answer("142 or 42", "42").contains);
}

TEST(ScoreAnswer, EmptyStrings) {
  AnswerScores s = score_answer("", "");
  EXPECT_TRUE(s.exact);
  EXPECT_TRUE(s.normalized);
  EXPECT_TRUE(s.contains);
  EXPECT_DOUBLE_EQ(s.rouge_l, 1.0);

  s = score_answer("something", "");
  EXPECT_FALSE(s.exact);
  EXPECT_FALSE(s.normalized);
  EXPECT_FALSE(s.contains);  // an empty reference must not reward every answer
  EXPECT_DOUBLE_EQ(s.rouge_l, 0.0);

  s = score_answer("", "something");
  EXPECT_FALSE(s.exact);
  EXPECT_FALSE(s.normalized);
  EXPECT_FALSE(s.contains);
  EXPECT_DOUBLE_EQ(s.rouge_l, 0.0);

  s = score_answer("   ", "\n");
  EXPECT_TRUE(s.exact);
}

}  // namespace
}  // namespace dsft::eval
