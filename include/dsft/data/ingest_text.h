// The text-level pieces of ingest, public so that they can be tested on their own: encodings,
// CSV parsing, row templates, chunking, and text extraction from documents.
#pragma once
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

namespace dsft::data {

// ---- encodings ----

// Names the encoding of `sample` (the first bytes of a file): "utf-8" when it is valid UTF-8
// (a sequence cut at the end of the sample is allowed unless `complete`), "utf-16le"/"utf-16be"
// by BOM, else "gb18030" when it decodes as GB18030 (what Excel writes in China, a superset of
// GBK). Throws dsft::Error naming `name` when it is neither.
std::string detect_encoding(std::string_view sample, bool complete, const std::string& name);

// Opens `path` for reading UTF-8: the file itself when it is UTF-8, else a stream that converts
// through iconv (glibc) as it reads. `encoding` is "auto" or an iconv name; the encoding used is
// stored in *used. The caller closes the stream with std::fclose.
std::FILE* open_utf8(const std::string& path, const std::string& encoding, std::string* used);

// Converts a whole buffer to UTF-8 (encoding "auto" detects as above); a leading BOM is removed.
std::string to_utf8(std::string_view bytes, const std::string& encoding, const std::string& name);

// ---- CSV (RFC 4180) ----

// Streams records from a CSV/TSV stream: quoted fields with "" escapes and embedded newlines,
// CRLF or LF, a leading UTF-8 BOM skipped. Memory is bounded by the longest record.
class CsvReader {
 public:
  // delimiter 0: detect from the first record (the most frequent of , TAB ; | outside quotes).
  CsvReader(std::FILE* f, std::string name, char delimiter);
  // The next record's fields (views valid until the next call); false at the end of input.
  bool next(std::vector<std::string_view>& fields);
  size_t record_number() const { return record_no_; }  // 1-based; the header is record 1
  size_t line_number() const { return record_line_; }  // line on which the last record began
  char delimiter() const { return delim_; }

 private:
  enum class Parse { done, need_more };
  Parse parse_record(std::vector<std::string_view>& fields);
  bool refill();
  std::FILE* f_;
  std::string name_;
  char delim_;
  std::vector<char> buf_;
  size_t pos_ = 0, end_ = 0;
  bool eof_ = false, started_ = false;
  size_t record_no_ = 0, line_ = 1, record_line_ = 0;
  std::string arena_;
  struct Span {
    size_t off, len;
    bool in_arena;
  };
  std::vector<Span> spans_;
};

// Parses a delimiter option: "," ";" "|" "\t" "tab" or any single character.
char parse_delimiter(const std::string& text);

// ---- templates ----

// A row template such as '产品{id}的规格是{spec}': {column} placeholders, {{ and }} escapes.
class RowTemplate {
 public:
  RowTemplate() = default;
  // Throws dsft::UsageError naming `option` on an unclosed brace or an empty placeholder.
  RowTemplate(const std::string& text, const std::string& option);
  bool empty() const { return parts_.empty(); }
  const std::string& text() const { return text_; }
  const std::vector<std::string>& fields() const { return fields_; }
  // Appends the rendering to `out`; values[i] is the value of fields()[i].
  void render(std::string& out, const std::vector<std::string_view>& values) const;

 private:
  struct Part {
    bool is_field;
    std::string literal;
    size_t field;
  };
  std::string text_;
  std::vector<Part> parts_;
  std::vector<std::string> fields_;
};

// ---- chunking ----

// Splits text into chunks of at most `chunk_size` characters (code points), each starting with
// about `overlap` characters of the previous one. Cuts fall, by preference, at a paragraph break,
// a line break, the end of a sentence (. ! ? and 。！？ and their full-width kin), a clause mark,
// whitespace, or between two CJK characters; never inside a word or a UTF-8 sequence. A single
// word longer than chunk_size becomes a chunk of its own. Text of at most chunk_size characters
// is one chunk. Chunks are trimmed of surrounding whitespace; empty text gives no chunks.
std::vector<std::string> chunk_text(std::string_view text, size_t chunk_size, size_t overlap);

// ---- documents ----

std::vector<std::string> pdf_pages(const std::string& path);    // text per page (poppler-cpp)
std::string docx_text(const std::string& path);                 // paragraphs and tables
std::vector<std::string> pptx_slides(const std::string& path);  // text per slide, in slide order
struct XlsxSheet {
  std::string name;
  std::vector<size_t> row_numbers;             // Excel's row numbers (1-based)
  std::vector<std::vector<std::string>> rows;  // cell text, gaps filled with ""
};
std::vector<XlsxSheet> xlsx_sheets(const std::string& path);
std::string html_text(std::string_view html);  // visible text, blocks separated by blank lines

}  // namespace dsft::data
