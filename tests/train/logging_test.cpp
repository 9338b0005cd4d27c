// metrics.jsonl, the progress line, peak memory, and the stop-signal flag.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <cmath>
#include <csignal>
#include <filesystem>
#include <sstream>

#include "dsft/train/metrics.h"
#include "dsft/train/signals.h"
#include "dsft/util/error.h"
#include "dsft/util/fs.h"
#include "dsft/util/progress.h"

namespace fs = std::filesystem;
using namespace dsft;
using namespace dsft::train;

namespace {
std::vector<nlohmann::json> read_lines(const std::string& path) {
  std::istringstream in(util::read_file(path));
  std::vector<nlohmann::json> out;
  std::string line;
  while (std::getline(in, line)) out.push_back(nlohmann::json::parse(line));
  return out;
}

std::string capture(const std::function<void(std::FILE*)>& fn) {
  char* buf = nullptr;
  size_t size = 0;
  std::FILE* f = ::open_memstream(&buf, &size);
  fn(f);
  std::fclose(f);
  std::string s(buf, size);
  std::free(buf);
  return s;
}
}  // namespace

TEST(Metrics, OneJsonObjectPerLine) {
  const fs::path dir = fs::temp_directory_path() / ("dsft_train_metrics_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string path = (dir / "metrics.jsonl").string();
  {
    MetricsWriter w(path);
    MetricsRecord r;
    r.step = 10;
    r.epoch = 0.5;
    r.loss = 2.25;
    r.lr = 1e-4;
    r.grad_norm = 0.75;
    r.tokens_per_s = 1234.5;
    r.mem_bytes = peak_rss_bytes();
    w.write(r);
    MetricsRecord e;
    e.step = 20;
    e.epoch = 1.0;
    e.eval_loss = std::log(8.0);
    e.extra["eval_accuracy"] = 0.5;
    w.write(e);
    MetricsRecord bad;
    bad.step = 21;
    bad.grad_norm = INFINITY;
    bad.skipped = true;
    w.write(bad);
  }
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto lines = read_lines(path);
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[0]["step"], 10);
  EXPECT_DOUBLE_EQ(lines[0]["loss"].get<double>(), 2.25);
  EXPECT_DOUBLE_EQ(lines[0]["lr"].get<double>(), 1e-4);
  EXPECT_GT(lines[0]["mem"].get<int64_t>(), 1 << 20);  // a process with libtorch loaded uses > 1 MiB
  EXPECT_FALSE(lines[0].contains("eval_loss"));
  EXPECT_NEAR(lines[1]["eval_ppl"].get<double>(), 8.0, 1e-9);
  EXPECT_DOUBLE_EQ(lines[1]["eval_accuracy"].get<double>(), 0.5);
  EXPECT_TRUE(lines[2]["grad_norm"].is_null());
  EXPECT_TRUE(lines[2]["skipped"].get<bool>());

  // A resumed run from step 10 drops what the interrupted run logged after it, and a torn line.
  {
    std::FILE* f = std::fopen(path.c_str(), "a");
    std::fputs("{\"step\": 22, \"lo", f);
    std::fclose(f);
  }
  {
    MetricsWriter w(path, 10);
    MetricsRecord r;
    r.step = 11;
    w.write(r);
  }
  lines = read_lines(path);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0]["step"], 10);
  EXPECT_EQ(lines[1]["step"], 11);
  EXPECT_THROW(MetricsWriter((dir / "missing" / "m.jsonl").string()), Error);
  fs::remove_all(dir);
}

TEST(Progress, Formats) {
  EXPECT_EQ(util::format_duration(42), "42s");
  EXPECT_EQ(util::format_duration(187), "3:07");
  EXPECT_EQ(util::format_duration(3723), "1:02:03");
  EXPECT_EQ(util::format_count(950), "950");
  EXPECT_EQ(util::format_count(1234), "1.2k");
  EXPECT_EQ(util::format_count(3.4e6), "3.4M");
}

TEST(Progress, PlainLinesEveryLogEveryStepsWithEta) {
  double now = 100.0;
  std::string out = capture([&](std::FILE* f) {
    util::ProgressBar bar(10, 0, 5, f, /*tty=*/0);
    bar.set_clock([&] { return now; });
    for (int64_t s = 1; s <= 10; ++s) {
      now += 2.0;
      bar.update(s, {{"loss", "1.5"}});
    }
    bar.finish();
  });
  EXPECT_EQ(out,
            "5/10  50% | loss 1.5 | elapsed 10s | ETA 10s\n"
            "10/10 100% | loss 1.5 | elapsed 20s | ETA 0s\n");
}

TEST(Progress, TtyRedrawsInPlace) {
  double now = 0.0;
  std::string out = capture([&](std::FILE* f) {
    util::ProgressBar bar(4, 2, 100, f, /*tty=*/1);  // resumed at step 2
    bar.set_clock([&] { return now; });
    now = 30;
    bar.update(3, {{"lr", "1.00e-04"}, {"tok/s", "1.2k"}});
    now = 60;
    bar.update(4);
    bar.finish();
  });
  EXPECT_EQ(out.front(), '\r');
  EXPECT_EQ(std::count(out.begin(), out.end(), '\r'), 2);
  EXPECT_EQ(out.back(), '\n');
  EXPECT_NE(out.find("3/4 [###############.....]  75% | lr 1.00e-04 | tok/s 1.2k | elapsed 30s | ETA 30s"), std::string::npos)
      << out;
  // The shorter second line is padded over the first.
  const std::string second = out.substr(out.rfind('\r') + 1);
  EXPECT_GE(second.size(), out.find('\r', 1) - 1);
}

TEST(StopSignal, FirstSignalSetsTheFlag) {
  {
    StopSignal stop;
    EXPECT_FALSE(stop.requested());
    EXPECT_THROW(StopSignal second, Error);
    std::raise(SIGINT);  // the process survives
    EXPECT_TRUE(stop.requested());
    EXPECT_EQ(stop.signal_number(), SIGINT);
    stop.reset();
    EXPECT_FALSE(stop.requested());
    std::raise(SIGTERM);
    EXPECT_EQ(stop.signal_number(), SIGTERM);
  }
  StopSignal again;  // handlers were handed back; a new one can be installed
  EXPECT_FALSE(again.requested());
}

TEST(StopSignal, SecondSignalTerminates) {
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    StopSignal stop;
    std::raise(SIGINT);
    if (!stop.requested()) ::_exit(2);
    std::raise(SIGINT);  // terminates here
    ::_exit(3);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(status)) << "exit status " << WEXITSTATUS(status);
  EXPECT_EQ(WTERMSIG(status), SIGINT);
}
