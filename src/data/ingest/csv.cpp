// RFC 4180 CSV/TSV streaming reader (see CsvReader in include/dsft/data/ingest_text.h).
// Records are parsed in place in a large block buffer; a record cut by the end of the block is
// re-parsed after the block is refilled, so field views never outlive their bytes.
#include <cerrno>
#include <cstring>

#include "dsft/data/ingest_text.h"
#include "dsft/util/error.h"

namespace dsft::data {

char parse_delimiter(const std::string& t) {
  if (t == "\\t" || t == "\t" || t == "tab" || t == "TAB") return '\t';
  if (t.size() == 1 && t[0] != '"' && t[0] != '\n' && t[0] != '\r') return t[0];
  throw UsageError("--delimiter must be one character or 'tab' (got '" + t + "')");
}

CsvReader::CsvReader(std::FILE* f, std::string name, char delimiter)
    : f_(f), name_(std::move(name)), delim_(delimiter) {
  buf_.resize(1 << 20);
}

bool CsvReader::refill() {
  if (eof_) return false;
  if (pos_ > 0) {
    std::memmove(buf_.data(), buf_.data() + pos_, end_ - pos_);
    end_ -= pos_;
    pos_ = 0;
  }
  if (end_ == buf_.size()) buf_.resize(buf_.size() * 2);  // one record larger than the buffer
  size_t want = buf_.size() - end_;
  size_t got = std::fread(buf_.data() + end_, 1, want, f_);
  if (got < want) {
    if (std::ferror(f_)) throw Error("cannot read " + name_ + ": " + std::strerror(errno));
    eof_ = true;
  }
  end_ += got;
  return true;
}

// The delimiter of the first record: the most frequent candidate outside quotes.
static char detect_delimiter(const char* p, size_t n) {
  const char cands[] = {',', '\t', ';', '|'};
  size_t counts[4] = {0, 0, 0, 0};
  bool quoted = false;
  for (size_t i = 0; i < n; ++i) {
    char c = p[i];
    if (c == '"') quoted = !quoted;
    if (quoted) continue;
    if (c == '\n' || c == '\r') break;
    for (int k = 0; k < 4; ++k)
      if (c == cands[k]) ++counts[k];
  }
  int best = 0;
  for (int k = 1; k < 4; ++k)
    if (counts[k] > counts[best]) best = k;
  return cands[best];
}

CsvReader::Parse CsvReader::parse_record(std::vector<std::string_view>& fields) {
  const char* b = buf_.data();
  const char d = delim_;
  size_t p = pos_;
  size_t lines = 0;
  spans_.clear();
  arena_.clear();
  for (;;) {  // one field per iteration
    if (p < end_ && b[p] == '"') {
      size_t start_arena = arena_.size();
      bool used_arena = false;
      size_t seg = ++p;
      size_t field_start = seg;
      for (;;) {
        const char* q = static_cast<const char*>(std::memchr(b + p, '"', end_ - p));
        if (!q) {
          if (!eof_) return Parse::need_more;
          throw Error(name_ + ": a quoted field that starts on line " + std::to_string(line_) +
                      " is never closed (a '\"' is missing)");
        }
        size_t qi = q - b;
        for (size_t k = p; k < qi; ++k) lines += b[k] == '\n';
        if (qi + 1 >= end_ && !eof_) return Parse::need_more;
        if (qi + 1 < end_ && b[qi + 1] == '"') {  // "" inside quotes: one literal quote
          arena_.append(b + seg, qi + 1 - seg);
          used_arena = true;
          p = seg = qi + 2;
          continue;
        }
        if (used_arena) {
          arena_.append(b + seg, qi - seg);
          spans_.push_back({start_arena, arena_.size() - start_arena, true});
        } else {
          spans_.push_back({field_start, qi - field_start, false});
        }
        p = qi + 1;
        break;
      }
      // Text after the closing quote (not RFC 4180, but Excel reads it): keep it literally.
      size_t extra = p;
      while (p < end_ && b[p] != d && b[p] != '\n' && b[p] != '\r') ++p;
      if (p == end_ && !eof_) return Parse::need_more;
      if (p > extra) {
        Span& s = spans_.back();
        if (!s.in_arena) {
          std::string copy(b + s.off, s.len);
          s = {arena_.size(), 0, true};
          arena_.append(copy);
        }
        arena_.append(b + extra, p - extra);
        s.len = arena_.size() - s.off;
      }
    } else {
      size_t start = p;
      while (p < end_) {
        char c = b[p];
        if (c == d || c == '\n' || c == '\r') break;
        ++p;
      }
      if (p == end_ && !eof_) return Parse::need_more;
      spans_.push_back({start, p - start, false});
    }
    // p is at a delimiter, a line end or the end of input.
    if (p < end_ && b[p] == d) {
      ++p;
      continue;
    }
    if (p < end_ && b[p] == '\r') {
      if (p + 1 >= end_ && !eof_) return Parse::need_more;
      ++p;
      if (p < end_ && b[p] == '\n') ++p;
    } else if (p < end_) {
      ++p;  // '\n'
    }
    ++lines;
    break;
  }
  fields.clear();
  fields.reserve(spans_.size());
  for (const Span& s : spans_) fields.emplace_back(s.in_arena ? arena_.data() + s.off : b + s.off, s.len);
  pos_ = p;
  record_line_ = line_;
  line_ += lines;
  return Parse::done;
}

bool CsvReader::next(std::vector<std::string_view>& fields) {
  if (!started_) {
    started_ = true;
    refill();
    if (end_ >= 3 && std::memcmp(buf_.data(), "\xEF\xBB\xBF", 3) == 0) pos_ = 3;
    if (delim_ == 0) delim_ = detect_delimiter(buf_.data() + pos_, end_ - pos_);
  }
  for (;;) {
    if (pos_ >= end_) {
      if (eof_) return false;
      refill();
      continue;
    }
    if (parse_record(fields) == Parse::done) {
      ++record_no_;
      return true;
    }
    refill();
  }
}

}  // namespace dsft::data
