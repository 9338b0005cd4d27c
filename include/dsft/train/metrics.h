// metrics.jsonl: one JSON object per logged step, appended and flushed as it happens, so that a
// run can be followed with `tail -f` and plotted afterwards. Torch-free.
#pragma once
#include <cstdint>
#include <cstdio>
#include <map>
#include <optional>
#include <string>

namespace dsft::train {

struct MetricsRecord {
  int64_t step = 0;
  double epoch = 0.0;
  std::optional<double> loss;          // mean training loss since the last record
  std::optional<double> lr;
  std::optional<double> grad_norm;     // before clipping; null in the file when not finite
  std::optional<double> tokens_per_s;
  std::optional<int64_t> mem_bytes;    // peak memory: resident set (CPU) or the device allocator's peak
  std::optional<double> eval_loss;     // eval_ppl = exp(eval_loss) is added when eval_loss is set
  bool skipped = false;                // the optimizer step was skipped (overflow or non-finite loss)
  std::map<std::string, double> extra; // further metrics, e.g. eval_accuracy
};

// The JSON line for `r` (no trailing newline); keys in a fixed order.
std::string to_json_line(const MetricsRecord& r);

class MetricsWriter {
 public:
  // Opens `path` (mode 0600) for appending. With `resume_step`, lines whose step is beyond it
  // (logged after that checkpoint by the run that was interrupted) and torn lines are dropped
  // first, so the file reads as one uninterrupted run.
  explicit MetricsWriter(const std::string& path, std::optional<int64_t> resume_step = std::nullopt);
  ~MetricsWriter();
  MetricsWriter(const MetricsWriter&) = delete;
  MetricsWriter& operator=(const MetricsWriter&) = delete;

  void write(const MetricsRecord& r);  // one line, flushed
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::FILE* f_ = nullptr;
};

// The process's peak resident set size (VmHWM in /proc/self/status) in bytes; 0 if unknown.
int64_t peak_rss_bytes();

}  // namespace dsft::train
