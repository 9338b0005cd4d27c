// tokenizer.json pre-tokenizers: Sequence, Split (regex or string; Removed, Isolated,
// MergedWithPrevious, MergedWithNext, Contiguous; invert), ByteLevel, Digits, Whitespace,
// WhitespaceSplit, Metaspace. Splitting follows the Rust library's NormalizedString::split.
#include <cstring>

#include "text/hf_components.h"
#include "text/unicode.h"

namespace dsft::text::hf {
namespace {

enum class Behavior { removed, isolated, merged_with_previous, merged_with_next, contiguous };

struct Span {
  size_t start, end;
  bool is_match;
};

// Appends the non-empty pieces `spans` make of `piece` under `behavior` (Rust: split()).
void split_spans(std::string_view piece, const std::vector<Span>& spans, Behavior behavior,
                 std::vector<std::string_view>& out) {
  auto emit = [&](size_t a, size_t b) {
    if (b > a) out.push_back(piece.substr(a, b - a));
  };
  switch (behavior) {
    case Behavior::removed:
      for (const auto& s : spans) if (!s.is_match) emit(s.start, s.end);
      return;
    case Behavior::isolated:
      for (const auto& s : spans) emit(s.start, s.end);
      return;
    case Behavior::contiguous: {
      std::vector<std::pair<size_t, size_t>> acc;
      bool prev = false;
      for (const auto& s : spans) {
        if (s.is_match == prev && !acc.empty()) acc.back().second = s.end;
        else acc.emplace_back(s.start, s.end);
        prev = s.is_match;
      }
      for (auto [a, b] : acc) emit(a, b);
      return;
    }
    case Behavior::merged_with_previous: {
      std::vector<std::pair<size_t, size_t>> acc;
      bool prev = false;
      for (const auto& s : spans) {
        if (s.is_match && !prev && !acc.empty()) acc.back().second = s.end;
        else acc.emplace_back(s.start, s.end);
        prev = s.is_match;
      }
      for (auto [a, b] : acc) emit(a, b);
      return;
    }
    case Behavior::merged_with_next: {
      std::vector<std::pair<size_t, size_t>> acc;
      bool prev = false;
      for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
        if (it->is_match && !prev && !acc.empty()) acc.back().first = it->start;
        else acc.emplace_back(it->start, it->end);
        prev = it->is_match;
      }
      for (auto it = acc.rbegin(); it != acc.rend(); ++it) emit(it->first, it->second);
      return;
    }
  }
}

// Spans of the matches and the gaps between them (Rust: Pattern::find_matches).
void spans_from_matches(std::string_view piece, const std::vector<std::pair<size_t, size_t>>& m, bool invert,
                        std::vector<Span>& spans) {
  spans.clear();
  size_t prev = 0;
  for (auto [a, b] : m) {
    if (prev != a) spans.push_back({prev, a, invert});
    spans.push_back({a, b, !invert});
    prev = b;
  }
  if (prev != piece.size()) spans.push_back({prev, piece.size(), invert});
}

class SplitPreTokenizer : public PreTokenizer {
 public:
  std::unique_ptr<Regex> regex;
  Behavior behavior = Behavior::isolated;
  bool invert = false;
  void apply(Pieces& p, bool) const override {
    std::vector<std::string_view> out;
    out.reserve(p.list.size() * 4);
    std::vector<Span> spans;
    for (std::string_view piece : p.list) {
      p.matches.clear();
      regex->find_all(piece, p.matches);
      if (behavior == Behavior::isolated && !invert) {
        // Fast path of the common case: matches and gaps, in order.
        size_t prev = 0;
        for (auto [a, b] : p.matches) {
          if (a > prev) out.push_back(piece.substr(prev, a - prev));
          if (b > a) out.push_back(piece.substr(a, b - a));
          prev = b;
        }
        if (prev < piece.size()) out.push_back(piece.substr(prev));
        continue;
      }
      spans_from_matches(piece, p.matches, invert, spans);
      split_spans(piece, spans, behavior, out);
    }
    p.list.swap(out);
  }
};

// Splits where a code-point predicate holds, each such character being its own match (Rust's
// char-predicate patterns).
template <class Pred>
void split_chars(Pieces& p, Pred pred, Behavior behavior) {
  std::vector<std::string_view> out;
  std::vector<Span> spans;
  for (std::string_view piece : p.list) {
    spans.clear();
    size_t i = 0, prev = 0;
    while (i < piece.size()) {
      size_t at = i;
      uint32_t cp = unicode::next_cp(piece, i);
      if (pred(cp)) {
        if (prev != at) spans.push_back({prev, at, false});
        spans.push_back({at, i, true});
        prev = i;
      }
    }
    if (prev != piece.size()) spans.push_back({prev, piece.size(), false});
    split_spans(piece, spans, behavior, out);
  }
  p.list.swap(out);
}

class DigitsPreTokenizer : public PreTokenizer {
 public:
  bool individual = false;
  void apply(Pieces& p, bool) const override {
    split_chars(
        p, [](uint32_t cp) { return cp < 0x80 ? (cp >= '0' && cp <= '9') : unicode::general_category16(cp)[0] == 'N'; },
        individual ? Behavior::isolated : Behavior::contiguous);
  }
};

class WhitespaceSplitPreTokenizer : public PreTokenizer {
 public:
  void apply(Pieces& p, bool) const override { split_chars(p, unicode::is_white_space, Behavior::removed); }
};

class MetaspacePreTokenizer : public PreTokenizer {
 public:
  std::string replacement = "\xE2\x96\x81";
  uint32_t replacement_cp = 0x2581;
  enum class Prepend { always, first, never } prepend = Prepend::always;
  bool split = true;
  void apply(Pieces& p, bool at_start) const override {
    std::vector<std::string_view> out;
    bool first = at_start;
    for (std::string_view piece : p.list) {
      std::string s;
      s.reserve(piece.size() + 8);
      for (char c : piece) {
        if (c == ' ') s += replacement;
        else s.push_back(c);
      }
      bool starts = s.compare(0, replacement.size(), replacement) == 0;
      if (!starts && (prepend == Prepend::always || (prepend == Prepend::first && first))) s.insert(0, replacement);
      first = false;
      std::string_view owned = p.own(std::move(s));
      if (!split) {
        if (!owned.empty()) out.push_back(owned);
        continue;
      }
      Pieces tmp;
      tmp.list.push_back(owned);
      uint32_t rep = replacement_cp;
      split_chars(tmp, [rep](uint32_t cp) { return cp == rep; }, Behavior::merged_with_next);
      out.insert(out.end(), tmp.list.begin(), tmp.list.end());
    }
    p.list.swap(out);
  }
};

Behavior parse_behavior(const std::string& b, const std::string& origin) {
  if (b == "Removed") return Behavior::removed;
  if (b == "Isolated") return Behavior::isolated;
  if (b == "MergedWithPrevious") return Behavior::merged_with_previous;
  if (b == "MergedWithNext") return Behavior::merged_with_next;
  if (b == "Contiguous") return Behavior::contiguous;
  throw Error(origin + ": Split behavior \"" + b +
              "\" is not one of Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous");
}

std::string escape_regex(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (std::strchr("\\^$.|?*+()[]{}-#&~ ", c) && c != '\0') out.push_back('\\');
    out.push_back(c);
  }
  return out;
}

constexpr const char* kGpt2Pattern =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

}  // namespace

const ByteLevelTable& ByteLevelTable::get() {
  static const ByteLevelTable t = [] {
    ByteLevelTable t{};
    uint32_t n = 0;
    for (uint32_t b = 0; b < 256; ++b) {
      bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
      if (!printable) t.extra_to_byte[n] = static_cast<int16_t>(b);
      t.byte_to_cp[b] = printable ? b : 256 + n++;
      unicode::append_utf8(t.byte_to_utf8[b], t.byte_to_cp[b]);
    }
    return t;
  }();
  return t;
}

int ByteLevelTable::cp_to_byte(uint32_t cp) const {
  if (cp < 256) {
    bool printable = (cp >= 33 && cp <= 126) || (cp >= 161 && cp <= 172) || (cp >= 174);
    return printable ? static_cast<int>(cp) : -1;
  }
  if (cp < 256 + 68) return extra_to_byte[cp - 256];
  return -1;
}

void ByteLevelPreTokenizer::apply(Pieces& p, bool) const {
  if (add_prefix_space) {
    for (auto& piece : p.list) {
      if (piece.empty() || piece[0] != ' ') piece = p.own(" " + std::string(piece));
    }
  }
  if (regex) {
    std::vector<std::string_view> out;
    for (std::string_view piece : p.list) {
      p.matches.clear();
      regex->find_all(piece, p.matches);
      size_t prev = 0;
      for (auto [a, b] : p.matches) {
        if (a > prev) out.push_back(piece.substr(prev, a - prev));
        if (b > a) out.push_back(piece.substr(a, b - a));
        prev = b;
      }
      if (prev < piece.size()) out.push_back(piece.substr(prev));
    }
    p.list.swap(out);
  }
  if (map_bytes) {
    const auto& t = ByteLevelTable::get();
    for (auto& piece : p.list) {
      std::string s;
      s.reserve(piece.size() * 2);
      for (char c : piece) s += t.byte_to_utf8[static_cast<unsigned char>(c)];
      piece = p.own(std::move(s));
    }
  }
}

std::unique_ptr<PreTokenizer> make_pre_tokenizer(json::element j, const std::string& origin) {
  if (j.is_null()) return nullptr;
  std::string type = json::type_of(j, origin, "pre_tokenizer");
  if (type == "Sequence") {
    auto seq = std::make_unique<SequencePreTokenizer>();
    simdjson::dom::array arr;
    if (json::require(j, "pretokenizers", origin, "pre_tokenizer Sequence").get_array().get(arr))
      throw Error(origin + ": pre_tokenizer Sequence.pretokenizers must be an array");
    for (auto e : arr) {
      if (auto p = make_pre_tokenizer(e, origin)) seq->stages.push_back(std::move(p));
    }
    return seq;
  }
  if (type == "Split") {
    auto s = std::make_unique<SplitPreTokenizer>();
    auto pat = json::require(j, "pattern", origin, "pre_tokenizer Split");
    if (json::has(pat, "Regex")) {
      s->regex = std::make_unique<Regex>(json::get_string(pat, "Regex", origin, "Split.pattern"), origin);
    } else {
      s->regex = std::make_unique<Regex>(escape_regex(json::get_string(pat, "String", origin, "Split.pattern")), origin);
    }
    s->behavior = parse_behavior(json::get_string(j, "behavior", origin, "pre_tokenizer Split"), origin);
    s->invert = json::get_bool(j, "invert", false, origin, "pre_tokenizer Split");
    return s;
  }
  if (type == "ByteLevel") {
    auto b = std::make_unique<ByteLevelPreTokenizer>();
    b->add_prefix_space = json::get_bool(j, "add_prefix_space", true, origin, "pre_tokenizer ByteLevel");
    if (json::get_bool(j, "use_regex", true, origin, "pre_tokenizer ByteLevel"))
      b->regex = std::make_unique<Regex>(kGpt2Pattern, origin);
    return b;
  }
  if (type == "Digits") {
    auto d = std::make_unique<DigitsPreTokenizer>();
    d->individual = json::get_bool(j, "individual_digits", false, origin, "pre_tokenizer Digits");
    return d;
  }
  if (type == "Whitespace") {
    // \w+|[^\w\s]+ kept, everything else (white space) removed.
    auto s = std::make_unique<SplitPreTokenizer>();
    s->regex = std::make_unique<Regex>("\\w+|[^\\w\\s]+", origin);
    s->behavior = Behavior::removed;
    s->invert = true;
    return s;
  }
  if (type == "WhitespaceSplit") return std::make_unique<WhitespaceSplitPreTokenizer>();
  if (type == "Metaspace") {
    auto m = std::make_unique<MetaspacePreTokenizer>();
    m->replacement = json::get_string(j, "replacement", origin, "pre_tokenizer Metaspace", std::string("\xE2\x96\x81"));
    size_t i = 0;
    if (m->replacement.empty()) throw Error(origin + ": pre_tokenizer Metaspace.replacement is empty");
    m->replacement_cp = unicode::next_cp(m->replacement, i);
    if (i != m->replacement.size()) throw Error(origin + ": pre_tokenizer Metaspace.replacement must be one character");
    if (json::has(j, "prepend_scheme")) {
      std::string ps = json::get_string(j, "prepend_scheme", origin, "pre_tokenizer Metaspace");
      if (ps == "always") m->prepend = MetaspacePreTokenizer::Prepend::always;
      else if (ps == "first") m->prepend = MetaspacePreTokenizer::Prepend::first;
      else if (ps == "never") m->prepend = MetaspacePreTokenizer::Prepend::never;
      else throw Error(origin + ": pre_tokenizer Metaspace.prepend_scheme \"" + ps + "\" is not always, first or never");
    } else {
      m->prepend = json::get_bool(j, "add_prefix_space", true, origin, "pre_tokenizer Metaspace")
                       ? MetaspacePreTokenizer::Prepend::always
                       : MetaspacePreTokenizer::Prepend::never;
    }
    m->split = json::get_bool(j, "split", true, origin, "pre_tokenizer Metaspace");
    return m;
  }
  throw Error(origin + ": pre_tokenizer type \"" + type +
              "\" is not supported (supported: Sequence, Split, ByteLevel, Digits, Whitespace, WhitespaceSplit, "
              "Metaspace)");
}

}  // namespace dsft::text::hf
