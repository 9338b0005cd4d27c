// SentencePiece behind the Tokenizer interface (libsentencepiece), and deterministic training of a
// small BPE/unigram model from a JSON Lines dataset with the special tokens of a chat template.
#include "dsft/text/sentencepiece.h"

#include <dlfcn.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <filesystem>
#include <fstream>
#include <unordered_map>
#include <utility>

#include <nlohmann/json.hpp>

#include "dsft/text/chat_template.h"
#include "dsft/util/error.h"
#include "dsft/util/fs.h"
#include "dsft/util/log.h"
#include "spm_shim/spm_api.h"

namespace dsft::text {

namespace {

bool valid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    size_t len;
    char32_t cp;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      len = 2;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + len > s.size()) return false;
    for (size_t k = 1; k < len; ++k) {
      unsigned char cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    // Overlong forms, surrogates and values past U+10FFFF are not UTF-8.
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF))
      return false;
    i += len;
  }
  return true;
}

// Piece types of a serialized ModelProto (field 1: repeated SentencePiece {1: piece, 2: score,
// 3: type}). libsentencepiece 0.1.97 answers IsControl/IsUnknown/IsByte but not "user defined",
// and does not install the generated proto header, so the types are read from the wire format.
enum PieceType : int { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };

std::vector<int> piece_types(const std::string& proto, const std::string& path) {
  auto fail = [&] { throw Error(path + " is not a SentencePiece model (malformed protobuf)"); };
  auto varint = [&](size_t& i, size_t end) {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (i >= end) fail();
      unsigned char b = static_cast<unsigned char>(proto[i++]);
      v |= static_cast<uint64_t>(b & 0x7F) << shift;
      if (!(b & 0x80)) return v;
    }
    fail();
    return v;
  };
  auto skip = [&](size_t& i, size_t end, int wire) {
    if (wire == 0) varint(i, end);
    else if (wire == 1) i += 8;
    else if (wire == 5) i += 4;
    else if (wire == 2) i += varint(i, end);
    else fail();
    if (i > end) fail();
  };
  std::vector<int> types;
  size_t i = 0;
  while (i < proto.size()) {
    uint64_t key = varint(i, proto.size());
    int field = static_cast<int>(key >> 3), wire = static_cast<int>(key & 7);
    if (field == 1 && wire == 2) {
      size_t len = varint(i, proto.size());
      size_t end = i + len;
      if (end > proto.size()) fail();
      int type = kNormal;  // the proto default
      while (i < end) {
        uint64_t k = varint(i, end);
        if ((k >> 3) == 3 && (k & 7) == 0) type = static_cast<int>(varint(i, end));
        else skip(i, end, static_cast<int>(k & 7));
      }
      types.push_back(type);
    } else {
      skip(i, proto.size(), wire);
    }
  }
  return types;
}

// ---------------------------------------------------------------------------------------------
// libsentencepiece lives in the plugin libdsft_spm.so (src/spm_shim/spm_api.h says why).

namespace {

std::string plugin_candidates_text(const std::vector<std::string>& c) {
  std::string out;
  for (const auto& p : c) out += (out.empty() ? "" : ", ") + p;
  return out;
}

const dsft_spm_api& spm() {
  static const dsft_spm_api* api = [] {
    std::vector<std::string> candidates;
    if (const char* env = std::getenv("DSFT_SPM_LIBRARY"); env && *env) candidates.push_back(env);
    char exe[4096];
    ssize_t n = ::readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
      exe[n] = '\0';
      std::filesystem::path dir = std::filesystem::path(exe).parent_path();
      candidates.push_back((dir / "libdsft_spm.so").string());
      candidates.push_back((dir / "../lib/dsft/libdsft_spm.so").string());
    }
#ifdef DSFT_SPM_PLUGIN_PATH
    candidates.push_back(DSFT_SPM_PLUGIN_PATH);
#endif
    int flags = RTLD_NOW | RTLD_LOCAL;
#if !defined(__SANITIZE_ADDRESS__)
    flags |= RTLD_DEEPBIND;  // SentencePiece must bind to its own protobuf, not libtorch's
#endif
    std::string last_error;
    for (const auto& path : candidates) {
      std::error_code ec;
      if (!std::filesystem::exists(path, ec)) continue;
      void* handle = ::dlopen(path.c_str(), flags);
      if (!handle) {
        last_error = ::dlerror();
        continue;
      }
      auto get = reinterpret_cast<const dsft_spm_api* (*)()>(::dlsym(handle, "dsft_spm_get_api"));
      if (get && get()->version == DSFT_SPM_API_VERSION) return get();
      last_error = path + " is not a compatible SentencePiece plugin";
    }
    throw Error("SentencePiece support is not available: libdsft_spm.so was not found (looked at " +
                plugin_candidates_text(candidates) + ")" + (last_error.empty() ? "" : ": " + last_error) +
                "; set DSFT_SPM_LIBRARY to its path");
  }();
  return *api;
}

// One loaded SentencePiece model.
class SpmModel {
 public:
  SpmModel() = default;
  SpmModel(const SpmModel&) = delete;
  SpmModel& operator=(const SpmModel&) = delete;
  ~SpmModel() {
    if (model_) spm().free_model(model_);
  }
  // Returns "" on success, else the reason.
  std::string load(const std::string& proto) {
    char err[512] = {0};
    model_ = spm().load(proto.data(), proto.size(), err, sizeof err);
    return model_ ? "" : (err[0] ? err : "unknown error");
  }
  int GetPieceSize() const { return spm().piece_size(model_); }
  std::string IdToPiece(int id) const {
    size_t len = 0;
    const char* p = spm().id_to_piece(model_, id, &len);
    return std::string(p, len);
  }
  int PieceToId(std::string_view piece) const { return spm().piece_to_id(model_, piece.data(), piece.size()); }
  int bos_id() const { return spm().bos_id(model_); }
  int eos_id() const { return spm().eos_id(model_); }
  int pad_id() const { return spm().pad_id(model_); }
  std::vector<int> encode(std::string_view text) const {
    char err[512] = {0};
    int* ids = nullptr;
    size_t n = 0;
    if (spm().encode(model_, text.data(), text.size(), &ids, &n, err, sizeof err) != 0)
      throw Error(std::string("SentencePiece could not encode the text (") + err + ")");
    std::vector<int> out(ids, ids + n);
    spm().free_buf(ids);
    return out;
  }
  std::string decode(const std::vector<int>& ids) const {
    char err[512] = {0};
    char* out = nullptr;
    size_t len = 0;
    if (spm().decode(model_, ids.data(), ids.size(), &out, &len, err, sizeof err) != 0)
      throw Error(std::string("SentencePiece could not decode the ids (") + err + ")");
    std::string s(out, len);
    spm().free_buf(out);
    return s;
  }

 private:
  void* model_ = nullptr;
};

}  // namespace

class SentencePieceTokenizer final : public Tokenizer {
 public:
  explicit SentencePieceTokenizer(const std::string& path) : path_(path) {
    std::error_code ec;
    if (!std::filesystem::is_regular_file(path, ec))
      throw Error("SentencePiece model " + path + " does not exist");
    std::string proto = util::read_file(path);
    if (std::string why = sp_.load(proto); !why.empty())
      throw Error(path + " is not a SentencePiece model (" + why + ")");
    const int n = sp_.GetPieceSize();
    std::vector<int> types = piece_types(proto, path);
    if (static_cast<int>(types.size()) != n) throw Error(path + ": piece table does not match the model");
    special_.assign(static_cast<size_t>(n), 0);
    for (int id = 0; id < n; ++id) {
      int t = types[static_cast<size_t>(id)];
      if (t != kControl && t != kUnknown && t != kUserDefined) continue;
      special_[static_cast<size_t>(id)] = 1;
      const std::string piece = sp_.IdToPiece(id);
      if (piece.empty()) continue;
      literals_.emplace_back(piece, id);
      first_byte_[static_cast<unsigned char>(piece[0])] = true;
    }
    // Longest first, so "<|im_start|>" wins over a shorter piece it begins with.
    std::stable_sort(literals_.begin(), literals_.end(),
                     [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
    if (sp_.bos_id() >= 0) bos_id = sp_.bos_id();
    if (sp_.eos_id() >= 0) eos_id = sp_.eos_id();
    if (sp_.pad_id() >= 0) pad_id = sp_.pad_id();
  }

  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens) const override {
    if (!valid_utf8(text)) throw Error("cannot tokenize: the text is not valid UTF-8");
    std::vector<int32_t> out;
    if (add_special_tokens && bos_id) out.push_back(*bos_id);
    size_t seg = 0, i = 0;
    auto flush = [&](size_t end) {
      if (end <= seg) return;
      std::vector<int> ids = sp_.encode(text.substr(seg, end - seg));
      out.insert(out.end(), ids.begin(), ids.end());
    };
    while (i < text.size()) {
      if (first_byte_[static_cast<unsigned char>(text[i])]) {
        const std::pair<std::string, int>* hit = nullptr;
        for (const auto& lit : literals_)
          if (text.compare(i, lit.first.size(), lit.first) == 0) {
            hit = &lit;
            break;
          }
        if (hit) {
          flush(i);
          out.push_back(hit->second);
          i += hit->first.size();
          seg = i;
          continue;
        }
      }
      ++i;
    }
    flush(text.size());
    return out;
  }

  std::string decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const override {
    std::string out;
    std::vector<int> run;
    auto flush = [&] {
      if (run.empty()) return;
      out += sp_.decode(run);
      run.clear();
    };
    for (int32_t id : ids) {
      if (id < 0 || id >= vocab_size())
        throw Error("cannot decode token id " + std::to_string(id) + ": the vocabulary of " + path_ + " has " +
                    std::to_string(vocab_size()) + " tokens");
      if (special_[static_cast<size_t>(id)]) {
        flush();
        if (!skip_special_tokens) out += sp_.IdToPiece(id);
      } else {
        run.push_back(id);
      }
    }
    flush();
    return out;
  }

  int32_t vocab_size() const override { return sp_.GetPieceSize(); }

  std::optional<int32_t> token_to_id(std::string_view token) const override {
    int id = sp_.PieceToId(token);
    // PieceToId answers unk_id for an unknown piece; only a real match counts.
    if (id < 0 || id >= sp_.GetPieceSize() || sp_.IdToPiece(id) != token) return std::nullopt;
    return id;
  }

  std::string id_to_token(int32_t id) const override {
    if (id < 0 || id >= vocab_size())
      throw Error("token id " + std::to_string(id) + " is outside the vocabulary of " + path_ + " (" +
                  std::to_string(vocab_size()) + " tokens)");
    return sp_.IdToPiece(id);
  }

  bool is_special(int32_t id) const override {
    return id >= 0 && id < vocab_size() && special_[static_cast<size_t>(id)] != 0;
  }

 private:
  std::string path_;
  SpmModel sp_;
  std::vector<uint8_t> special_;
  std::vector<std::pair<std::string, int>> literals_;
  std::array<bool, 256> first_byte_{};
};

// ---------------------------------------------------------------------------------------------
// Training

// Longest sentence handed to the trainer; longer lines are cut at UTF-8 boundaries.
constexpr size_t kMaxSentenceBytes = 8192;

struct Corpus {
  std::vector<std::string> sentences;
  size_t records = 0, used = 0, skipped = 0;
};

void add_text(Corpus& c, const std::string& text, int64_t limit) {
  size_t b = 0;
  while (b <= text.size()) {
    size_t e = text.find('\n', b);
    if (e == std::string::npos) e = text.size();
    std::string_view line(text.data() + b, e - b);
    while (!line.empty()) {
      if (limit > 0 && static_cast<int64_t>(c.sentences.size()) >= limit) return;
      size_t n = std::min(line.size(), kMaxSentenceBytes);
      while (n < line.size() && (static_cast<unsigned char>(line[n]) & 0xC0) == 0x80) --n;
      bool blank = std::all_of(line.begin(), line.begin() + static_cast<long>(n),
                               [](char ch) { return ch == ' ' || ch == '\t' || ch == '\r'; });
      if (!blank) c.sentences.emplace_back(line.substr(0, n));
      line.remove_prefix(n);
    }
    b = e + 1;
  }
}

Corpus read_corpus(const SentencePieceTrainOptions& o) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(o.input_jsonl, ec))
    throw Error("training corpus " + o.input_jsonl + " does not exist");
  std::ifstream f(o.input_jsonl, std::ios::binary);
  if (!f) throw Error("cannot open training corpus " + o.input_jsonl);
  Corpus c;
  std::string line;
  size_t line_no = 0;
  auto str = [](const nlohmann::json& r, const char* k) -> const std::string* {
    auto it = r.find(k);
    return it != r.end() && it->is_string() ? &it->get_ref<const std::string&>() : nullptr;
  };
  while (std::getline(f, line)) {
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    if (o.max_sentences > 0 && static_cast<int64_t>(c.sentences.size()) >= o.max_sentences) break;
    nlohmann::json r;
    try {
      r = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      throw Error(o.input_jsonl + " line " + std::to_string(line_no) + " is not valid JSON (" + e.what() + ")");
    }
    ++c.records;
    size_t before = c.sentences.size();
    if (r.is_object()) {
      if (auto* t = str(r, "text")) add_text(c, *t, o.max_sentences);
      for (const char* k : {"instruction", "input", "output"})
        if (auto* t = str(r, k)) add_text(c, *t, o.max_sentences);
      auto m = r.find("messages");
      if (m != r.end() && m->is_array())
        for (const auto& msg : *m)
          if (msg.is_object())
            if (auto* t = str(msg, "content")) add_text(c, *t, o.max_sentences);
    }
    if (c.sentences.size() > before) ++c.used;
    else ++c.skipped;
  }
  return c;
}

// Role markers of a chat template family that must be single tokens.
std::vector<std::string> template_markers(const std::string& family) {
  if (family == "chatml" || family == "qwen2") return {"<|im_start|>"};
  if (family == "deepseek-v3" || family == "deepseek-r1") return {"<｜User｜>", "<｜Assistant｜>"};
  if (family == "llama3") return {"<|start_header_id|>", "<|end_header_id|>", "<|end_of_text|>"};
  return {};
}

}  // namespace

std::unique_ptr<Tokenizer> load_sentencepiece_tokenizer(const std::string& model_path) {
  return std::make_unique<SentencePieceTokenizer>(model_path);
}

void train_sentencepiece(const SentencePieceTrainOptions& o) {
  if (o.model_type != "bpe" && o.model_type != "unigram")
    throw Error("SentencePiece model_type must be \"bpe\" or \"unigram\" (got \"" + o.model_type + "\")");
  if (o.vocab_size < 300 || o.vocab_size > 1'000'000)
    throw Error("SentencePiece vocab_size must be between 300 and 1000000 (got " + std::to_string(o.vocab_size) +
                "); it includes 256 byte-fallback pieces");
  if (o.output_dir.empty()) throw Error("SentencePiece training needs an output directory");
  ChatTemplate tmpl = ChatTemplate::named(o.chat_template);  // throws for an unknown family
  const ChatSpecialTokens& st = tmpl.special_tokens();
  const std::string bos = st.bos_token.value_or("<s>");
  const std::string eos = st.eos_token.value_or("</s>");
  const std::string unk = "<unk>", pad = "<pad>";

  std::vector<std::string> symbols;
  for (const auto& s : template_markers(tmpl.name())) symbols.push_back(s);
  for (const auto& s : o.user_defined_symbols) symbols.push_back(s);
  std::vector<std::string> unique;
  for (const auto& s : symbols) {
    if (s.empty()) throw Error("a user-defined symbol for SentencePiece is empty");
    if (s.find(',') != std::string::npos)
      throw Error("user-defined symbol \"" + s + "\" contains a comma, which SentencePiece's option list cannot hold");
    if (!valid_utf8(s)) throw Error("user-defined symbol is not valid UTF-8");
    if (s == bos || s == eos || s == unk || s == pad) continue;
    if (std::find(unique.begin(), unique.end(), s) == unique.end()) unique.push_back(s);
  }

  Corpus corpus = read_corpus(o);
  if (corpus.sentences.empty())
    throw Error("training corpus " + o.input_jsonl + " has no text (" + std::to_string(corpus.records) +
                " records; expected \"text\", \"instruction\"/\"input\"/\"output\" or \"messages\" with \"content\")");
  util::log_info("training a " + o.model_type + " SentencePiece model (" + std::to_string(o.vocab_size) +
                 " pieces) on " + std::to_string(corpus.sentences.size()) + " lines from " +
                 std::to_string(corpus.used) + " of " + std::to_string(corpus.records) + " records");

  std::string joined;
  for (const auto& s : unique) joined += (joined.empty() ? "" : ",") + s;
  // Identity normalisation, no whitespace folding and no dummy prefix: decode(encode(x)) == x and
  // text split at special tokens encodes to the same ids as the whole.
  std::unordered_map<std::string, std::string> args = {
      {"model_type", o.model_type},
      {"vocab_size", std::to_string(o.vocab_size)},
      {"character_coverage", std::to_string(o.character_coverage)},
      {"byte_fallback", "true"},
      {"split_digits", "true"},
      {"allow_whitespace_only_pieces", "true"},
      {"normalization_rule_name", "identity"},
      {"remove_extra_whitespaces", "false"},
      {"add_dummy_prefix", "false"},
      {"max_sentence_length", std::to_string(kMaxSentenceBytes)},
      {"input_sentence_size", "0"},
      {"shuffle_input_sentence", "false"},
      {"num_threads", "1"},
      {"unk_id", "0"},
      {"bos_id", "1"},
      {"eos_id", "2"},
      {"pad_id", "3"},
      {"unk_piece", unk},
      {"bos_piece", bos},
      {"eos_piece", eos},
      {"pad_piece", pad},
      {"minloglevel", "2"},
  };
  if (!joined.empty()) args["user_defined_symbols"] = joined;

  std::vector<const char*> keys, values, sentences;
  std::vector<size_t> lengths;
  for (const auto& [k, v] : args) {
    keys.push_back(k.c_str());
    values.push_back(v.c_str());
  }
  for (const auto& s : corpus.sentences) {
    sentences.push_back(s.data());
    lengths.push_back(s.size());
  }
  char err[1024] = {0};
  char* model_buf = nullptr;
  size_t model_len = 0;
  if (spm().train(keys.data(), values.data(), keys.size(), sentences.data(), lengths.data(), sentences.size(),
                  static_cast<unsigned>(o.seed), &model_buf, &model_len, err, sizeof err) != 0) {
    std::string why = err;
    throw Error("SentencePiece training on " + o.input_jsonl + " failed: " + why +
                (why.find("Vocabulary size") != std::string::npos ? " (hint: lower vocab_size or give more text)"
                                                                  : ""));
  }
  std::string model(model_buf, model_len);
  spm().free_buf(model_buf);

  util::make_private_dir(o.output_dir);
  util::write_file_atomic(o.output_dir + "/tokenizer.model", model);

  nlohmann::ordered_json cfg;
  cfg["tokenizer_class"] = "LlamaTokenizer";
  cfg["bos_token"] = bos;
  cfg["eos_token"] = eos;
  cfg["unk_token"] = unk;
  cfg["pad_token"] = pad;
  cfg["additional_special_tokens"] = unique;
  // BOS for plain-text records; chat templates write it themselves.
  cfg["add_bos_token"] = true;
  cfg["add_eos_token"] = false;
  cfg["clean_up_tokenization_spaces"] = false;
  cfg["chat_template"] = tmpl.source();
  util::write_file_atomic(o.output_dir + "/tokenizer_config.json", cfg.dump(2) + "\n");
}

}  // namespace dsft::text
