// e2e: `dsft clean` through the real binary: outputs, rejects, report, config precedence, errors.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "e2e/run.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

struct Dir {
  fs::path p;
  explicit Dir(const std::string& name) {
    p = fs::temp_directory_path() / ("dsft-e2e-clean-" + std::to_string(::getpid()) + "-" + name);
    fs::remove_all(p);
    fs::create_directories(p);
  }
  ~Dir() { fs::remove_all(p); }
  std::string operator/(const std::string& f) const { return (p / f).string(); }
};

std::string slurp(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

size_t count_lines(const std::string& p) {
  std::string s = slurp(p);
  return static_cast<size_t>(std::count(s.begin(), s.end(), '\n'));
}

void write_records(const std::string& path) {
  std::ofstream f(path, std::ios::binary);
  f << R"({"id": "1", "source": "e2e", "text": "<p>The engineering team migrated the billing service.</p><p>Contact ops@example.com or 13912345678.</p>"})" << "\n";
  f << R"({"id": "2", "source": "e2e", "instruction": "总结下面的内容", "input": "本季度报告显示各地区收入稳步增长。", "output": "收入稳步增长。"})" << "\n";
  f << R"({"id": "3", "source": "e2e", "messages": [{"role": "user", "content": "What is my card?"}, {"role": "assistant", "content": "Your card 4111 1111 1111 1111 is on file."}]})" << "\n";
  f << "{\"id\": \"4\", \"source\": \"e2e\", \"text\": \"broken \xff json\n";
  f << R"({"id": "5", "source": "e2e", "text": "<p>The engineering team migrated the billing service.</p><p>Contact ops@example.com or 13912345678.</p>"})" << "\n";
}

}  // namespace

TEST(CleanE2E, WritesOutputRejectsAndReport) {
  Dir d("basic");
  write_records(d / "in.jsonl");
  auto r = e2e::run_dsft("clean " + (d / "in.jsonl") + " -o " + (d / "out.jsonl") + " --rejects " +
                         (d / "rejects.jsonl") + " --report " + (d / "report.json") + " --split 0.8,0.1,0.1");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("5 records in"), std::string::npos) << r.out;
  EXPECT_EQ(count_lines(d / "out.jsonl") + count_lines(d / "rejects.jsonl"), 5u);
  auto rep = json::parse(slurp(d / "report.json"));
  EXPECT_EQ(rep["input"]["records"], 5);
  EXPECT_EQ(rep["rejected"]["by_filter"]["json"], 1);
  EXPECT_EQ(rep["rejected"]["by_filter"]["exact_dup"], 1);
  EXPECT_TRUE(rep["balanced"].get<bool>());
  std::string all = slurp(d / "out.jsonl") + slurp(d / "rejects.jsonl") + slurp(d / "report.json") + r.out;
  for (const char* secret : {"ops@example.com", "13912345678", "4111 1111 1111 1111"})
    EXPECT_EQ(all.find(secret), std::string::npos) << secret;
  std::string out = slurp(d / "out.jsonl");
  EXPECT_NE(out.find("\"split\""), std::string::npos);
  EXPECT_NE(out.find("billing service.\\n\\nContact [EMAIL] or [PHONE]."), std::string::npos) << out;
  EXPECT_EQ(out.find("<p>"), std::string::npos);
  auto perms = fs::status(d / "out.jsonl").permissions();
  EXPECT_EQ(perms & fs::perms::others_read, fs::perms::none);
}

TEST(CleanE2E, ConfigFileAndCommandLinePrecedence) {
  Dir d("config");
  write_records(d / "in.jsonl");
  std::ofstream(d / "clean.yaml") << "# dsft clean in.jsonl --config clean.yaml ...\nmin_chars: 100000\nmax_chars: 200000\n";
  std::string base = "clean " + (d / "in.jsonl") + " -o " + (d / "out.jsonl") + " --rejects " + (d / "rejects.jsonl") +
                     " --report " + (d / "report.json") + " --config " + (d / "clean.yaml");
  auto r = e2e::run_dsft(base);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(count_lines(d / "out.jsonl"), 0u);  // every record is below min_chars from the YAML
  r = e2e::run_dsft(base + " --min-chars 5");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(count_lines(d / "out.jsonl"), 3u);  // the command line wins
}

TEST(CleanE2E, UsageAndInputErrors) {
  Dir d("errors");
  write_records(d / "in.jsonl");
  auto r = e2e::run_dsft("clean " + (d / "in.jsonl") + " -o " + (d / "out.jsonl") + " --rejects " + (d / "r.jsonl") +
                         " --report " + (d / "rep.json") + " --invalid-utf8 maybe");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("repair, drop or reject"), std::string::npos) << r.out;
  r = e2e::run_dsft("clean " + (d / "missing.jsonl") + " -o " + (d / "out.jsonl") + " --rejects " + (d / "r.jsonl") +
                    " --report " + (d / "rep.json"));
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("missing.jsonl"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(d / "out.jsonl"));
  r = e2e::run_dsft("clean --help");
  EXPECT_EQ(r.code, 0);
  EXPECT_NE(r.out.find("--near-dup-threshold"), std::string::npos);
  EXPECT_NE(r.out.find("0.8"), std::string::npos);
}
