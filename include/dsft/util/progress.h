// A terminal progress line for long loops (training steps, evaluation batches): on a TTY it
// redraws in place with \r; otherwise (logs, CI) it prints a plain line every `log_every` steps.
#pragma once
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace dsft::util {

// "42s", "3:07", "1:02:03": the shortest clock form of a duration.
std::string format_duration(double seconds);
// "950", "1.2k", "3.4M": counts and rates in a few characters.
std::string format_count(double value);

class ProgressBar {
 public:
  using Fields = std::vector<std::pair<std::string, std::string>>;  // e.g. {"loss", "1.2345"}

  // `total` steps; `start` is where a resumed loop begins (the ETA counts only steps run now).
  // `tty`: 1 or 0 to force, -1 to ask isatty() about `out`.
  ProgressBar(int64_t total, int64_t start = 0, int64_t log_every = 1, std::FILE* out = stderr, int tty = -1);

  // Reports that `step` steps are done, with fields shown after the counter.
  void update(int64_t step, const Fields& fields = {});
  // Ends the in-place line on a TTY (a newline), so later output starts on its own line.
  void finish();

  // The text of one update (without \r or newline), for a given elapsed time in seconds.
  std::string render(int64_t step, const Fields& fields, double elapsed_s) const;
  bool is_tty() const { return tty_; }
  // Replaces the clock (seconds, monotonic), for tests.
  void set_clock(std::function<double()> clock);

 private:
  int64_t total_, start_, log_every_;
  std::FILE* out_;
  bool tty_;
  bool drawn_ = false;
  size_t last_width_ = 0;
  std::function<double()> clock_;
  double t0_;
};

}  // namespace dsft::util
