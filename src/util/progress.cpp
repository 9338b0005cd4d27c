// Progress line rendering (counter, bar, fields, rate-based ETA) and TTY/plain output.
#include "dsft/util/progress.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>

namespace dsft::util {

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const auto s = static_cast<long long>(std::llround(seconds));
  char buf[32];
  if (s < 60)
    std::snprintf(buf, sizeof buf, "%llds", s);
  else if (s < 3600)
    std::snprintf(buf, sizeof buf, "%lld:%02lld", s / 60, s % 60);
  else
    std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", s / 3600, s / 60 % 60, s % 60);
  return buf;
}

std::string format_count(double v) {
  if (!std::isfinite(v)) return "?";
  char buf[32];
  const double a = std::fabs(v);
  if (a < 1000)
    std::snprintf(buf, sizeof buf, "%.0f", v);
  else if (a < 1e6)
    std::snprintf(buf, sizeof buf, "%.1fk", v / 1e3);
  else if (a < 1e9)
    std::snprintf(buf, sizeof buf, "%.1fM", v / 1e6);
  else
    std::snprintf(buf, sizeof buf, "%.1fG", v / 1e9);
  return buf;
}

static double monotonic_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

ProgressBar::ProgressBar(int64_t total, int64_t start, int64_t log_every, std::FILE* out, int tty)
    : total_(std::max<int64_t>(total, 1)), start_(start), log_every_(std::max<int64_t>(log_every, 1)), out_(out),
      tty_(tty < 0 ? ::isatty(::fileno(out)) == 1 : tty == 1), clock_(monotonic_seconds), t0_(clock_()) {}

void ProgressBar::set_clock(std::function<double()> clock) {
  clock_ = std::move(clock);
  t0_ = clock_();
}

std::string ProgressBar::render(int64_t step, const Fields& fields, double elapsed_s) const {
  const double frac = std::clamp(static_cast<double>(step) / static_cast<double>(total_), 0.0, 1.0);
  std::string line;
  char buf[64];
  std::snprintf(buf, sizeof buf, "%lld/%lld", static_cast<long long>(step), static_cast<long long>(total_));
  line += buf;
  if (tty_) {
    const int width = 20;
    const int filled = static_cast<int>(frac * width);
    line += " [" + std::string(filled, '#') + std::string(width - filled, '.') + "]";
  }
  std::snprintf(buf, sizeof buf, " %3d%%", static_cast<int>(frac * 100));
  line += buf;
  for (const auto& [name, value] : fields) line += " | " + name + " " + value;
  const int64_t done = step - start_;
  if (done > 0 && elapsed_s > 0) {
    const double eta = elapsed_s / static_cast<double>(done) * static_cast<double>(std::max<int64_t>(total_ - step, 0));
    line += " | elapsed " + format_duration(elapsed_s) + " | ETA " + format_duration(eta);
  }
  return line;
}

void ProgressBar::update(int64_t step, const Fields& fields) {
  const std::string text = render(step, fields, clock_() - t0_);
  if (tty_) {
    // Pad over the remains of a longer previous line instead of relying on terminal escapes.
    std::string padded = text;
    if (padded.size() < last_width_) padded.append(last_width_ - padded.size(), ' ');
    last_width_ = text.size();
    std::fprintf(out_, "\r%s", padded.c_str());
    drawn_ = true;
  } else if (step % log_every_ == 0 || step >= total_) {
    std::fprintf(out_, "%s\n", text.c_str());
  }
  std::fflush(out_);
}

void ProgressBar::finish() {
  if (tty_ && drawn_) {
    std::fputc('\n', out_);
    std::fflush(out_);
    drawn_ = false;
  }
}

}  // namespace dsft::util
