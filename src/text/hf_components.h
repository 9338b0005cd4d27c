// The stages of a Hugging Face tokenizer.json pipeline: normalizers, pre-tokenizers, the BPE
// model, post-processors and decoders. Each is built from its JSON object; a kind this project
// does not implement is a dsft::Error naming the kind and the file.
#pragma once
#include <atomic>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "text/json_util.h"
#include "text/regex.h"
#include "text/string_map.h"

namespace dsft::text::hf {

// ---- normalizers ---------------------------------------------------------------------------
// The `Replace` of normalizers and decoders: every match of a literal or a regex, left to right,
// becomes `content`. Built from the stage's JSON ({"pattern": {"String"|"Regex": ...}, "content"}).
struct ReplaceRule {
  std::string literal;
  std::unique_ptr<Regex> regex;
  std::string content;
  // Rewrites s; false (s untouched) when nothing matched.
  bool apply(std::string& s) const;
  static ReplaceRule from_json(json::element j, const std::string& origin, const char* what);
};

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual void normalize(std::string& s) const = 0;
};
// Null JSON gives nullptr.
std::unique_ptr<Normalizer> make_normalizer(json::element j, const std::string& origin);

// ---- pre-tokenizers ------------------------------------------------------------------------
// Pieces of text under pre-tokenization: views into the input or into `arena`, which owns the
// strings a stage rewrote (a deque never moves its elements).
struct Pieces {
  std::vector<std::string_view> list;
  std::deque<std::string> arena;
  std::vector<std::pair<size_t, size_t>> matches;  // scratch for regex matches
  std::string_view own(std::string s) {
    arena.push_back(std::move(s));
    return arena.back();
  }
};

// GPT-2's byte <-> printable character table of the ByteLevel stages.
struct ByteLevelTable {
  uint32_t byte_to_cp[256];
  std::string byte_to_utf8[256];
  int16_t extra_to_byte[68];          // code points 256..323 -> byte
  int cp_to_byte(uint32_t cp) const;  // -1 when cp is not in the table
  static const ByteLevelTable& get();
};

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Replaces p.list with the pieces this stage makes from it. `at_start`: the first piece
  // begins the whole input (Metaspace's prepend_scheme "first").
  virtual void apply(Pieces& p, bool at_start) const = 0;
};

class SequencePreTokenizer : public PreTokenizer {
 public:
  std::vector<std::unique_ptr<PreTokenizer>> stages;
  void apply(Pieces& p, bool at_start) const override {
    for (const auto& s : stages) s->apply(p, at_start);
  }
};

// ByteLevel: optional prefix space and GPT-2 regex; `map_bytes` false leaves the bytes for the
// BPE model to map itself (the fast path when ByteLevel is the last stage).
class ByteLevelPreTokenizer : public PreTokenizer {
 public:
  bool add_prefix_space = false;
  bool map_bytes = true;
  std::unique_ptr<Regex> regex;  // null when use_regex is false
  void apply(Pieces& p, bool at_start) const override;
};

// Null JSON gives nullptr.
std::unique_ptr<PreTokenizer> make_pre_tokenizer(json::element j, const std::string& origin);

// ---- BPE model -----------------------------------------------------------------------------
class BpeModel {
 public:
  BpeModel(json::element model, const std::string& origin);
  // Appends the ids of one pre-token. `raw_bytes`: the piece is unmapped bytes of a deferred
  // ByteLevel stage (see ByteLevelPreTokenizer::map_bytes).
  void tokenize(std::string_view piece, bool raw_bytes, std::vector<int32_t>& out) const;
  int32_t token_to_id(std::string_view token) const { return vocab_.get(token); }
  const std::string* id_to_token(int32_t id) const {
    if (id < 0 || static_cast<size_t>(id) >= tokens_.size() || !has_token_[static_cast<size_t>(id)])
      return nullptr;
    return &tokens_[static_cast<size_t>(id)];
  }
  int32_t max_id() const { return static_cast<int32_t>(tokens_.size()) - 1; }
  // Prepares the raw-byte fast path; false when this model cannot take raw bytes (a subword
  // prefix or word suffix is set).
  bool enable_raw_bytes();

 private:
  void merge(std::vector<int32_t>& word) const;
  void initial_symbols(std::string_view chars, std::vector<int32_t>& word) const;
  void tokenize_uncached(std::string_view piece, bool raw_bytes, std::vector<int32_t>& word) const;

  StringIdMap vocab_;
  std::vector<std::string> tokens_;
  std::vector<bool> has_token_;
  PairMap merges_;
  bool ignore_merges_ = false;
  bool byte_fallback_ = false;
  bool fuse_unk_ = false;
  int32_t unk_id_ = -1;
  std::string unk_token_;
  std::string prefix_, suffix_;
  // Raw-byte fast path.
  bool raw_ready_ = false;
  int32_t byte_ids_[256];
  StringIdMap raw_vocab_;  // unmapped bytes -> id, for ignore_merges

  // Word cache shared by all threads: pre-token bytes -> ids, in shards with their own locks.
  struct CacheShard {
    std::mutex mu;
    std::vector<uint64_t> hashes;
    std::vector<std::string> keys;
    std::vector<std::vector<int32_t>> values;
    std::vector<int32_t> slots;  // open addressing into keys/values, -1 empty
  };
  static constexpr size_t kCacheShards = 32;
  static constexpr size_t kCacheShardCapacity = 8192;
  static constexpr size_t kCacheMaxKey = 256;  // same bound as the Rust library
  static constexpr size_t kFrontSize = 16384;
  static constexpr size_t kFrontMaxKey = 30;
  static constexpr size_t kFrontMaxIds = 8;
  uint64_t serial_;  // never reused: tells this model's entries in the per-thread front cache
  mutable std::unique_ptr<CacheShard[]> cache_;
};

// ---- post-processors -----------------------------------------------------------------------
class PostProcessor {
 public:
  virtual ~PostProcessor() = default;
  virtual void process(std::vector<int32_t>& ids) const = 0;  // add_special_tokens = true only
};
std::unique_ptr<PostProcessor> make_post_processor(json::element j, const std::string& origin);

// ---- decoders ------------------------------------------------------------------------------
class Decoder {
 public:
  virtual ~Decoder() = default;
  virtual void decode_chain(std::vector<std::string>& tokens) const = 0;
};
std::unique_ptr<Decoder> make_decoder(json::element j, const std::string& origin);

}  // namespace dsft::text::hf
