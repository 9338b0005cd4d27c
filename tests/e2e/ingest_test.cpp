// e2e: `dsft ingest` through the real binary: summary line, exit codes, atomic output, no
// password in any output.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "e2e/run.h"

namespace fs = std::filesystem;

namespace {

struct Tmp {
  std::string dir;
  Tmp() {
    std::string t = (fs::temp_directory_path() / "dsft-e2e-ingest-XXXXXX").string();
    dir = ::mkdtemp(t.data());
  }
  ~Tmp() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  std::string operator/(const std::string& n) const { return dir + "/" + n; }
};

void write(const std::string& p, const std::string& s) {
  std::ofstream(p, std::ios::binary) << s;
}
std::string read(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}
size_t lines(const std::string& s) {
  size_t n = 0;
  for (char c : s) n += c == '\n';
  return n;
}

}  // namespace

TEST(IngestCli, CsvWithTemplateWritesRecordsAndOneSummaryLine) {
  Tmp t;
  write(t / "specs.csv", "id,spec\nA1,\"不锈钢,\n耐腐蚀\"\nA2,铝合金\n");
  write(t / "chat.jsonl",
        R"({"conversations":[{"from":"human","value":"hi"},{"from":"gpt","value":"hello"}]})"
        "\n");
  auto r = e2e::run_dsft("ingest " + (t / "specs.csv") + " " + (t / "chat.jsonl") + " -o " +
                         (t / "out.jsonl") + " --template '产品{id}的规格是{spec}' 2>&1");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(lines(r.out), 1u) << r.out;
  EXPECT_NE(r.out.find("ingest: 3 records"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("specs.csv (csv) 2"), std::string::npos) << r.out;
  std::istringstream in(read(t / "out.jsonl"));
  std::string line;
  std::vector<nlohmann::json> recs;
  while (std::getline(in, line)) recs.push_back(nlohmann::json::parse(line));
  ASSERT_EQ(recs.size(), 3u);
  EXPECT_EQ(recs[0]["text"], "产品A1的规格是不锈钢,\n耐腐蚀");
  EXPECT_EQ(recs[0]["source"], "specs.csv:row 2");
  EXPECT_EQ(recs[2]["messages"][1]["role"], "assistant");
}

TEST(IngestCli, FailureIsOneLineExitOneAndNoOutputFile) {
  Tmp t;
  write(t / "specs.csv", "id,spec\nA1,steel\nA2,\n");
  auto r =
      e2e::run_dsft("ingest " + (t / "specs.csv") + " -o " + (t / "out.jsonl") + " --template '{id}:{spec}'");
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_EQ(lines(r.out), 1u) << r.out;
  EXPECT_NE(r.out.find("specs.csv:row 3"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("'spec'"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(t / "out.jsonl"));
  EXPECT_EQ(std::distance(fs::directory_iterator(t.dir), fs::directory_iterator{}), 1);  // no temp file left

  r = e2e::run_dsft("ingest " + (t / "specs.csv") + " -o " + (t / "out.jsonl") +
                    " --template '{id}:{spec}' --skip-missing");
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("1 rejected"), std::string::npos) << r.out;
  EXPECT_EQ(lines(read(t / "out.rejects.jsonl")), 1u);
}

TEST(IngestCli, UsageErrorsExitTwo) {
  Tmp t;
  write(t / "a.csv", "a\n1\n");
  EXPECT_EQ(e2e::run_dsft("ingest " + (t / "a.csv") + " -o " + (t / "o.jsonl") + " --format bogus").code, 2);
  EXPECT_EQ(e2e::run_dsft("ingest " + (t / "a.csv")).code, 2);  // no -o
  EXPECT_EQ(e2e::run_dsft("ingest " + (t / "a.csv") + " -o " + (t / "o.jsonl") + " --template '{a'").code, 2);
  auto help = e2e::run_dsft("ingest --help");
  EXPECT_EQ(help.code, 0);
  EXPECT_NE(help.out.find("--skip-missing"), std::string::npos);
  EXPECT_NE(help.out.find("--chunk-size"), std::string::npos);
}

TEST(IngestCli, DatabasePasswordNeverPrinted) {
  Tmp t;
  // Nothing listens on port 1: the connection fails and the message names the server.
  auto r = e2e::run_dsft("ingest 'postgresql://alice:Sup3rS3cret@127.0.0.1:1/shop' -o " + (t / "o.jsonl") +
                         " --query 'SELECT 1'");
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_EQ(r.out.find("Sup3rS3cret"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("postgresql://alice@127.0.0.1:1/shop"), std::string::npos) << r.out;
  r = e2e::run_dsft("ingest 'mysql://bob:Sup3rS3cret@127.0.0.1:1/shop' -o " + (t / "o.jsonl") +
                    " --query 'SELECT 1'");
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_EQ(r.out.find("Sup3rS3cret"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(t / "o.jsonl"));
}
