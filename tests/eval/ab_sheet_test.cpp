// Blind A/B sheets: prompt templates, CSV quoting that survives commas, quotes and line breaks,
// HTML escaping, the seeded A/B order recorded in key.json, private atomic files and the refusal
// to overwrite a sheet without force.
#include "dsft/eval/ab_sheet.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "ab_test_util.h"
#include "dsft/util/error.h"

namespace dsft::eval {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;
using test::error_of;

TEST(FillPromptTemplate, FillsNamedPlaceholders) {
  std::map<std::string, std::string> vars = {{"患者主诉", "头痛三天"}, {"age", "42"}};
  EXPECT_EQ(fill_prompt_template("主诉：{患者主诉}，年龄 {age} 岁。", vars, "r1"),
            "主诉：头痛三天，年龄 42 岁。");
  EXPECT_EQ(fill_prompt_template("{age}{age}", vars, "r1"), "4242");
  EXPECT_EQ(fill_prompt_template("no placeholders", {}, "r1"), "no placeholders");
  EXPECT_EQ(fill_prompt_template("", {}, "r1"), "");
}

TEST(FillPromptTemplate, DoubledBracesAreLiteral) {
  std::map<std::string, std::string> vars = {{"x", "1"}};
  EXPECT_EQ(fill_prompt_template("{{\"x\": {x}}}", vars, "r"), "{\"x\": 1}");
  EXPECT_EQ(fill_prompt_template("{{x}}", vars, "r"), "{x}");
  // A value is inserted as is, never expanded again.
  EXPECT_EQ(fill_prompt_template("{x}", {{"x", "{y}"}}, "r"), "{y}");
}

TEST(FillPromptTemplate, MissingPlaceholderNamesItAndTheRecord) {
  std::string e = error_of([] {
    fill_prompt_template("主诉：{患者主诉}", {{"age", "42"}}, "vars.jsonl line 7");
  });
  EXPECT_NE(e.find("{患者主诉}"), std::string::npos) << e;
  EXPECT_NE(e.find("vars.jsonl line 7"), std::string::npos) << e;
  EXPECT_NE(e.find("age"), std::string::npos) << e;  // lists what the record has
  EXPECT_NE(error_of([] {
              fill_prompt_template("a {b", {{"b", "1"}}, "r");
            }).find("never closed"),
            std::string::npos);
  EXPECT_NE(error_of([] { fill_prompt_template("a } b", {}, "r"); }).find("'}}'"), std::string::npos);
  EXPECT_NE(error_of([] { fill_prompt_template("a {} b", {}, "r"); }).find("empty placeholder"),
            std::string::npos);
}

std::vector<AbItem> tricky_items() {
  return {
      {"q1", "Dose for a child, 20 kg?", "10 mg/kg, \"twice\" a day", "BASE: say \"no\"\nthen stop",
       "dosage"},
      {"q2", "<b>bold</b> & more", "line1\r\nline2", "=HYPERLINK(\"http://x\")", "triage"},
      {"q3", "诊断，是什么？", "- 急性支气管炎\n- 观察", " leading space", ""},
  };
}

TEST(WriteAbSheet, CsvRoundTripsAwkwardTextAndMatchesTheKey) {
  test::TempDir d;
  std::vector<AbItem> items = tricky_items();
  write_ab_sheet(items, 7, d.str(), false);

  std::string raw = test::slurp(d.path / "sheet.csv");
  ASSERT_EQ(raw.substr(0, 3), "\xEF\xBB\xBF");  // BOM, for spreadsheet programs
  std::vector<std::vector<std::string>> rows = test::parse_csv(raw.substr(3));
  ASSERT_EQ(rows.size(), items.size() + 1);
  EXPECT_EQ(rows[0],
            (std::vector<std::string>{"item", "prompt", "answer_a", "answer_b", "rating", "comment"}));

  json key = json::parse(test::slurp(d.path / "key.json"));
  EXPECT_EQ(key["seed"], 7);
  ASSERT_EQ(key["items"].size(), items.size());
  for (size_t i = 0; i < items.size(); ++i) {
    const auto& row = rows[i + 1];
    ASSERT_EQ(row.size(), 6u);
    EXPECT_EQ(row[0], items[i].id);
    EXPECT_EQ(row[1], items[i].prompt);
    std::string a_is = key["items"][items[i].id]["a"];
    ASSERT_TRUE(a_is == "base" || a_is == "tuned");
    // Formula-like answers get a leading apostrophe; everything else comes back byte for byte.
    auto shown = [](const std::string& s) { return s[0] == '=' || s[0] == '-' ? "'" + s : s; };
    EXPECT_EQ(row[2], shown(a_is == "base" ? items[i].base_answer : items[i].tuned_answer));
    EXPECT_EQ(row[3], shown(a_is == "base" ? items[i].tuned_answer : items[i].base_answer));
    EXPECT_EQ(row[4], "");
    if (items[i].category.empty())
      EXPECT_FALSE(key["items"][items[i].id].contains("category"));
    else
      EXPECT_EQ(key["items"][items[i].id]["category"], items[i].category);
  }
}

TEST(WriteAbSheet, HtmlIsEscapedAndOffline) {
  test::TempDir d;
  write_ab_sheet(tricky_items(), 1, d.str(), false);
  std::string html = test::slurp(d.path / "sheet.html");
  EXPECT_EQ(html.find("<b>bold</b>"), std::string::npos);
  EXPECT_NE(html.find("&lt;b&gt;bold&lt;/b&gt; &amp; more"), std::string::npos);
  EXPECT_NE(html.find("诊断，是什么？"), std::string::npos);
  EXPECT_EQ(html.find("<script"), std::string::npos);
  EXPECT_EQ(html.find(" src="), std::string::npos);
  EXPECT_EQ(html.find(" href="), std::string::npos);
  EXPECT_EQ(html.find("\"http://x\""), std::string::npos);  // only as escaped text
}

TEST(WriteAbSheet, FilesArePrivateAndNotOverwrittenWithoutForce) {
  test::TempDir d;
  std::string out = (d.path / "ab").string();
  write_ab_sheet(tricky_items(), 3, out, false);
  for (const char* f : {"sheet.csv", "sheet.html", "key.json"}) {
    struct stat st {};
    ASSERT_EQ(::stat((out + "/" + f).c_str(), &st), 0) << f;
    EXPECT_EQ(st.st_mode & 0777, 0600u) << f;
  }
  std::string key_before = test::slurp(fs::path(out) / "key.json");
  std::string e = error_of([&] { write_ab_sheet(tricky_items(), 4, out, false); });
  EXPECT_NE(e.find("already exists"), std::string::npos) << e;
  EXPECT_NE(e.find("--force"), std::string::npos) << e;
  EXPECT_EQ(test::slurp(fs::path(out) / "key.json"), key_before);
  write_ab_sheet(tricky_items(), 4, out, true);
  EXPECT_EQ(json::parse(test::slurp(fs::path(out) / "key.json"))["seed"], 4);
  // No temporary files are left behind.
  size_t n = 0;
  for (const auto& entry : fs::directory_iterator(out)) (void)entry, ++n;
  EXPECT_EQ(n, 3u);
}

TEST(WriteAbSheet, OrderIsShuffledBySeedAndReproducible) {
  std::vector<AbItem> items;
  for (int i = 0; i < 64; ++i)
    items.push_back(
        {"i" + std::to_string(i), "p", "base " + std::to_string(i), "tuned " + std::to_string(i), ""});
  test::TempDir d;
  write_ab_sheet(items, 42, (d.path / "a").string(), false);
  write_ab_sheet(items, 42, (d.path / "b").string(), false);
  write_ab_sheet(items, 43, (d.path / "c").string(), false);
  EXPECT_EQ(test::slurp(d.path / "a" / "sheet.csv"), test::slurp(d.path / "b" / "sheet.csv"));
  EXPECT_EQ(test::slurp(d.path / "a" / "key.json"), test::slurp(d.path / "b" / "key.json"));
  EXPECT_NE(test::slurp(d.path / "a" / "sheet.csv"), test::slurp(d.path / "c" / "sheet.csv"));
  json key = json::parse(test::slurp(d.path / "a" / "key.json"));
  int base_first = 0;
  for (const auto& [id, v] : key["items"].items()) base_first += v["a"] == "base";
  // Both orders occur, roughly half each (64 fair draws: 20..44 holds with p > 0.999).
  EXPECT_GT(base_first, 20);
  EXPECT_LT(base_first, 44);
}

TEST(WriteAbSheet, RejectsEmptyAndDuplicateIds) {
  test::TempDir d;
  EXPECT_NE(error_of([&] { write_ab_sheet({}, 1, d.str(), false); }).find("no items"), std::string::npos);
  EXPECT_NE(error_of([&] {
              write_ab_sheet({{"x", "p", "a", "b", ""}, {"x", "p", "a", "b", ""}}, 1, d.str(), false);
            }).find("'x' occurs twice"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              write_ab_sheet({{"", "p", "a", "b", ""}}, 1, d.str(), false);
            }).find("empty id"),
            std::string::npos);
}

}  // namespace
}  // namespace dsft::eval
