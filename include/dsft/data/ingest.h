// `dsft ingest`: turns a company's files, spreadsheets, documents, dialogues and SQL query results
// into training records (JSON Lines in the schema of record.h), streaming, with an atomic output.
//
// Rules (also in docs/INGEST.md):
//  - Every record has "id" (stable: the input's own "id" when a JSON object has one, else
//    "<name>:<locator>", e.g. "specs.csv:row12") and "source" ("specs.csv:row 12",
//    "manual.pdf:page 3", "deck.pptx:slide 2", "book.xlsx:Sheet1:row 4",
//    "postgresql://alice@db:5432/shop:row 7" -- never a password).
//  - Nothing is dropped silently. A row or record that cannot become a valid record is an error
//    naming its source and the reason; with --skip-missing (a template field is missing) or
//    --skip-invalid (anything else) it goes to the rejects file with the reason instead and is
//    counted. Rows whose every cell is empty and document pages without text are not records:
//    they are counted in the summary as "empty".
#pragma once
#include <cstddef>
#include <string>
#include <vector>

namespace dsft::data {

struct IngestOptions {
  std::vector<std::string> sources;  // files, directories, sqlite/postgresql/mysql URLs
  std::string output;                // records.jsonl (written atomically)
  std::string rejects;               // default: <output without .jsonl>.rejects.jsonl
  std::string format =
      "auto";  // auto|csv|tsv|jsonl|json|sqlite|postgres|mysql|pdf|docx|pptx|xlsx|html|md|txt|alpaca|sharegpt
  std::string query;                 // SQL for database sources
  std::string password_env;          // name of an environment variable holding the DB password
  std::string text_template;         // --template: rows -> {"text"}
  std::string instruction_template;  // --instruction-template / --input-template / --output-template
  std::string input_template;
  std::string output_template;
  bool skip_missing = false;         // rows lacking a template field -> rejects instead of an error
  bool skip_invalid = false;         // invalid records/rows -> rejects instead of an error
  std::string delimiter;             // CSV delimiter ("" = detect; "\t", ",", ";", "|" or one char)
  std::string encoding = "auto";     // auto|utf-8|gb18030|gbk|utf-16|<any iconv name>
  std::vector<std::string> include;  // fnmatch globs for files found in directories
  std::vector<std::string> exclude;
  size_t chunk_size = 2000;    // characters (code points) per document chunk
  size_t chunk_overlap = 200;  // characters repeated from the end of the previous chunk
};

struct SourceSummary {
  std::string name;    // the display name used in "source" (never with a password)
  std::string format;  // the format it was read as
  size_t written = 0;
  size_t rejected = 0;
  size_t empty = 0;  // empty rows / pages without text
};

struct IngestSummary {
  size_t written = 0;
  size_t rejected = 0;
  size_t empty = 0;
  size_t skipped_files = 0;  // files in directories whose type is unknown (listed in the log)
  std::string rejects_path;  // "" when no rejects file was written
  std::vector<SourceSummary> sources;
  std::string one_line() const;  // "ingest: 120 records (...), 2 rejected -> ...; a.csv 100, b.pdf 20"
};

// Runs the whole ingest; throws dsft::Error (nothing written) or dsft::UsageError.
IngestSummary run_ingest(const IngestOptions& options);

// The rejects path used when IngestOptions::rejects is empty.
std::string default_rejects_path(const std::string& output);

}  // namespace dsft::data
