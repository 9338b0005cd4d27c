// tokenizer.json normalizers: NFC/NFD/NFKC/NFKD, Lowercase, Strip, Replace, Prepend, Sequence.
#include <algorithm>

#include "text/hf_components.h"
#include "text/unicode.h"

namespace dsft::text::hf {
namespace {

class SequenceNormalizer : public Normalizer {
 public:
  std::vector<std::unique_ptr<Normalizer>> steps;
  void normalize(std::string& s) const override {
    for (const auto& n : steps) n->normalize(s);
  }
};

class UnicodeNormalizer : public Normalizer {
 public:
  explicit UnicodeNormalizer(unicode::NormForm f) : form_(f) {}
  void normalize(std::string& s) const override {
    if (form_ == unicode::NormForm::nfc && unicode::is_nfc_inert(s)) return;  // no copy for the common case
    s = unicode::normalize(s, form_);
  }

 private:
  unicode::NormForm form_;
};

class LowercaseNormalizer : public Normalizer {
 public:
  void normalize(std::string& s) const override { s = unicode::lowercase(s); }
};

class StripNormalizer : public Normalizer {
 public:
  bool left = true, right = true;
  void normalize(std::string& s) const override {
    size_t b = 0, e = s.size();
    if (left) {
      while (b < e) {
        size_t i = b;
        if (!unicode::is_white_space(unicode::next_cp(s, i))) break;
        b = i;
      }
    }
    if (right) {
      while (e > b) {
        size_t start = e - 1;
        while (start > b && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
        size_t i = start;
        if (!unicode::is_white_space(unicode::next_cp(s, i))) break;
        e = start;
      }
    }
    s = s.substr(b, e - b);
  }
};

class ReplaceNormalizer : public Normalizer {
 public:
  ReplaceRule rule;
  void normalize(std::string& s) const override { rule.apply(s); }
};

class PrependNormalizer : public Normalizer {
 public:
  std::string prefix;
  void normalize(std::string& s) const override {
    if (!s.empty()) s.insert(0, prefix);
  }
};

}  // namespace

bool ReplaceRule::apply(std::string& s) const {
  std::string out;
  if (regex) {
    std::vector<std::pair<size_t, size_t>> m;
    regex->find_all(s, m);
    if (m.empty()) return false;
    size_t prev = 0;
    for (auto [a, b] : m) {
      out.append(s, prev, a - prev);
      out += content;
      prev = b;
    }
    out.append(s, prev, std::string::npos);
  } else {
    if (literal.empty()) return false;
    size_t prev = 0, at;
    while ((at = s.find(literal, prev)) != std::string::npos) {
      out.append(s, prev, at - prev);
      out += content;
      prev = at + literal.size();
    }
    if (prev == 0) return false;
    out.append(s, prev, std::string::npos);
  }
  s.swap(out);
  return true;
}

ReplaceRule ReplaceRule::from_json(json::element j, const std::string& origin, const char* what) {
  ReplaceRule r;
  const std::string pattern_what = std::string(what) + ".pattern";
  auto pat = json::require(j, "pattern", origin, what);
  if (json::has(pat, "Regex")) {
    r.regex = std::make_unique<Regex>(json::get_string(pat, "Regex", origin, pattern_what.c_str()), origin);
  } else {
    r.literal = json::get_string(pat, "String", origin, pattern_what.c_str());
  }
  r.content = json::get_string(j, "content", origin, what);
  return r;
}

std::unique_ptr<Normalizer> make_normalizer(json::element j, const std::string& origin) {
  if (j.is_null()) return nullptr;
  std::string type = json::type_of(j, origin, "normalizer");
  if (type == "Sequence") {
    auto seq = std::make_unique<SequenceNormalizer>();
    simdjson::dom::array arr;
    if (json::require(j, "normalizers", origin, "normalizer Sequence").get_array().get(arr))
      throw Error(origin + ": normalizer Sequence.normalizers must be an array");
    for (auto e : arr) {
      if (auto n = make_normalizer(e, origin)) seq->steps.push_back(std::move(n));
    }
    if (seq->steps.empty()) return nullptr;  // an empty Sequence changes nothing
    return seq;
  }
  if (type == "NFC") return std::make_unique<UnicodeNormalizer>(unicode::NormForm::nfc);
  if (type == "NFD") return std::make_unique<UnicodeNormalizer>(unicode::NormForm::nfd);
  if (type == "NFKC") return std::make_unique<UnicodeNormalizer>(unicode::NormForm::nfkc);
  if (type == "NFKD") return std::make_unique<UnicodeNormalizer>(unicode::NormForm::nfkd);
  if (type == "Lowercase") return std::make_unique<LowercaseNormalizer>();
  if (type == "Strip") {
    auto s = std::make_unique<StripNormalizer>();
    s->left = json::get_bool(j, "strip_left", true, origin, "normalizer Strip");
    s->right = json::get_bool(j, "strip_right", true, origin, "normalizer Strip");
    return s;
  }
  if (type == "Replace") {
    auto r = std::make_unique<ReplaceNormalizer>();
    r->rule = ReplaceRule::from_json(j, origin, "normalizer Replace");
    return r;
  }
  if (type == "Prepend") {
    auto p = std::make_unique<PrependNormalizer>();
    p->prefix = json::get_string(j, "prepend", origin, "normalizer Prepend");
    return p;
  }
  throw Error(
      origin + ": normalizer type \"" + type +
      "\" is not supported (supported: Sequence, NFC, NFD, NFKC, NFKD, Lowercase, Strip, Replace, Prepend)");
}

}  // namespace dsft::text::hf
