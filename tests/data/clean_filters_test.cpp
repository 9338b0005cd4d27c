// The single-record filters of `dsft clean`: UTF-8, markup, Unicode, language, quality
// statistics, MinHash/LSH and the split.
#include <gtest/gtest.h>

#include <string>

#include "dsft/data/clean_filters.h"

using namespace dsft::data;

TEST(CleanUtf8, ValidatesAndRepairs) {
  EXPECT_TRUE(utf8_is_valid("plain ascii and 中文 and emoji \xF0\x9F\x98\x80"));
  EXPECT_FALSE(utf8_is_valid("bad \xFF byte"));
  EXPECT_FALSE(utf8_is_valid("overlong \xC0\xAF"));
  EXPECT_FALSE(utf8_is_valid("surrogate \xED\xA0\x80"));
  EXPECT_FALSE(utf8_is_valid("truncated \xE4\xB8"));
  size_t bad = 0;
  EXPECT_EQ(utf8_repair("a\xFF" "b", false, &bad), "a\xEF\xBF\xBD" "b");
  EXPECT_EQ(bad, 1u);
  // A truncated 3-byte sequence is one maximal invalid subpart: one U+FFFD, not two.
  EXPECT_EQ(utf8_repair("x\xE4\xB8y", false, &bad), "x\xEF\xBF\xBDy");
  EXPECT_EQ(bad, 1u);
  EXPECT_EQ(utf8_repair("x\xE4\xB8y\xFF", true, &bad), "xy");
  EXPECT_EQ(bad, 2u);
  EXPECT_TRUE(utf8_is_valid(utf8_repair("\xC3\x28\xA0\xA1\xF0\x28\x8C\xBC", false)));
}

TEST(CleanMarkup, DetectsMarkupOnly) {
  EXPECT_TRUE(looks_like_markup("<p>hello</p>"));
  EXPECT_TRUE(looks_like_markup("line<br>next"));
  EXPECT_TRUE(looks_like_markup("<record><name>x</name></record>"));
  EXPECT_TRUE(looks_like_markup("Tom &amp; Jerry"));
  EXPECT_TRUE(looks_like_markup("<!-- note -->text"));
  EXPECT_TRUE(looks_like_markup("<div class=\"x\">a"));
  EXPECT_FALSE(looks_like_markup("if a<b and c>d then"));
  EXPECT_FALSE(looks_like_markup("std::vector<int> v;"));
  EXPECT_FALSE(looks_like_markup("#include <stdio.h>"));
  EXPECT_FALSE(looks_like_markup("AT&T and R&D"));
  EXPECT_FALSE(looks_like_markup("3 < 5 && 7 > 2"));
}

TEST(CleanMarkup, KeepsBreaksDropsScripts) {
  std::string html =
      "<html><head><title>T</title><style>p{color:red}</style><script>alert('x')</script></head>"
      "<body><h1>Title</h1><p>First   paragraph\n with  wrap.</p><p>Second<br>line two</p>"
      "<ul><li>one</li><li>two</li></ul><div>&copy; 2024 &amp; &lt;ACME&gt; &#20013;&#x6587;</div></body></html>";
  std::string t = markup_to_text(html);
  EXPECT_EQ(t.find("alert"), std::string::npos);
  EXPECT_EQ(t.find("color"), std::string::npos);
  EXPECT_NE(t.find("Title\n\nFirst paragraph with wrap.\n\nSecond\nline two"), std::string::npos) << t;
  EXPECT_NE(t.find("one\ntwo"), std::string::npos) << t;
  EXPECT_NE(t.find("\xC2\xA9 2024 & <ACME> 中文"), std::string::npos) << t;
  EXPECT_EQ(t.find('<' + std::string("p")), std::string::npos);
  EXPECT_EQ(markup_to_text("<pre>a\n  b</pre>"), "a\n  b");
}

TEST(CleanUnicode, NormalFormsAndSpaces) {
  UnicodeOptions o;
  // e + combining acute -> é (NFC); the fullwidth A stays under NFC and folds under NFKC.
  EXPECT_EQ(normalize_unicode("e\xCC\x81 \xEF\xBC\xA1", o), "\xC3\xA9 \xEF\xBC\xA1");
  o.form = NormalForm::nfkc;
  EXPECT_EQ(normalize_unicode("e\xCC\x81 \xEF\xBC\xA1", o), "\xC3\xA9 A");
  o.form = NormalForm::nfc;
  EXPECT_EQ(normalize_unicode("a\r\nb\rc", o), "a\nb\nc");
  EXPECT_EQ(normalize_unicode("a\x01\x7f" "b\tc\n", o), "ab\tc");
  EXPECT_EQ(normalize_unicode("a\xC2\xA0\xC2\xA0" "b\xE3\x80\x80" "c\xE2\x80\x8B" "d", o), "a b cd");  // NBSP, U+3000, ZWSP
  EXPECT_EQ(normalize_unicode("a\xE2\x80\xA8" "b", o), "a\nb");  // U+2028
  EXPECT_EQ(normalize_unicode("  lead   and    runs  \n\n\n\n    indented", o), "lead and runs\n\n    indented");
  o.collapse_spaces = false;
  EXPECT_EQ(normalize_unicode("a   b", o), "a   b");
  o.remove_controls = false;
  EXPECT_EQ(normalize_unicode("a\x01" "b", o), "a\x01" "b");
}

TEST(CleanLanguage, DetectsChineseAndEnglish) {
  auto zh = detect_language("这是一个用于测试语言检测的中文句子。我们希望它能被正确识别为中文，而不是其他语言。");
  EXPECT_EQ(zh.code, "zh");
  auto en = detect_language("This is an English sentence written to check that the language detector works as expected.");
  EXPECT_EQ(en.code, "en");
  EXPECT_TRUE(en.reliable);
  auto fr = detect_language("Ceci est une phrase en français pour vérifier que la détection de la langue fonctionne bien.");
  EXPECT_EQ(fr.code, "fr");
  auto mixed = detect_language(
      "这是一个用于测试的中文段落，内容关于模型训练和数据清洗。This paragraph is English and talks about training data "
      "cleaning and model fine-tuning in some detail.");
  bool has_zh = false, has_en = false;
  for (auto& [c, p] : mixed.top) {
    has_zh |= c == "zh";
    has_en |= c == "en";
  }
  EXPECT_TRUE(has_zh && has_en);
  EXPECT_EQ(detect_language("").code, "un");
}

TEST(CleanQuality, Stats) {
  TextStats s = text_stats("ab 12 !!\nline\nline\nline");
  EXPECT_EQ(s.chars, 23u);
  EXPECT_EQ(s.digits, 2u);
  EXPECT_EQ(s.symbols, 2u);
  EXPECT_EQ(s.lines, 4u);
  EXPECT_EQ(s.repeated_lines, 2u);
  TextStats z = text_stats("中文，测试。");
  EXPECT_EQ(z.chars, 6u);
  EXPECT_EQ(z.symbols, 2u);
}

TEST(CleanDedup, MinHashSimilarity) {
  MinHasher h(128, 5);
  std::string a =
      "The quarterly report shows that revenue grew steadily across all regions, and the team expects the same "
      "next year as the new products reach more customers in more markets.";
  std::string b = a + " See appendix.";
  std::string c = "A completely different text about the weather in the mountains during a long and cold winter.";
  auto sa = h.signature(a), sb = h.signature(b), sc = h.signature(c);
  ASSERT_EQ(sa.size(), 128u);
  EXPECT_EQ(sa, h.signature(a));  // deterministic
  EXPECT_GT(signature_similarity(sa.data(), sb.data(), 128), 0.8);
  EXPECT_LT(signature_similarity(sa.data(), sc.data(), 128), 0.2);
  // Whitespace and case do not matter; Chinese works without spaces.
  auto su = h.signature("THE   quarterly\nreport");
  EXPECT_EQ(su, h.signature("the quarterly report"));
  std::string zh = "本季度报告显示各地区收入稳步增长，团队预计明年随着新产品进入更多市场，增长将会继续保持。";
  auto z1 = h.signature(zh), z2 = h.signature(zh + "补充说明。");
  EXPECT_GT(signature_similarity(z1.data(), z2.data(), 128), 0.8);
  EXPECT_TRUE(h.signature("").empty());
}

TEST(CleanDedup, LshIndexFindsTheEarliestSimilar) {
  auto [b, r] = lsh_bands_rows(0.8, 128);
  EXPECT_LE(b * r, 128);
  EXPECT_GT(b, 1);
  MinHasher h(128, 5);
  NearDupIndex idx(128, 0.8);
  std::string base = "训练数据在微调之前需要去重和过滤，否则模型会记住重复的内容并且过拟合到少数样本上。";
  idx.insert(h.signature(base));
  idx.insert(h.signature("Completely unrelated English text about shipping delays and storms at the port."));
  double sim = 0;
  EXPECT_EQ(idx.query(h.signature(base + "。"), &sim), 0);
  EXPECT_GE(sim, 0.8);
  EXPECT_EQ(idx.query(h.signature("A third text, not like the others at all, about cooking pasta.")), -1);
}

TEST(CleanSplit, DeterministicAndProportional) {
  const double f[3] = {0.8, 0.1, 0.1};
  int counts[3] = {};
  for (int i = 0; i < 20000; ++i) {
    std::string id = "rec-" + std::to_string(i);
    std::string s = split_for(id, f, 0);
    EXPECT_EQ(s, split_for(id, f, 0));
    counts[s == "train" ? 0 : s == "validation" ? 1 : 2]++;
  }
  EXPECT_NEAR(counts[0] / 20000.0, 0.8, 0.02);
  EXPECT_NEAR(counts[1] / 20000.0, 0.1, 0.02);
  EXPECT_NEAR(counts[2] / 20000.0, 0.1, 0.02);
  // Another seed moves records between splits.
  int moved = 0;
  for (int i = 0; i < 1000; ++i) {
    std::string id = "rec-" + std::to_string(i);
    moved += std::string(split_for(id, f, 0)) != split_for(id, f, 7);
  }
  EXPECT_GT(moved, 50);
}
