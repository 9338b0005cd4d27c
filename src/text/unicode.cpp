// UTF-8 handling and the Unicode-version details of the Hugging Face library (see unicode.h).
#include "text/unicode.h"

#include <utf8proc.h>

#include <algorithm>
#include <cstdlib>

namespace dsft::text::unicode {
namespace {

struct CpRange {
  uint32_t first, last;
};
#include "text/unicode_tables.inc"

bool unassigned_in_9(uint32_t cp) {
  // Everything below U+0378 was assigned long before 9.0.
  if (cp < 0x378) return false;
  auto it = std::upper_bound(std::begin(kUnassigned9), std::end(kUnassigned9), cp,
                             [](uint32_t v, const CpRange& r) { return v < r.first; });
  if (it == std::begin(kUnassigned9)) return false;
  --it;
  return cp <= it->last;
}

void append_normalized(std::string& out, std::string_view seg, NormForm form) {
  if (seg.empty()) return;
  int opts = UTF8PROC_STABLE;
  switch (form) {
    case NormForm::nfc: opts |= UTF8PROC_COMPOSE; break;
    case NormForm::nfd: opts |= UTF8PROC_DECOMPOSE; break;
    case NormForm::nfkc: opts |= UTF8PROC_COMPOSE | UTF8PROC_COMPAT; break;
    case NormForm::nfkd: opts |= UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT; break;
  }
  utf8proc_uint8_t* dst = nullptr;
  auto n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(seg.data()),
                        static_cast<utf8proc_ssize_t>(seg.size()), &dst,
                        static_cast<utf8proc_option_t>(opts));
  if (n < 0) {
    // Only reachable with invalid UTF-8, which callers reject first; keep the text as it is.
    out.append(seg);
    return;
  }
  out.append(reinterpret_cast<const char*>(dst), static_cast<size_t>(n));
  std::free(dst);
}

}  // namespace

size_t find_invalid_utf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  size_t n = s.size(), i = 0;
  while (i < n) {
    // Skip ASCII eight bytes at a time.
    while (i + 8 <= n) {
      uint64_t w;
      __builtin_memcpy(&w, p + i, 8);
      if (w & 0x8080808080808080ULL) break;
      i += 8;
    }
    if (i >= n) break;
    unsigned char b = p[i];
    if (b < 0x80) { ++i; continue; }
    size_t len;
    uint32_t min;
    if (b >= 0xC2 && b <= 0xDF) { len = 2; min = 0x80; }
    else if (b >= 0xE0 && b <= 0xEF) { len = 3; min = 0x800; }
    else if (b >= 0xF0 && b <= 0xF4) { len = 4; min = 0x10000; }
    else return i;
    if (i + len > n) return i;
    uint32_t cp = b & (len == 2 ? 0x1F : len == 3 ? 0x0F : 0x07);
    for (size_t k = 1; k < len; ++k) {
      if ((p[i + k] & 0xC0) != 0x80) return i;
      cp = (cp << 6) | (p[i + k] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
    i += len;
  }
  return std::string_view::npos;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

std::string utf8_lossy(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  size_t n = bytes.size(), i = 0;
  while (i < n) {
    unsigned char b = p[i];
    if (b < 0x80) { out.push_back(static_cast<char>(b)); ++i; continue; }
    // The valid range of the second byte depends on the first (Unicode Table 3-7); a maximal
    // subpart ends at the first byte that cannot continue the sequence.
    size_t len = 0;
    unsigned char lo = 0x80, hi = 0xBF;
    if (b >= 0xC2 && b <= 0xDF) len = 2;
    else if (b == 0xE0) { len = 3; lo = 0xA0; }
    else if (b >= 0xE1 && b <= 0xEC) len = 3;
    else if (b == 0xED) { len = 3; hi = 0x9F; }
    else if (b >= 0xEE && b <= 0xEF) len = 3;
    else if (b == 0xF0) { len = 4; lo = 0x90; }
    else if (b >= 0xF1 && b <= 0xF3) len = 4;
    else if (b == 0xF4) { len = 4; hi = 0x8F; }
    if (len == 0) { out.append("\xEF\xBF\xBD"); ++i; continue; }
    size_t k = 1;
    for (; k < len && i + k < n; ++k) {
      unsigned char c = p[i + k];
      if (k == 1 ? (c < lo || c > hi) : (c & 0xC0) != 0x80) break;
    }
    if (k == len) {
      out.append(reinterpret_cast<const char*>(p + i), len);
    } else {
      out.append("\xEF\xBF\xBD");
    }
    i += k;
  }
  return out;
}

bool is_white_space(uint32_t cp) {
  if (cp <= 0x20) return cp == 0x20 || (cp >= 0x09 && cp <= 0x0D);
  if (cp < 0x85) return false;
  return cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 ||
         cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

namespace {
// Code points that NFC never changes and that never combine with what precedes them: below
// U+0300, CJK ideographs, most kana and CJK punctuation, full-width ASCII. Text made only of
// these is already NFC (the common case of Chinese and English), found without utf8proc.
bool nfc_inert(uint32_t cp) {
  return cp < 0x300 || (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) ||
         (cp >= 0x3000 && cp <= 0x3029) || (cp >= 0x3030 && cp <= 0x3096) || (cp >= 0x30A0 && cp <= 0x30FF) ||
         (cp >= 0xFF01 && cp <= 0xFF5E);
}
}  // namespace

bool is_nfc_inert(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    if (static_cast<unsigned char>(s[i]) < 0x80) { ++i; continue; }
    if (!nfc_inert(next_cp(s, i))) return false;
  }
  return true;
}

namespace {
// Normalizes with the Unicode 9 barriers: code points unassigned in 9.0 are kept and cut the text.
void append_normalized_u9(std::string& out, std::string_view s, NormForm form) {
  size_t seg = 0, i = 0;
  while (i < s.size()) {
    size_t at = i;
    uint32_t cp = next_cp(s, i);
    if (cp >= 0x378 && unassigned_in_9(cp)) {
      append_normalized(out, s.substr(seg, at - seg), form);
      out.append(s.substr(at, i - at));
      seg = i;
    }
  }
  append_normalized(out, s.substr(seg), form);
}
}  // namespace

std::string normalize(std::string_view s, NormForm form) {
  bool ascii = std::all_of(s.begin(), s.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; });
  if (ascii) return std::string(s);
  std::string out;
  out.reserve(s.size() + s.size() / 4);
  if (form != NormForm::nfc) {
    append_normalized_u9(out, s, form);
    return out;
  }
  // NFC: an inert code point neither changes nor combines with what precedes it, so the text can
  // be cut before each one; only the stretches around other code points (with the code point
  // before them, which they may compose with) go through utf8proc.
  size_t i = 0, copied = 0, prev = 0;
  while (i < s.size()) {
    size_t at = i;
    uint32_t cp = next_cp(s, i);
    if (cp < 0x80 || nfc_inert(cp)) {
      prev = at;
      continue;
    }
    size_t start = at > 0 ? prev : at;  // the code point before may compose with this one
    size_t end = i;
    while (end < s.size()) {
      size_t j = end;
      uint32_t c = next_cp(s, j);
      if (c < 0x80 || nfc_inert(c)) break;
      end = j;
    }
    out.append(s.substr(copied, start - copied));
    append_normalized_u9(out, s.substr(start, end - start), form);
    copied = end;
    i = end;
    prev = end;
  }
  out.append(s.substr(copied));
  return out;
}

std::string lowercase(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    auto b = static_cast<unsigned char>(s[i]);
    if (b < 0x80) {
      out.push_back(static_cast<char>(b >= 'A' && b <= 'Z' ? b + 32 : b));
      ++i;
      continue;
    }
    uint32_t cp = next_cp(s, i);
    if (cp == 0x130) {  // full lowercase mapping: i + combining dot above
      out.append("i\xCC\x87");
      continue;
    }
    append_utf8(out, static_cast<uint32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(cp))));
  }
  return out;
}

const char* general_category16(uint32_t cp) {
  auto it = std::upper_bound(std::begin(kGcChanged14To16), std::end(kGcChanged14To16), cp,
                             [](uint32_t v, const GcRange& r) { return v < r.first; });
  if (it != std::begin(kGcChanged14To16) && cp <= (it - 1)->last) return (it - 1)->gc;
  return utf8proc_category_string(static_cast<utf8proc_int32_t>(cp));
}

const GcRange* gc_changed_begin() { return std::begin(kGcChanged14To16); }
const GcRange* gc_changed_end() { return std::end(kGcChanged14To16); }

}  // namespace dsft::text::unicode
