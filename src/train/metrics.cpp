// metrics.jsonl writing, resume truncation, and peak RSS from /proc.
#include "dsft/train/metrics.h"

#include <fcntl.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>

#include "dsft/util/error.h"
#include "dsft/util/fs.h"

namespace dsft::train {
using json = nlohmann::ordered_json;

namespace {
json number_or_null(double v) { return std::isfinite(v) ? json(v) : json(nullptr); }
}  // namespace

std::string to_json_line(const MetricsRecord& r) {
  json j;
  j["step"] = r.step;
  j["epoch"] = number_or_null(r.epoch);
  if (r.loss) j["loss"] = number_or_null(*r.loss);
  if (r.lr) j["lr"] = number_or_null(*r.lr);
  if (r.grad_norm) j["grad_norm"] = number_or_null(*r.grad_norm);
  if (r.tokens_per_s) j["tokens_per_s"] = number_or_null(*r.tokens_per_s);
  if (r.mem_bytes) j["mem"] = *r.mem_bytes;
  if (r.eval_loss) {
    j["eval_loss"] = number_or_null(*r.eval_loss);
    j["eval_ppl"] = number_or_null(std::exp(*r.eval_loss));
  }
  if (r.skipped) j["skipped"] = true;
  for (const auto& [k, v] : r.extra) j[k] = number_or_null(v);
  return j.dump();
}

MetricsWriter::MetricsWriter(const std::string& path, std::optional<int64_t> resume_step) : path_(path) {
  if (resume_step && util::path_exists(path)) {
    std::istringstream in(util::read_file(path));
    std::string kept, line;
    while (std::getline(in, line)) {
      if (line.empty()) continue;
      json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (j.is_discarded() || !j.is_object() || !j.contains("step") || !j["step"].is_number_integer()) continue;
      if (j["step"].get<int64_t>() > *resume_step) continue;
      kept += line + "\n";
    }
    util::write_file_atomic(path, kept);
  }
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0) throw Error("cannot open " + path + " for writing: " + std::strerror(errno));
  f_ = ::fdopen(fd, "a");
  if (!f_) {
    ::close(fd);
    throw Error("cannot open " + path + " for writing");
  }
}

MetricsWriter::~MetricsWriter() {
  if (f_) std::fclose(f_);
}

void MetricsWriter::write(const MetricsRecord& r) {
  const std::string line = to_json_line(r) + "\n";
  if (std::fwrite(line.data(), 1, line.size(), f_) != line.size() || std::fflush(f_) != 0)
    throw Error("cannot write to " + path_ + ": " + std::strerror(errno));
}

int64_t peak_rss_bytes() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) {
      long long kb = 0;
      if (std::sscanf(line.c_str() + 6, "%lld", &kb) == 1) return static_cast<int64_t>(kb) * 1024;
    }
  }
  return 0;
}

}  // namespace dsft::train
