// JSON Lines helpers: a streaming line reader (with the padding simdjson needs), a buffered line
// writer, and JSON string escaping with UTF-8 validation. Used by ingest; self-contained.
#pragma once
#include <cstdio>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace dsft::data {

// True when `s` is well-formed UTF-8 (no overlongs, no surrogates, nothing above U+10FFFF).
bool is_valid_utf8(std::string_view s);

// Length of the longest prefix of `s` that does not end inside a UTF-8 sequence (a cut point
// for streaming: the rest is carried over to the next block).
size_t utf8_complete_prefix(std::string_view s);

// Appends `s` as a JSON string literal, quotes included. Returns false (appending nothing
// useful) when `s` is not valid UTF-8, so the caller can name the place it came from.
bool append_json_string(std::string& out, std::string_view s);

// Reads a file line by line in large blocks; memory stays bounded by the longest line.
// Each line comes without its '\n' (and '\r'), and is followed in memory by at least 64
// readable bytes, so it can be handed to simdjson without a copy. A UTF-8 BOM is skipped.
class LineReader {
 public:
  explicit LineReader(const std::string& path);
  // Reads from an already open stream (not closed by the reader); `name` is for messages.
  LineReader(std::FILE* f, std::string name);
  ~LineReader();
  LineReader(const LineReader&) = delete;
  LineReader& operator=(const LineReader&) = delete;

  bool next(std::string_view& line);
  size_t line_number() const { return line_no_; }  // 1-based number of the last line returned
  size_t bytes_read() const { return bytes_read_; }

 private:
  bool refill();
  std::FILE* f_ = nullptr;
  bool owns_ = false;
  std::string name_;
  std::vector<char> buf_;
  size_t begin_ = 0, end_ = 0;
  bool eof_ = false, first_ = true;
  size_t line_no_ = 0, bytes_read_ = 0;
};

// Buffers output lines and writes them to a FILE* in large blocks.
class JsonlWriter {
 public:
  JsonlWriter(std::FILE* f, std::string name) : f_(f), name_(std::move(name)) {
    buf_.reserve(kFlushAt + 4096);
  }
  ~JsonlWriter() = default;
  // Append one line's bytes to buffer() and then call end_line().
  std::string& buffer() { return buf_; }
  void end_line() {
    buf_.push_back('\n');
    ++lines_;
    if (buf_.size() >= kFlushAt) flush();
  }
  void write_line(std::string_view line) {
    buf_.append(line);
    end_line();
  }
  void write(const nlohmann::json& j) { write_line(j.dump()); }
  void flush();
  size_t lines() const { return lines_; }

 private:
  static constexpr size_t kFlushAt = 1 << 20;
  std::FILE* f_;
  std::string name_;
  std::string buf_;
  size_t lines_ = 0;
};

// Calls `fn(record, line_number)` for each non-blank line of a JSONL file; throws dsft::Error
// naming file and line when a line is not JSON.
void for_each_jsonl(const std::string& path, const std::function<void(nlohmann::json&&, size_t)>& fn);
std::vector<nlohmann::json> read_jsonl(const std::string& path);

// Writes records as JSON Lines atomically (temp file + rename).
void write_jsonl(const std::string& path, const std::vector<nlohmann::json>& records);

}  // namespace dsft::data
