// The `dsft clean` job: streams records.jsonl in batches; each batch is cleaned in parallel (one
// record never depends on another there), then deduplicated, split and written in input order
// on one thread, so the result does not depend on the number of threads.
#include <fcntl.h>
#include <simdjson.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "dsft/data/clean.h"
#include "dsft/data/record.h"
#include "dsft/util/error.h"
#include "dsft/util/log.h"

namespace dsft::data {
namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

enum Stage { st_parse, st_html, st_unicode, st_pii, st_quality, st_language, st_signature, st_serialize, n_stages };
const char* stage_names[n_stages] = {"parse", "html", "unicode", "pii", "quality", "language", "signature",
                                     "serialize"};

// A file that appears under its name only when commit() is called; otherwise it is removed.
class AtomicOut {
 public:
  explicit AtomicOut(std::string path) : path_(std::move(path)) {
    std::random_device rd;
    char suffix[40];
    std::snprintf(suffix, sizeof suffix, ".tmp.%d.%08x", static_cast<int>(getpid()), rd());
    tmp_ = path_ + suffix;
    int fd = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) throw Error("cannot create " + tmp_ + ": " + std::strerror(errno) + " (does the directory exist?)");
    f_ = ::fdopen(fd, "wb");
    if (!f_) {
      ::close(fd);
      ::unlink(tmp_.c_str());
      throw Error("cannot open " + tmp_ + " for writing");
    }
    std::setvbuf(f_, nullptr, _IOFBF, 1 << 20);
  }
  ~AtomicOut() {
    if (f_) {
      std::fclose(f_);
      ::unlink(tmp_.c_str());
    }
  }
  void line(std::string_view s) {
    if (std::fwrite(s.data(), 1, s.size(), f_) != s.size() || std::fputc('\n', f_) == EOF)
      throw Error("cannot write " + path_ + ": " + std::strerror(errno));
  }
  // Flushes and syncs; the rename happens in rename_into_place() so that all outputs of a
  // run are renamed together, after every one of them was written in full.
  void finish() {
    if (std::fflush(f_) != 0 || ::fsync(::fileno(f_)) != 0)
      throw Error("cannot write " + path_ + ": " + std::strerror(errno));
  }
  void rename_into_place() {
    std::fclose(f_);
    f_ = nullptr;
    if (std::rename(tmp_.c_str(), path_.c_str()) != 0) {
      int e = errno;
      ::unlink(tmp_.c_str());
      throw Error("cannot rename " + tmp_ + " to " + path_ + ": " + std::strerror(e));
    }
  }

 private:
  std::string path_, tmp_;
  std::FILE* f_ = nullptr;
};

// ---- one record -----------------------------------------------------------------------------

struct Outcome {
  uint64_t line = 0;
  std::string filter, reason;  // set when the record is rejected before deduplication
  nlohmann::json id;           // null when the line did not parse
  nlohmann::json source;
  std::string id_text;         // the id as a string, for the split and duplicate reasons
  std::string body;            // serialised masked record, or the masked raw line when !parsed
  bool parsed = false;
  bool utf8_repaired = false, html = false, unicode_changed = false, counted_language = false;
  std::string language;
  XXH128_hash_t exact{};
  std::vector<uint32_t> signature;
  const char* split = nullptr;
  PiiCounts pii;
  double seconds[n_stages] = {};
};

struct Worker {
  const CleanConfig& cfg;
  const PiiScanner* scanner;
  const MinHasher* hasher;
  simdjson::dom::parser parser;

  nlohmann::json to_json(simdjson::dom::element e) {
    switch (e.type()) {
      case simdjson::dom::element_type::OBJECT: {
        nlohmann::json o = nlohmann::json::object();
        for (auto field : simdjson::dom::object(e)) o[std::string(field.key)] = to_json(field.value);
        return o;
      }
      case simdjson::dom::element_type::ARRAY: {
        nlohmann::json a = nlohmann::json::array();
        for (auto v : simdjson::dom::array(e)) a.push_back(to_json(v));
        return a;
      }
      case simdjson::dom::element_type::STRING: return std::string(std::string_view(e));
      case simdjson::dom::element_type::INT64: return int64_t(e);
      case simdjson::dom::element_type::UINT64: return uint64_t(e);
      case simdjson::dom::element_type::DOUBLE: return double(e);
      case simdjson::dom::element_type::BOOL: return bool(e);
      case simdjson::dom::element_type::NULL_VALUE: return nullptr;
    }
    return nullptr;
  }

  std::string mask(std::string_view s, PiiCounts* counts) const {
    return cfg.pii && scanner ? scanner->mask(s, counts) : std::string(s);
  }

  // PII masking over every string of a value (metadata, or a record that failed validation).
  void mask_all(nlohmann::json& v, PiiCounts* counts, bool top) const {
    if (v.is_string()) {
      v = mask(v.get_ref<const std::string&>(), counts);
    } else if (v.is_array()) {
      for (auto& x : v) mask_all(x, counts, false);
    } else if (v.is_object()) {
      for (auto it = v.begin(); it != v.end(); ++it) {
        if (top && (it.key() == "id" || it.key() == "source")) continue;  // kept for tracing
        mask_all(it.value(), counts, false);
      }
    }
  }

  // The text fields of a valid record, in order.
  static std::vector<std::string*> text_fields(nlohmann::json& r, RecordShape shape) {
    std::vector<std::string*> f;
    auto add = [&](nlohmann::json& v) {
      if (v.is_string()) f.push_back(&v.get_ref<std::string&>());
    };
    switch (shape) {
      case RecordShape::text: add(r["text"]); break;
      case RecordShape::alpaca:
        add(r["instruction"]);
        if (r.contains("input")) add(r["input"]);
        add(r["output"]);
        break;
      case RecordShape::messages:
        for (auto& m : r["messages"])
          if (m.contains("content")) add(m["content"]);
        break;
    }
    return f;
  }

  void reject(Outcome& o, const char* filter, std::string reason) const {
    o.filter = filter;
    o.reason = std::move(reason);
  }

  void process(std::string_view line, Outcome& o) {
    auto t0 = Clock::now();
    std::string repaired;
    bool utf8_reject = false;
    if (!utf8_is_valid(line)) {
      size_t bad = 0;
      repaired = utf8_repair(line, cfg.invalid_utf8 == InvalidUtf8::drop, &bad);
      line = repaired;
      o.utf8_repaired = true;
      if (cfg.invalid_utf8 == InvalidUtf8::reject) {
        utf8_reject = true;
        reject(o, "utf8", std::to_string(bad) + " invalid UTF-8 sequence(s)");
      }
    }
    nlohmann::json rec;
    auto parsed = parser.parse(line.data(), line.size(), true);
    if (parsed.error()) {
      o.seconds[st_parse] += since(t0);
      if (!utf8_reject)
        reject(o, "json", std::string("not valid JSON: ") + simdjson::error_message(parsed.error()));
      o.body = mask(line, &o.pii);
      return;
    }
    rec = to_json(parsed.value());
    o.parsed = true;
    if (rec.is_object()) {
      if (rec.contains("id")) o.id = rec["id"];
      if (rec.contains("source")) o.source = rec["source"];
      o.id_text = o.id.is_string() ? o.id.get<std::string>() : o.id.is_null() ? "" : o.id.dump();
    }
    o.seconds[st_parse] += since(t0);
    std::string invalid = utf8_reject ? "" : validate_record(rec);
    if (utf8_reject || !invalid.empty()) {
      if (!utf8_reject) reject(o, "schema", mask(invalid, nullptr));
      mask_all(rec, &o.pii, true);
      o.body = rec.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
      return;
    }
    RecordShape shape = record_shape(rec);
    auto fields = text_fields(rec, shape);
    for (std::string* f : fields) {
      if (cfg.html) {
        auto t = Clock::now();
        if (looks_like_markup(*f)) {
          *f = markup_to_text(*f);
          o.html = true;
        }
        o.seconds[st_html] += since(t);
      }
      auto t = Clock::now();
      std::string n = normalize_unicode(*f, cfg.unicode);
      if (n != *f) {
        o.unicode_changed = true;
        *f = std::move(n);
      }
      o.seconds[st_unicode] += since(t);
      t = Clock::now();
      if (cfg.pii) *f = mask(*f, &o.pii);
      o.seconds[st_pii] += since(t);
    }
    // Other string fields (metadata) are masked too; the filters above are for training text.
    if (cfg.pii) {
      auto t = Clock::now();
      for (auto it = rec.begin(); it != rec.end(); ++it) {
        const std::string& k = it.key();
        if (k == "id" || k == "source" || k == "text" || k == "instruction" || k == "input" || k == "output") continue;
        if (k == "messages") {
          for (auto& m : it.value())
            for (auto mit = m.begin(); mit != m.end(); ++mit)
              if (mit.key() != "content" && mit.key() != "role") mask_all(mit.value(), &o.pii, false);
          continue;
        }
        mask_all(it.value(), &o.pii, false);
      }
      o.seconds[st_pii] += since(t);
    }
    std::string joined;
    for (size_t i = 0; i < fields.size(); ++i) {
      if (i) joined.push_back('\n');
      joined += *fields[i];
    }
    auto t = Clock::now();
    check_quality(rec, shape, joined, o);
    o.seconds[st_quality] += since(t);
    if (o.filter.empty()) {
      t = Clock::now();
      check_language(joined, o);
      o.seconds[st_language] += since(t);
    }
    if (o.filter.empty()) {
      t = Clock::now();
      if (cfg.exact_dedup) {
        // Field boundaries and roles are part of the identity of a record.
        std::string key = shape_name(shape);
        if (shape == RecordShape::messages) {
          for (const auto& m : rec["messages"]) {
            key += '\x1e';
            key += m.value("role", "");
            key += '\x1f';
            if (m.contains("content") && m["content"].is_string()) key += m["content"].get_ref<const std::string&>();
          }
        } else {
          for (std::string* f : fields) {
            key += '\x1e';
            key += *f;
          }
        }
        o.exact = XXH3_128bits(key.data(), key.size());
      }
      if (cfg.near_dedup) o.signature = hasher->signature(joined);
      if (!cfg.split.empty()) o.split = split_for(o.id_text, cfg.split.data(), cfg.split_seed);
      o.seconds[st_signature] += since(t);
    }
    t = Clock::now();
    o.body = rec.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    o.seconds[st_serialize] += since(t);
  }

  void check_quality(const nlohmann::json& rec, RecordShape shape, const std::string& joined, Outcome& o) const {
    if (cfg.reject_empty_output) {
      if (shape == RecordShape::alpaca && rec["output"].get_ref<const std::string&>().empty())
        return reject(o, "quality", "empty_output: the output is empty after cleaning");
      if (shape == RecordShape::messages) {
        const auto& msgs = rec["messages"];
        for (size_t i = 0; i < msgs.size(); ++i) {
          const auto& m = msgs[i];
          bool tool_calls = m.contains("tool_calls") && m["tool_calls"].is_array() && !m["tool_calls"].empty();
          if (m.value("role", "") == "assistant" && !tool_calls &&
              (!m.contains("content") || !m["content"].is_string() ||
               m["content"].get_ref<const std::string&>().empty()))
            return reject(o, "quality", "empty_turn: assistant message " + std::to_string(i) + " is empty after cleaning");
        }
      }
      if (shape == RecordShape::text && joined.empty())
        return reject(o, "quality", "empty_text: the text is empty after cleaning");
    }
    TextStats st = text_stats(joined);
    if (st.chars < cfg.min_chars)
      return reject(o, "quality", "min_chars: " + std::to_string(st.chars) + " characters < " + std::to_string(cfg.min_chars));
    if (st.chars > cfg.max_chars)
      return reject(o, "quality", "max_chars: " + std::to_string(st.chars) + " characters > " + std::to_string(cfg.max_chars));
    auto pct = [](double r) {
      char b[32];
      std::snprintf(b, sizeof b, "%.2f", r);
      return std::string(b);
    };
    if (st.non_space) {
      double sym = static_cast<double>(st.symbols) / st.non_space;
      if (sym > cfg.max_symbol_ratio)
        return reject(o, "quality", "symbol_ratio: " + pct(sym) + " > " + pct(cfg.max_symbol_ratio));
      double dig = static_cast<double>(st.digits) / st.non_space;
      if (dig > cfg.max_digit_ratio)
        return reject(o, "quality", "digit_ratio: " + pct(dig) + " > " + pct(cfg.max_digit_ratio));
    }
    if (st.lines >= 3) {
      double rep = static_cast<double>(st.repeated_lines) / st.lines;
      if (rep > cfg.max_repeated_line_ratio)
        return reject(o, "quality", "repeated_lines: " + pct(rep) + " of lines repeat > " + pct(cfg.max_repeated_line_ratio));
    }
  }

  void check_language(const std::string& joined, Outcome& o) const {
    LanguageGuess g = detect_language(joined);
    o.language = g.code;
    o.counted_language = true;
    if (cfg.languages.empty()) return;
    auto allowed = [&](const std::string& c) {
      return std::find(cfg.languages.begin(), cfg.languages.end(), c) != cfg.languages.end();
    };
    if (allowed(g.code)) return;
    if (g.code == "un" && cfg.keep_unknown_language) return;
    // Short texts: detection is a guess, do not reject on it.
    size_t chars = 0;
    for (unsigned char c : joined) chars += (c & 0xC0) != 0x80;
    if (chars < cfg.lang_min_chars) return;
    // Mixed text: enough of it in allowed languages is enough.
    int share = 0;
    for (const auto& [code, pct] : g.top)
      if (allowed(code)) share += pct;
    if (share >= cfg.lang_min_share && share > 0) return;
    std::string top;
    for (const auto& [code, pct] : g.top) top += (top.empty() ? "" : ", ") + code + " " + std::to_string(pct) + "%";
    reject(o, "language",
           g.code + (g.reliable ? "" : " (unreliable)") + " is not in the allowed languages (detected: " +
               (top.empty() ? g.code : top) + ")");
  }
};

// ---- the stream -----------------------------------------------------------------------------

// Reads lines in large blocks; a line is returned without '\n' / "\r\n".
class LineSource {
 public:
  explicit LineSource(const std::string& path) : path_(path) {
    f_ = std::fopen(path.c_str(), "rb");
    if (!f_) throw Error("cannot open " + path + ": " + std::strerror(errno));
  }
  ~LineSource() {
    if (f_) std::fclose(f_);
  }
  // Appends up to max_lines lines (or ~max_bytes) to `out`; false at end of file.
  bool next_batch(std::vector<std::string>& out, size_t max_lines, size_t max_bytes) {
    size_t bytes = 0;
    while (out.size() < max_lines && bytes < max_bytes) {
      size_t nl = buf_.find('\n', pos_);
      if (nl == std::string::npos) {
        if (eof_) {
          if (pos_ < buf_.size()) {
            out.push_back(buf_.substr(pos_));
            pos_ = buf_.size();
          }
          return !out.empty();
        }
        buf_.erase(0, pos_);
        pos_ = 0;
        size_t old = buf_.size();
        buf_.resize(old + (1 << 22));
        size_t n = std::fread(&buf_[old], 1, 1 << 22, f_);
        buf_.resize(old + n);
        if (first_read_) {
          first_read_ = false;
          if (buf_.compare(0, 3, "\xEF\xBB\xBF") == 0) pos_ = 3;  // a UTF-8 byte order mark is not data
        }
        if (n == 0) {
          if (std::ferror(f_)) throw Error("cannot read " + path_ + ": " + std::strerror(errno));
          eof_ = true;
        }
        continue;
      }
      size_t end = nl;
      if (end > pos_ && buf_[end - 1] == '\r') --end;
      out.emplace_back(buf_, pos_, end - pos_);
      bytes += end - pos_;
      pos_ = nl + 1;
    }
    return true;
  }

 private:
  std::string path_;
  std::FILE* f_ = nullptr;
  std::string buf_;
  size_t pos_ = 0;
  bool eof_ = false;
  bool first_read_ = true;
};

bool is_blank(std::string_view s) {
  for (char c : s)
    if (c != ' ' && c != '\t' && c != '\r') return false;
  return true;
}

struct HashKey {
  size_t operator()(const XXH128_hash_t& h) const { return static_cast<size_t>(h.low64); }
};
struct HashEq {
  bool operator()(const XXH128_hash_t& a, const XXH128_hash_t& b) const {
    return a.low64 == b.low64 && a.high64 == b.high64;
  }
};

std::string reject_line(const Outcome& o, const std::string& filter, const std::string& reason,
                        const nlohmann::json* duplicate_of) {
  nlohmann::ordered_json r;
  r["filter"] = filter;
  r["reason"] = reason;
  r["source"] = o.source;
  r["id"] = o.id;
  r["line"] = o.line;
  if (duplicate_of) r["duplicate_of"] = *duplicate_of;
  std::string s = r.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  s.pop_back();  // '}'
  s += o.parsed ? ",\"record\":" : ",\"raw\":";
  if (o.parsed) {
    s += o.body;
  } else {
    s += nlohmann::json(o.body).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }
  s += '}';
  return s;
}

}  // namespace

CleanReport clean_file(const CleanConfig& cfg) {
  validate_clean_config(cfg);
  auto wall0 = Clock::now();
  CleanReport rep;
  std::unique_ptr<PiiScanner> scanner;
  if (cfg.pii) scanner = std::make_unique<PiiScanner>(cfg.pii_options);
  MinHasher hasher(cfg.num_perm, cfg.shingle_size);
  NearDupIndex near(cfg.num_perm, cfg.near_dup_threshold);
  std::unordered_map<XXH128_hash_t, uint32_t, HashKey, HashEq> exact;  // -> kept record
  std::vector<nlohmann::json> kept_ids;                                 // by kept record
  std::vector<uint32_t> near_to_kept;                                   // near index -> kept record
  PiiCounts pii_total;
  double stage_seconds[n_stages] = {};
  double read_s = 0, dedup_s = 0, write_s = 0;

  LineSource src(cfg.input);
  auto out = std::make_unique<AtomicOut>(cfg.output);
  auto rejects = std::make_unique<AtomicOut>(cfg.rejects);
  std::unique_ptr<AtomicOut> val, test;
  if (!cfg.val_output.empty()) val = std::make_unique<AtomicOut>(cfg.val_output);
  if (!cfg.test_output.empty()) test = std::make_unique<AtomicOut>(cfg.test_output);

  int n_threads = cfg.threads > 0 ? cfg.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  std::vector<std::unique_ptr<Worker>> workers;
  for (int t = 0; t < n_threads; ++t)
    workers.push_back(std::unique_ptr<Worker>(new Worker{cfg, scanner.get(), &hasher, simdjson::dom::parser()}));

  uint64_t line_no = 0;
  std::vector<std::string> lines;
  std::vector<uint64_t> numbers;
  std::vector<Outcome> outcomes;
  while (true) {
    auto t0 = Clock::now();
    lines.clear();
    bool more = src.next_batch(lines, 4096, 16u << 20);
    read_s += since(t0);
    if (lines.empty() && !more) break;
    // Blank lines are not records; they are counted and skipped.
    numbers.clear();
    size_t kept_lines = 0;
    for (size_t i = 0; i < lines.size(); ++i) {
      ++line_no;
      if (is_blank(lines[i])) {
        ++rep.blank_lines;
        continue;
      }
      if (kept_lines != i) lines[kept_lines] = std::move(lines[i]);
      numbers.push_back(line_no);
      ++kept_lines;
    }
    lines.resize(kept_lines);
    outcomes.clear();
    outcomes.resize(lines.size());
    auto run = [&](int t) {
      for (size_t i = static_cast<size_t>(t); i < lines.size(); i += static_cast<size_t>(n_threads)) {
        outcomes[i].line = numbers[i];
        workers[t]->process(lines[i], outcomes[i]);
      }
    };
    if (n_threads == 1 || lines.size() < 64) {
      for (size_t i = 0; i < lines.size(); ++i) {
        outcomes[i].line = numbers[i];
        workers[0]->process(lines[i], outcomes[i]);
      }
    } else {
      std::vector<std::thread> pool;
      std::exception_ptr failure;
      std::mutex failure_mu;
      for (int t = 0; t < n_threads; ++t)
        pool.emplace_back([&, t] {
          try {
            run(t);
          } catch (...) {
            std::lock_guard<std::mutex> lock(failure_mu);
            if (!failure) failure = std::current_exception();
          }
        });
      for (auto& th : pool) th.join();
      if (failure) std::rethrow_exception(failure);
    }
    // In input order: deduplicate, route, write.
    for (auto& o : outcomes) {
      ++rep.input_records;
      for (int s = 0; s < n_stages; ++s) stage_seconds[s] += o.seconds[s];
      pii_total.add(o.pii);
      rep.records_with_pii += o.pii.total() > 0;
      rep.utf8_repaired += o.utf8_repaired;
      rep.html_stripped += o.html;
      rep.unicode_changed += o.unicode_changed;
      if (o.counted_language) ++rep.languages[o.language];
      auto tw = Clock::now();
      if (!o.filter.empty()) {
        ++rep.rejected[o.filter];
        if (o.filter == "quality") ++rep.quality_checks[o.reason.substr(0, o.reason.find(':'))];
        rejects->line(reject_line(o, o.filter, o.reason, nullptr));
        write_s += since(tw);
        continue;
      }
      auto td = Clock::now();
      if (cfg.exact_dedup) {
        auto it = exact.find(o.exact);
        if (it != exact.end()) {
          ++rep.rejected["exact_dup"];
          ++rep.exact_duplicates;
          const auto& of = kept_ids[it->second];
          dedup_s += since(td);
          rejects->line(reject_line(o, "exact_dup", "exact duplicate of id " + (of.is_string() ? of.get<std::string>() : of.dump()), &of));
          continue;
        }
      }
      int64_t near_hit = -1;
      double sim = 0;
      if (cfg.near_dedup && !o.signature.empty()) near_hit = near.query(o.signature, &sim);
      if (near_hit >= 0) {
        ++rep.rejected["near_dup"];
        ++rep.near_duplicates;
        const auto& of = kept_ids[near_to_kept[near_hit]];
        char buf[64];
        std::snprintf(buf, sizeof buf, " (estimated Jaccard similarity %.2f)", sim);
        dedup_s += since(td);
        rejects->line(reject_line(o, "near_dup", "near-duplicate of id " + (of.is_string() ? of.get<std::string>() : of.dump()) + buf, &of));
        continue;
      }
      uint32_t kept = static_cast<uint32_t>(kept_ids.size());
      kept_ids.push_back(o.id);
      if (cfg.exact_dedup) exact.emplace(o.exact, kept);
      if (cfg.near_dedup && !o.signature.empty()) {
        near_to_kept.push_back(kept);
        near.insert(o.signature);
      }
      dedup_s += since(td);
      tw = Clock::now();
      ++rep.output_records;
      AtomicOut* dest = out.get();
      if (o.split) {
        ++rep.split_counts[o.split];
        if (val && std::strcmp(o.split, "validation") == 0) dest = val.get();
        if (test && std::strcmp(o.split, "test") == 0) dest = test.get();
        o.body.pop_back();
        o.body += ",\"split\":\"";
        o.body += o.split;
        o.body += "\"}";
      }
      dest->line(o.body);
      write_s += since(tw);
    }
    if (!more) break;
  }
  auto tw = Clock::now();
  out->finish();
  rejects->finish();
  if (val) val->finish();
  if (test) test->finish();
  write_s += since(tw);

  for (size_t k = 0; k < n_builtin_pii_kinds; ++k)
    if (pii_total.builtin[k]) rep.pii_masked[pii_kind_name(static_cast<PiiKind>(k))] = pii_total.builtin[k];
  for (size_t k = 0; k < pii_total.custom.size(); ++k)
    if (pii_total.custom[k]) rep.pii_masked[cfg.pii_options.custom[k].name] = pii_total.custom[k];
  for (int s = 0; s < n_stages; ++s) rep.seconds[stage_names[s]] = stage_seconds[s];
  rep.seconds["read"] = read_s;
  rep.seconds["dedup"] = dedup_s;
  rep.seconds["write"] = write_s;
  rep.seconds["wall"] = since(wall0);
  if (rep.input_records != rep.output_records + rep.rejected_total())
    throw Error("internal error: record counts do not add up; no output written");
  std::string report_text = rep.to_json(cfg).dump(2) + "\n";
  // Everything is written and synced: put the files in place, the report last.
  out->rename_into_place();
  rejects->rename_into_place();
  if (val) val->rename_into_place();
  if (test) test->rename_into_place();
  AtomicOut report(cfg.report);
  report.line(report_text.substr(0, report_text.size() - 1));
  report.finish();
  report.rename_into_place();
  return rep;
}

}  // namespace dsft::data
