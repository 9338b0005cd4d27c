// run_ingest: expands the sources (files, directories, database URLs), picks each one's format,
// and streams all records into one output file written atomically (plus the rejects file).
#include <fnmatch.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <set>

#include "data/ingest/internal.h"
#include "dsft/util/error.h"
#include "dsft/util/fs.h"
#include "dsft/util/log.h"
#include "dsft/util/strings.h"

namespace dsft::data {

namespace fs = std::filesystem;
using namespace ingest;

namespace {

const std::vector<std::string> kFormats = {"auto",     "csv",   "tsv", "jsonl",  "json",    "sqlite",
                                           "postgres", "mysql", "pdf", "docx",   "pptx",    "xlsx",
                                           "html",     "md",    "txt", "alpaca", "sharegpt"};

struct Input {
  std::string path;    // file path or database URL
  std::string name;    // display name used in ids and sources
  std::string format;  // csv, tsv, jsonl, json, sqlite, postgres, mysql, pdf, docx, pptx, xlsx, html, md, txt
};

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string format_from_extension(const std::string& path) {
  std::string ext = lower(fs::path(path).extension().string());
  if (ext == ".csv") return "csv";
  if (ext == ".tsv" || ext == ".tab") return "tsv";
  if (ext == ".jsonl" || ext == ".ndjson") return "jsonl";
  if (ext == ".json") return "json";
  if (ext == ".db" || ext == ".sqlite" || ext == ".sqlite3") return "sqlite";
  if (ext == ".pdf") return "pdf";
  if (ext == ".docx") return "docx";
  if (ext == ".pptx") return "pptx";
  if (ext == ".xlsx") return "xlsx";
  if (ext == ".html" || ext == ".htm" || ext == ".xhtml") return "html";
  if (ext == ".md" || ext == ".markdown") return "md";
  if (ext == ".txt" || ext == ".text") return "txt";
  return "";
}

// The format of a file without a known extension, from its first bytes.
std::string format_from_content(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) throw Error("cannot open " + path + ": " + std::strerror(errno));
  std::string head(4096, '\0');
  head.resize(std::fread(head.data(), 1, head.size(), f));
  std::fclose(f);
  if (head.compare(0, 16, std::string("SQLite format 3\0", 16)) == 0) return "sqlite";
  if (head.compare(0, 5, "%PDF-") == 0) return "pdf";
  if (head.compare(0, 4, "PK\x03\x04") == 0) {
    if (head.find("word/") != std::string::npos) return "docx";
    if (head.find("ppt/") != std::string::npos) return "pptx";
    if (head.find("xl/") != std::string::npos) return "xlsx";
    return "";
  }
  if (head.find('\0') != std::string::npos) return "";
  size_t i = head.find_first_not_of(" \t\r\n");
  if (i != std::string::npos && head.compare(i, 3, "\xEF\xBB\xBF") == 0)
    i = head.find_first_not_of(" \t\r\n", i + 3);
  if (i == std::string::npos) return "txt";
  if (head[i] == '[') return "json";
  if (head[i] == '{') {
    size_t nl = head.find('\n', i);
    std::string first = util::trim(head.substr(i, nl == std::string::npos ? std::string::npos : nl - i));
    return !first.empty() && first.back() == '}' ? "jsonl" : "json";
  }
  std::string l = lower(head.substr(i, 1024));
  if (head[i] == '<' &&
      (l.find("<html") != std::string::npos || l.find("<!doctype html") != std::string::npos ||
       l.find("<body") != std::string::npos || l.find("<p") != std::string::npos))
    return "html";
  return "txt";
}

std::string url_format(const std::string& s) {
  if (util::starts_with(s, "postgresql://") || util::starts_with(s, "postgres://")) return "postgres";
  if (util::starts_with(s, "mysql://") || util::starts_with(s, "mariadb://")) return "mysql";
  if (util::starts_with(s, "sqlite:")) return "sqlite";
  return "";
}

bool matches_any(const std::vector<std::string>& globs, const std::string& rel) {
  std::string base = fs::path(rel).filename().string();
  for (const auto& g : globs)
    if (::fnmatch(g.c_str(), rel.c_str(), 0) == 0 || ::fnmatch(g.c_str(), base.c_str(), 0) == 0) return true;
  return false;
}

bool same_file(const std::string& a, const std::string& b) {
  std::error_code ec;
  return fs::exists(b, ec) && fs::equivalent(a, b, ec);
}

std::vector<Input> expand_sources(const IngestOptions& opt, const std::string& rejects, size_t& skipped) {
  std::vector<Input> inputs;
  const std::string& forced = opt.format;
  bool forced_file_format = forced != "auto" && forced != "alpaca" && forced != "sharegpt";
  auto file_format = [&](const std::string& path) {
    if (forced_file_format) return forced;
    std::string f = format_from_extension(path);
    return f.empty() ? format_from_content(path) : f;
  };
  for (const std::string& src : opt.sources) {
    std::string scheme = url_format(src);
    if (!scheme.empty()) {
      if (forced_file_format && forced != scheme)
        throw UsageError("--format " + forced + " does not fit the database URL " +
                         url_without_password(src));
      inputs.push_back({src, scheme == "sqlite" ? src : url_without_password(src), scheme});
      continue;
    }
    if (src.find("://") != std::string::npos)
      throw UsageError("unknown URL scheme in '" + url_without_password(src) +
                       "' (expected postgresql://, mysql:// or sqlite:///path)");
    std::error_code ec;
    auto st = fs::status(src, ec);
    if (ec || !fs::exists(st)) throw Error("no such file or directory: " + src);
    if (fs::is_directory(st)) {
      std::vector<std::string> rels;
      fs::recursive_directory_iterator it(src, fs::directory_options::skip_permission_denied, ec), end;
      if (ec) throw Error("cannot list directory " + src + ": " + ec.message());
      for (; it != end; it.increment(ec)) {
        if (ec) throw Error("cannot list directory " + src + ": " + ec.message());
        std::string fname = it->path().filename().string();
        if (!fname.empty() && fname[0] == '.') {  // hidden files and folders (.git, editor files)
          if (it->is_directory()) it.disable_recursion_pending();
          continue;
        }
        if (!it->is_regular_file()) continue;
        std::string p = it->path().string();
        if (same_file(p, opt.output) || same_file(p, rejects)) continue;
        rels.push_back(fs::relative(it->path(), src).string());
      }
      std::sort(rels.begin(), rels.end());
      std::string dir_name = fs::path(src).lexically_normal().filename().string();
      if (dir_name.empty() || dir_name == ".")
        dir_name = fs::path(src).lexically_normal().parent_path().filename().string();
      for (const auto& rel : rels) {
        if (!opt.include.empty() && !matches_any(opt.include, rel)) continue;
        if (matches_any(opt.exclude, rel)) continue;
        std::string path = (fs::path(src) / rel).string();
        std::string f = forced_file_format ? forced : format_from_extension(path);
        if (f.empty() && !opt.include.empty()) f = format_from_content(path);
        if (f.empty()) {
          util::log_info("skipping " + path + ": not a known file type (name it with --include to read it)");
          ++skipped;
          continue;
        }
        inputs.push_back({path, dir_name.empty() ? rel : dir_name + "/" + rel, f});
      }
      continue;
    }
    std::string f = file_format(src);
    if (f.empty()) throw Error("cannot tell the format of " + src + " (pass --format)");
    inputs.push_back({src, fs::path(src).filename().string(), f});
  }
  // Display names must tell sources apart: fall back to the path as given where they clash.
  std::map<std::string, int> seen;
  for (const auto& in : inputs) ++seen[in.name];
  for (auto& in : inputs)
    if (seen[in.name] > 1 && in.format != "postgres" && in.format != "mysql") in.name = in.path;
  return inputs;
}

void check_options(const IngestOptions& opt) {
  if (opt.sources.empty())
    throw UsageError("ingest needs at least one SOURCE (a file, a directory or a database URL)");
  if (opt.output.empty()) throw UsageError("ingest needs -o OUTPUT.jsonl");
  if (std::find(kFormats.begin(), kFormats.end(), opt.format) == kFormats.end())
    throw UsageError("unknown --format '" + opt.format + "' (expected " + util::join(kFormats, ", ") + ")" +
                     "; did you mean '" + util::closest_match(opt.format, kFormats) + "'?");
  bool text = !opt.text_template.empty();
  bool pair = !opt.instruction_template.empty() || !opt.output_template.empty();
  if (text && (pair || !opt.input_template.empty()))
    throw UsageError(
        "--template makes {\"text\"} records; it cannot be combined with "
        "--instruction-template/--output-template");
  if (pair && (opt.instruction_template.empty() || opt.output_template.empty()))
    throw UsageError(
        "--instruction-template and --output-template go together (--input-template is optional)");
  if (!opt.input_template.empty() && !pair)
    throw UsageError("--input-template needs --instruction-template and --output-template");
  if (opt.chunk_size == 0) throw UsageError("--chunk-size must be at least 1");
  if (opt.chunk_overlap >= opt.chunk_size)
    throw UsageError("--chunk-overlap (" + std::to_string(opt.chunk_overlap) +
                     ") must be smaller than --chunk-size (" + std::to_string(opt.chunk_size) + ")");
  if (!opt.delimiter.empty()) parse_delimiter(opt.delimiter);
  // Templates are checked for syntax before any input is read.
  if (text) RowTemplate(opt.text_template, "--template");
  if (!opt.instruction_template.empty()) RowTemplate(opt.instruction_template, "--instruction-template");
  if (!opt.input_template.empty()) RowTemplate(opt.input_template, "--input-template");
  if (!opt.output_template.empty()) RowTemplate(opt.output_template, "--output-template");
}

void ingest_one(const Input& in, const IngestOptions& opt, Sink& sink) {
  const std::string& f = in.format;
  bool dialogue_format = opt.format == "alpaca" || opt.format == "sharegpt";
  if (dialogue_format && f != "json" && f != "jsonl")
    throw Error("--format " + opt.format + " reads JSON or JSON Lines files; " + in.path + " is " + f);
  if (f == "csv" || f == "tsv") {
    char d = !opt.delimiter.empty() ? parse_delimiter(opt.delimiter) : f == "tsv" ? '\t' : 0;
    ingest_csv(in.path, in.name, d, opt, sink);
  } else if (f == "jsonl" || f == "json") {
    ingest_json(in.path, in.name, f == "jsonl", opt, sink);
  } else if (f == "xlsx") {
    ingest_xlsx(in.path, in.name, opt, sink);
  } else if (f == "sqlite") {
    ingest_sqlite(in.path, in.name, opt, sink);
  } else if (f == "postgres") {
    ingest_postgres(in.path, opt, sink);
  } else if (f == "mysql") {
    ingest_mysql(in.path, opt, sink);
  } else {
    ingest_document(in.path, in.name, f, opt, sink);
  }
}

}  // namespace

std::string default_rejects_path(const std::string& output) {
  if (util::ends_with(output, ".jsonl")) return output.substr(0, output.size() - 6) + ".rejects.jsonl";
  return output + ".rejects.jsonl";
}

std::string IngestSummary::one_line() const {
  std::string s = "ingest: " + std::to_string(written) + " records";
  if (rejected > 0 || !rejects_path.empty()) s += ", " + std::to_string(rejected) + " rejected";
  if (!rejects_path.empty()) s += " (" + rejects_path + ")";
  if (empty > 0) s += ", " + std::to_string(empty) + " empty rows/pages skipped";
  if (skipped_files > 0) s += ", " + std::to_string(skipped_files) + " files of unknown type skipped";
  s += "; ";
  const size_t shown = 8;
  for (size_t i = 0; i < sources.size() && i < shown; ++i) {
    const auto& src = sources[i];
    if (i) s += ", ";
    s += src.name + " (" + src.format + ") " + std::to_string(src.written);
    if (src.rejected) s += "/" + std::to_string(src.rejected) + " rejected";
  }
  if (sources.size() > shown) s += ", and " + std::to_string(sources.size() - shown) + " more sources";
  return s;
}

IngestSummary run_ingest(const IngestOptions& opt_in) {
  IngestOptions opt = opt_in;
  check_options(opt);
  const bool want_rejects = opt.skip_missing || opt.skip_invalid;
  if (opt.rejects.empty()) opt.rejects = default_rejects_path(opt.output);
  if (same_file(opt.output, opt.rejects) || opt.output == opt.rejects)
    throw UsageError("--rejects must differ from the output file");
  size_t skipped = 0;
  std::vector<Input> inputs = expand_sources(opt, opt.rejects, skipped);
  for (const auto& in : inputs)
    if (same_file(in.path, opt.output))
      throw UsageError("the output file " + opt.output + " is also a source; write the output elsewhere");
  if (inputs.empty())
    throw Error("no input files found in " + util::join(opt.sources, ", ") +
                (opt.include.empty() ? "" : " matching --include"));
  IngestSummary summary;
  auto run = [&](std::FILE* out, std::FILE* rej) {
    JsonlWriter writer(out, opt.output);
    std::unique_ptr<JsonlWriter> rejects_writer;
    if (rej) rejects_writer = std::make_unique<JsonlWriter>(rej, opt.rejects);
    Sink sink(opt, writer, rejects_writer.get());
    for (const Input& in : inputs) {
      sink.begin_source(in.name, in.format);
      util::log_debug("ingesting " + in.name + " as " + in.format);
      ingest_one(in, opt, sink);
    }
    writer.flush();
    if (rejects_writer) rejects_writer->flush();
    summary = sink.summary();
  };
  // Both files are written to temp files and renamed only when everything succeeded.
  util::write_file_atomic(opt.output, [&](std::FILE* out) {
    if (want_rejects)
      util::write_file_atomic(opt.rejects, [&](std::FILE* rej) { run(out, rej); });
    else
      run(out, nullptr);
  });
  summary.skipped_files = skipped;
  summary.rejects_path = want_rejects ? opt.rejects : "";
  return summary;
}

}  // namespace dsft::data
