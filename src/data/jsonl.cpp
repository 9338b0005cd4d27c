// JSON Lines reading/writing and JSON string escaping (see include/dsft/data/jsonl.h).
#include "dsft/data/jsonl.h"

#include <simdjson.h>

#include <cerrno>
#include <cstring>

#include "dsft/util/error.h"
#include "dsft/util/fs.h"

namespace dsft::data {

bool is_valid_utf8(std::string_view s) {
  return simdjson::validate_utf8(s.data(), s.size());
}

size_t utf8_complete_prefix(std::string_view s) {
  // Walk back over at most 3 continuation bytes to the lead byte of the last sequence.
  size_t n = s.size();
  size_t i = n;
  int cont = 0;
  while (i > 0 && cont < 4) {
    unsigned char c = static_cast<unsigned char>(s[i - 1]);
    if ((c & 0xC0) != 0x80) break;
    --i;
    ++cont;
  }
  if (i == 0) return n;
  unsigned char lead = static_cast<unsigned char>(s[i - 1]);
  int need = lead < 0x80 ? 1 : (lead >> 5) == 0x6 ? 2 : (lead >> 4) == 0xE ? 3 : (lead >> 3) == 0x1E ? 4 : 1;
  return cont + 1 < need ? i - 1 : n;
}

namespace {
struct EscapeTable {
  bool special[256];
  constexpr EscapeTable() : special() {
    for (int c = 0; c < 256; ++c) special[c] = c < 0x20 || c == '"' || c == '\\';
  }
};
constexpr EscapeTable kEscape;
}  // namespace

bool append_json_string(std::string& out, std::string_view s) {
  if (!simdjson::validate_utf8(s.data(), s.size())) return false;
  out.push_back('"');
  const char* p = s.data();
  const size_t n = s.size();
  size_t start = 0;
  for (size_t i = 0; i < n; ++i) {
    unsigned char c = static_cast<unsigned char>(p[i]);
    if (!kEscape.special[c]) continue;
    out.append(p + start, i - start);
    start = i + 1;
    switch (c) {
      case '"':
        out.append("\\\"", 2);
        break;
      case '\\':
        out.append("\\\\", 2);
        break;
      case '\n':
        out.append("\\n", 2);
        break;
      case '\r':
        out.append("\\r", 2);
        break;
      case '\t':
        out.append("\\t", 2);
        break;
      case '\b':
        out.append("\\b", 2);
        break;
      case '\f':
        out.append("\\f", 2);
        break;
      default: {
        static const char hex[] = "0123456789abcdef";
        char u[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
        out.append(u, 6);
      }
    }
  }
  out.append(p + start, n - start);
  out.push_back('"');
  return true;
}

// --- LineReader ---

static constexpr size_t kPadding = simdjson::SIMDJSON_PADDING;

LineReader::LineReader(const std::string& path) : owns_(true), name_(path) {
  f_ = std::fopen(path.c_str(), "rb");
  if (!f_) throw Error("cannot open " + path + ": " + std::strerror(errno));
  buf_.resize((1 << 20) + kPadding);
}

LineReader::LineReader(std::FILE* f, std::string name) : f_(f), owns_(false), name_(std::move(name)) {
  buf_.resize((1 << 20) + kPadding);
}

LineReader::~LineReader() {
  if (owns_ && f_) std::fclose(f_);
}

bool LineReader::refill() {
  if (eof_) return false;
  if (begin_ > 0) {
    std::memmove(buf_.data(), buf_.data() + begin_, end_ - begin_);
    end_ -= begin_;
    begin_ = 0;
  }
  if (end_ + kPadding >= buf_.size()) buf_.resize(buf_.size() * 2);  // one line longer than the buffer
  size_t want = buf_.size() - kPadding - end_;
  size_t got = std::fread(buf_.data() + end_, 1, want, f_);
  if (got < want) {
    if (std::ferror(f_)) throw Error("cannot read " + name_ + ": " + std::strerror(errno));
    eof_ = true;
  }
  bytes_read_ += got;
  if (first_ && end_ + got >= 3) {
    first_ = false;
    if (std::memcmp(buf_.data(), "\xEF\xBB\xBF", 3) == 0) begin_ = 3;
  } else if (first_ && eof_) {
    first_ = false;
  }
  end_ += got;
  std::memset(buf_.data() + end_, 0, kPadding);
  return got > 0;
}

bool LineReader::next(std::string_view& line) {
  for (;;) {
    const char* base = buf_.data();
    if (begin_ < end_) {
      const void* nl = std::memchr(base + begin_, '\n', end_ - begin_);
      if (nl) {
        size_t pos = static_cast<const char*>(nl) - base;
        size_t len = pos - begin_;
        if (len > 0 && base[pos - 1] == '\r') --len;
        line = std::string_view(base + begin_, len);
        begin_ = pos + 1;
        ++line_no_;
        return true;
      }
    }
    if (eof_) {
      if (begin_ >= end_) return false;
      size_t len = end_ - begin_;
      if (base[end_ - 1] == '\r') --len;
      line = std::string_view(base + begin_, len);
      begin_ = end_;
      ++line_no_;
      return true;
    }
    refill();
  }
}

// --- JsonlWriter ---

void JsonlWriter::flush() {
  if (buf_.empty()) return;
  if (std::fwrite(buf_.data(), 1, buf_.size(), f_) != buf_.size())
    throw Error("cannot write " + name_ + ": " + std::strerror(errno));
  buf_.clear();
}

// --- whole-file helpers ---

void for_each_jsonl(const std::string& path, const std::function<void(nlohmann::json&&, size_t)>& fn) {
  LineReader reader(path);
  std::string_view line;
  while (reader.next(line)) {
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line.begin(), line.end());
    } catch (const nlohmann::json::exception& e) {
      throw Error(path + ":" + std::to_string(reader.line_number()) + " is not valid JSON (" + e.what() +
                  ")");
    }
    fn(std::move(j), reader.line_number());
  }
}

std::vector<nlohmann::json> read_jsonl(const std::string& path) {
  std::vector<nlohmann::json> out;
  for_each_jsonl(path, [&](nlohmann::json&& j, size_t) { out.push_back(std::move(j)); });
  return out;
}

void write_jsonl(const std::string& path, const std::vector<nlohmann::json>& records) {
  util::write_file_atomic(path, [&](std::FILE* f) {
    JsonlWriter w(f, path);
    for (const auto& r : records) w.write(r);
    w.flush();
  });
}

}  // namespace dsft::data
