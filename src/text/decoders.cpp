// tokenizer.json decoders (ByteLevel, Sequence, Replace, Strip, Fuse, ByteFallback, Metaspace)
// and post-processors (ByteLevel, TemplateProcessing, BertProcessing, RobertaProcessing,
// Sequence), following the Rust library's decode_chain and single-sequence processing.
#include <map>

#include "text/hf_components.h"
#include "text/unicode.h"

namespace dsft::text::hf {
namespace {

class SequenceDecoder : public Decoder {
 public:
  std::vector<std::unique_ptr<Decoder>> steps;
  void decode_chain(std::vector<std::string>& t) const override {
    for (const auto& d : steps) d->decode_chain(t);
  }
};

// All tokens to bytes through the GPT-2 table (a token with a character outside the table is
// taken as its UTF-8 text), then one lossy UTF-8 string.
class ByteLevelDecoder : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    const auto& t = ByteLevelTable::get();
    std::string bytes;
    for (const auto& tok : tokens) {
      size_t mark = bytes.size(), i = 0;
      bool ok = true;
      while (i < tok.size()) {
        int b = t.cp_to_byte(unicode::next_cp(tok, i));
        if (b < 0) { ok = false; break; }
        bytes.push_back(static_cast<char>(b));
      }
      if (!ok) {
        bytes.resize(mark);
        bytes += tok;
      }
    }
    tokens.assign(1, unicode::utf8_lossy(bytes));
  }
};

class ReplaceDecoder : public Decoder {
 public:
  ReplaceRule rule;
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (auto& s : tokens) rule.apply(s);
  }
};

class StripDecoder : public Decoder {
 public:
  std::string content;
  size_t start = 0, stop = 0;
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (auto& s : tokens) {
      size_t b = 0, e = s.size();
      for (size_t k = 0; k < start && s.compare(b, content.size(), content) == 0 && b < e; ++k) b += content.size();
      for (size_t k = 0; k < stop && e >= b + content.size() && s.compare(e - content.size(), content.size(), content) == 0; ++k)
        e -= content.size();
      s = s.substr(b, e - b);
    }
  }
};

class FuseDecoder : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string all;
    for (const auto& t : tokens) all += t;
    tokens.assign(1, std::move(all));
  }
};

// Runs of <0xHH> tokens become their bytes as UTF-8, or one U+FFFD per byte when invalid.
class ByteFallbackDecoder : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::vector<std::string> out;
    std::string bytes;
    size_t n_bytes = 0;
    auto flush = [&] {
      if (n_bytes == 0) return;
      if (unicode::find_invalid_utf8(bytes) == std::string_view::npos) {
        out.push_back(bytes);
      } else {
        for (size_t k = 0; k < n_bytes; ++k) out.emplace_back("\xEF\xBF\xBD");
      }
      bytes.clear();
      n_bytes = 0;
    };
    for (auto& t : tokens) {
      if (t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>' && std::isxdigit(static_cast<unsigned char>(t[3])) &&
          std::isxdigit(static_cast<unsigned char>(t[4]))) {
        bytes.push_back(static_cast<char>(std::stoi(t.substr(3, 2), nullptr, 16)));
        ++n_bytes;
        continue;
      }
      flush();
      out.push_back(std::move(t));
    }
    flush();
    tokens.swap(out);
  }
};

class MetaspaceDecoder : public Decoder {
 public:
  std::string replacement = "\xE2\x96\x81";
  bool strip_first = true;
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      std::string out;
      const std::string& s = tokens[i];
      size_t prev = 0, at;
      while ((at = s.find(replacement, prev)) != std::string::npos) {
        out.append(s, prev, at - prev);
        out.push_back(' ');
        prev = at + replacement.size();
      }
      out.append(s, prev, std::string::npos);
      if (i == 0 && strip_first && !out.empty() && out[0] == ' ') out.erase(0, 1);
      tokens[i] = std::move(out);
    }
  }
};

// ---- post-processors ----

class NoOpProcessor : public PostProcessor {
 public:
  void process(std::vector<int32_t>&) const override {}
};

class SequenceProcessor : public PostProcessor {
 public:
  std::vector<std::unique_ptr<PostProcessor>> steps;
  void process(std::vector<int32_t>& ids) const override {
    for (const auto& p : steps) p->process(ids);
  }
};

// The "single" template: special-token pieces and $A.
class TemplateProcessor : public PostProcessor {
 public:
  struct Piece {
    bool is_sequence;
    std::vector<int32_t> ids;
  };
  std::vector<Piece> single;
  void process(std::vector<int32_t>& ids) const override {
    std::vector<int32_t> out;
    out.reserve(ids.size() + 4);
    for (const auto& p : single) {
      if (p.is_sequence) out.insert(out.end(), ids.begin(), ids.end());
      else out.insert(out.end(), p.ids.begin(), p.ids.end());
    }
    ids.swap(out);
  }
};

class ClsSepProcessor : public PostProcessor {
 public:
  int32_t cls = -1, sep = -1;
  void process(std::vector<int32_t>& ids) const override {
    ids.insert(ids.begin(), cls);
    ids.push_back(sep);
  }
};

std::unique_ptr<Decoder> pattern_replace(json::element j, const std::string& origin) {
  auto r = std::make_unique<ReplaceDecoder>();
  r->rule = ReplaceRule::from_json(j, origin, "decoder Replace");
  return r;
}

}  // namespace

std::unique_ptr<Decoder> make_decoder(json::element j, const std::string& origin) {
  if (j.is_null()) return nullptr;
  std::string type = json::type_of(j, origin, "decoder");
  if (type == "Sequence") {
    auto seq = std::make_unique<SequenceDecoder>();
    simdjson::dom::array arr;
    if (json::require(j, "decoders", origin, "decoder Sequence").get_array().get(arr))
      throw Error(origin + ": decoder Sequence.decoders must be an array");
    for (auto e : arr) {
      if (auto d = make_decoder(e, origin)) seq->steps.push_back(std::move(d));
    }
    return seq;
  }
  if (type == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
  if (type == "Replace") return pattern_replace(j, origin);
  if (type == "Fuse") return std::make_unique<FuseDecoder>();
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  if (type == "Strip") {
    auto s = std::make_unique<StripDecoder>();
    s->content = json::get_string(j, "content", origin, "decoder Strip");
    s->start = static_cast<size_t>(json::get_int(json::require(j, "start", origin, "decoder Strip"), origin, "decoder Strip.start"));
    s->stop = static_cast<size_t>(json::get_int(json::require(j, "stop", origin, "decoder Strip"), origin, "decoder Strip.stop"));
    return s;
  }
  if (type == "Metaspace") {
    auto m = std::make_unique<MetaspaceDecoder>();
    m->replacement = json::get_string(j, "replacement", origin, "decoder Metaspace", std::string("\xE2\x96\x81"));
    if (json::has(j, "prepend_scheme")) {
      m->strip_first = json::get_string(j, "prepend_scheme", origin, "decoder Metaspace") != "never";
    } else {
      m->strip_first = json::get_bool(j, "add_prefix_space", true, origin, "decoder Metaspace");
    }
    return m;
  }
  throw Error(origin + ": decoder type \"" + type +
              "\" is not supported (supported: Sequence, ByteLevel, Replace, Strip, Fuse, ByteFallback, Metaspace)");
}

std::unique_ptr<PostProcessor> make_post_processor(json::element j, const std::string& origin) {
  if (j.is_null()) return nullptr;
  std::string type = json::type_of(j, origin, "post_processor");
  if (type == "ByteLevel") return std::make_unique<NoOpProcessor>();  // adjusts offsets only
  if (type == "Sequence") {
    auto seq = std::make_unique<SequenceProcessor>();
    simdjson::dom::array arr;
    if (json::require(j, "processors", origin, "post_processor Sequence").get_array().get(arr))
      throw Error(origin + ": post_processor Sequence.processors must be an array");
    for (auto e : arr) {
      if (auto p = make_post_processor(e, origin)) seq->steps.push_back(std::move(p));
    }
    return seq;
  }
  if (type == "TemplateProcessing") {
    auto t = std::make_unique<TemplateProcessor>();
    std::map<std::string, std::vector<int32_t>> specials;
    if (auto st = json::field(j, "special_tokens")) {
      simdjson::dom::object obj;
      if (st->get_object().get(obj)) throw Error(origin + ": post_processor TemplateProcessing.special_tokens must be an object");
      for (auto kv : obj) {
        simdjson::dom::array ids;
        if (kv.value["ids"].get_array().get(ids))
          throw Error(origin + ": TemplateProcessing special token \"" + std::string(kv.key) + "\" has no ids array");
        std::vector<int32_t> v;
        for (auto id : ids) v.push_back(static_cast<int32_t>(json::get_int(id, origin, "TemplateProcessing ids")));
        specials[std::string(kv.key)] = std::move(v);
      }
    }
    simdjson::dom::array single;
    if (json::require(j, "single", origin, "post_processor TemplateProcessing").get_array().get(single))
      throw Error(origin + ": post_processor TemplateProcessing.single must be an array");
    for (auto piece : single) {
      if (auto seq = json::field(piece, "Sequence")) {
        std::string id = json::get_string(*seq, "id", origin, "TemplateProcessing Sequence");
        if (id != "A") throw Error(origin + ": TemplateProcessing single template uses $" + id + "; only $A fits a single sequence");
        t->single.push_back({true, {}});
      } else if (auto sp = json::field(piece, "SpecialToken")) {
        std::string id = json::get_string(*sp, "id", origin, "TemplateProcessing SpecialToken");
        auto it = specials.find(id);
        if (it == specials.end())
          throw Error(origin + ": TemplateProcessing uses special token \"" + id + "\" missing from special_tokens");
        t->single.push_back({false, it->second});
      } else {
        throw Error(origin + ": TemplateProcessing.single has an item that is neither Sequence nor SpecialToken");
      }
    }
    return t;
  }
  if (type == "BertProcessing" || type == "RobertaProcessing") {
    auto p = std::make_unique<ClsSepProcessor>();
    auto read = [&](const char* key) {
      simdjson::dom::array a;
      if (json::require(j, key, origin, "post_processor").get_array().get(a) || a.size() != 2)
        throw Error(origin + ": post_processor " + type + "." + key + " must be [token, id]");
      return static_cast<int32_t>(json::get_int(a.at(1).value_unsafe(), origin, type + "." + key));
    };
    p->cls = read("cls");
    p->sep = read("sep");
    return p;
  }
  throw Error(origin + ": post_processor type \"" + type +
              "\" is not supported (supported: ByteLevel, TemplateProcessing, BertProcessing, RobertaProcessing, Sequence)");
}

}  // namespace dsft::text::hf
