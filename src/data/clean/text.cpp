// Byte- and code-point-level text filters of `dsft clean`: UTF-8 validation and repair, Unicode
// normalisation (utf8proc), control characters and odd whitespace, and the statistics the
// quality checks use.
#include <utf8proc.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <unordered_set>

#include "dsft/data/clean_filters.h"

namespace dsft::data {
namespace {

// Decodes one well-formed UTF-8 sequence at s[i]; returns its length, or 0 when invalid
// (overlong forms, surrogates and values above U+10FFFF are invalid).
size_t utf8_seq(std::string_view s, size_t i, int32_t* cp) {
  auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  unsigned char c = b(i);
  size_t n = s.size();
  if (c < 0x80) {
    *cp = c;
    return 1;
  }
  if (c >= 0xC2 && c <= 0xDF) {
    if (i + 1 < n && (b(i + 1) & 0xC0) == 0x80) {
      *cp = ((c & 0x1F) << 6) | (b(i + 1) & 0x3F);
      return 2;
    }
    return 0;
  }
  if (c >= 0xE0 && c <= 0xEF) {
    if (i + 2 >= n) return 0;
    unsigned char c1 = b(i + 1), c2 = b(i + 2);
    if ((c1 & 0xC0) != 0x80 || (c2 & 0xC0) != 0x80) return 0;
    if (c == 0xE0 && c1 < 0xA0) return 0;
    if (c == 0xED && c1 >= 0xA0) return 0;
    *cp = ((c & 0x0F) << 12) | ((c1 & 0x3F) << 6) | (c2 & 0x3F);
    return 3;
  }
  if (c >= 0xF0 && c <= 0xF4) {
    if (i + 3 >= n) return 0;
    unsigned char c1 = b(i + 1), c2 = b(i + 2), c3 = b(i + 3);
    if ((c1 & 0xC0) != 0x80 || (c2 & 0xC0) != 0x80 || (c3 & 0xC0) != 0x80) return 0;
    if (c == 0xF0 && c1 < 0x90) return 0;
    if (c == 0xF4 && c1 >= 0x90) return 0;
    *cp = ((c & 0x07) << 18) | ((c1 & 0x3F) << 12) | ((c2 & 0x3F) << 6) | (c3 & 0x3F);
    return 4;
  }
  return 0;
}

// Length of the maximal invalid subsequence at s[i] (a valid lead byte with some valid
// continuation bytes counts as one unit, per Unicode's "substitution of maximal subparts").
size_t invalid_len(std::string_view s, size_t i) {
  unsigned char c = static_cast<unsigned char>(s[i]);
  size_t want = (c >= 0xC2 && c <= 0xDF) ? 1 : (c >= 0xE0 && c <= 0xEF) ? 2 : (c >= 0xF0 && c <= 0xF4) ? 3 : 0;
  size_t k = 1;
  while (k <= want && i + k < s.size()) {
    unsigned char d = static_cast<unsigned char>(s[i + k]);
    unsigned char lo = 0x80, hi = 0xBF;
    if (k == 1) {
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    }
    if (d < lo || d > hi) break;
    ++k;
  }
  return k;
}

// True when normalising `s` to the form cannot change it: every code point is a starter with no
// decomposition (canonical for NFC, any for NFKC) that never composes with what precedes it.
// Saves a utf8proc pass on the vast majority of texts.
bool already_normal(std::string_view s, NormalForm form) {
  size_t i = 0;
  while (i < s.size()) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    int32_t cp;
    size_t len = utf8_seq(s, i, &cp);
    if (!len) return false;
    i += len;
    if (cp >= 0x4E00 && cp <= 0x9FFF) continue;  // CJK ideographs: always stable
    const utf8proc_property_t* p = utf8proc_get_property(cp);
    if (p->combining_class != 0) return false;
    if (p->decomp_seqindex != UINT16_MAX && (p->decomp_type == 0 || form == NormalForm::nfkc)) return false;
    if (p->comb_index != UINT16_MAX && (p->comb_index & 0x8000)) return false;  // composes with its predecessor
    if ((cp >= 0x1100 && cp <= 0x11FF) || (cp >= 0xA960 && cp <= 0xA97F) || (cp >= 0xD7B0 && cp <= 0xD7FF))
      return false;  // conjoining Hangul jamo compose algorithmically
  }
  return true;
}

std::string utf8proc_normalize(std::string_view s, NormalForm form) {
  int opts = UTF8PROC_STABLE | UTF8PROC_COMPOSE;
  if (form == NormalForm::nfkc) opts |= UTF8PROC_COMPAT;
  utf8proc_uint8_t* out = nullptr;
  utf8proc_ssize_t n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(s.data()),
                                    static_cast<utf8proc_ssize_t>(s.size()), &out, static_cast<utf8proc_option_t>(opts));
  if (n < 0) return std::string(s);  // only on invalid UTF-8, which callers repair first
  std::string r(reinterpret_cast<char*>(out), static_cast<size_t>(n));
  std::free(out);
  return r;
}

bool is_space_like(int32_t cp) {
  return cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x202F || cp == 0x205F ||
         cp == 0x3000;
}
bool is_line_break_like(int32_t cp) { return cp == 0x2028 || cp == 0x2029 || cp == 0x85 || cp == 0x0B || cp == 0x0C; }
bool is_invisible(int32_t cp) {
  // Zero-width space, word joiner, BOM, soft hyphen, Mongolian vowel separator. ZWJ/ZWNJ stay:
  // emoji sequences and several scripts need them.
  return cp == 0x200B || cp == 0x2060 || cp == 0xFEFF || cp == 0xAD || cp == 0x180E;
}
bool is_control(int32_t cp) { return (cp < 0x20 && cp != '\n' && cp != '\t') || (cp >= 0x7F && cp < 0xA0); }

}  // namespace

bool utf8_is_valid(std::string_view s) {
  size_t i = 0;
  int32_t cp;
  while (i < s.size()) {
    // ASCII fast path, 8 bytes at a time.
    while (i + 8 <= s.size()) {
      uint64_t w;
      std::memcpy(&w, s.data() + i, 8);
      if (w & 0x8080808080808080ULL) break;
      i += 8;
    }
    if (i >= s.size()) break;
    size_t len = utf8_seq(s, i, &cp);
    if (!len) return false;
    i += len;
  }
  return true;
}

std::string utf8_repair(std::string_view s, bool drop, size_t* n_invalid) {
  std::string out;
  out.reserve(s.size());
  size_t bad = 0, i = 0;
  int32_t cp;
  while (i < s.size()) {
    size_t len = utf8_seq(s, i, &cp);
    if (len) {
      out.append(s.data() + i, len);
      i += len;
    } else {
      ++bad;
      if (!drop) out.append("\xEF\xBF\xBD");
      i += invalid_len(s, i);
    }
  }
  if (n_invalid) *n_invalid = bad;
  return out;
}

std::string normalize_unicode(std::string_view in, const UnicodeOptions& o) {
  std::string normal;
  if (o.form != NormalForm::none && !already_normal(in, o.form)) {
    normal = utf8proc_normalize(in, o.form);
    in = normal;
  }
  std::string out;
  out.reserve(in.size());
  size_t i = 0;
  bool at_line_start = true;
  size_t pending_spaces = 0;  // spaces seen but not yet written (dropped at line ends)
  auto flush_spaces = [&] {
    if (pending_spaces) out.append(at_line_start || !o.collapse_spaces ? pending_spaces : 1, ' ');
    pending_spaces = 0;
  };
  auto newline = [&] {
    pending_spaces = 0;
    // At most one empty line in a row; no leading newlines.
    size_t n = out.size();
    if (n == 0) return;
    if (n >= 2 && out[n - 1] == '\n' && out[n - 2] == '\n') return;
    out.push_back('\n');
    at_line_start = true;
  };
  while (i < in.size()) {
    unsigned char c = static_cast<unsigned char>(in[i]);
    int32_t cp;
    size_t len = 1;
    if (c < 0x80) {
      cp = c;
    } else {
      len = utf8_seq(in, i, &cp);
      if (!len) {  // not expected: input is repaired first; keep the byte out of the output
        ++i;
        continue;
      }
    }
    i += len;
    if (cp == '\r') {
      if (i < in.size() && in[i] == '\n') ++i;
      newline();
      continue;
    }
    if (cp == '\n') {
      newline();
      continue;
    }
    if (o.normalize_spaces && is_line_break_like(cp)) {
      newline();
      if (cp == 0x2029) newline();
      continue;
    }
    if (cp == ' ' || (o.normalize_spaces && is_space_like(cp))) {
      if (!out.empty()) ++pending_spaces;  // leading spaces of the whole text are trimmed
      continue;
    }
    if (o.remove_controls && (is_control(cp) || is_invisible(cp))) continue;
    flush_spaces();
    if (cp < 0x80) {
      out.push_back(static_cast<char>(cp));
    } else {
      out.append(in.data() + i - len, len);
    }
    at_line_start = false;
  }
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  return out;
}

TextStats text_stats(std::string_view s) {
  TextStats st;
  std::unordered_set<std::string_view> seen;
  size_t line_start = 0;
  auto end_line = [&](size_t end) {
    std::string_view line = s.substr(line_start, end - line_start);
    while (!line.empty() && (line.front() == ' ' || line.front() == '\t')) line.remove_prefix(1);
    while (!line.empty() && (line.back() == ' ' || line.back() == '\t')) line.remove_suffix(1);
    if (!line.empty()) {
      ++st.lines;
      if (!seen.insert(line).second) ++st.repeated_lines;
    }
    line_start = end + 1;
  };
  size_t i = 0;
  while (i < s.size()) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    int32_t cp;
    size_t len = 1;
    if (c < 0x80) {
      cp = c;
    } else {
      len = utf8_seq(s, i, &cp);
      if (!len) {
        ++i;
        continue;
      }
    }
    if (cp == '\n') end_line(i);
    i += len;
    ++st.chars;
    if (cp == ' ' || cp == '\t' || cp == '\n') continue;
    ++st.non_space;
    if (cp < 0x80) {
      if (cp >= '0' && cp <= '9') {
        ++st.digits;
      } else if (!((cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z'))) {
        ++st.symbols;
      }
      continue;
    }
    if (cp >= 0x4E00 && cp <= 0x9FFF) continue;  // CJK ideographs are letters
    auto cat = utf8proc_category(cp);
    if (cat == UTF8PROC_CATEGORY_ND || cat == UTF8PROC_CATEGORY_NL || cat == UTF8PROC_CATEGORY_NO) {
      ++st.digits;
    } else if (!(cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_ME) && cat != UTF8PROC_CATEGORY_ZS) {
      ++st.symbols;  // punctuation, symbols, controls, private use
    }
  }
  end_line(s.size());
  return st;
}

}  // namespace dsft::data
