// The whole `dsft clean` job through dsft::data::clean_file: nothing lost, rejects with line
// numbers, UTF-8 modes, PII never written unmasked, duplicates, languages, splits, config.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>

#include "dsft/data/clean.h"
#include "dsft/util/error.h"

using namespace dsft::data;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

class CleanJob : public ::testing::Test {
 protected:
  void SetUp() override {
    dir = fs::temp_directory_path() / ("dsft-clean-" + std::to_string(::getpid()) + "-" +
                                       ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir);
    fs::create_directories(dir);
    cfg.input = (dir / "in.jsonl").string();
    cfg.output = (dir / "out.jsonl").string();
    cfg.rejects = (dir / "rejects.jsonl").string();
    cfg.report = (dir / "report.json").string();
    cfg.threads = 2;
  }
  void TearDown() override { fs::remove_all(dir); }

  void write_input(const std::vector<std::string>& lines) {
    std::ofstream f(cfg.input, std::ios::binary);
    for (const auto& l : lines) f << l << "\n";
  }
  static std::string slurp(const std::string& p) {
    std::ifstream f(p, std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
  }
  static std::vector<json> lines_of(const std::string& p) {
    std::vector<json> out;
    std::ifstream f(p);
    std::string l;
    while (std::getline(f, l))
      if (!l.empty()) out.push_back(json::parse(l));
    return out;
  }
  json report() { return json::parse(slurp(cfg.report)); }

  fs::path dir;
  CleanConfig cfg;
};

std::string rec(const std::string& id, const std::string& text) {
  return json{{"id", id}, {"source", "t"}, {"text", text}}.dump();
}

const std::string en1 =
    "The engineering team migrated the billing service to the new cluster last week, and the rollout went smoothly.";
const std::string en2 =
    "Customers asked for clearer instructions on how to reset their passwords, so support wrote a new guide.";
const std::string zh1 = "本季度报告显示各地区收入稳步增长，团队预计明年随着新产品进入更多市场，增长将会继续保持。";

}  // namespace

TEST_F(CleanJob, NothingIsLostAndCountsAddUp) {
  write_input({
      rec("a", en1),
      "{\"id\": \"b\", \"source\": \"t\", \"instruction\": \"Translate\", \"input\": \"猫\", \"output\": \"cat, the animal\"}",
      R"({"id": "c", "source": "t", "messages": [{"role": "user", "content": "hi there, how are you"}, {"role": "assistant", "content": "fine, thanks for asking"}]})",
      "{not json at all",
      R"({"id": "e", "source": "t"})",                     // no text field
      rec("f", "hi"),                                      // too short
      rec("g", en1),                                       // exact duplicate of a
      rec("h", en1 + " See appendix."),                    // near duplicate of a
      "",                                                  // blank: not a record
      rec("i", "!!!! ???? #### $$$$ %%%% &&&& **** ((((" ),  // symbols
      rec("j", zh1),
      R"({"id": "k", "source": "t", "instruction": "Say nothing", "input": "", "output": ""})",
      rec("l", "1234567890 1234567890 1234567890 12345 abc"),  // digits
      rec("m", "same line\nsame line\nsame line\nsame line\nother"),  // repeated lines
  });
  CleanReport r = clean_file(cfg);
  auto out = lines_of(cfg.output), rej = lines_of(cfg.rejects);
  std::map<std::string, int> seen;
  for (auto& j : out) ++seen[j["id"].dump()];
  for (auto& j : rej) ++seen[j["id"].dump()];
  for (const char* id : {"a", "b", "c", "e", "f", "g", "h", "i", "j", "k", "l", "m"})
    EXPECT_EQ(seen[json(id).dump()], 1) << id;
  EXPECT_EQ(seen["null"], 1);  // the invalid JSON line
  EXPECT_EQ(out.size() + rej.size(), 13u);
  EXPECT_EQ(r.input_records, 13u);
  EXPECT_EQ(r.blank_lines, 1u);
  auto rp = report();
  EXPECT_EQ(rp["input"]["records"], 13);
  EXPECT_EQ(rp["output"]["records"].get<int>() + rp["rejected"]["total"].get<int>(), 13);
  EXPECT_TRUE(rp["balanced"].get<bool>());
  std::map<std::string, std::string> filter_of;
  for (auto& j : rej) filter_of[j["id"].is_null() ? "null" : j["id"].get<std::string>()] = j["filter"];
  EXPECT_EQ(filter_of["null"], "json");
  EXPECT_EQ(filter_of["e"], "schema");
  EXPECT_EQ(filter_of["f"], "quality");
  EXPECT_EQ(filter_of["g"], "exact_dup");
  EXPECT_EQ(filter_of["h"], "near_dup");
  EXPECT_EQ(filter_of["i"], "quality");
  EXPECT_EQ(filter_of["k"], "quality");
  EXPECT_EQ(filter_of["l"], "quality");
  EXPECT_EQ(filter_of["m"], "quality");
  EXPECT_EQ(rp["rejected"]["by_filter"]["quality"], 5);
  EXPECT_EQ(rp["rejected"]["quality_checks"]["min_chars"], 1);
  EXPECT_EQ(rp["rejected"]["quality_checks"]["symbol_ratio"], 1);
  EXPECT_EQ(rp["rejected"]["quality_checks"]["digit_ratio"], 1);
  EXPECT_EQ(rp["rejected"]["quality_checks"]["repeated_lines"], 1);
  EXPECT_EQ(rp["rejected"]["quality_checks"]["empty_output"], 1);
  for (auto& j : rej) {
    EXPECT_TRUE(j.contains("filter") && j.contains("reason") && j.contains("source") && j.contains("id") &&
                j.contains("line"));
    EXPECT_TRUE(j.contains("record") || j.contains("raw"));
  }
  EXPECT_EQ(rp["languages"]["en"].get<int>() >= 2, true);
  EXPECT_EQ(rp["languages"]["zh"], 1);
}

TEST_F(CleanJob, InvalidJsonLineIsARejectWithItsLineNumber) {
  write_input({rec("a", en1), "{\"id\": \"x\", \"text\": \"unterminated", rec("b", en2)});
  clean_file(cfg);
  auto rej = lines_of(cfg.rejects);
  ASSERT_EQ(rej.size(), 1u);
  EXPECT_EQ(rej[0]["filter"], "json");
  EXPECT_EQ(rej[0]["line"], 2);
  EXPECT_EQ(rej[0]["raw"], "{\"id\": \"x\", \"text\": \"unterminated");
  EXPECT_EQ(lines_of(cfg.output).size(), 2u);
}

TEST_F(CleanJob, ByteOrderMarkAndCrlf) {
  write_input({"\xEF\xBB\xBF" + rec("a", en1) + "\r", rec("b", en2) + "\r"});
  CleanReport r = clean_file(cfg);
  EXPECT_EQ(r.output_records, 2u);
  EXPECT_EQ(r.rejected_total(), 0u);
}

TEST_F(CleanJob, InvalidUtf8IsRepairedOrRejected) {
  std::string bad = "{\"id\": \"u\", \"source\": \"t\", \"text\": \"" + en1 + " caf\xE9 \xFF\"}";
  write_input({bad, rec("ok", en2)});
  CleanReport r = clean_file(cfg);
  auto out = lines_of(cfg.output);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_NE(out[0]["text"].get<std::string>().find("caf\xEF\xBF\xBD \xEF\xBF\xBD"), std::string::npos);
  EXPECT_EQ(r.utf8_repaired, 1u);

  cfg.invalid_utf8 = InvalidUtf8::drop;
  clean_file(cfg);
  out = lines_of(cfg.output);
  EXPECT_NE(out[0]["text"].get<std::string>().find("caf"), std::string::npos);
  EXPECT_EQ(out[0]["text"].get<std::string>().find("\xEF\xBF\xBD"), std::string::npos);

  cfg.invalid_utf8 = InvalidUtf8::reject;
  clean_file(cfg);
  auto rej = lines_of(cfg.rejects);
  ASSERT_EQ(rej.size(), 1u);
  EXPECT_EQ(rej[0]["filter"], "utf8");
  EXPECT_EQ(rej[0]["id"], "u");
  EXPECT_EQ(rej[0]["line"], 1);
  EXPECT_EQ(lines_of(cfg.output).size(), 1u);
  // The rejects file itself is valid UTF-8 JSON.
  EXPECT_NO_THROW(json::parse(slurp(cfg.rejects)));
}

TEST_F(CleanJob, PersonalDataNeverReachesRejectsOrReport) {
  const std::vector<std::string> secrets = {"zhang.san@example.com", "13812345678", "11010519491231002X",
                                            "4111 1111 1111 1111", "192.168.10.24", "S3cr3tPw9",
                                            "sk-Abc123Def456Ghi789Jkl012Mno345"};
  write_input({
      "{\"id\": \"j1\", \"text\": \"broken zhang.san@example.com 13812345678",  // invalid JSON
      R"({"id": "s1", "source": "t", "messages": [{"role": "user", "content": "card 4111 1111 1111 1111"}]})",  // no assistant
      rec("q1", "ip 192.168.10.24"),  // too short after masking? kept or rejected, masked either way
      rec("a1", en1 + " Mail zhang.san@example.com or call 13812345678, ID 11010519491231002X."),
      rec("a2", en1 + " Mail zhang.san@example.com or call 13812345678, ID 11010519491231002X."),  // duplicate
      rec("l1", "Ceci est une phrase en français avec mysql://root:S3cr3tPw9@db.example.com/app et "
                "sk-Abc123Def456Ghi789Jkl012Mno345 pour vérifier la détection de la langue."),
      R"({"id": "m1", "source": "t", "meta": {"owner": "zhang.san@example.com"}, "text": "short"})",
  });
  cfg.languages = {"zh", "en"};
  cfg.min_chars = 10;
  clean_file(cfg);
  std::string rejects = slurp(cfg.rejects), report = slurp(cfg.report), output = slurp(cfg.output);
  EXPECT_GE(lines_of(cfg.rejects).size(), 5u);
  for (const auto& s : secrets) {
    EXPECT_EQ(rejects.find(s), std::string::npos) << s;
    EXPECT_EQ(report.find(s), std::string::npos) << s;
    EXPECT_EQ(output.find(s), std::string::npos) << s;
  }
  EXPECT_NE(rejects.find("[EMAIL]"), std::string::npos);
  EXPECT_NE(rejects.find("[URL_CREDENTIALS]"), std::string::npos);
  auto rp = json::parse(report);
  EXPECT_GE(rp["pii_masked"]["EMAIL"].get<int>(), 4);
  EXPECT_GE(rp["pii_masked"]["PHONE"].get<int>(), 3);
}

TEST_F(CleanJob, DuplicatesKeepTheFirstAndNameIt) {
  write_input({rec("first", zh1), rec("second", zh1), rec("third", zh1 + "补充说明。"), rec("other", en1)});
  CleanReport r = clean_file(cfg);
  auto out = lines_of(cfg.output), rej = lines_of(cfg.rejects);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0]["id"], "first");
  ASSERT_EQ(rej.size(), 2u);
  EXPECT_EQ(rej[0]["filter"], "exact_dup");
  EXPECT_EQ(rej[0]["duplicate_of"], "first");
  EXPECT_EQ(rej[1]["filter"], "near_dup");
  EXPECT_EQ(rej[1]["duplicate_of"], "first");
  EXPECT_NE(rej[1]["reason"].get<std::string>().find("first"), std::string::npos);
  EXPECT_EQ(r.exact_duplicates, 1u);
  EXPECT_EQ(r.near_duplicates, 1u);
  cfg.near_dedup = false;
  clean_file(cfg);
  EXPECT_EQ(lines_of(cfg.output).size(), 3u);
}

TEST_F(CleanJob, MarkupAndPiiApplyToEveryTextField) {
  write_input({R"({"id": "m", "source": "t", "messages": [{"role": "user", "content": "<p>Hello</p><p>mail me: a.b@example.com</p>"}, {"role": "assistant", "content": "Sure&nbsp;thing, I will write to you at a.b@example.com today."}]})",
               R"({"id": "p", "source": "t", "instruction": "Call 138-1234-5678", "input": "<b>x</b>", "output": "OK, I will call 138-1234-5678 now."})"});
  CleanReport r = clean_file(cfg);
  auto out = lines_of(cfg.output);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0]["messages"][0]["content"], "Hello\n\nmail me: [EMAIL]");
  EXPECT_EQ(out[0]["messages"][1]["content"], "Sure thing, I will write to you at [EMAIL] today.");
  EXPECT_EQ(out[1]["instruction"], "Call [PHONE]");
  EXPECT_EQ(out[1]["input"], "x");
  EXPECT_EQ(r.html_stripped, 2u);
  EXPECT_EQ(r.pii_masked["EMAIL"], 2u);
  EXPECT_EQ(r.pii_masked["PHONE"], 2u);
}

TEST_F(CleanJob, LanguageAllowList) {
  write_input({rec("en", en1), rec("zh", zh1),
               rec("fr", "Ceci est une phrase en français pour vérifier que la détection de la langue fonctionne bien."),
               rec("short", "Bonjour à tous")});
  cfg.languages = {"zh", "en"};
  clean_file(cfg);
  auto rej = lines_of(cfg.rejects);
  ASSERT_EQ(rej.size(), 1u);
  EXPECT_EQ(rej[0]["id"], "fr");
  EXPECT_EQ(rej[0]["filter"], "language");
  EXPECT_EQ(report()["languages"]["fr"], 2);
}

TEST_F(CleanJob, SplitIsDeterministicAndRoutesFiles) {
  std::vector<std::string> lines;
  for (int i = 0; i < 300; ++i)
    lines.push_back(rec("r" + std::to_string(i), "Record number " + std::to_string(i) + " says " +
                                                     std::string(i % 2 ? en1 : en2).substr(i % 20)));
  write_input(lines);
  cfg.near_dedup = false;
  cfg.split = {0.8, 0.1, 0.1};
  clean_file(cfg);
  std::map<std::string, std::string> first;
  for (auto& j : lines_of(cfg.output)) first[j["id"]] = j["split"];
  ASSERT_EQ(first.size(), 300u);
  // Reversed order, one thread, separate files: every id keeps its split.
  std::reverse(lines.begin(), lines.end());
  write_input(lines);
  cfg.threads = 1;
  cfg.val_output = (dir / "val.jsonl").string();
  cfg.test_output = (dir / "test.jsonl").string();
  CleanReport r = clean_file(cfg);
  size_t n = 0;
  for (auto [path, want] : {std::pair{cfg.output, "train"}, {cfg.val_output, "validation"}, {cfg.test_output, "test"}}) {
    for (auto& j : lines_of(path)) {
      EXPECT_EQ(j["split"], want);
      EXPECT_EQ(first[j["id"]], want);
      ++n;
    }
  }
  EXPECT_EQ(n, 300u);
  EXPECT_GT(r.split_counts["validation"], 10u);
  EXPECT_GT(r.split_counts["test"], 10u);
}

TEST_F(CleanJob, FatalErrorLeavesNoOutput) {
  write_input({rec("a", en1)});
  cfg.rejects = (dir / "missing-dir" / "rejects.jsonl").string();
  EXPECT_THROW(clean_file(cfg), dsft::Error);
  EXPECT_FALSE(fs::exists(cfg.output));
  for (auto& e : fs::directory_iterator(dir)) EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos);
  cfg.rejects = (dir / "rejects.jsonl").string();
  cfg.input = (dir / "nope.jsonl").string();
  EXPECT_THROW(clean_file(cfg), dsft::Error);
  EXPECT_FALSE(fs::exists(cfg.output));
}

TEST_F(CleanJob, YamlConfig) {
  std::ofstream((dir / "c.yaml").string()) << "languages: [zh]\nmin_chars: 3\nnear_dup_threshold: 0.9\n"
                                              "pii_patterns:\n  EMPLOYEE_ID: 'EMP-[0-9]{6}'\nsplit: 0.9,0.05,0.05\n";
  CleanConfig c = cfg;
  apply_clean_yaml((dir / "c.yaml").string(), c);
  EXPECT_EQ(c.languages, std::vector<std::string>{"zh"});
  EXPECT_EQ(c.min_chars, 3u);
  EXPECT_DOUBLE_EQ(c.near_dup_threshold, 0.9);
  ASSERT_EQ(c.pii_options.custom.size(), 1u);
  EXPECT_EQ(c.pii_options.custom[0].name, "EMPLOYEE_ID");
  EXPECT_EQ(c.split.size(), 3u);
  std::ofstream((dir / "bad.yaml").string()) << "near_dup_treshold: 0.9\n";
  try {
    apply_clean_yaml((dir / "bad.yaml").string(), c);
    FAIL() << "unknown key accepted";
  } catch (const dsft::Error& e) {
    EXPECT_NE(std::string(e.what()).find("near_dup_threshold"), std::string::npos) << e.what();
  }
  c.split = {0.5, 0.5, 0.5};
  EXPECT_THROW(validate_clean_config(c), dsft::Error);
}
