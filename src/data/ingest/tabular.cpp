// Tabular and document sources: CSV/TSV and XLSX rows through the row converter; PDF, DOCX,
// PPTX, HTML, Markdown and plain text as chunked {"text"} records.
#include <memory>

#include "data/ingest/internal.h"
#include "dsft/util/error.h"
#include "dsft/util/fs.h"

namespace dsft::data::ingest {

void ingest_csv(const std::string& path, const std::string& name, char delimiter, const IngestOptions& opt,
                Sink& sink) {
  std::string enc;
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> f(open_utf8(path, opt.encoding, &enc), &std::fclose);
  CsvReader reader(f.get(), path, delimiter);
  RowConverter rows(opt, sink);
  std::vector<std::string_view> fields;
  std::vector<char> null;
  std::string id, source;
  try {
    if (!reader.next(fields)) return;  // an empty file has no rows
    std::vector<std::string> header(fields.begin(), fields.end());
    for (auto& h : header)
      if (!is_valid_utf8(h))
        throw Error(
            path +
            ": the header row is not valid UTF-8 (pass --encoding with the file's encoding, e.g. gb18030)");
    rows.set_columns(header, name);
    const std::string id_prefix = name + ":row";
    const std::string source_prefix = name + ":row ";
    while (reader.next(fields)) {
      if (fields.size() == 1 && fields[0].empty()) continue;  // a blank line is no row
      null.assign(fields.size(), 0);
      for (size_t i = 0; i < fields.size(); ++i) null[i] = fields[i].empty();
      // Row numbers count records as a spreadsheet shows them: the header is row 1.
      std::string n = std::to_string(reader.record_number());
      id.assign(id_prefix).append(n);
      source.assign(source_prefix).append(n);
      rows.convert(nullptr, fields, null, id, source);
    }
  } catch (const Error& e) {
    if (enc != "utf-8" && std::string(e.what()).find("cannot read") != std::string::npos)
      throw Error(std::string(e.what()) + " (decoding it as " + enc + "; pass --encoding to choose another)");
    throw;
  }
}

void ingest_xlsx(const std::string& path, const std::string& name, const IngestOptions& opt, Sink& sink) {
  std::vector<XlsxSheet> sheets = xlsx_sheets(path);
  for (const XlsxSheet& sheet : sheets) {
    if (sheet.rows.empty()) continue;
    RowConverter rows(opt, sink);
    const std::string sheet_name = name + ":" + sheet.name;
    rows.set_columns(sheet.rows[0], sheet_name);
    std::vector<std::string_view> values;
    std::vector<char> null;
    for (size_t r = 1; r < sheet.rows.size(); ++r) {
      values.assign(sheet.rows[r].begin(), sheet.rows[r].end());
      null.assign(values.size(), 0);
      for (size_t i = 0; i < values.size(); ++i) null[i] = values[i].empty();
      std::string n = std::to_string(sheet.row_numbers[r]);
      rows.convert(nullptr, values, null, sheet_name + ":row" + n, sheet_name + ":row " + n);
    }
  }
}

void ingest_document(const std::string& path, const std::string& name, const std::string& format,
                     const IngestOptions& opt, Sink& sink) {
  // Units: pages (pdf), slides (pptx) or the whole document; each is chunked on its own.
  std::vector<std::string> units;
  const char* unit = nullptr;
  if (format == "pdf") {
    units = pdf_pages(path);
    unit = "page";
  } else if (format == "pptx") {
    units = pptx_slides(path);
    unit = "slide";
  } else if (format == "docx") {
    units.push_back(docx_text(path));
  } else {
    std::string text = to_utf8(util::read_file(path), opt.encoding, path);
    units.push_back(format == "html" ? html_text(text) : std::move(text));
  }
  std::string id, source;
  for (size_t u = 0; u < units.size(); ++u) {
    std::vector<std::string> chunks = chunk_text(units[u], opt.chunk_size, opt.chunk_overlap);
    if (chunks.empty()) {
      sink.empty();  // a page without text (a scanned image), an empty slide or file
      continue;
    }
    for (size_t c = 0; c < chunks.size(); ++c) {
      id = name;
      source = name;
      if (unit) {
        id += ":" + std::string(unit) + std::to_string(u + 1);
        source += ":" + std::string(unit) + " " + std::to_string(u + 1);
      }
      if (!unit || chunks.size() > 1) {
        id += std::string(unit ? "." : ":") + "chunk" + std::to_string(c + 1);
        source += ":chunk " + std::to_string(c + 1);
      }
      std::string& b = sink.begin(id, source);
      b.append(",\"text\":");
      if (!append_json_string(b, chunks[c])) {
        sink.rollback();
        sink.problem(Problem::invalid, id, source, "the text is not valid UTF-8", nullptr);
        continue;
      }
      sink.commit();
    }
  }
}

}  // namespace dsft::data::ingest
