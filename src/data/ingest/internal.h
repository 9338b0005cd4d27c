// Internal to ingest: the record sink (output, rejects, counters, the error-or-reject rule) and
// the row converter shared by every tabular source (CSV, XLSX, SQL, JSON objects).
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "dsft/data/ingest.h"
#include "dsft/data/ingest_text.h"
#include "dsft/data/jsonl.h"

namespace dsft::data::ingest {

// Why a row or record cannot become a record; each kind has its own --skip-* switch.
enum class Problem { missing_field, invalid };

class Sink {
 public:
  Sink(const IngestOptions& opt, JsonlWriter& out, JsonlWriter* rejects)
      : opt_(opt), out_(out), rejects_(rejects) {}

  void begin_source(const std::string& name, const std::string& format);
  SourceSummary& current() { return summary_.sources.back(); }
  IngestSummary& summary() { return summary_; }

  // Starts an output record: writes {"id":<id>,"source":<source> and returns the line buffer
  // for the caller to append ,"key":value pairs; then commit() or rollback().
  std::string& begin(std::string_view id, std::string_view source);
  std::string& begin_raw_id(std::string_view id_json, std::string_view source);
  void commit();
  void rollback();

  // A record as a JSON object (id/source already set), validated with validate_record.
  // Invalid -> problem(invalid, ...).
  void write_validated(const nlohmann::json& record);

  // Sends a problem to the rejects file (when its --skip-* switch is on) or throws dsft::Error
  // "<source>: <reason>" with a hint naming the switch.
  void problem(Problem kind, std::string_view id, std::string_view source, const std::string& reason,
               const nlohmann::json& data);
  void empty() {
    ++current().empty;
    ++summary_.empty;
  }

 private:
  const IngestOptions& opt_;
  JsonlWriter& out_;
  JsonlWriter* rejects_;
  IngestSummary summary_;
  size_t mark_ = 0;
};

// The shape a row takes when no template is given, from its column names.
enum class ColumnShape { lines, text, alpaca, messages };
ColumnShape shape_from_columns(const std::vector<std::string_view>& names);

class RowConverter {
 public:
  RowConverter(const IngestOptions& opt, Sink& sink);
  bool has_templates() const { return has_templates_; }

  // For sources with a fixed header: checks the templates against it (a template field that is
  // no column is a usage error with the closest column as a hint).
  void set_columns(const std::vector<std::string>& columns, const std::string& source_name);

  // One row. `names` may be null for the fixed header; null[i] marks a missing value (SQL NULL,
  // JSON null, an empty spreadsheet cell). `values` beyond the header make the row invalid.
  void convert(const std::vector<std::string_view>* names, const std::vector<std::string_view>& values,
               const std::vector<char>& null, std::string_view id, std::string_view source);

 private:
  const IngestOptions& opt_;
  Sink& sink_;
  bool has_templates_ = false;
  RowTemplate text_, instruction_, input_, output_;
  std::vector<std::string> columns_;
  std::vector<std::string_view> column_views_;
  ColumnShape fixed_shape_ = ColumnShape::lines;
  // Template field -> column index, per template (for the fixed header).
  std::vector<size_t> text_idx_, instruction_idx_, input_idx_, output_idx_;
  std::string scratch_;
  std::vector<std::string_view> field_values_;

  nlohmann::json row_json(const std::vector<std::string_view>& names,
                          const std::vector<std::string_view>& values, const std::vector<char>& null) const;
  bool render(const RowTemplate& t, const std::vector<size_t>* idx,
              const std::vector<std::string_view>& names, const std::vector<std::string_view>& values,
              const std::vector<char>& null, std::string& out, std::string& missing);
};

// Sources.
void ingest_csv(const std::string& path, const std::string& name, char delimiter, const IngestOptions& opt,
                Sink& sink);
void ingest_json(const std::string& path, const std::string& name, bool lines, const IngestOptions& opt,
                 Sink& sink);
void ingest_xlsx(const std::string& path, const std::string& name, const IngestOptions& opt, Sink& sink);
void ingest_document(const std::string& path, const std::string& name, const std::string& format,
                     const IngestOptions& opt, Sink& sink);
void ingest_sqlite(const std::string& path_or_url, const std::string& name, const IngestOptions& opt,
                   Sink& sink);
void ingest_postgres(const std::string& url, const IngestOptions& opt, Sink& sink);
void ingest_mysql(const std::string& url, const IngestOptions& opt, Sink& sink);

// "postgresql://alice:pw@host/db" -> "postgresql://alice@host/db": the URL as it may appear in
// records, logs and errors.
std::string url_without_password(const std::string& url);

// An 8-hex-digit hash of a query, to tell result sets of different queries apart in ids.
std::string short_hash(std::string_view s);

}  // namespace dsft::data::ingest
