// TokenizedDataset: JSONL records -> token ids and loss masks (text records directly, Alpaca and
// messages records through the chat template), truncation and empty-record accounting, the
// on-disk token cache, the hash-based validation split and packing.
#include "dsft/train/dataset.h"

#include <xxhash.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "dsft/data/jsonl.h"
#include "dsft/data/record.h"
#include "dsft/text/chat_template.h"
#include "dsft/text/tokenizer.h"
#include "dsft/util/error.h"
#include "dsft/util/fs.h"
#include "dsft/util/log.h"

namespace fs = std::filesystem;
using ojson = nlohmann::ordered_json;

namespace dsft::train {

// Builds datasets from their parts (the members are private to keep the public surface small).
struct DatasetInternals {
  static std::vector<Sample>& records(TokenizedDataset& d) { return d.records_; }
  static std::vector<uint8_t>& truncated(TokenizedDataset& d) { return d.record_truncated_; }
  static std::vector<int64_t>& cut(TokenizedDataset& d) { return d.record_cut_tokens_; }
  static std::vector<std::string>& dropped(TokenizedDataset& d) { return d.dropped_ids_; }
  static int64_t& max_len(TokenizedDataset& d) { return d.max_seq_length_; }
  static DatasetStats& stats(TokenizedDataset& d) { return d.stats_; }
  static void finish(TokenizedDataset& d) { d.recompute_stats(); }
};

namespace {

// Bump whenever what a cache file holds, or how records are tokenised, changes.
constexpr uint32_t kCacheFormat = 1;
constexpr char kCacheMagic[8] = {'D', 'S', 'F', 'T', 'T', 'O', 'K', 'S'};

std::string hex(const void* data, size_t n) {
  static const char* digits = "0123456789abcdef";
  const auto* p = static_cast<const unsigned char*>(data);
  std::string s;
  for (size_t i = 0; i < n; ++i) {
    s.push_back(digits[p[i] >> 4]);
    s.push_back(digits[p[i] & 15]);
  }
  return s;
}

// ---- per-record tokenisation

struct Processed {
  Sample sample;
  bool truncated = false;
  int64_t cut = 0;
  bool dropped = false;
  std::string error;  // non-empty: the record is invalid (message names file and line)
};

// The record's "id" (a string or an integer); records without one (which `dsft ingest` never
// writes) get a content hash, so the split still does not depend on where they sit in the file.
std::string record_id(const ojson& r) {
  auto it = r.find("id");
  if (it != r.end()) {
    if (it->is_string()) return it->get<std::string>();
    if (it->is_number_integer()) return it->dump();
  }
  std::string body = r.dump();
  XXH64_hash_t h = XXH3_64bits(body.data(), body.size());
  unsigned char b[8];
  for (int i = 0; i < 8; ++i) b[i] = static_cast<unsigned char>(h >> (56 - 8 * i));
  return "content-" + hex(b, 8);
}

struct Context {
  const text::Tokenizer& tokenizer;
  const text::ChatTemplate& chat_template;
  const DatasetOptions& options;
};

// BOS goes in front where the tokenizer's training convention asks for it (DeepSeek-V3's
// add_bos_token with a post-processor that adds none) and the ids do not start with it already
// (templates that write bos_token themselves, SentencePiece's own BOS).
void maybe_prepend_bos(const Context& c, std::vector<int32_t>& ids, std::vector<uint8_t>& mask) {
  const auto& tok = c.tokenizer;
  if (!c.options.add_bos || !tok.add_bos_for_training || !tok.bos_id) return;
  if (!ids.empty() && ids.front() == *tok.bos_id) return;
  ids.insert(ids.begin(), *tok.bos_id);
  mask.insert(mask.begin(), 0);
}

Processed process_line(const Context& c, std::string_view line, const std::string& file, size_t line_no) {
  Processed out;
  const std::string where = file + ":" + std::to_string(line_no);
  ojson record;
  try {
    record = ojson::parse(line.begin(), line.end());
  } catch (const nlohmann::json::exception& e) {
    // nlohmann's "[json.exception.parse_error.101] parse error at line 1, column 9: ..." -> "column 9: ..."
    std::string msg = e.what();
    if (auto p = msg.find("column "); p != std::string::npos) msg = msg.substr(p);
    out.error = where + ": not valid JSON (" + msg + ")";
    return out;
  }
  const std::string id = record.is_object() ? record_id(record) : "";
  try {
    nlohmann::json plain(record);
    data::RecordShape shape = data::record_shape(plain);
    if (shape != data::RecordShape::text) {
      // validate_record also wants "id" and "source" (which ingest writes); a hand-written
      // training file may lack them, so only the shape rules decide here.
      if (!plain.contains("id")) plain["id"] = id;
      if (!plain.contains("source")) plain["source"] = file;
      std::string reason = data::validate_record(plain);
      if (!reason.empty()) throw Error(reason);
    }
    std::vector<int32_t> ids;
    std::vector<uint8_t> mask;
    if (shape == data::RecordShape::text) {
      const std::string& text = record["text"].get_ref<const std::string&>();
      ids = c.tokenizer.encode(text, c.options.add_bos);
      mask.assign(ids.size(), 1);
      maybe_prepend_bos(c, ids, mask);
      const auto& eos = c.tokenizer.eos_id;
      if (c.options.add_eos_to_text && eos && (ids.empty() || ids.back() != *eos)) {
        ids.push_back(*eos);
        mask.push_back(1);
      }
    } else {
      ojson messages = text::messages_from_record(record);
      text::RenderedChat rendered = c.chat_template.render_with_spans(messages, false);
      text::TokenizedChat chat = text::tokenize_chat(c.tokenizer, rendered);
      ids = std::move(chat.ids);
      mask = c.options.train_on_inputs ? std::vector<uint8_t>(ids.size(), 1) : std::move(chat.train_mask);
      maybe_prepend_bos(c, ids, mask);
    }
    // The first token of a record has nothing before it to be predicted from.
    if (!mask.empty()) mask[0] = 0;
    const auto max_len = static_cast<size_t>(c.options.max_seq_length);
    if (ids.size() > max_len) {
      out.truncated = true;
      out.cut = static_cast<int64_t>(ids.size() - max_len);
      ids.resize(max_len);
      mask.resize(max_len);
    }
    out.dropped = std::find(mask.begin(), mask.end(), uint8_t{1}) == mask.end();
    out.sample.segment_ids.assign(ids.size(), 0);
    out.sample.ids = std::move(ids);
    out.sample.labels_mask = std::move(mask);
    out.sample.record_ids.push_back(id);
  } catch (const std::exception& e) {
    const bool named =
        record.is_object() && record.contains("id");  // content-hash ids mean nothing to a reader
    out.error = where + (named ? " (record " + id + ")" : "") + ": " + e.what();
  }
  return out;
}

// Runs fn(i) for i in [0, n) on `threads` threads.
template <typename F>
void parallel_for(size_t n, int threads, F&& fn) {
  size_t t = std::min<size_t>(n, static_cast<size_t>(std::max(1, threads)));
  if (t <= 1) {
    for (size_t i = 0; i < n; ++i) fn(i);
    return;
  }
  std::atomic<size_t> next{0};
  std::vector<std::thread> pool;
  for (size_t k = 0; k < t; ++k)
    pool.emplace_back([&] {
      for (size_t i; (i = next.fetch_add(1)) < n;) fn(i);
    });
  for (auto& th : pool) th.join();
}

// ---- cache key

class KeyHasher {
 public:
  KeyHasher() { XXH3_128bits_reset(state_); }
  ~KeyHasher() { XXH3_freeState(state_); }
  KeyHasher(const KeyHasher&) = delete;
  KeyHasher& operator=(const KeyHasher&) = delete;
  void bytes(const void* p, size_t n) {
    uint64_t len = n;  // length-prefixed, so that field boundaries cannot shift
    XXH3_128bits_update(state_, &len, sizeof len);
    XXH3_128bits_update(state_, p, n);
  }
  void str(std::string_view s) { bytes(s.data(), s.size()); }
  void i64(int64_t v) { bytes(&v, sizeof v); }
  void file(const std::string& path) {
    std::FILE* f = std::fopen(path.c_str(), "rb");
    if (!f) throw Error("cannot read dataset file " + path + ": " + std::strerror(errno));
    XXH3_state_t* inner = XXH3_createState();
    XXH3_128bits_reset(inner);
    std::vector<char> buf(1 << 20);
    size_t n;
    while ((n = std::fread(buf.data(), 1, buf.size(), f)) > 0) XXH3_128bits_update(inner, buf.data(), n);
    bool failed = std::ferror(f);
    std::fclose(f);
    XXH128_hash_t h = XXH3_128bits_digest(inner);
    XXH3_freeState(inner);
    if (failed) throw Error("cannot read dataset file " + path);
    bytes(&h, sizeof h);
  }
  std::string digest() const {
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, XXH3_128bits_digest(state_));
    return hex(c.digest, sizeof c.digest);
  }

 private:
  XXH3_state_t* state_ = XXH3_createState();
};

void hash_tokenizer(KeyHasher& k, const text::Tokenizer& tok, const std::string& dir) {
  k.i64(tok.vocab_size());
  k.i64(tok.bos_id.value_or(-1));
  k.i64(tok.eos_id.value_or(-1));
  k.i64(tok.pad_id.value_or(-1));
  k.i64(tok.add_bos_for_training);
  for (int32_t i = 0; i < tok.vocab_size(); ++i) {
    try {
      k.str(tok.id_to_token(i));
    } catch (const std::exception&) {
      k.str("\x01<none>");
    }
  }
  // Normalizers, pre-tokenizers and merges are not visible through the interface; encodings of
  // mixed text catch most changes to them when the files themselves are not named.
  for (const char* probe : {"Hello, world! It's 2024-06-01 (v3.1).", "  indented\n\ttabs\r\n",
                            "你好，世界。これはテストです。", "naïve café Ωμέγα 🙂"}) {
    for (bool special : {false, true}) {
      auto ids = tok.encode(probe, special);
      k.bytes(ids.data(), ids.size() * sizeof(int32_t));
    }
  }
  if (!dir.empty()) {
    for (const char* name :
         {"tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"}) {
      fs::path p = fs::path(dir) / name;
      std::error_code ec;
      if (!fs::is_regular_file(p, ec)) continue;
      k.str(name);
      k.file(p.string());
    }
  }
}

std::string cache_key(const std::vector<std::string>& files, const text::Tokenizer& tok,
                      const text::ChatTemplate& tmpl, const DatasetOptions& o) {
  KeyHasher k;
  k.str("dsft token cache");
  k.i64(kCacheFormat);
  k.i64(static_cast<int64_t>(files.size()));
  for (const auto& f : files) k.file(f);
  hash_tokenizer(k, tok, o.tokenizer_dir);
  k.str(tmpl.name());
  k.str(tmpl.source());
  const auto& st = tmpl.special_tokens();
  for (const auto& t : {st.bos_token, st.eos_token, st.pad_token, st.unk_token}) k.str(t ? "1" + *t : "0");
  for (const auto& t : st.additional_special_tokens) k.str(t);
  k.i64(o.max_seq_length);
  k.i64(o.train_on_inputs);
  k.i64(o.add_bos);
  k.i64(o.add_eos_to_text);
  return k.digest();
}

// ---- cache file: magic, format, key, records, dropped ids, then an XXH3-64 checksum of
// everything before it. Native little-endian integers (every platform dsft builds for).

struct CorruptCache : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Streams the cache file out in blocks, checksumming as it goes (a cache can be hundreds of MB).
class Writer {
 public:
  explicit Writer(std::FILE* f) : f_(f) { XXH3_64bits_reset(sum_); }
  ~Writer() { XXH3_freeState(sum_); }
  Writer(const Writer&) = delete;
  Writer& operator=(const Writer&) = delete;
  void raw(const void* p, size_t n) {
    buf_.append(static_cast<const char*>(p), n);
    if (buf_.size() >= (1u << 20)) flush();
  }
  template <typename T>
  void pod(T v) {
    raw(&v, sizeof v);
  }
  void str(const std::string& s) {
    pod<uint64_t>(s.size());
    raw(s.data(), s.size());
  }
  template <typename T>
  void array(const std::vector<T>& v) {
    raw(v.data(), v.size() * sizeof(T));
  }
  // Writes the checksum of everything so far after it.
  void finish() {
    flush();
    const uint64_t sum = XXH3_64bits_digest(sum_);
    if (std::fwrite(&sum, sizeof sum, 1, f_) != 1)
      throw Error(std::string("write failed: ") + std::strerror(errno));
  }

 private:
  void flush() {
    XXH3_64bits_update(sum_, buf_.data(), buf_.size());
    if (!buf_.empty() && std::fwrite(buf_.data(), 1, buf_.size(), f_) != buf_.size())
      throw Error(std::string("write failed: ") + std::strerror(errno));
    buf_.clear();
  }
  std::FILE* f_;
  std::string buf_;
  XXH3_state_t* sum_ = XXH3_createState();
};

class Reader {
 public:
  explicit Reader(std::string_view data) : data_(data) {}
  template <typename T>
  T pod() {
    need(sizeof(T));
    T v;
    std::memcpy(&v, data_.data() + pos_, sizeof v);
    pos_ += sizeof v;
    return v;
  }
  std::string str() {
    uint64_t n = pod<uint64_t>();
    need(n);
    std::string s(data_.substr(pos_, n));
    pos_ += n;
    return s;
  }
  template <typename T>
  void array(std::vector<T>& v, uint64_t n) {
    if (n > (data_.size() - pos_) / sizeof(T)) throw CorruptCache("truncated");
    v.resize(n);
    std::memcpy(v.data(), data_.data() + pos_, n * sizeof(T));
    pos_ += n * sizeof(T);
  }
  bool at_end() const { return pos_ == data_.size(); }

 private:
  void need(uint64_t n) const {
    if (n > data_.size() - pos_) throw CorruptCache("truncated");
  }
  std::string_view data_;
  size_t pos_ = 0;
};

void serialize(TokenizedDataset& d, const std::string& key, std::FILE* f) {
  Writer w(f);
  w.raw(kCacheMagic, sizeof kCacheMagic);
  w.pod<uint32_t>(kCacheFormat);
  w.str(key);
  w.pod<int64_t>(DatasetInternals::max_len(d));
  const auto& recs = DatasetInternals::records(d);
  w.pod<uint64_t>(recs.size());
  for (size_t i = 0; i < recs.size(); ++i) {
    w.str(recs[i].record_ids.at(0));
    w.pod<uint8_t>(DatasetInternals::truncated(d)[i]);
    w.pod<int64_t>(DatasetInternals::cut(d)[i]);
    w.pod<uint64_t>(recs[i].ids.size());
    w.array(recs[i].ids);
    w.array(recs[i].labels_mask);
  }
  const auto& dropped = DatasetInternals::dropped(d);
  w.pod<uint64_t>(dropped.size());
  for (const auto& id : dropped) w.str(id);
  w.finish();
}

// Reads a cache file back, checking everything a damaged or foreign file could get wrong.
TokenizedDataset deserialize(const std::string& bytes, const std::string& key, int64_t max_len,
                             int32_t vocab) {
  if (bytes.size() < sizeof kCacheMagic + 4 + 8) throw CorruptCache("too short");
  uint64_t stored;
  std::memcpy(&stored, bytes.data() + bytes.size() - 8, 8);
  if (XXH3_64bits(bytes.data(), bytes.size() - 8) != stored) throw CorruptCache("checksum mismatch");
  if (std::memcmp(bytes.data(), kCacheMagic, sizeof kCacheMagic) != 0)
    throw CorruptCache("not a token cache");
  Reader r(std::string_view(bytes).substr(sizeof kCacheMagic, bytes.size() - sizeof kCacheMagic - 8));
  if (r.pod<uint32_t>() != kCacheFormat) throw CorruptCache("another format version");
  if (r.str() != key) throw CorruptCache("key mismatch");
  TokenizedDataset d;
  DatasetInternals::max_len(d) = r.pod<int64_t>();
  if (DatasetInternals::max_len(d) != max_len) throw CorruptCache("max_seq_length mismatch");
  uint64_t n = r.pod<uint64_t>();
  auto& recs = DatasetInternals::records(d);
  recs.reserve(std::min<uint64_t>(n, bytes.size()));
  for (uint64_t i = 0; i < n; ++i) {
    Sample s;
    s.record_ids.push_back(r.str());
    uint8_t truncated = r.pod<uint8_t>();
    int64_t cut = r.pod<int64_t>();
    uint64_t len = r.pod<uint64_t>();
    if (len == 0 || len > static_cast<uint64_t>(max_len) || truncated > 1 || cut < 0 ||
        (cut > 0) != (truncated == 1))
      throw CorruptCache("bad record header");
    r.array(s.ids, len);
    r.array(s.labels_mask, len);
    bool any_target = false;
    for (int32_t id : s.ids)
      if (id < 0 || id >= vocab) throw CorruptCache("token id out of range");
    for (uint8_t m : s.labels_mask) {
      if (m > 1) throw CorruptCache("bad mask value");
      any_target |= m == 1;
    }
    if (s.labels_mask[0] != 0 || !any_target) throw CorruptCache("bad mask");
    s.segment_ids.assign(len, 0);
    recs.push_back(std::move(s));
    DatasetInternals::truncated(d).push_back(truncated);
    DatasetInternals::cut(d).push_back(cut);
  }
  uint64_t n_dropped = r.pod<uint64_t>();
  for (uint64_t i = 0; i < n_dropped; ++i) DatasetInternals::dropped(d).push_back(r.str());
  if (!r.at_end()) throw CorruptCache("trailing bytes");
  return d;
}

std::string join_files(const std::vector<std::string>& files) {
  std::string s;
  for (size_t i = 0; i < files.size() && i < 3; ++i) s += (i ? ", " : "") + files[i];
  if (files.size() > 3) s += " and " + std::to_string(files.size() - 3) + " more";
  return s;
}

}  // namespace

void TokenizedDataset::recompute_stats() {
  DatasetStats s;
  s.from_cache = stats_.from_cache;
  s.cache_file = stats_.cache_file;
  s.records = static_cast<int64_t>(records_.size());
  for (const auto& x : samples()) {
    s.tokens += static_cast<int64_t>(x.ids.size());
    for (uint8_t m : x.labels_mask) s.target_tokens += m;
  }
  s.samples = static_cast<int64_t>(samples().size());
  for (size_t i = 0; i < records_.size(); ++i) {
    s.truncated += record_truncated_[i];
    s.truncated_tokens += record_cut_tokens_[i];
  }
  s.dropped_empty = static_cast<int64_t>(dropped_ids_.size());
  stats_ = s;
}

TokenizedDataset TokenizedDataset::build(const std::vector<std::string>& jsonl_files,
                                         const text::Tokenizer& tokenizer,
                                         const text::ChatTemplate& chat_template,
                                         const DatasetOptions& options) {
  if (jsonl_files.empty())
    throw Error("no training data given (hint: set dataset or train_file in the config)");
  if (options.max_seq_length < 2)
    throw Error("max_seq_length must be at least 2 (got " + std::to_string(options.max_seq_length) + ")");
  for (const auto& f : jsonl_files) {
    std::error_code ec;
    if (!fs::exists(f, ec)) throw Error("dataset file " + f + " does not exist");
    if (!fs::is_regular_file(f, ec)) throw Error("dataset path " + f + " is not a file");
  }

  std::string key, cache_file;
  if (!options.cache_dir.empty()) {
    key = cache_key(jsonl_files, tokenizer, chat_template, options);
    cache_file = (fs::path(options.cache_dir) / ("tokens-" + key + ".bin")).string();
    std::error_code ec;
    if (fs::is_regular_file(cache_file, ec)) {
      try {
        TokenizedDataset d =
            deserialize(util::read_file(cache_file), key, options.max_seq_length, tokenizer.vocab_size());
        if (DatasetInternals::records(d).empty()) throw CorruptCache("no records");
        d.stats_.from_cache = true;
        d.stats_.cache_file = cache_file;
        d.recompute_stats();
        util::log_debug("token cache hit: " + cache_file);
        if (options.packing) d.pack_samples(options.max_seq_length);
        return d;
      } catch (const CorruptCache& e) {
        util::log_warn("ignoring damaged token cache " + cache_file + " (" + e.what() +
                       "); tokenising again");
      } catch (const Error& e) {
        util::log_warn("cannot read token cache " + cache_file + " (" + e.what() + "); tokenising again");
      }
    }
  }

  TokenizedDataset d;
  d.max_seq_length_ = options.max_seq_length;
  Context ctx{tokenizer, chat_template, options};
  const int threads = options.num_threads > 0
                          ? options.num_threads
                          : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  int64_t lines_read = 0;
  constexpr size_t kChunk = 4096;
  for (const auto& file : jsonl_files) {
    data::LineReader reader(file);
    std::vector<std::string> lines;
    std::vector<size_t> line_nos;
    auto flush = [&] {
      std::vector<Processed> out(lines.size());
      parallel_for(lines.size(), threads,
                   [&](size_t i) { out[i] = process_line(ctx, lines[i], file, line_nos[i]); });
      for (auto& p : out) {
        if (!p.error.empty()) throw Error(p.error);
        if (p.dropped) {
          d.dropped_ids_.push_back(p.sample.record_ids.at(0));
          continue;
        }
        d.records_.push_back(std::move(p.sample));
        d.record_truncated_.push_back(p.truncated);
        d.record_cut_tokens_.push_back(p.cut);
      }
      lines.clear();
      line_nos.clear();
    };
    std::string_view line;
    while (reader.next(line)) {
      if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;  // blank line
      lines.emplace_back(line);
      line_nos.push_back(reader.line_number());
      ++lines_read;
      if (lines.size() == kChunk) flush();
    }
    flush();
  }

  if (lines_read == 0) throw Error("dataset file(s) " + join_files(jsonl_files) + " hold no records");
  if (d.records_.empty())
    throw Error("no training records left in " + join_files(jsonl_files) + ": all " +
                std::to_string(lines_read) +
                " have no target token within max_seq_length=" + std::to_string(options.max_seq_length) +
                " (hint: raise max_seq_length, or check that the chat template marks assistant turns)");

  if (!cache_file.empty()) {
    try {
      util::make_private_dir(options.cache_dir);
      util::write_file_atomic(cache_file, [&](std::FILE* f) { serialize(d, key, f); });
      d.stats_.cache_file = cache_file;
    } catch (const Error& e) {
      util::log_warn(std::string("cannot write the token cache (") + e.what() + "); continuing without it");
    }
  }
  d.recompute_stats();
  if (options.packing) d.pack_samples(options.max_seq_length);
  return d;
}

std::pair<TokenizedDataset, TokenizedDataset> TokenizedDataset::split(double fraction, uint64_t seed) const {
  if (!(fraction >= 0.0 && fraction < 1.0))
    throw Error("validation fraction must be in [0, 1) (got " + std::to_string(fraction) + ")");
  auto goes_to_validation = [&](const std::string& id, uint64_t* h_out = nullptr) {
    uint64_t h = XXH3_64bits_withSeed(id.data(), id.size(), seed);
    if (h_out) *h_out = h;
    // The top 53 bits as a uniform double in [0, 1).
    return static_cast<double>(h >> 11) * 0x1.0p-53 < fraction;
  };
  const size_t n = records_.size();
  std::vector<uint8_t> to_val(n);
  std::vector<uint64_t> hashes(n);
  size_t n_val = 0;
  for (size_t i = 0; i < n; ++i) {
    to_val[i] = goes_to_validation(records_[i].record_ids.at(0), &hashes[i]);
    n_val += to_val[i];
  }
  if (fraction > 0.0) {
    if (n < 2)
      throw Error("cannot hold out a validation set from " + std::to_string(n) +
                  " record (hint: give a validation_file or more data)");
    // Both parts must be usable: move the record with the smallest (largest) hash, a choice that
    // still depends only on the ids.
    auto extreme = [&](bool want_val) {
      size_t best = n;
      for (size_t i = 0; i < n; ++i)
        if (to_val[i] != want_val &&
            (best == n || (want_val ? hashes[i] < hashes[best] : hashes[i] > hashes[best])))
          best = i;
      return best;
    };
    if (n_val == 0) to_val[extreme(true)] = 1;
    if (n_val == n) to_val[extreme(false)] = 0;
  }
  TokenizedDataset parts[2];
  for (auto& p : parts) {
    p.max_seq_length_ = max_seq_length_;
    p.stats_.from_cache = stats_.from_cache;
    p.stats_.cache_file = stats_.cache_file;
  }
  for (size_t i = 0; i < n; ++i) {
    TokenizedDataset& p = parts[to_val[i]];
    p.records_.push_back(records_[i]);
    p.record_truncated_.push_back(record_truncated_[i]);
    p.record_cut_tokens_.push_back(record_cut_tokens_[i]);
  }
  for (const auto& id : dropped_ids_) parts[goes_to_validation(id)].dropped_ids_.push_back(id);
  for (auto& p : parts) {
    p.recompute_stats();
    if (packed_) p.pack_samples(max_seq_length_);
  }
  return {std::move(parts[0]), std::move(parts[1])};
}

TokenizedDataset TokenizedDataset::pack(int64_t max_seq_length) const {
  TokenizedDataset out;
  out.records_ = records_;
  out.record_truncated_ = record_truncated_;
  out.record_cut_tokens_ = record_cut_tokens_;
  out.dropped_ids_ = dropped_ids_;
  out.max_seq_length_ = max_seq_length_;
  out.stats_ = stats_;
  out.pack_samples(max_seq_length);
  return out;
}

void TokenizedDataset::pack_samples(int64_t max_seq_length) {
  packed_samples_.clear();
  const size_t n = records_.size();
  std::vector<size_t> order(n);
  for (size_t i = 0; i < n; ++i) {
    order[i] = i;
    if (static_cast<int64_t>(records_[i].ids.size()) > max_seq_length)
      throw Error("cannot pack record " + records_[i].record_ids.at(0) + " of " +
                  std::to_string(records_[i].ids.size()) + " tokens into samples of " +
                  std::to_string(max_seq_length) +
                  " (hint: build with max_seq_length <= " + std::to_string(max_seq_length) + ")");
  }
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return records_[a].ids.size() > records_[b].ids.size(); });
  // Best fit: the open sample with the least room that still holds the record; (room, sample) pairs
  // make ties go to the earliest sample, independent of the standard library.
  std::set<std::pair<int64_t, size_t>> open;
  std::vector<std::vector<size_t>> bins;
  for (size_t i : order) {
    const auto len = static_cast<int64_t>(records_[i].ids.size());
    auto it = open.lower_bound({len, 0});
    if (it == open.end()) {
      bins.push_back({i});
      if (max_seq_length - len > 0) open.insert({max_seq_length - len, bins.size() - 1});
      continue;
    }
    auto [room, bin] = *it;
    open.erase(it);
    bins[bin].push_back(i);
    if (room - len > 0) open.insert({room - len, bin});
  }
  packed_samples_.reserve(bins.size());
  for (const auto& bin : bins) {
    Sample s;
    for (size_t k = 0; k < bin.size(); ++k) {
      const Sample& r = records_[bin[k]];
      s.ids.insert(s.ids.end(), r.ids.begin(), r.ids.end());
      s.labels_mask.insert(s.labels_mask.end(), r.labels_mask.begin(), r.labels_mask.end());
      s.labels_mask[s.labels_mask.size() - r.ids.size()] = 0;  // no target across a record start
      s.segment_ids.insert(s.segment_ids.end(), r.ids.size(), static_cast<int32_t>(k));
      s.record_ids.push_back(r.record_ids.at(0));
    }
    packed_samples_.push_back(std::move(s));
  }
  packed_ = true;
  recompute_stats();
}

}  // namespace dsft::train
