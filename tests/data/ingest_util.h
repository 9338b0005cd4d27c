// Test helpers for ingest: a temporary directory removed at the end, file writing, and running
// an ingest that is expected to fail.
#pragma once
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "dsft/data/ingest.h"
#include "dsft/data/jsonl.h"
#include "dsft/util/error.h"

namespace ingest_test {

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "dsft-ingest-XXXXXX").string();
    path_ = ::mkdtemp(tmpl.data());
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

inline void write(const std::string& path, const std::string& bytes) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream(path, std::ios::binary) << bytes;
}

inline std::string read(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

inline dsft::data::IngestOptions options(const std::vector<std::string>& sources, const std::string& out) {
  dsft::data::IngestOptions o;
  o.sources = sources;
  o.output = out;
  return o;
}

// The message of the dsft::Error that run_ingest throws ("" when it succeeds).
inline std::string ingest_error(const dsft::data::IngestOptions& o) {
  try {
    dsft::data::run_ingest(o);
  } catch (const dsft::Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace ingest_test
