// Oniguruma-to-PCRE2 translation and matching (see regex.h).
#define PCRE2_CODE_UNIT_WIDTH 8
#include "text/regex.h"

#include <pcre2.h>

#include <cctype>
#include <cstdio>
#include <cstring>
#include <map>

#include "dsft/util/error.h"
#include "text/unicode.h"

namespace dsft::text {
namespace {

// Unicode White_Space, the set Oniguruma's \s matches (PCRE2's \s adds U+180E).
constexpr const char* kSpaceClass = "\\t\\n\\x0B\\f\\r\\x20\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}"
                                    "\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}";
constexpr const char* kHexClass = "0-9a-fA-F";

// Long general-category names Oniguruma accepts, by their short form.
const std::map<std::string, std::string>& gc_aliases() {
  static const std::map<std::string, std::string> m = {
      {"letter", "L"}, {"casedletter", "LC"}, {"uppercaseletter", "Lu"}, {"lowercaseletter", "Ll"},
      {"titlecaseletter", "Lt"}, {"modifierletter", "Lm"}, {"otherletter", "Lo"}, {"mark", "M"},
      {"combiningmark", "M"}, {"nonspacingmark", "Mn"}, {"spacingmark", "Mc"}, {"enclosingmark", "Me"},
      {"number", "N"}, {"decimalnumber", "Nd"}, {"digit", "Nd"}, {"letternumber", "Nl"},
      {"othernumber", "No"}, {"punctuation", "P"}, {"punct", "P"}, {"connectorpunctuation", "Pc"},
      {"dashpunctuation", "Pd"}, {"openpunctuation", "Ps"}, {"closepunctuation", "Pe"},
      {"initialpunctuation", "Pi"}, {"finalpunctuation", "Pf"}, {"otherpunctuation", "Po"},
      {"symbol", "S"}, {"mathsymbol", "Sm"}, {"currencysymbol", "Sc"}, {"modifiersymbol", "Sk"},
      {"othersymbol", "So"}, {"separator", "Z"}, {"spaceseparator", "Zs"}, {"lineseparator", "Zl"},
      {"paragraphseparator", "Zp"}, {"other", "C"}, {"control", "Cc"}, {"cntrl", "Cc"},
      {"format", "Cf"}, {"privateuse", "Co"}, {"surrogate", "Cs"}, {"unassigned", "Cn"}};
  return m;
}

// Returns the short general category ("L", "Lu", "LC", ...) a property name denotes, or "".
std::string general_category(std::string name) {
  std::string key;
  for (char c : name) {
    if (c == '_' || c == ' ' || c == '-') continue;
    key.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  }
  if (key.size() == 1 && std::strchr("lmnpszc", key[0])) return std::string(1, static_cast<char>(std::toupper(key[0])));
  if (key.size() == 2) {
    static const char* two[] = {"lu", "ll", "lt", "lm", "lo", "lc", "mn", "mc", "me", "nd", "nl", "no", "pc", "pd", "ps",
                                "pe", "pi", "pf", "po", "sm", "sc", "sk", "so", "zs", "zl", "zp", "cc", "cf", "co", "cs", "cn"};
    for (const char* t : two) {
      if (key == t) return std::string{static_cast<char>(std::toupper(t[0])), t[1]};
    }
  }
  auto it = gc_aliases().find(key);
  return it == gc_aliases().end() ? std::string() : it->second;
}

bool gc_matches(const std::string& cat, const char* gc) {
  if (cat.size() == 1) return gc[0] == cat[0];
  if (cat == "LC") return gc[0] == 'L' && (gc[1] == 'u' || gc[1] == 'l' || gc[1] == 't');
  return cat[0] == gc[0] && cat[1] == gc[1];
}

// `\x{a}-\x{b}` items for the code points Unicode 15/16 put in category `cat`.
std::string gc_extras(const std::string& cat) {
  std::string out;
  char buf[40];
  for (auto* r = unicode::gc_changed_begin(); r != unicode::gc_changed_end(); ++r) {
    if (!gc_matches(cat, r->gc)) continue;
    if (r->first == r->last) std::snprintf(buf, sizeof buf, "\\x{%X}", r->first);
    else std::snprintf(buf, sizeof buf, "\\x{%X}-\\x{%X}", r->first, r->last);
    out += buf;
  }
  return out;
}

[[noreturn]] void unsupported(const std::string& origin, std::string_view pattern, const std::string& what) {
  throw Error(origin + ": regex " + std::string(pattern) + " uses " + what +
              ", which has no PCRE2 equivalent here; hint: rewrite the pattern without it");
}

}  // namespace

std::string onig_to_pcre2(std::string_view p, const std::string& origin) {
  std::string out;
  out.reserve(p.size() + 32);
  bool in_class = false;
  size_t class_start = 0;  // offset in `out` just after '[' or '[^'
  size_t i = 0;
  while (i < p.size()) {
    char c = p[i];
    if (c == '\\' && i + 1 < p.size()) {
      char e = p[i + 1];
      // \p{..}, \P{..}, \p{^..}
      if ((e == 'p' || e == 'P') && i + 2 < p.size() && p[i + 2] == '{') {
        size_t close = p.find('}', i + 3);
        if (close == std::string_view::npos) unsupported(origin, p, "an unterminated \\p{");
        std::string name(p.substr(i + 3, close - i - 3));
        bool neg = e == 'P';
        if (!name.empty() && name[0] == '^') { neg = !neg; name.erase(0, 1); }
        std::string cat = general_category(name);
        std::string extras = cat.empty() ? std::string() : gc_extras(cat);
        std::string prop = std::string("\\p{") + (cat.empty() ? name : cat) + "}";
        if (extras.empty()) {
          out += (neg ? "\\P{" : "\\p{") + (cat.empty() ? name : cat) + "}";
        } else if (in_class) {
          if (neg) unsupported(origin, p, "a negated property \\P{" + name + "} inside a character class");
          out += prop + extras;
        } else {
          out += (neg ? "[^" : "[") + prop + extras + "]";
        }
        i = close + 1;
        continue;
      }
      if (e == 's' || e == 'S' || e == 'h' || e == 'H' || e == 'd' || e == 'D' || e == 'w' || e == 'W') {
        bool neg = std::isupper(static_cast<unsigned char>(e));
        char lower = static_cast<char>(std::tolower(static_cast<unsigned char>(e)));
        std::string items;
        if (lower == 's') items = kSpaceClass;
        else if (lower == 'h') items = kHexClass;
        else if (lower == 'd') items = "\\p{Nd}" + gc_extras("Nd");
        else items = "\\p{L}\\p{M}\\p{Nd}\\p{Pc}" + gc_extras("L") + gc_extras("M") + gc_extras("Nd");
        if (in_class) {
          if (neg) unsupported(origin, p, std::string("\\") + e + " inside a character class");
          out += items;
        } else {
          out += (neg ? "[^" : "[") + items + "]";
        }
        i += 2;
        continue;
      }
      if (e == 'v') { out += "\\x0B"; i += 2; continue; }  // Oniguruma: vertical tab only
      if (e == 'u' && i + 6 <= p.size() &&
          p.substr(i + 2, 4).find_first_not_of("0123456789abcdefABCDEF") == std::string_view::npos) {
        out += "\\x{" + std::string(p.substr(i + 2, 4)) + "}";
        i += 6;
        continue;
      }
      out.push_back(c);
      out.push_back(e);
      i += 2;
      continue;
    }
    if (in_class) {
      if (c == '[') {
        if (i + 1 < p.size() && p[i + 1] == ':') {  // POSIX bracket [:alpha:]
          size_t close = p.find(":]", i + 2);
          if (close == std::string_view::npos) unsupported(origin, p, "an unterminated POSIX bracket");
          out.append(p.substr(i, close + 2 - i));
          i = close + 2;
          continue;
        }
        unsupported(origin, p, "a nested character class");
      }
      if (c == '&' && i + 1 < p.size() && p[i + 1] == '&') unsupported(origin, p, "class intersection &&");
      if (c == ']' && out.size() > class_start) in_class = false;
      out.push_back(c);
      ++i;
      continue;
    }
    if (c == '[') {
      in_class = true;
      out.push_back('[');
      ++i;
      if (i < p.size() && p[i] == '^') { out.push_back('^'); ++i; }
      class_start = out.size();
      continue;
    }
    if (c == '(' && i + 1 < p.size() && p[i + 1] == '?') {
      // Inline options: Ruby's (?m) is PCRE2's (?s).
      size_t j = i + 2;
      std::string flags;
      while (j < p.size() && (std::isalpha(static_cast<unsigned char>(p[j])) || p[j] == '-')) flags.push_back(p[j++]);
      if (!flags.empty() && j < p.size() && (p[j] == ')' || p[j] == ':') &&
          flags.find_first_not_of("imx-") == std::string::npos) {
        for (char& f : flags) if (f == 'm') f = 's';
        out += "(?" + flags;
        i = j;
        continue;
      }
    }
    out.push_back(c);
    ++i;
  }
  return out;
}

namespace {

// Per-thread match state: PCRE2 match data and a JIT stack large enough for long whitespace
// runs under the (?!\S) look-ahead.
struct MatchScratch {
  pcre2_match_data* md = nullptr;
  pcre2_match_context* mctx = nullptr;
  pcre2_jit_stack* stack = nullptr;
  MatchScratch() {
    md = pcre2_match_data_create(1, nullptr);
    mctx = pcre2_match_context_create(nullptr);
    stack = pcre2_jit_stack_create(64 * 1024, 8 * 1024 * 1024, nullptr);
    pcre2_jit_stack_assign(mctx, nullptr, stack);
  }
  ~MatchScratch() {
    pcre2_match_data_free(md);
    pcre2_match_context_free(mctx);
    pcre2_jit_stack_free(stack);
  }
};

MatchScratch& scratch() {
  thread_local MatchScratch s;
  return s;
}

}  // namespace

Regex::Regex(std::string_view pattern, const std::string& origin) : pattern_(pattern) {
  std::string translated = onig_to_pcre2(pattern, origin);
  int err = 0;
  PCRE2_SIZE off = 0;
  auto* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()), translated.size(),
                             PCRE2_UTF | PCRE2_UCP | PCRE2_MULTILINE | PCRE2_NO_UTF_CHECK, &err, &off, nullptr);
  if (!code) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof msg);
    throw Error(origin + ": cannot compile regex " + std::string(pattern) + ": " +
                reinterpret_cast<const char*>(msg) + " (at offset " + std::to_string(off) + ")");
  }
  code_ = code;
  jit_ = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
}

Regex::~Regex() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

bool Regex::match_at(std::string_view subject, size_t start, size_t& ms, size_t& me) const {
  auto& s = scratch();
  auto* code = static_cast<pcre2_code*>(code_);
  auto subj = reinterpret_cast<PCRE2_SPTR>(subject.data());
  int rc;
  if (jit_) {
    rc = pcre2_jit_match(code, subj, subject.size(), start, 0, s.md, s.mctx);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {
      // The interpreter keeps its backtracking frames on the heap.
      rc = pcre2_match(code, subj, subject.size(), start, PCRE2_NO_UTF_CHECK, s.md, nullptr);
    }
  } else {
    rc = pcre2_match(code, subj, subject.size(), start, PCRE2_NO_UTF_CHECK, s.md, nullptr);
  }
  if (rc == PCRE2_ERROR_NOMATCH) return false;
  if (rc < 0) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(rc, msg, sizeof msg);
    throw Error("regex " + pattern_ + " failed on a " + std::to_string(subject.size()) +
                "-byte text: " + reinterpret_cast<const char*>(msg));
  }
  PCRE2_SIZE* ov = pcre2_get_ovector_pointer(s.md);
  ms = ov[0];
  me = ov[1];
  return true;
}

void Regex::find_all(std::string_view subject, std::vector<std::pair<size_t, size_t>>& out) const {
  size_t last_end = 0;
  bool have_last = false;
  size_t last_match_end = 0;
  while (last_end <= subject.size()) {
    size_t s, e;
    if (!match_at(subject, last_end, s, e)) break;
    if (e == s && have_last && last_match_end == e) {
      // Same rule as the onig crate: no empty match right after the previous match.
      last_end += last_end < subject.size() ? unicode::utf8_len(static_cast<unsigned char>(subject[last_end])) : 1;
      continue;
    }
    last_end = e;
    last_match_end = e;
    have_last = true;
    // After an empty match the next search finds it again, and the rule above steps on.
    out.emplace_back(s, e);
  }
}

}  // namespace dsft::text
